"""A real retrain step on the cluster: `bgeflow launch` → a 2-pod PyTorchJob → a model in S3.

Real: the API server and the Training Operator (PyTorchJob accepted, reconciled, MASTER_ADDR/
WORLD_SIZE/PET_* injected, the Worker's init container), the kubelet running the bgeflow-gpu
image on CPU (torchrun, gloo across the two pods through the pod network and cluster DNS), MinIO
as S3. The launcher runs as the chart's ServiceAccount (KUBECONFIG from e2e.sh), through its own
CLI, so the job is exactly the one `bgeflow launch` builds.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from bgeflow.platform.launcher import job_name
from e2e.e2e_cluster import REPO, S3, Cluster, run_launch

pytestmark = pytest.mark.cluster

TOY_DATA = REPO.parent / "shared" / "data" / "toy_finetune_data.jsonl"
EXAMPLE_DATA = REPO / "src" / "bgeflow" / "examples" / "train.jsonl.gz"
# A few CPU steps of the bundled MiniLM: proof of the distributed run, not a useful model.
HYPERPARAMETERS = {"max_steps": 3, "per_device_train_batch_size": 4, "train_group_size": 2, "query_max_len": 24,
                   "passage_max_len": 64, "logging_steps": 1, "save_steps": 100000, "learning_rate": 5e-5}


def training_data() -> bytes:
    """FlagEmbedding-format JSONL (query, pos, neg): the toy data, else a slice of the examples."""
    if TOY_DATA.exists():
        return TOY_DATA.read_bytes()
    import gzip

    with gzip.open(EXAMPLE_DATA) as fh:
        return b"".join(fh.readlines()[:64])


def test_two_pod_pytorchjob_trains_minilm_from_minio(cluster: Cluster, s3: S3, tmp_path: Path) -> None:
    prefix = s3.prefix("train")
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/train.jsonl", Body=training_data())
    settings = tmp_path / "pod.yaml"
    settings.write_text(yaml.safe_dump({
        "image": cluster.gpu_image, "namespace": cluster.namespace, "s3_secret": s3.secret,
        "cpu": "500m", "memory": "3Gi", "shm_size": "256Mi", "backoff_limit": 0, "restart_policy": "Never",
        "ttl_seconds_after_finished": 3600,
        # Both pods stay to be inspected: under the default (Running) the operator deletes a Worker still
        # exiting when the Master has succeeded, a race this test lost once in a full e2e run.
        "clean_pod_policy": "None",
    }))
    output = f"s3://{s3.bucket}/{prefix}/out"
    owner = f"e2e/{prefix}"
    cmd = [sys.executable, "-m", "bgeflow", "launch", "retriever", "--model", "bundled:minilm",
           "--train-data", f"s3://{s3.bucket}/{prefix}/train.jsonl", "--output", output,
           "--nnodes", "2", "--nproc-per-node", "1", "--pod-settings", str(settings), "--owner", owner,
           "--timeout", "1500", *(a for k, v in HYPERPARAMETERS.items() for a in ("--set", f"{k}={v}"))]
    # AWS_ENDPOINT_URL reaches the pods through the launcher's pass-through env; the keys do not
    # (the pods get them from the Secret).
    # The launcher writes train_spec.yaml first, as a KFP launcher pod does with the Secret's keys; here it
    # runs on the host, so it reaches MinIO at the host's address (which the pods reach too).
    env = {**os.environ, "AWS_ENDPOINT_URL": s3.host_endpoint, "HF_HUB_OFFLINE": "1"}
    name = job_name(owner, prefix="bgeflow-retriever")
    run_launch(cmd, env, job=f"{cluster.namespace}/{name}", kind="PyTorchJob", output=output)

    # Both replicas ran to completion, the Worker after the operator's init container.
    pods = cluster.get_json("pods", "-n", cluster.namespace, "-l", f"training.kubeflow.org/job-name={name}")["items"]
    roles = sorted(p["metadata"]["labels"]["training.kubeflow.org/replica-type"] for p in pods)
    assert roles == ["master", "worker"], roles
    assert all(p["status"]["phase"] == "Succeeded" for p in pods), [p["status"] for p in pods]
    worker = next(p for p in pods if p["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "worker")
    assert [c["name"] for c in worker["spec"].get("initContainers", [])] == ["init-pytorch"]
    master_env = {e["name"]: e.get("value") for p in pods if p["metadata"]["labels"]["training.kubeflow.org/replica-type"] == "master"
                  for e in p["spec"]["containers"][0]["env"]}
    assert master_env.get("WORLD_SIZE") == "2" and master_env.get("PET_NNODES") == "2", master_env

    # The model and the summary, written by node 0 to MinIO.
    keys = s3.keys(f"{prefix}/out/")
    assert f"{prefix}/out/train_summary.json" in keys, keys
    assert any(k.startswith(f"{prefix}/out/model/") and k.endswith(".safetensors") for k in keys), keys
    summary = json.loads(s3.client().get_object(Bucket=s3.bucket, Key=f"{prefix}/out/train_summary.json")["Body"].read())
    assert summary.get("world_size") == 2, summary
    assert summary.get("global_step") == HYPERPARAMETERS["max_steps"], summary
