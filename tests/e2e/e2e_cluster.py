"""What the real-cluster tests share: the cluster e2e.sh set up, told through BGEFLOW_E2E_* variables.

tests/e2e is a package (like tests/helm) so that its conftest.py is ``e2e.conftest`` and does not
shadow the top-level ``conftest`` the suite's other modules import from.

``scripts/cluster/e2e.sh`` (``make e2e``) makes a namespace enforcing the restricted Pod
Security Standard, installs the chart there and hands the tests:

- ``KUBECONFIG``: a token of the chart's ServiceAccount (what the launcher runs as);
- ``BGEFLOW_E2E_ADMIN_KUBECONFIG``: cluster-admin, for what a user's admin does (helm, kubectl -k);
- ``BGEFLOW_E2E_NAMESPACE``/``_RELEASE``/``_SERVICE_ACCOUNT``: where and as whom;
- ``BGEFLOW_E2E_IMAGE``/``_GPU_IMAGE``: the bgeflow-ops and bgeflow-gpu images the cluster has;
- ``BGEFLOW_E2E_S3_ENDPOINT`` (as pods reach it), ``_S3_HOST_ENDPOINT`` (as this process does),
  ``_S3_BUCKET``, ``_S3_SECRET`` and ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    admin_kubeconfig: str
    namespace: str
    release: str
    service_account: str
    ops_image: str
    gpu_image: str
    registry: str
    version: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl as cluster-admin (or ``kubeconfig``); stdout and stderr captured as text."""
        cmd = ["kubectl", "--kubeconfig", kubeconfig or self.admin_kubeconfig, *args]
        done = subprocess.run(cmd, input=input, text=True, capture_output=True, timeout=300)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", "-o", "json", *args).stdout)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["helm", "--kubeconfig", self.admin_kubeconfig, *args]
        done = subprocess.run(cmd, text=True, capture_output=True, timeout=900, cwd=REPO)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done


@dataclass(frozen=True)
class S3:
    endpoint: str  # as pods reach it
    host_endpoint: str  # as this process reaches it
    bucket: str
    secret: str  # the Secret (in the test namespace) holding the keys

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.host_endpoint, region_name="us-east-1")

    def prefix(self, what: str) -> str:
        return f"e2e/{what}-{uuid.uuid4().hex[:8]}"

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


def run_launch(cmd: list[str], env: dict[str, str], *, job: str, kind: str, output: str) -> None:
    """Run ``bgeflow launch`` (``cmd``) here and check its one JSON document: ``kind`` job ``job``
    (``<namespace>/<name>``), created (not adopted), its model at ``<output>/model``.

    Raises:
        AssertionError: a non-zero exit or another report, with the launcher's stdout and stderr.
    """
    done = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=1700)
    diagnostics = f"\n--- stdout\n{done.stdout[-6000:]}\n--- stderr\n{done.stderr[-6000:]}"
    assert done.returncode == 0, diagnostics
    # stdout is the verb's one JSON document (the pods' log went to stderr).
    report = json.loads(done.stdout)
    assert report["job"] == job and report["kind"] == kind, diagnostics
    assert report["adopted"] is False and report["model_uri"] == f"{output}/model", diagnostics


def need(name: str) -> str:
    """A BGEFLOW_E2E_* setting; the test is skipped (with the reason) where it is missing."""
    value = os.environ.get(name)
    if not value:
        pytest.skip(f"{name} is not set: run through scripts/cluster/e2e.sh (make e2e)")
    return value


def chart_objects(cluster: Cluster, s3: S3, *sets: str) -> list[dict[str, Any]]:
    """The chart as ``helm template`` renders it for ``retrain.training.backend=trainjob`` (no KFP), with the
    cluster's images and S3, training pods sized for CPU (no GPU); ``sets``: more ``--set`` values."""
    cpu = json.dumps({"requests": {"cpu": "500m", "memory": "3Gi", "nvidia.com/gpu": None},
                      "limits": {"memory": "3Gi", "nvidia.com/gpu": None}})
    done = cluster.helm("template", cluster.release, "helm/bgeflow", "-n", cluster.namespace,
                        "--set", "kfp.enabled=false", "--set", "retrain.training.backend=trainjob",
                        "--set", f"image.registry={cluster.registry}", "--set", f"image.tag={cluster.version}",
                        "--set", f"s3.bucket={s3.bucket}", "--set", f"s3.endpoint={s3.endpoint}",
                        "--set", f"s3.existingSecret={s3.secret}", "--set", "trainingRuntime.shmSize=256Mi",
                        "--set-json", f"trainingRuntime.resources={cpu}", *(a for v in sets for a in ("--set", v)))
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def require_trainjob(cluster: Cluster) -> None:
    """Skip (with the reason) where a TrainJob cannot be built here or run there."""
    if importlib.util.find_spec("kubeflow_trainer_api") is None:
        pytest.skip("the TrainJob builder needs the Kubeflow SDK (pip install 'bgeflow[kfp]')")
    if cluster.kubectl("get", "crd", "trainjobs.trainer.kubeflow.org", check=False).returncode != 0:
        pytest.skip("no TrainJob CRD on this cluster: install Kubeflow Trainer v2")


@contextmanager
def trainjob_runtime(cluster: Cluster, s3: S3) -> Iterator[str]:
    """The chart's TrainingRuntime, applied as the chart renders it but for its name (``bgeflow-torch-e2e-<random>``),
    and the chart's ``trainjobs`` rule for the release's ServiceAccount (the release is installed for
    pytorchjob); yields the runtime's name for ``PodSettings.runtime``, deletes all three afterwards.

    The runtime owns the training pod: the bgeflow-gpu image, the restricted securityContext, /dev/shm,
    scratch, the S3 env, ``failurePolicy.maxRestarts`` (2). Its finalizer (Trainer's ``resource-in-use``) holds
    it while a TrainJob names it, so the TrainJobs go first.
    """
    suffix = uuid.uuid4().hex[:6]
    objs = chart_objects(cluster, s3)
    (runtime,) = [o for o in objs if o["kind"] == "TrainingRuntime"]
    (role,) = [o for o in objs if o["kind"] == "Role"]
    runtime["metadata"]["name"] = f"bgeflow-torch-e2e-{suffix}"
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": f"bgeflow-trainjob-e2e-{suffix}", "namespace": cluster.namespace},
            "rules": [r for r in role["rules"] if r["apiGroups"] == ["trainer.kubeflow.org"]]}
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": role["metadata"]["name"], "namespace": cluster.namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
               "subjects": [{"kind": "ServiceAccount", "name": cluster.service_account, "namespace": cluster.namespace}]}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": [runtime, role, binding]}))
    try:
        yield runtime["metadata"]["name"]
    finally:
        # TrainJobs on this runtime left by a failed test would hold it (its finalizer): delete those first.
        left = cluster.kubectl("get", "trainjobs", "-n", cluster.namespace, "-o", "json", check=False)
        for job in json.loads(left.stdout or "{}").get("items", []) if left.returncode == 0 else []:
            if job["spec"]["runtimeRef"]["name"] == runtime["metadata"]["name"]:
                cluster.kubectl("delete", "trainjob", job["metadata"]["name"], "-n", cluster.namespace,
                                "--ignore-not-found", "--wait=false", check=False)
        for kind, obj in (("trainingruntime", runtime), ("rolebinding", binding), ("role", role)):
            cluster.kubectl("delete", kind, obj["metadata"]["name"], "-n", cluster.namespace, "--ignore-not-found",
                            "--wait=false", check=False)
