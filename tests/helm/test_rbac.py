"""The launcher's Role: exactly what it needs, nothing about secrets, no pod creation."""

from __future__ import annotations

import pytest
import yaml

from helm.render import CHART, NAMESPACE, RELEASE, render

PYTORCHJOBS = {"apiGroups": ["kubeflow.org"], "resources": ["pytorchjobs"], "verbs": ["create", "get", "delete"]}
TRAINJOBS = {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": ["create", "get", "delete"]}
OBSERVE = [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
]
EXPECTED_RULES = [PYTORCHJOBS, *OBSERVE]


def _kind(objs: list[dict], kind: str) -> list[dict]:
    return [o for o in objs if o["kind"] == kind]


def test_role_has_exact_rules() -> None:
    (role,) = _kind(render(), "Role")
    assert role["rules"] == EXPECTED_RULES
    assert not _kind(render(), "ClusterRole") and not _kind(render(), "ClusterRoleBinding")


@pytest.mark.parametrize(("backend", "jobs", "runtime"), [
    ("pytorchjob", [PYTORCHJOBS], False),
    ("kubernetes", [PYTORCHJOBS], False),  # the PyTorchJob's older name
    ("trainjob", [TRAINJOBS], True),
    ("auto", [PYTORCHJOBS, TRAINJOBS], True),  # discovery (which auto asks first) needs no rule
    ("local", [], False),
])
def test_rules_and_runtime_for_the_chosen_backend_only(backend: str, jobs: list[dict], runtime: bool) -> None:
    objs = render("default", "--set", f"retrain.training.backend={backend}")
    (role,) = _kind(objs, "Role")
    assert role["rules"] == [*jobs, *OBSERVE]
    runtimes = _kind(objs, "TrainingRuntime")
    assert [r["metadata"]["name"] for r in runtimes] == (["bgeflow-torch"] if runtime else [])


def test_the_charts_default_backend_is_the_run_specs() -> None:
    """One declaration: the chart's default is RunSpec's, so RBAC matches what a run launches."""
    from bgeflow.platform.launcher.spec import DEFAULT_RUNTIME
    from bgeflow.platform.run_spec import TrainingSettings

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["retrain"]["training"]["backend"] == TrainingSettings.model_fields["backend"].default
    # The compiled pipeline's TrainJobs name the chart's runtime.
    assert values["trainingRuntime"]["name"] == DEFAULT_RUNTIME


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
