"""The launcher's Role: exactly what it needs, nothing about secrets, no pod creation."""

from __future__ import annotations

from helm.render import NAMESPACE, RELEASE, render

EXPECTED_RULES = [
    {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["create", "get", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]


def _kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def test_role_has_exact_rules() -> None:
    (role,) = _kind(render(), "Role")
    assert role["rules"] == EXPECTED_RULES
    assert not _kind(render(), "ClusterRole") and not _kind(render(), "ClusterRoleBinding")


def test_role_never_reaches_secrets_or_creates_pods() -> None:
    (role,) = _kind(render(), "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert "secrets" not in rule["resources"]
        assert not ({"pods", "pods/exec", "pods/attach"} & set(rule["resources"]) and
                    {"create", "update", "patch"} & set(rule["verbs"]))


def test_binding_targets_the_release_service_account() -> None:
    (binding,) = _kind(render(), "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": f"{RELEASE}-launcher"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": NAMESPACE}]


def test_rbac_toggle_and_optional_kfp_binding() -> None:
    off = render("default", "--set", "rbac.create=false")
    assert not _kind(off, "Role") and not _kind(off, "RoleBinding")
    bindings = {b["metadata"]["name"]: b for b in _kind(render("irsa-values"), "RoleBinding")}
    assert bindings[f"{RELEASE}-kfp"]["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kubeflow-pipelines-edit"}


def test_service_account_annotations_for_irsa() -> None:
    (sa,) = _kind(render("irsa-values"), "ServiceAccount")
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/bgeflow-training"}
    assert sa["automountServiceAccountToken"] is False
    assert not _kind(render("default", "--set", "serviceAccount.create=false", "--set", "serviceAccount.name=x"),
                     "ServiceAccount")
