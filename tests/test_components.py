"""Each component: its body against the real step code (unit), and under kfp.local's SubprocessRunner.

Bodies are called through ``python_func`` with real ``dsl`` artifact objects, exactly as the KFP
executor calls them. The runner tests execute the compiled component in a subprocess of this
interpreter (``use_venv=False``: nothing installed), as ``bgeflow run`` does.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from kfp import dsl, local

from bgeflow.core.errors import ConfigError, NotFoundError
from conftest import REPO
from test_evaluate import write_eval_dir

sys.path.insert(0, str(REPO))

from components.evaluate import evaluate
from components.ingest import ingest
from components.mine import mine
from components.publish import publish
from components.train import train_launcher


def artifact(cls: type, path: Path, **metadata: object) -> dsl.Artifact:
    path.parent.mkdir(parents=True, exist_ok=True)  # as the KFP executor does for output artifacts
    return cls(name=path.name, uri=str(path), metadata=dict(metadata))


@pytest.fixture
def ingested(tmp_path: Path, toy_data: Path) -> dsl.Dataset:
    dataset = artifact(dsl.Dataset, tmp_path / "ingest" / "dataset")
    report = artifact(dsl.Markdown, tmp_path / "ingest" / "report")
    ingest.python_func(data=str(toy_data), dataset=dataset, report=report, settings={"eval_fraction": 0.3, "seed": 1})
    return dataset


def test_ingest_body_records_outputs_and_report(ingested: dsl.Dataset, tmp_path: Path) -> None:
    meta = ingested.metadata
    assert meta["uri"] == ingested.path
    assert Path(meta["train"]).is_file() and Path(meta["eval"], "queries.jsonl").is_file()
    assert meta["records"] == 10 and meta["eval_queries"] + meta["train_records"] == 10
    assert "seconds" in meta
    assert (tmp_path / "ingest" / "report").read_text().startswith("#")


def test_ingest_body_with_a_work_prefix_writes_under_run_and_step(tmp_path: Path, toy_data: Path) -> None:
    dataset = artifact(dsl.Dataset, tmp_path / "a" / "dataset")
    ingest.python_func(data=str(toy_data), dataset=dataset, report=artifact(dsl.Markdown, tmp_path / "a" / "r"),
                       work_uri=str(tmp_path / "work"), run_id="run-1")
    assert dataset.metadata["uri"] == str(tmp_path / "work" / "run-1" / "ingest")
    assert (tmp_path / "work" / "run-1" / "ingest" / "train.jsonl").is_file()
    assert not Path(dataset.path).exists()


def test_ingest_body_fails_on_missing_data(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=r"no-such\.jsonl"):
        ingest.python_func(data=str(tmp_path / "no-such.jsonl"), dataset=artifact(dsl.Dataset, tmp_path / "d"),
                           report=artifact(dsl.Markdown, tmp_path / "r"))


def test_block_errors_name_the_setting_not_a_flag(tmp_path: Path, toy_data: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ingest: eval_fraction: Input should be less than 1") as caught:
        ingest.python_func(data=str(toy_data), dataset=artifact(dsl.Dataset, tmp_path / "d"),
                           report=artifact(dsl.Markdown, tmp_path / "r"), settings={"eval_fraction": 2})
    assert "--" not in str(caught.value)


def test_mine_body_adds_negatives(ingested: dsl.Dataset, tmp_path: Path) -> None:
    mined = artifact(dsl.Dataset, tmp_path / "mine" / "mined")
    mine.python_func(dataset=ingested, mined=mined, settings={"range_for_sampling": "1-20", "negative_number": 2.0},
                     retriever={"model": "bundled:minilm", "query_max_len": 32, "passage_max_len": 64})
    rows = [json.loads(line) for line in Path(mined.metadata["uri"]).read_text().splitlines()]
    assert mined.metadata["uri"].endswith("mined.jsonl") and len(rows) == ingested.metadata["train_records"]
    assert all(len(r["neg"]) == 2 and not set(r["neg"]) & set(r["pos"]) for r in rows)
    assert mined.metadata["pooling"] == "mean"  # MiniLM's own, from its sentence-transformers config


def test_train_launcher_body_disabled_passes_the_base_model_through(tmp_path: Path) -> None:
    model = artifact(dsl.Model, tmp_path / "model")
    train_launcher.python_func(kind="reranker", model_settings={"model": "BAAI/bge-reranker-base", "train": False},
                               train_data=artifact(dsl.Dataset, tmp_path / "mined"), model=model,
                               dataset=artifact(dsl.Dataset, tmp_path / "ingest"))
    assert model.metadata["uri"] == "BAAI/bge-reranker-base" and model.metadata["trained"] is False


def test_train_launcher_body_refuses_a_local_output_for_kubernetes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="work_uri"):
        train_launcher.python_func(
            kind="retriever", model_settings={"model": "bundled:minilm"},
            train_data=artifact(dsl.Dataset, tmp_path / "d", uri="x"), model=artifact(dsl.Model, tmp_path / "m"),
            dataset=artifact(dsl.Dataset, tmp_path / "ingest"),
            settings={"backend": "kubernetes"}, run_id="r", task_name="t")


def test_train_launcher_body_rejects_bad_settings_before_launch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"retriever\.hyperparameters: query_max_len have their own settings: set "
                                          "retriever.query_max_len instead"):
        train_launcher.python_func(
            kind="retriever", model_settings={"model": "bundled:minilm", "hyperparameters": {"query_max_len": 8}},
            train_data=artifact(dsl.Dataset, tmp_path / "d", uri="x"), model=artifact(dsl.Model, tmp_path / "m"),
            dataset=artifact(dsl.Dataset, tmp_path / "ingest"),
            settings={"backend": "local"}, run_id="r", task_name="t")


def _fake_training_output(root: Path, minilm_path: str) -> Path:
    shutil.copytree(minilm_path, root / "model")
    (root / "train_config.yaml").write_text("kind: retriever\nmodel: bundled:minilm\n")
    (root / "train_summary.json").write_text(json.dumps({"global_step": 3}))
    return root


def test_evaluate_body_metrics_report_and_gate(ingested: dsl.Dataset, tmp_path: Path, minilm_path: str) -> None:
    retriever_model = artifact(dsl.Model, tmp_path / "r", uri=minilm_path, trained=True)
    reranker_model = artifact(dsl.Model, tmp_path / "rr", uri="bundled:minilm", trained=False)
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    report = artifact(dsl.Markdown, tmp_path / "report")
    evaluation = artifact(dsl.Artifact, tmp_path / "evaluation")
    out = evaluate.python_func(
        dataset=ingested, retriever_model=retriever_model, reranker_model=reranker_model, metrics=metrics,
        report=report, evaluation=evaluation, settings={"gate": "ndcg@10>=base+0.5"},
        retriever={"model": "bundled:minilm", "query_max_len": 32, "passage_max_len": 64},
        reranker={"model": "bundled:minilm"})
    assert out is False  # the same model cannot beat itself by 0.5
    assert metrics.metadata["base.ndcg@10"] == metrics.metadata["finetuned.ndcg@10"]
    assert metrics.metadata["gate_passed"] == 0.0
    assert not any(k.startswith(("base.rerank", "finetuned.rerank")) for k in metrics.metadata)  # reranker not trained
    text = Path(report.path).read_text()
    assert "data:image/png;base64," in text or "deltas.png" not in text
    document = json.loads(Path(evaluation.metadata["metrics"]).read_text())
    assert document["gate"]["passed"] is False


def test_evaluate_body_scores_ingests_split_beside_the_runs_eval_set(
    ingested: dsl.Dataset, tmp_path: Path, minilm_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's eval_data is judged, ingest's split scored beside it by the same evaluate call (the step's
    own ``ingest_split``), its metrics logged under the names KFP runs have always had."""
    import bgeflow.steps.evaluation as evaluation_package
    calls = []
    original = evaluation_package.evaluate

    def counted(spec: object) -> object:
        calls.append(spec)
        return original(spec)

    monkeypatch.setattr(evaluation_package, "evaluate", counted)
    own = write_eval_dir(tmp_path / "own-eval")
    metrics = dsl.Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    evaluation = artifact(dsl.Artifact, tmp_path / "evaluation")
    passed = evaluate.python_func(
        dataset=ingested, retriever_model=artifact(dsl.Model, tmp_path / "r", uri=minilm_path, trained=True),
        reranker_model=artifact(dsl.Model, tmp_path / "rr", uri="bundled:minilm", trained=False), metrics=metrics,
        report=artifact(dsl.Markdown, tmp_path / "report"), evaluation=evaluation, eval_data=str(own),
        settings={"gate": "ndcg@10>=base"}, retriever={"model": "bundled:minilm", "query_max_len": 32,
                                                       "passage_max_len": 64},
        reranker={"model": "bundled:minilm"})
    assert passed is True and len(calls) == 1
    (spec,) = calls
    assert (spec.eval_data, spec.ingest_split) == (str(own), ingested.metadata["eval"])
    split_file = Path(evaluation.metadata["split_metrics"])
    assert split_file == Path(evaluation.metadata["uri"], "ingest-split", "metrics.json")
    assert evaluation.metadata["eval_set"] == str(own)
    beside = json.loads(split_file.read_text())
    assert beside["eval_set"]["queries"] == ingested.metadata["eval_queries"] and beside["gate"] is None
    for column in ("base", "finetuned"):
        for name, value in beside["metrics"][column].items():
            assert metrics.metadata[f"ingest-split.{column}.{name}"] == value
    judged = json.loads(Path(evaluation.metadata["metrics"]).read_text())
    assert judged["eval_set"]["queries"] == 6 and metrics.metadata["finetuned.ndcg@10"] == \
        judged["metrics"]["finetuned"]["ndcg@10"]


def test_publish_body_publishes_and_skips_untrained(tmp_path: Path, minilm_path: str) -> None:
    output = _fake_training_output(tmp_path / "train", minilm_path)
    model = artifact(dsl.Model, tmp_path / "m", uri=str(output / "model"), output=str(output), kind="retriever",
                     trained=True, base_model="bundled:minilm")
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"metrics": {"base": {"ndcg@10": 0.1}, "finetuned": {"ndcg@10": 0.2}},
                                        "gate": {"passed": True, "expression": "ndcg@10>=base", "rules": []}}))
    evaluation = artifact(dsl.Artifact, tmp_path / "e", metrics=str(metrics_file))
    dataset = artifact(dsl.Dataset, tmp_path / "d", train=str(REPO / "src/bgeflow/examples/train.jsonl.gz"))
    published = artifact(dsl.Model, tmp_path / "p")
    version = publish.python_func(kind="retriever", model=model, evaluation=evaluation, dataset=dataset,
                                  model_settings={"name": "bge-retriever"}, registry=str(tmp_path / "registry"),
                                  published=published)
    assert version and published.metadata["version"] == version and published.metadata["champion"] is True
    assert (tmp_path / "registry" / "bge-retriever" / version / "manifest.json").is_file()
    untrained = artifact(dsl.Model, tmp_path / "m2", uri="BAAI/bge-reranker-base", trained=False)
    skipped = artifact(dsl.Model, tmp_path / "p2")
    assert publish.python_func(kind="reranker", model=untrained, evaluation=evaluation, dataset=dataset,
                               model_settings={"name": "bge-reranker"}, registry=str(tmp_path / "registry"),
                               published=skipped) == ""
    assert not (tmp_path / "registry" / "bge-reranker").exists()


# -- under kfp.local's SubprocessRunner -------------------------------------------------------


@pytest.fixture
def local_runner(tmp_path: Path) -> Path:
    root = tmp_path / "kfp"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    return root


def test_ingest_under_the_local_runner(local_runner: Path, toy_data: Path) -> None:
    task = ingest(data=str(toy_data), settings={"eval_fraction": 0.3})
    dataset = task.outputs["dataset"]
    assert dataset.metadata["records"] == 10 and Path(dataset.metadata["train"]).is_file()
    assert Path(task.outputs["report"].path).read_text().startswith("#")


def test_publish_under_the_local_runner(local_runner: Path, tmp_path: Path, minilm_path: str) -> None:
    output = _fake_training_output(tmp_path / "train", minilm_path)
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"gate": {"passed": True, "expression": "", "rules": []}}))
    registry = tmp_path / "registry"

    @dsl.pipeline(name="publish-only")
    def publish_only():  # no annotations: this module's `from __future__ import annotations` would hide them
        # upstream artifacts come in through dsl.importer, as another task's outputs would
        model = dsl.importer(artifact_uri=str(output / "model"), artifact_class=dsl.Model, metadata={
            "output": str(output), "kind": "retriever", "trained": True})
        evaluation = dsl.importer(artifact_uri=str(tmp_path), artifact_class=dsl.Artifact,
                                  metadata={"metrics": str(metrics_file)})
        dataset = dsl.importer(artifact_uri=str(tmp_path), artifact_class=dsl.Dataset,
                               metadata={"train": str(REPO / "src/bgeflow/examples/train.jsonl.gz")})
        publish(kind="retriever", model=model.output, evaluation=evaluation.output, dataset=dataset.output,
                model_settings={"name": "bge-retriever"}, registry=str(registry))

    publish_only()
    manifests = list((registry / "bge-retriever").glob("*/manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["kind"] == "retriever"
