"""The PyTorchJob the launcher renders, run as its pods: 2 containers of bgeflow-gpu, gloo on CPU.

``bgeflow launch --dry-run`` runs where the launcher runs on a cluster, in the ops image (inside
the chart's restricted pod), reading its pod settings from S3; the YAML it prints is translated
pod by pod (``containers.pods.pytorchjob_pods``: command, env + the operator's MASTER_ADDR/PORT,
WORLD_SIZE, RANK and PET_*, /dev/shm in memory, securityContext) and run on one network where
the master's service name resolves. Data and base model come from S3, the model goes back to
S3 and must load in sentence-transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from containers.conftest import (
    BUCKET,
    S3_SECRET,
    TEST_TIMEOUT,
    TRAIN_OPTIONS,
    Images,
    Seed,
    load_with_sentence_transformers,
    run_ok,
    with_args,
)
from containers.engine import PodRunner
from containers.pods import pod_run, pytorchjob_pods

pytestmark = [pytest.mark.containers, pytest.mark.timeout(TEST_TIMEOUT)]

LAUNCH_OUTPUT = f"s3://{BUCKET}/launcher/retriever"


@pytest.fixture(scope="module")
def launcher_job(runner: PodRunner, chart: dict[str, dict[str, Any]], images: Images, seed: Seed, mined: str,
                 secrets: dict[str, dict[str, str]], user_of: Any) -> dict[str, Any]:
    from bgeflow.core.storage import open_store

    settings = f"s3://{BUCKET}/inputs/train-pod-settings.yaml"
    open_store(settings).write_text("", yaml.safe_dump({"s3_secret": S3_SECRET, "shm_size": "1Gi"}))
    args = ["launch", "retriever", "--dry-run", "--model", seed.model, "--train-data", mined,
            "--output", LAUNCH_OUTPUT, "--image", images.gpu, "--nnodes", "2",
            "--nproc-per-node", "1", "--namespace", "ml", "--pod-settings", settings]
    for key, value in TRAIN_OPTIONS.items():
        args += ["--set", f"{key}={value}"]
    pod = pod_run(with_args(chart["ingest"]["spec"]["template"]["spec"], "ingest", args), name="launcher",
                  secrets=secrets, image_user=user_of)
    result = run_ok(runner, [pod])
    return yaml.safe_load(result.containers[0].stdout)


def test_launcher_pytorchjob_trains_on_two_containers(runner: PodRunner, launcher_job: dict[str, Any],
                                                      secrets: dict[str, dict[str, str]], user_of: Any,
                                                      tmp_path: Path) -> None:
    from bgeflow.core.storage import open_store

    pods = pytorchjob_pods(launcher_job, secrets=secrets, image_user=user_of)
    assert [p.name.rsplit("-", 2)[1:] for p in pods] == [["master", "0"], ["worker", "0"]]
    # Every pod runs `bgeflow train --config <the spec the launcher wrote>`; the output is in that spec.
    command = launcher_job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["bgeflow", "train", "--config"], command
    written = yaml.safe_load(open_store(command[3]).read_text(""))
    output = written["output"]
    assert output == LAUNCH_OUTPUT and written["kind"] == "retriever"
    assert {k: written["hyperparameters"][k] for k in TRAIN_OPTIONS} == TRAIN_OPTIONS
    result = run_ok(runner, pods)
    assert any("node 1/2" in c.logs for c in result.containers), result.failure()
    summary = json.loads(open_store(output).read_text("train_summary.json"))
    assert (summary["nnodes"], summary["world_size"], summary["device"]) == (2, 2, "cpu")
    assert summary["global_step"] == TRAIN_OPTIONS["max_steps"]
    load_with_sentence_transformers(f"{output}/model", tmp_path)
