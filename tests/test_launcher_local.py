"""The local backend runs the PyTorchJob's exact pod command as processes with the operator's env."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from bgeflow.platform.launcher import LaunchSpec, LocalBackend, PodSettings, job_name, launch
from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest

POD = """
import json, os, sys
keys = ["MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE",
        "AWS_ENDPOINT_URL"]
out = os.path.join(sys.argv[1], "pod-" + os.environ["PET_NODE_RANK"] + ".json")
json.dump({"argv": sys.argv[1:], **{k: os.environ.get(k) for k in keys}}, open(out, "w"))
sys.exit(int(sys.argv[2]))
"""


def spec_for(tmp_path: Path, code: int = 0, nnodes: int = 2) -> LaunchSpec:
    owner = "local-run/train-launcher"
    return LaunchSpec(name=job_name(owner), command=[sys.executable, "-c", POD, str(tmp_path), str(code)],
                      owner=owner, nnodes=nnodes, nproc_per_node=3, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"},
                      pod=PodSettings(image="ghcr.io/bgeflow/bgeflow-gpu:0.1.0"))


def test_local_pods_get_the_command_and_operator_env(tmp_path: Path) -> None:
    spec = spec_for(tmp_path)
    result = launch(spec, LocalBackend(), timeout=120)
    assert result.backend == "local" and result.adopted is False
    pods = [json.loads((tmp_path / f"pod-{rank}.json").read_text()) for rank in (0, 1)]
    for rank, pod in enumerate(pods):
        assert pod["argv"] == [str(tmp_path), "0"]
        assert (pod["RANK"], pod["PET_NODE_RANK"], pod["PET_NNODES"], pod["PET_NPROC_PER_NODE"]) == (
            str(rank), str(rank), "2", "3")
        assert pod["WORLD_SIZE"] == "6" and pod["MASTER_ADDR"] == "127.0.0.1"
        assert pod["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000"
    assert pods[0]["MASTER_PORT"] == pods[1]["MASTER_PORT"]
    # the command the Kubernetes backend would put in the pods is the same list
    manifest = to_manifest(build_pytorchjob(spec))
    assert manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"] == spec.command


def test_a_failed_pod_fails_the_launch_naming_the_job(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, code=3, nnodes=1)
    with pytest.raises(RuntimeError, match=rf"local training job default/{spec.name} failed: a pod exited with code 3"):
        launch(spec, LocalBackend(), timeout=120)


def test_timeout_is_a_timeout_error(tmp_path: Path) -> None:
    owner = "r/t"
    spec = LaunchSpec(name=job_name(owner), command=[sys.executable, "-c", "import time; time.sleep(60)"], owner=owner)
    with pytest.raises(TimeoutError):
        launch(spec, LocalBackend(), timeout=1)


def test_bgeflow_resolves_from_this_interpreter_without_activation(tmp_path: Path) -> None:
    seen = {}

    def fake_run_pods(command: list[str], **kwargs: object) -> int:
        seen.update(kwargs, command=command)
        return 0

    spec = spec_for(tmp_path)
    LocalBackend(run_pods=fake_run_pods).wait(spec, timeout=5)
    assert seen["command"] == spec.command and (seen["nnodes"], seen["nproc_per_node"]) == (2, 3)
    assert seen["env"]["PATH"].split(":")[0] == str(Path(sys.executable).parent)


def test_the_job_runs_the_spec_document_and_copies_no_credentials() -> None:
    from bgeflow.platform.launcher.train_job import build_launch_spec
    from bgeflow.steps.training import TrainSpec

    spec = TrainSpec.of(kind="retriever", model="BAAI/bge-base-en-v1.5", train_data="s3://b/run/mine/mined.jsonl",
                        output="s3://b/run/train-retriever", learning_rate=2e-5, per_device_train_batch_size=8.0)
    job = build_launch_spec(
        spec, owner="run-9/train-launcher", nnodes=2, nproc_per_node=4, pod=PodSettings(image="img:1"), namespace="ml",
        environ={"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_SECRET_ACCESS_KEY": "never-copied", "HOME": "/root"},
    )
    # One document for every pod; no setting travels as a command-line string (no "8.0", no "2e-05").
    assert job.command == ["bgeflow", "train", "--config", "s3://b/run/train-retriever/train_spec.yaml"]
    assert job.env == {"AWS_ENDPOINT_URL": "http://minio:9000"}  # credentials come as Secret references only
    assert (job.name.startswith("bgeflow-retriever-"), job.nnodes, job.nproc_per_node, job.namespace) == (
        True, 2, 4, "ml")


@pytest.mark.parametrize(("settings", "pod", "message"), [
    ({"nnodes": 4}, PodSettings(), "set by the launcher"),
    ({}, PodSettings(elastic={"min_replicas": 1, "max_replicas": 2}), "fixed node count"),
])
def test_launch_spec_refuses_what_cannot_work(settings: dict, pod: PodSettings, message: str) -> None:
    from bgeflow.platform.launcher.train_job import build_launch_spec
    from bgeflow.steps.training import TrainSpec

    spec = TrainSpec.of(kind="reranker", model="m", train_data="d", output="o", **settings)
    with pytest.raises(ValueError, match=message):
        build_launch_spec(spec, owner="r/t", nnodes=1, nproc_per_node=1, pod=pod, namespace="ns")
