"""Evaluate base vs fine-tuned (vs the champion), apply the quality gate (``bgeflow.steps.evaluation``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(
    dataset: Input[Dataset],
    retriever: Input[Model],
    reranker: Input[Model],
    base_retriever: str,
    base_reranker: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    gate: str = "ndcg@10>=base+0.01",
    registry: str = "",  # "": <work_uri>/registry when there is a work_uri
    retriever_name: str = "",
    reranker_name: str = "",
    work_uri: str = "",
    run_id: str = "",
    pooling: str = "auto",
    query_instruction: str = "",
    query_max_len: int = 64,
    passage_max_len: int = 256,
    rerank_max_len: int = 512,
    rerank_top_k: int = 100,
    batch_size: int = 64,
) -> bool:
    """Score the held-out eval split; the returned gate verdict decides whether the pipeline publishes.

    A plain ``bool`` return (KFP's ``Output``), not a named output: kfp.local evaluates a
    ``dsl.If`` only on outputs named ``Output``.

    ``metrics`` holds ``<column>.<metric>`` (columns base, finetuned, champion); ``report`` is
    report.md with the deltas plot inlined; ``evaluation`` (metadata uri) the output directory.
    """
    import base64
    import time

    from bgeflow.core.storage import open_store
    from bgeflow.platform.kfp_io import artifact_uri, record, registry_uri, step_output
    from bgeflow.steps.evaluation import EvalConfig
    from bgeflow.steps.evaluation import evaluate as run_evaluate

    started = time.monotonic()
    output = step_output(evaluation, work_uri, run_id, "evaluate")
    with_reranker = bool(reranker.metadata.get("trained", True))
    registry = registry_uri(registry, work_uri)  # the champion lives there, if one was published
    result = run_evaluate(EvalConfig(
        output=output, eval_data=dataset.metadata.get("eval"), retriever=artifact_uri(retriever),
        base_retriever=base_retriever, reranker=artifact_uri(reranker) if with_reranker else None,
        base_reranker=base_reranker if with_reranker else None, registry=registry or None,
        name=(retriever_name or None) if registry else None, reranker_name=(reranker_name or None) if registry and with_reranker else None,
        gate=gate, pooling=pooling, query_instruction=query_instruction, query_max_len=query_max_len,
        passage_max_len=passage_max_len, rerank_max_len=rerank_max_len, rerank_top_k=rerank_top_k,
        batch_size=batch_size,
    ))
    for column, values in result.metrics["metrics"].items():
        for name, value in values.items():
            metrics.log_metric(f"{column}.{name}", value)
    metrics.log_metric("gate_passed", float(result.gate_passed))
    store = open_store(output)
    text = store.read_text("report.md")
    if store.exists("deltas.png"):  # inline the plot: the UI shows this artifact alone, not its directory
        png = base64.b64encode(store.read_bytes("deltas.png")).decode()
        text = text.replace("(deltas.png)", f"(data:image/png;base64,{png})")
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(text)
    record(evaluation, output, started, gate_passed=result.gate_passed, metrics=result.outputs.get("metrics"))
    return result.gate_passed
