"""``bgeflow pipeline step-spec``: each direct-mode stage runs the spec the pipeline's components build.

The chart's direct-mode Jobs write their step's spec with this action (an init container) and run
the step with ``--config`` on it; here the action writes each step's spec and the step's own
command line reads it back, against what ``bgeflow.platform.run_spec`` builds from the same blocks.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.cli import main, parse_args
from bgeflow.cli.launch import _job_shape
from bgeflow.cli.train import build_spec
from bgeflow.core.spec import Spec
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.direct import STEPS, DirectLayout
from bgeflow.platform.gitops import RetrainSpec
from bgeflow.steps.mining import MineSpec
from helm.steps import read_back

ROOT = "s3://bkt/bgeflow/direct/0123456789"
#: A retrain spec as the chart renders it (its `revision` key included), every block set away from
#: its default in at least one setting a step reads.
RETRAIN: dict[str, Any] = {
    "data": "s3://bkt/raw/a.jsonl,s3://bkt/raw/more/",
    "corpus": "s3://bkt/corpus/",
    "work_uri": "s3://bkt/bgeflow",
    "revision": "r7",
    "retriever": {"model": "bundled:minilm", "query_max_len": 48, "passage_max_len": 200, "pooling": "mean",
                  "query_instruction": "q: ", "validation_steps": 10,
                  "hyperparameters": {"learning_rate": 3.0e-5, "max_steps": 3, "train_group_size": 4}},
    "reranker": {"model": "BAAI/bge-reranker-base", "max_len": 256,
                 "hyperparameters": {"learning_rate": 1.0e-5, "train_group_size": 8}},
    "ingest": {"eval_fraction": 0.2, "seed": 7, "on_error": "skip"},
    "mine": {"negative_number": 7, "range_for_sampling": "3-50", "use_gpu": True},
    "training": {"nnodes": 2, "nproc_per_node": 4, "timeout_s": 600},
}


def _run(retrain: dict[str, Any]) -> RetrainSpec:
    return RetrainSpec.build(retrain, where="test")


#: step → (the step's command line before --config, what the pipeline's component builds from the run).
EXPECTED: dict[str, tuple[list[str], Callable[[RetrainSpec], Spec]]] = {
    "ingest": (["ingest"], lambda run: blocks.ingest_spec(run.ingest, run.retriever, inputs=run.data,
                                                          output=f"{ROOT}/ingest")),
    "mine": (["mine"], lambda run: blocks.mine_spec(run.mine, run.retriever, inputs=[f"{ROOT}/ingest/train.jsonl"],
                                                    output=f"{ROOT}/mine/mined.jsonl", corpus=run.corpus,
                                                    reranker=run.reranker)),
    "train-retriever": (["launch", "retriever"], lambda run: blocks.train_spec(
        "retriever", run.retriever, train_data=f"{ROOT}/mine/mined.jsonl", output=f"{ROOT}/retriever",
        validation_data=f"{ROOT}/ingest/eval")),
    "train-reranker": (["launch", "reranker"], lambda run: blocks.train_spec(
        "reranker", run.reranker, train_data=f"{ROOT}/mine/mined.jsonl", output=f"{ROOT}/reranker")),
}


def write_step_spec(tmp_path: Path, step: str, retrain: dict[str, Any]) -> tuple[int, Path]:
    spec_file, output = tmp_path / "retrain.yaml", tmp_path / "spec" / f"{step}.yaml"
    spec_file.write_text(yaml.safe_dump(retrain), encoding="utf-8")
    code = main(["pipeline", "step-spec", step, "--spec", str(spec_file), "--root", ROOT, "--output", str(output)])
    return code, output


def test_every_step_is_tested() -> None:
    assert set(EXPECTED) == set(STEPS)


@pytest.mark.parametrize("step", STEPS)
def test_the_written_spec_is_what_the_pipeline_builds(step: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    command, expected = EXPECTED[step]
    code, output = write_step_spec(tmp_path, step, RETRAIN)
    assert code == 0, capsys.readouterr().err
    report = json.loads(capsys.readouterr().out)
    assert report["step"] == step and report["spec"] == str(output)
    spec = read_back([*command, "--config", str(output)])
    assert spec == expected(_run(RETRAIN))
    # What the step's log shows is what it runs with.
    assert report["settings"] == spec.changed()
    if step.startswith("train-"):  # and the training pods, which run `bgeflow train --config`
        assert build_spec(parse_args(["train", "--config", str(output)])) == spec


#: (step, a setting of its spec, the value the retrain spec gives it): each retrain block reaches the steps.
REACHES = [
    ("ingest", "eval_fraction", 0.2),
    ("ingest", "on_error", "skip"),
    ("ingest", "inputs", ["s3://bkt/raw/a.jsonl", "s3://bkt/raw/more/"]),
    ("ingest", "limits.query_max_len", 48),
    ("mine", "negative_number", 7),
    ("mine", "range_for_sampling", "3-50"),
    ("mine", "use_gpu", True),
    ("mine", "max_score_ratio", blocks.RUN_MAX_SCORE_RATIO),  # the run's default, not the step's
    ("mine", "candidate_pool", ["s3://bkt/corpus/"]),
    ("mine", "model", "bundled:minilm"),
    ("mine", "encoding.query_max_len", 48),
    ("mine", "encoding.pooling", "mean"),
    ("mine", "encoding.query_instruction", "q: "),
    ("train-retriever", "hyperparameters.learning_rate", 3e-5),
    ("train-retriever", "hyperparameters.max_steps", 3),
    ("train-retriever", "hyperparameters.query_max_len", 48),
    ("train-retriever", "hyperparameters.query_instruction_for_retrieval", "q: "),
    ("train-retriever", "pooling", "mean"),
    ("train-retriever", "validation.eval_data", f"{ROOT}/ingest/eval"),
    ("train-retriever", "validation.steps", 10),
    ("train-reranker", "hyperparameters.learning_rate", 1e-5),
    ("train-reranker", "hyperparameters.max_len", 256),
]


@pytest.mark.parametrize(("step", "setting", "value"), REACHES, ids=[f"{s}:{k}" for s, k, _ in REACHES])
def test_retrain_settings_reach_the_step(step: str, setting: str, value: Any, tmp_path: Path) -> None:
    code, output = write_step_spec(tmp_path, step, RETRAIN)
    assert code == 0
    node: Any = read_back([*EXPECTED[step][0], "--config", str(output)]).to_dict()
    for key in setting.split("."):
        node = node[key]
    assert node == value


def test_the_layout_is_where_the_chart_waits() -> None:
    # helm/bgeflow/templates/direct/: mine waits for ingest/report.json, training for mine/mine_report.json.
    layout = DirectLayout(ROOT)
    assert (layout.ingest, layout.train_split, layout.mined) == (
        f"{ROOT}/ingest", f"{ROOT}/ingest/train.jsonl", f"{ROOT}/mine/mined.jsonl")
    assert MineSpec.of(model="m", inputs=["x"], output=layout.mined).report_uri == f"{ROOT}/mine/mine_report.json"


def test_no_held_out_split_no_validation(tmp_path: Path) -> None:
    code, output = write_step_spec(tmp_path, "train-retriever", {**RETRAIN, "ingest": {"eval_fraction": 0}})
    assert code == 0
    assert read_back(["launch", "retriever", "--config", str(output)]).validation.steps == 0


def test_step_flags_still_win(tmp_path: Path) -> None:
    """The chart's direct.<stage>.extraArgs come after --config: a flag there wins."""
    code, output = write_step_spec(tmp_path, "mine", RETRAIN)
    assert code == 0
    assert read_back(["mine", "--config", str(output), "--negative-number", "5"]).negative_number == 5


def _with(path: str, value: Any) -> dict[str, Any]:
    retrain = json.loads(json.dumps(RETRAIN))
    *parents, last = path.split(".")
    node = retrain
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return retrain


@pytest.mark.parametrize(("step", "path", "value", "named"), [
    ("train-retriever", "mine.negative_numbr", 3, "negative_numbr"),            # a typo, with the close name
    ("ingest", "ingest.eval_fraction", 1.5, "ingest.eval_fraction"),
    ("mine", "training.nnodes", 0, "training.nnodes"),
    ("mine", "retriever.hyperparameters.query_max_len", 64, "retriever.query_max_len"),  # its own setting
    # Any step checks the whole run: a group needing more negatives than mining gives fails at ingest.
    ("ingest", "reranker.hyperparameters.train_group_size", 20, "mine.negative_number"),
    ("train-reranker", "reranker.train", False, "reranker.train is false"),
])
def test_a_bad_retrain_spec_fails_naming_the_key(step: str, path: str, value: Any, named: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, output = write_step_spec(tmp_path, step, _with(path, value))
    err = capsys.readouterr().err
    assert code == 2 and named in err, err
    assert len(err.strip().splitlines()) == 1 and not output.exists()


def test_the_chart_render_reads_its_floats_as_floats(tmp_path: Path) -> None:
    """Helm writes the values' 3e-5 as `3e-05` (Go's encoder), which YAML 1.1 reads as a string: the
    runner would get learning_rate "3e-05" and the optimiser would fail on it."""
    spec_file = tmp_path / "retrain.yaml"
    spec_file.write_text("data: s3://bkt/raw/\nretriever:\n  hyperparameters:\n    learning_rate: 3e-05\n"
                         "revision: \"2e10\"\n", encoding="utf-8")
    run = RetrainSpec.load(spec_file)
    assert run.retriever.hyperparameters["learning_rate"] == 3e-5 and run.revision == "2e10"


def _launch_args(*extra: str) -> argparse.Namespace:
    return parse_args(["launch", "retriever", "--config", "unused.yaml", *extra])


def test_launch_takes_the_job_shape_from_the_retrain_spec(tmp_path: Path) -> None:
    spec_file = tmp_path / "retrain.yaml"
    spec_file.write_text(yaml.safe_dump(RETRAIN), encoding="utf-8")
    shape = _job_shape(_launch_args("--retrain-spec", str(spec_file)))
    assert (shape.nnodes, shape.nproc_per_node, shape.timeout_s) == (2, 4, 600)
    flagged = _job_shape(_launch_args("--retrain-spec", str(spec_file), "--nnodes", "3"))
    assert (flagged.nnodes, flagged.nproc_per_node) == (3, 4)
    plain = _job_shape(_launch_args())
    default = blocks.TrainingSettings()
    assert (plain.nnodes, plain.nproc_per_node) == (default.nnodes, default.nproc_per_node)
