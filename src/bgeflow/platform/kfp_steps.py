"""What each KFP component of the ``bge-finetune`` pipeline does, behind its thin function.

A component receives the run's blocks as dicts (KFP parameters; ``RunSpec``'s keys) plus its input
artifacts, turns them into its step's spec with ``bgeflow.platform.run_spec`` (the same code
``bgeflow run --check`` uses) and runs the step. Errors name settings by their run-spec names, never
CLI flags. Artifacts are duck-typed (``.path``, ``.metadata``): no kfp import here.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from bgeflow.core.log import quiet_libraries
from bgeflow.core.storage import join_uri, open_store
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.kfp_io import ArtifactLike, artifact_uri, record, registry_uri, step_output
from bgeflow.steps.evaluation.spec import INGEST_SPLIT_DIR

# A component runs under kfp's executor, which sets up logging itself: the libraries' dumps (faiss's
# "Could not load library", FlagEmbedding's argument dumps) still stay out of the step's log.
quiet_libraries()


def _block(name: str, value: dict[str, Any] | None) -> Any:
    """The run block ``name`` (a ``RunSpec`` key): its defaults in a pipeline run, with ``value`` over them.

    KFP hands dict parameters over as protobuf Structs, every number a float: the specs give the
    integer settings their ints back (8.0 → 8) and refuse 8.5.
    """
    info = blocks.RunSpec.model_fields[name]
    default = info.get_default(call_default_factory=True)
    return type(default).build(default.model_dump(mode="json", exclude_defaults=True), value or {}, where=name)


def ingest_step(*, data: str, settings: dict | None, retriever: dict | None, dataset: ArtifactLike,
                report: ArtifactLike, work_uri: str, run_id: str) -> None:
    from bgeflow.steps.ingest import ingest

    started = time.monotonic()
    output = step_output(dataset, work_uri, run_id, "ingest")
    spec = blocks.ingest_spec(_block("ingest", settings),
                              _block("retriever", retriever),
                              inputs=[u.strip() for u in data.split(",") if u.strip()], output=output)
    result = ingest(spec)
    record(dataset, output, started, train=result.train_uri, eval=result.eval_uri, **result.report["counts"])
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(open_store(join_uri(output, "report.md")).read_text())


def mine_step(*, dataset: ArtifactLike, settings: dict | None, retriever: dict | None, mined: ArtifactLike,
              work_uri: str, run_id: str, corpus: str = "", reranker: dict | None = None) -> None:
    from bgeflow.steps.mining import mine

    started = time.monotonic()
    output = join_uri(step_output(mined, work_uri, run_id, "mine"), "mined.jsonl")
    train = dataset.metadata.get("train") or join_uri(artifact_uri(dataset), "train.jsonl")
    spec = blocks.mine_spec(_block("mine", settings), _block("retriever", retriever), inputs=[train], output=output,
                            corpus=[u.strip() for u in corpus.split(",") if u.strip()],
                            reranker=_block("reranker", reranker))
    result = mine(spec)
    record(mined, result.output, started, pooling=result.report["encoding"]["pooling"])


def train_step(*, kind: str, train_data: ArtifactLike, model_settings: dict | None, settings: dict | None,
               model: ArtifactLike, work_uri: str, run_id: str, task_name: str,
               dataset: ArtifactLike | None = None) -> None:
    from bgeflow.platform.launcher.train_job import launch_training

    started = time.monotonic()
    block = _block(kind, model_settings)
    training = _block("training", settings)
    if not block.train:
        record(model, block.model, started, kind=kind, trained=False, base_model=block.model)
        return
    held_out = dataset is not None and dataset.metadata.get("eval_queries", 1)
    spec = blocks.train_spec(kind, block, train_data=artifact_uri(train_data),
                             output=step_output(model, work_uri, run_id, f"train-{kind}"),
                             validation_data=str(dataset.metadata.get("eval")) if held_out and dataset else None)
    trained = launch_training(spec, backend=training.backend, run_id=run_id, task_name=task_name,
                              nnodes=training.nnodes, nproc_per_node=training.nproc_per_node,
                              timeout=training.timeout_s)
    record(model, trained.model_uri, started, kind=kind, trained=True, base_model=block.model,
           output=trained.output_uri, job=trained.launch.name, adopted=trained.launch.adopted,
           global_step=trained.summary.get("global_step"), validation=trained.summary.get("validation"))


def evaluate_step(*, dataset: ArtifactLike, retriever_model: ArtifactLike, reranker_model: ArtifactLike,
                  settings: dict | None, retriever: dict | None, reranker: dict | None, registry: str,
                  metrics: Any, report: ArtifactLike, evaluation: ArtifactLike, work_uri: str, run_id: str,
                  eval_data: str = "") -> bool:
    """Score the run's eval set (its own ``eval_data``, else ingest's split) and apply the gate there;
    with both, ingest's split is scored too by the same call (the step's ``ingest_split``), under
    ``ingest-split/`` (reported, not gated), its metrics logged as ``ingest-split.<column>.<metric>``.

    Raises:
        ConfigError: neither an eval set of the run's nor any held-out query from ingest.
    """
    from bgeflow.steps.evaluation import evaluate

    started = time.monotonic()
    output = step_output(evaluation, work_uri, run_id, "evaluate")
    with_reranker = bool(reranker_model.metadata.get("trained", True))
    split = str(dataset.metadata.get("eval")) if dataset.metadata.get("eval_queries", 1) else ""
    spec = blocks.evaluate_spec(
        _block("evaluate", settings), _block("retriever", retriever), _block("reranker", reranker),
        eval_data=eval_data, split=split, output=output, finetuned_retriever=artifact_uri(retriever_model),
        finetuned_reranker=artifact_uri(reranker_model) if with_reranker else None,
        registry=registry_uri(registry, work_uri))  # the champion lives there, if one was published
    result = evaluate(spec)
    for column, values in result.metrics["metrics"].items():
        for name, value in values.items():
            metrics.log_metric(f"{column}.{name}", value)
    metrics.log_metric("gate_passed", float(result.gate_passed))
    beside = result.metrics.get("ingest_split") or {}
    for column, values in (beside.get("metrics") or {}).items():
        for name, value in values.items():
            metrics.log_metric(f"{INGEST_SPLIT_DIR}.{column}.{name}", value)
    store = open_store(output)
    text = store.read_text("report.md")
    if store.exists("deltas.png"):  # inline the plot: the UI shows this artifact alone, not its directory
        png = base64.b64encode(store.read_bytes("deltas.png")).decode()
        text = text.replace("(deltas.png)", f"(data:image/png;base64,{png})")
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(text)
    record(evaluation, output, started, gate_passed=result.gate_passed, metrics=result.outputs.get("metrics"),
           eval_set=spec.eval_data, split_metrics=result.outputs.get("ingest_split"))
    return result.gate_passed


def publish_step(*, model: ArtifactLike, evaluation: ArtifactLike, dataset: ArtifactLike, kind: str,
                 model_settings: dict | None, settings: dict | None, registry: str, published: ArtifactLike,
                 work_uri: str) -> str:
    from bgeflow.steps.publish import publish

    started = time.monotonic()
    if not model.metadata.get("trained", True):
        record(published, "", started, skipped="not trained in this run")
        return ""
    block = _block(kind, model_settings)
    spec = blocks.publish_spec(
        _block("publish", settings), model=model.metadata.get("output") or artifact_uri(model),
        name=block.name, registry=registry_uri(registry, work_uri), metrics=str(evaluation.metadata.get("metrics") or ""),
        lineage_inputs=[str(dataset.metadata.get("train") or "")], kind=kind, base_model=block.model)
    result = publish(spec)
    if not result.published:  # the model's own gate rules failed (publish_spec): it never reaches the registry
        record(published, "", started, skipped=result.reasons[0])
        return ""
    record(published, result.uri, started, version=result.version, champion=result.champion, created=result.created)
    return result.version
