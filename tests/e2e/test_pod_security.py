"""The restricted Pod Security Standard, checked by the real API server's PodSecurity admission.

Real: kube-apiserver (PodSecurity plugin, RBAC) of the cluster under test. A pod that violates
"restricted" must be refused in the e2e namespace (proof the check is live), and every pod bgeflow
makes (the launcher's PyTorchJob pods, the chart's Jobs and PyTorchJobs in every mode) admitted.
Server-side dry runs: the full admission chain runs, nothing is persisted.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from e2e.e2e_cluster import Cluster

pytestmark = pytest.mark.cluster


def as_pod(template: dict[str, Any], name: str, namespace: str) -> dict[str, Any]:
    meta = template.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": meta.get("labels") or {}},
            "spec": template["spec"]}


def dry_run_create(cluster: Cluster, obj: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(obj), check=False)


def test_a_violating_pod_is_rejected(cluster: Cluster) -> None:
    pod = as_pod({"spec": {"containers": [{"name": "c", "image": cluster.ops_image, "command": ["true"]}]}},
                 "bgeflow-e2e-violating", cluster.namespace)
    done = dry_run_create(cluster, pod)
    assert done.returncode != 0, done.stdout
    assert 'violates PodSecurity "restricted:latest"' in done.stderr, done.stderr
    for violation in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true",
                      "seccompProfile"):
        assert violation in done.stderr, done.stderr


def test_the_launchers_pods_are_admitted(cluster: Cluster) -> None:
    from bgeflow.platform.launcher import PodSettings
    from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest
    from bgeflow.platform.launcher.train_job import build_launch_spec
    from bgeflow.steps.training import TrainSpec

    spec = build_launch_spec(
        TrainSpec.of(kind="retriever", model="bundled:minilm", train_data="s3://b/train.jsonl", output="s3://b/out"),
        owner="e2e/pod-security", nnodes=2, nproc_per_node=1, namespace=cluster.namespace,
        pod=PodSettings(image=cluster.gpu_image, s3_secret="bgeflow-s3", memory="1Gi", namespace=cluster.namespace),
    )
    job = to_manifest(build_pytorchjob(spec))
    for role, replica in job["spec"]["pytorchReplicaSpecs"].items():
        done = dry_run_create(cluster, as_pod(replica["template"], f"e2e-launcher-{role.lower()}", cluster.namespace))
        assert done.returncode == 0, f"{role}: {done.stderr}"


def _rendered_pods(cluster: Cluster, values: list[str]) -> list[tuple[str, dict[str, Any]]]:
    sets = [a for v in values for a in ("--set", v)]
    rendered = cluster.helm("template", "bgeflow", "helm/bgeflow", "-n", cluster.namespace, *sets).stdout
    pods = []
    for doc in yaml.safe_load_all(rendered):
        if not doc:
            continue
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Job":
            pods.append((f"Job/{name}", doc["spec"]["template"]))
        elif kind == "CronJob":
            pods.append((f"CronJob/{name}", doc["spec"]["jobTemplate"]["spec"]["template"]))
        elif kind == "PyTorchJob":
            pods += [(f"PyTorchJob/{name}/{role}", r["template"]) for role, r in doc["spec"]["pytorchReplicaSpecs"].items()]
    return pods


@pytest.mark.parametrize("mode", ["kfp", "direct"])
def test_every_chart_pod_is_admitted(cluster: Cluster, mode: str) -> None:
    common = ["s3.bucket=bgeflow-e2e", "s3.existingSecret=bgeflow-s3", "retrain.data=s3://bgeflow-e2e/raw/"]
    values = {
        "kfp": [*common, "retrain.enabled=true", "kfp.schedule.enabled=true"],
        "direct": [*common, "kfp.enabled=false", "direct.enabled=true", "retrain.training.nnodes=2"],
    }[mode]
    pods = _rendered_pods(cluster, values)
    assert pods, "the chart rendered no pods"
    failures = []
    for i, (what, template) in enumerate(pods):
        done = dry_run_create(cluster, as_pod(template, f"e2e-chart-{mode}-{i}", cluster.namespace))
        if done.returncode != 0:
            failures.append(f"{what}: {done.stderr.strip()}")
    assert not failures, "\n".join(failures)


def test_the_operators_worker_init_container_is_admitted(cluster: Cluster) -> None:
    """The Training Operator adds an init container to Worker pods; it must meet "restricted" too.

    It is the operator's (--pytorch-init-container-template-file), not bgeflow's: with the release's
    built-in template (alpine, no securityContext) no Worker pod can start in a restricted namespace.
    """
    init = {"name": "init-pytorch", "image": "alpine:3.10", "command": ["sh", "-c", "nslookup master"]}
    pod = as_pod({"spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [init],
        "containers": [{"name": "pytorch", "image": cluster.gpu_image, "command": ["true"], "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}],
    }}, "e2e-operator-default-init", cluster.namespace)
    done = dry_run_create(cluster, pod)
    assert done.returncode != 0 and 'container "init-pytorch" must set' in done.stderr, done.stderr

