"""The pod → container mapping on the real rendered objects (no Docker needed: default suite)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.cli import main
from containers.conftest import configmaps, helm_template
from containers.pods import (
    PYTORCHJOB_DEFAULT_PORT,
    Tmpfs,
    Unsupported,
    job_pod,
    pod_run,
    pytorchjob_pods,
    quantity_bytes,
)

SECRETS = {"bgeflow-s3": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "key"}}


def dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], bucket: str, *extra: str) -> dict[str, Any]:
    """The PyTorchJob ``bgeflow launch --dry-run`` prints (it writes the pods' train_spec.yaml to S3 first)."""
    settings = tmp_path / "pods.yaml"
    settings.write_text("s3_secret: bgeflow-s3\nshm_size: 1Gi\n")
    code = main(["launch", "retriever", "--dry-run", "--model", f"s3://{bucket}/base", "--train-data",
                 f"s3://{bucket}/mined.jsonl", "--output", f"s3://{bucket}/out", "--image",
                 "ghcr.io/bgeflow/bgeflow-gpu:0.1.0", "--namespace", "ml", "--pod-settings", str(settings), *extra])
    assert code == 0, capsys.readouterr().err
    return yaml.safe_load(capsys.readouterr().out)


def test_launcher_job_becomes_a_master_and_workers_with_the_operator_env(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], s3_bucket: str, s3_endpoint: str) -> None:
    job = dry_run(tmp_path, capsys, s3_bucket, "--nnodes", "3", "--nproc-per-node", "2")
    pods = pytorchjob_pods(job, secrets=SECRETS)
    name = job["metadata"]["name"]
    assert [p.name for p in pods] == [f"{name}-master-0", f"{name}-worker-0", f"{name}-worker-1"]
    template = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    for rank, pod in enumerate(pods):
        (run,) = pod.containers
        # command replaces the image's ENTRYPOINT; no CMD is left to append
        assert run.entrypoint == template["command"] and run.command == []
        assert run.env["RANK"] == run.env["PET_NODE_RANK"] == str(rank)
        assert run.env["MASTER_ADDR"] == run.env["PET_MASTER_ADDR"] == f"{name}-master-0"
        assert run.env["MASTER_PORT"] == str(PYTORCHJOB_DEFAULT_PORT)
        assert (run.env["WORLD_SIZE"], run.env["PET_NNODES"], run.env["PET_NPROC_PER_NODE"]) == ("6", "3", "2")
        # the launcher's own endpoint, as the pipeline's ConfigMap gives it to the launcher step
        assert run.env["AWS_ENDPOINT_URL"] == s3_endpoint
        assert run.env["AWS_ACCESS_KEY_ID"] == "id" and run.env["AWS_SECRET_ACCESS_KEY"] == "key"
        # The operator's PYTHONUNBUFFERED comes after the template's, and the last of a name wins.
        assert run.env["PYTHONUNBUFFERED"] == "0"
        assert run.user == "10001:10001" and run.group_add == ["10001"]
        assert run.cap_drop == ["ALL"] and run.security_opt == ["no-new-privileges"]
        assert pod.volumes["dshm"] == Tmpfs("dshm", size_bytes=2**30, memory=True)
        # a read-only root: scratch, HOME and the model cache are emptyDirs
        assert run.read_only and pod.volumes["tmp"] == Tmpfs("tmp") and pod.volumes["cache"] == Tmpfs("cache")
        assert [(m.volume, m.target) for m in run.mounts] == [("dshm", "/dev/shm"), ("tmp", "/tmp"),
                                                              ("cache", "/cache")]


def test_replica_services_must_be_dns_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             s3_bucket: str) -> None:
    job = dry_run(tmp_path, capsys, s3_bucket, "--nnodes", "2")
    assert len(pytorchjob_pods(job, secrets=SECRETS)) == 2
    job["metadata"]["name"] = "j" + "x" * 55  # what the launcher named jobs before it left room for it
    with pytest.raises(ValueError, match="not a DNS-1035 label"):
        pytorchjob_pods(job, secrets=SECRETS)


def test_optional_secret_missing_leaves_the_variable_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           s3_bucket: str) -> None:
    job = dry_run(tmp_path, capsys, s3_bucket)
    (pod,) = pytorchjob_pods(job, secrets={})
    assert "AWS_ACCESS_KEY_ID" not in pod.containers[0].env  # optional: true, as the launcher renders it


def _direct_values() -> dict[str, Any]:
    return {
        "kfp": {"enabled": False},
        "s3": {"bucket": "data", "endpoint": "http://s3:5000", "existingSecret": "bgeflow-s3"},
        "retrain": {"data": "s3://data/raw.jsonl", "reranker": {"train": False}},
        "direct": {"enabled": True, "shmSize": "512Mi"},
    }


def test_chart_direct_mode_pods() -> None:
    rendered = helm_template({**_direct_values(), "retrain": {**_direct_values()["retrain"], "training": {"nnodes": 2}}})
    objects = {o["metadata"]["name"].split("-")[1]: o for o in rendered if o["kind"] == "Job"}
    assert set(objects) == {"ingest", "mine", "retriever", "evaluate", "publish"}  # publish: the retriever's
    maps = configmaps(rendered)
    ingest = job_pod(objects["ingest"], secrets=SECRETS, configmaps=maps)
    (run,) = ingest.containers
    assert run.read_only and run.user == "10001:10001" and run.cap_drop == ["ALL"]
    assert sorted((m.target, m.read_only) for m in run.mounts) == [("/cache", False), ("/spec", True), ("/tmp", False)]
    assert run.entrypoint == ["bgeflow"] and run.command == ["ingest", "--config", "/spec/ingest.yaml"]
    # The step's spec comes from the retrain spec's ConfigMap, written by the init container into /spec.
    (init,) = ingest.init_containers
    assert init.name == "step-spec" and init.command[:3] == ["pipeline", "step-spec", "ingest"]
    assert {(m.target, m.read_only) for m in init.mounts} >= {("/etc/bgeflow", True), ("/spec", False)}
    (name,) = maps
    assert ingest.volumes["retrain-spec"].files == (("retrain.yaml", maps[name]["retrain.yaml"]),)
    mine = job_pod(objects["mine"], secrets=SECRETS, configmaps=maps)
    assert [c.name for c in mine.init_containers] == ["wait-for-input", "step-spec"]
    assert mine.init_containers[0].command[:2] == ["pipeline", "wait"]
    assert mine.volumes["dshm"].size_bytes == 512 * 2**20
    with pytest.raises(ValueError, match=f"ConfigMap {name}"):
        job_pod(objects["mine"], secrets=SECRETS)
    # The training stage is a launcher (no GPU) that creates the PyTorchJob once mining is done
    # (containers.conftest.launched_pytorchjob builds that job as the launcher does).
    # Not run as a container here: it talks to the Kubernetes API (its projected token volume).
    launcher = objects["retriever"]["spec"]["template"]["spec"]
    assert [c["name"] for c in launcher["initContainers"]] == ["wait-for-input", "step-spec"]
    (run,) = launcher["containers"]
    assert run["command"] == ["bgeflow"] and run["args"][:2] == ["launch", "retriever"]
    assert "nvidia.com/gpu" not in run["resources"].get("limits", {})


def test_run_as_non_root_is_checked_against_the_image_user() -> None:
    pod = {"securityContext": {"runAsNonRoot": True}, "containers": [{"name": "c", "image": "img"}]}
    assert pod_run(pod, name="p", image_user=lambda _: "10001").containers[0].user is None
    with pytest.raises(ValueError, match="runAsNonRoot"):
        pod_run(pod, name="p", image_user=lambda _: "root")
    with pytest.raises(ValueError, match="runAsNonRoot"):
        pod_run({**pod, "securityContext": {"runAsNonRoot": True, "runAsUser": 0}}, name="p")


def test_env_expansion_and_order() -> None:
    pod = {"containers": [{"name": "c", "image": "i", "args": ["$(A)", "$$(A)", "$(NOPE)"],
                           "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-x"},
                                   {"name": "A", "value": "2"}]}]}
    (run,) = pod_run(pod, name="p").containers
    assert run.env == {"A": "2", "B": "1-x"}
    assert run.entrypoint is None and run.command == ["2", "$(A)", "$(NOPE)"]


@pytest.mark.parametrize("pod", [
    {"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}]},
    {"containers": [{"name": "c", "image": "i", "envFrom": [{"secretRef": {"name": "s"}}]}]},
    {"containers": [{"name": "c", "image": "i", "lifecycle": {}}]},
    {"hostNetwork": True, "containers": [{"name": "c", "image": "i"}]},
    {"volumes": [{"name": "v", "hostPath": {"path": "/"}}], "containers": [{"name": "c", "image": "i"}]},
    {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]}],
     "volumes": [{"name": "v", "emptyDir": {}}]},
    {"volumes": [{"name": "v", "configMap": {"name": "m", "items": [{"key": "k", "path": "p"}]}}],
     "containers": [{"name": "c", "image": "i"}]},
], ids=["privileged", "envFrom", "unknown-field", "hostNetwork", "hostPath", "subPath", "configMap-items"])
def test_what_cannot_be_reproduced_is_refused(pod: dict[str, Any]) -> None:
    with pytest.raises(Unsupported):
        pod_run(pod, name="p")


def test_required_secret_missing_is_an_error() -> None:
    pod = {"containers": [{"name": "c", "image": "i", "env": [
        {"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}
    with pytest.raises(ValueError, match="Secret s key k"):
        pod_run(pod, name="p")


def test_quantities() -> None:
    assert quantity_bytes("16Gi") == 16 * 2**30 and quantity_bytes("500M") == 500 * 10**6 and quantity_bytes(7) == 7
    with pytest.raises(Unsupported):
        quantity_bytes("100m")
