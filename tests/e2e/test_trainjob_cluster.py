"""Kubeflow Trainer v2 on the real cluster: a TrainJob becomes a JobSet whose pods run (smoke test).

Real: the TrainJob and ClusterTrainingRuntime CRDs and the Trainer's webhook and controller
(v2.1.0), the JobSet controller and its webhooks, the Job controller, the kubelet, PodSecurity in
the restricted e2e namespace. bgeflow's own TrainJob builder is the Trainer v2 issue's work; this
proves the cluster side is live and what a runtime must carry to run under "restricted": Trainer
v2.1.0's podTemplateOverrides cannot set a securityContext, so the runtime holds it.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from e2e.e2e_cluster import Cluster

pytestmark = pytest.mark.cluster

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                  "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
SHOW_ENV = ("import os; print('bgeflow-trainjob', *(os.environ.get(k) for k in "
            "('PET_NNODES', 'PET_NODE_RANK', 'PET_NPROC_PER_NODE', 'PET_MASTER_ADDR')))")


def test_a_trainjob_runs_two_nodes_through_jobset(cluster: Cluster) -> None:
    name = f"bgeflow-e2e-{uuid.uuid4().hex[:6]}"
    runtime = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
        "metadata": {"name": name, "labels": {"trainer.kubeflow.org/framework": "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {"numProcPerNode": 1}},
            "template": {"spec": {"replicatedJobs": [{
                "name": "node",
                "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"template": {"spec": {
                        "securityContext": RESTRICTED_POD,
                        "containers": [{"name": "node", "image": cluster.ops_image,
                                        "securityContext": RESTRICTED_CONTAINER}],
                    }}},
                },
            }]}},
        },
    }
    job = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": name, "namespace": cluster.namespace},
        "spec": {"runtimeRef": {"name": name},
                 "trainer": {"image": cluster.ops_image, "numNodes": 2, "command": ["python", "-c", SHOW_ENV]}},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(runtime))
    try:
        cluster.kubectl("create", "-f", "-", input=json.dumps(job))
        deadline = time.monotonic() + 600
        state: set[str] = set()
        while time.monotonic() < deadline:
            status = cluster.get_json("trainjob", name, "-n", cluster.namespace).get("status") or {}
            state = {c["type"] for c in status.get("conditions", []) if c["status"] == "True"}
            if state & {"Complete", "Failed"}:
                break
            time.sleep(5)
        events = cluster.kubectl("get", "events", "-n", cluster.namespace, "--sort-by=.lastTimestamp", check=False).stdout
        assert "Complete" in state, f"TrainJob {name}: {state}\n{events[-3000:]}"
        assert cluster.get_json("jobset", name, "-n", cluster.namespace)["metadata"]["name"] == name
        pods = cluster.get_json("pods", "-n", cluster.namespace, "-l", f"jobset.sigs.k8s.io/jobset-name={name}")["items"]
        assert len(pods) == 2 and all(p["status"]["phase"] == "Succeeded" for p in pods), [p["status"] for p in pods]
        logs = "".join(cluster.kubectl("logs", "-n", cluster.namespace, p["metadata"]["name"]).stdout for p in pods)
        assert sorted(line.split()[2] for line in logs.splitlines() if line.startswith("bgeflow-trainjob")) == ["0", "1"], logs
        assert all(line.split()[1] == "2" for line in logs.splitlines() if line.startswith("bgeflow-trainjob")), logs
    finally:
        cluster.kubectl("delete", "trainjob", name, "-n", cluster.namespace, "--ignore-not-found", check=False)
        cluster.kubectl("delete", "clustertrainingruntime", name, "--ignore-not-found", check=False)
