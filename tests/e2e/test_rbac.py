"""The chart's RBAC against the real authorizer: exactly what the launcher needs, nothing more.

Real: kube-apiserver's RBAC authorizer, asked through SelfSubjectAccessReviews made with the
chart ServiceAccount's own token (the KUBECONFIG e2e.sh hands the tests). That the launcher
works with these rights is what test_launcher_cluster.py and test_train_cluster.py show, as the
same ServiceAccount.
"""

from __future__ import annotations

import os

import pytest

from e2e.e2e_cluster import Cluster

pytestmark = pytest.mark.cluster

# (verb, resource) the launcher's API calls need (bgeflow.platform.launcher.k8s): create, GET and delete
# its PyTorchJob, list its pods, read the master's log, list the events of the job and its pods.
NEEDED = [
    ("create", "pytorchjobs.kubeflow.org"), ("get", "pytorchjobs.kubeflow.org"),
    ("delete", "pytorchjobs.kubeflow.org"), ("list", "pods"), ("get", "pods/log"), ("list", "events"),
]
DENIED = [
    ("list", "pytorchjobs.kubeflow.org"), ("watch", "pytorchjobs.kubeflow.org"),
    ("get", "pytorchjobs.kubeflow.org/status"), ("get", "pods"), ("watch", "pods"),
    ("get", "secrets"), ("list", "secrets"), ("create", "pods"), ("delete", "pods"), ("create", "pods/exec"),
    ("update", "pytorchjobs.kubeflow.org"), ("patch", "pytorchjobs.kubeflow.org"), ("create", "roles"),
    ("create", "rolebindings"), ("create", "serviceaccounts/token"), ("create", "jobs.batch"),
]


def can_i(cluster: Cluster, verb: str, resource: str, namespace: str) -> bool:
    resource, _, sub = resource.partition("/")  # kubectl reads "pods/log" as pod "log"
    done = cluster.kubectl("auth", "can-i", verb, resource, *(["--subresource", sub] if sub else []),
                           "-n", namespace, check=False, kubeconfig=os.environ["KUBECONFIG"])
    assert done.stdout.strip() in ("yes", "no"), done.stderr
    return done.stdout.strip() == "yes"


def test_the_launcher_token_is_the_chart_service_account(cluster: Cluster) -> None:
    who = cluster.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}",
                          kubeconfig=os.environ["KUBECONFIG"]).stdout
    assert who == f"system:serviceaccount:{cluster.namespace}:{cluster.service_account}"


@pytest.mark.parametrize(("verb", "resource"), NEEDED)
def test_the_chart_grants_what_the_launcher_needs(cluster: Cluster, verb: str, resource: str) -> None:
    assert can_i(cluster, verb, resource, cluster.namespace)


@pytest.mark.parametrize(("verb", "resource"), DENIED)
def test_the_chart_grants_nothing_more(cluster: Cluster, verb: str, resource: str) -> None:
    assert not can_i(cluster, verb, resource, cluster.namespace)


def test_the_grant_is_namespaced(cluster: Cluster) -> None:
    assert not can_i(cluster, "create", "pytorchjobs.kubeflow.org", "default")
    assert not can_i(cluster, "list", "pods", "kube-system")
