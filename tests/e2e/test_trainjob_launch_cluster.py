"""A real retrain step on Kubeflow Trainer v2: `bgeflow launch --backend trainjob` → a 2-node TrainJob
on the chart's TrainingRuntime → a model in S3.

Real: the chart's TrainingRuntime (rendered by helm, applied as is but for its name), Trainer v2's
webhook and controller filling the runtime's "node" container from the TrainJob, JobSet, the
kubelet running the bgeflow-gpu image on CPU under PodSecurity "restricted" (torchrun, gloo across
the two pods), MinIO. The launcher runs as the chart's ServiceAccount with the rule the chart renders
for `retrain.training.backend=trainjob` (added beside the release's, which is for pytorchjob, by the
``trainjob_runtime_name`` fixture: e2e_cluster.trainjob_runtime).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from bgeflow.platform.launcher import job_name
from e2e.e2e_cluster import S3, Cluster, run_launch
from e2e.test_train_cluster import HYPERPARAMETERS, training_data

pytestmark = pytest.mark.cluster


def test_two_node_trainjob_on_the_charts_runtime_trains_minilm_from_minio(cluster: Cluster, s3: S3,
                                                                          trainjob_runtime_name: str) -> None:
    prefix = s3.prefix("trainjob")
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/train.jsonl", Body=training_data())
    output = f"s3://{s3.bucket}/{prefix}/out"
    owner = f"e2e/{prefix}"
    name = job_name(owner, prefix="bgeflow-retriever")
    settings = {"namespace": cluster.namespace, "cpu": "500m", "memory": "3Gi", "runtime": trainjob_runtime_name}
    cmd = [sys.executable, "-m", "bgeflow", "launch", "retriever", "--backend", "trainjob", "--model", "bundled:minilm",
           "--train-data", f"s3://{s3.bucket}/{prefix}/train.jsonl", "--output", output, "--nnodes", "2",
           "--nproc-per-node", "1", "--owner", owner, "--timeout", "1500",
           *(a for k, v in HYPERPARAMETERS.items() for a in ("--set", f"{k}={v}"))]
    # The launcher writes train_spec.yaml first, as a KFP launcher pod does with the Secret's keys; here it
    # runs on the host, so it reaches MinIO at the host's address (which the pods reach too).
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.host_endpoint, "HF_HUB_OFFLINE": "1",
           "BGEFLOW_TRAIN_POD_SETTINGS": json.dumps(settings)}
    try:
        run_launch(cmd, env, job=f"{cluster.namespace}/{name}", kind="TrainJob", output=output)

        pods = cluster.get_json("pods", "-n", cluster.namespace, "-l", f"jobset.sigs.k8s.io/jobset-name={name}")["items"]
        assert len(pods) == 2 and all(p["status"]["phase"] == "Succeeded" for p in pods), [p["status"] for p in pods]
        for pod in pods:  # the runtime's pod: the release's labels (NetworkPolicy), restricted, /dev/shm
            assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == cluster.release
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            assert {"name": "dshm", "mountPath": "/dev/shm"} in pod["spec"]["containers"][0]["volumeMounts"]
        keys = s3.keys(f"{prefix}/out/")
        assert any(k.startswith(f"{prefix}/out/model/") and k.endswith(".safetensors") for k in keys), keys
        summary = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=f"{prefix}/out/train_summary.json")["Body"].read())
        assert summary.get("world_size") == 2 and summary.get("global_step") == HYPERPARAMETERS["max_steps"], summary
    finally:
        cluster.kubectl("delete", "trainjob", name, "-n", cluster.namespace, "--ignore-not-found", check=False)
