"""The steps in their images, as the chart's pods: UID 10001, read-only root, S3 only.

The chart is rendered in direct mode (``helm template``) against a moto S3 endpoint on an
internal Docker network, and each rendered pod runs through ``containers.pods`` — its command,
env (the Secret's keys resolved), emptyDirs, securityContext and init containers as rendered.
ingest → mine → train (the chart's 2-node PyTorchJob) → evaluate → publish, each reading the
previous step's output from S3. evaluate and publish have no pod in the chart: they run in the
pod of the chart step that uses the same image (mine: gpu, ingest: ops) with their own args.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bgeflow.steps.training.pod import SPEC_FILE
from containers.conftest import (
    BUCKET,
    LENGTHS,
    POD_TIMEOUT,
    TEST_TIMEOUT,
    TRAIN_OPTIONS,
    Seed,
    arg,
    command,
    load_with_sentence_transformers,
    run_ok,
    store,
    with_args,
)
from containers.engine import PodRunner
from containers.pods import pod_run

pytestmark = [pytest.mark.containers, pytest.mark.timeout(TEST_TIMEOUT)]


@pytest.fixture(scope="module")
def trained(runner: PodRunner, pods: dict[str, Any], mined: str) -> tuple[str, Any]:
    result = run_ok(runner, pods["retriever"])
    # The pods run `bgeflow train --config <output>/train_spec.yaml`: the job's output is that folder.
    spec_uri = arg(command(pods["retriever"][0].containers[0]), "--config")
    assert spec_uri.endswith(f"/{SPEC_FILE}"), spec_uri
    return spec_uri.removesuffix(f"/{SPEC_FILE}"), result


def test_every_pod_runs_restricted(pods: dict[str, Any]) -> None:
    """What the chart renders is what runs: 10001, read-only root, no capabilities, scratch mounts."""
    every = [pods["ingest"], pods["mine"], *pods["retriever"]]
    for pod in every:
        for run in pod.init_containers + pod.containers:
            assert run.user == "10001:10001" and run.read_only and run.cap_drop == ["ALL"], (pod.name, run.name)
            assert "no-new-privileges" in run.security_opt
            assert {"/tmp", "/cache"} <= {m.target for m in run.mounts}


def test_ingest(ingested: str) -> None:
    report = json.loads(store(ingested).read_text("report.json"))
    assert report["counts"]["train_records"] > 0 and store(ingested).exists("train.jsonl")


def test_mine(mined: str) -> None:
    rows = [json.loads(line) for line in store(mined).read_text().splitlines()]
    assert rows and all(len(r["neg"]) == 3 for r in rows)


def test_chart_pytorchjob_trains_on_two_nodes(trained: tuple[str, Any], tmp_path: Path) -> None:
    output, result = trained
    logs = {c.pod: c.logs for c in result.containers if c.name == "pytorch"}
    assert len(logs) == 2 and any("node 1/2" in text for text in logs.values()), result.failure()
    summary = json.loads(store(output).read_text("train_summary.json"))
    assert (summary["nnodes"], summary["world_size"], summary["device"]) == (2, 2, "cpu")
    assert summary["global_step"] == TRAIN_OPTIONS["max_steps"]
    load_with_sentence_transformers(f"{output}/model", tmp_path)


@pytest.fixture(scope="module")
def evaluated(runner: PodRunner, pods: dict[str, Any], ingested: str, trained: tuple[str, Any], seed: Seed,
              secrets: dict[str, dict[str, str]], user_of: Any, chart: dict[str, dict[str, Any]]) -> str:
    output = ingested.rsplit("/", 1)[0] + "/evaluate"
    args = ["evaluate", "--eval-data", f"{ingested}/eval", "--retriever", trained[0], "--base-retriever", seed.model,
            "--pooling", "mean", *LENGTHS, "--gate", "ndcg@10>=0", "--output", output]
    pod = pod_run(with_args(chart["mine"]["spec"]["template"]["spec"], "mine", args), name="evaluate",
                  secrets=secrets, image_user=user_of)
    run_ok(runner, [pod])
    return output


def test_evaluate(evaluated: str) -> None:
    metrics = json.loads(store(evaluated).read_text("metrics.json"))
    assert metrics["gate"]["passed"] is True and "ndcg@10" in metrics["metrics"]["finetuned"]


def test_publish(runner: PodRunner, chart: dict[str, dict[str, Any]], ingested: str, trained: tuple[str, Any],
                 evaluated: str, secrets: dict[str, dict[str, str]], user_of: Any, tmp_path: Path) -> None:
    registry = f"s3://{BUCKET}/registry"
    args = ["publish", "--model", trained[0], "--name", "bge-retriever", "--registry", registry,
            "--metrics", f"{evaluated}/metrics.json", "--set-champion"]
    pod = pod_run(with_args(chart["ingest"]["spec"]["template"]["spec"], "ingest", args), name="publish",
                  secrets=secrets, image_user=user_of)
    run_ok(runner, [pod])
    from bgeflow.steps.publish.registry import fetch_model

    path = fetch_model(f"{registry}/bge-retriever", tmp_path)
    load_with_sentence_transformers(path, tmp_path, download=False)


@pytest.mark.parametrize(("where", "fails"), [("/tmp/ingest-out", False), ("/var/tmp/ingest-out", True)],
                         ids=["inside-a-mount", "outside-the-mounts"])
def test_a_write_outside_the_mounts_fails(runner: PodRunner, chart: dict[str, dict[str, Any]], seed: Seed,
                                         secrets: dict[str, dict[str, str]], user_of: Any, where: str,
                                         fails: bool) -> None:
    """/var/tmp is world-writable in the image: only readOnlyRootFilesystem stops the write."""
    spec = chart["ingest"]["spec"]["template"]["spec"]
    args = ["ingest", "--input", seed.train, "--output", where]
    result = runner.run([pod_run(with_args(spec, "ingest", args), name="ingest-local", secrets=secrets,
                                 image_user=user_of)], timeout=POD_TIMEOUT)
    if fails:
        assert not result.ok and "Read-only file system" in result.logs(), result.failure()
    else:
        assert result.ok, result.failure()
