"""Evaluate base vs fine-tuned (vs the champion), apply the quality gate (``bgeflow.steps.evaluation``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import EvaluateSettings, run_defaults
from bgeflow.steps.evaluation.spec import INGEST_SPLIT_DIR
from components import exec_executor
from components.images import GPU_IMAGE


def evaluate(
    dataset: Input[Dataset],
    retriever_model: Input[Model],
    reranker_model: Input[Model],
    metrics: Output[Metrics],
    report: Output[Markdown],
    evaluation: Output[Artifact],
    settings: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None: the defaults
    retriever: dict = None,  # noqa: RUF013
    reranker: dict = None,  # noqa: RUF013
    eval_data: str = "",
    registry: str = "",
    work_uri: str = "",
    run_id: str = "",
) -> bool:
    """Score the held-out split and apply the gate (parameters: see the compiled component)."""
    from bgeflow.platform.kfp_steps import evaluate_step

    return evaluate_step(dataset=dataset, retriever_model=retriever_model, reranker_model=reranker_model,
                         settings=settings, retriever=retriever, reranker=reranker, eval_data=eval_data, registry=registry,
                         metrics=metrics, report=report, evaluation=evaluation, work_uri=work_uri, run_id=run_id)


evaluate.__doc__ = docstring(
    "Score the held-out eval split with the base, fine-tuned and champion models; apply the quality gate.\n\n"
    "A plain ``bool`` return (KFP's ``Output``), not a named output: kfp.local evaluates a ``dsl.If`` only "
    "on outputs named ``Output``.", {
        "dataset": "ingest's output (eval/ holds corpus.jsonl and queries.jsonl)",
        "retriever_model": "the fine-tuned retriever",
        "reranker_model": "the fine-tuned reranker (not trained: only the retriever is evaluated)",
        "metrics": f"<column>.<metric> for the columns base, finetuned and champion; {INGEST_SPLIT_DIR}.<column>."
                   "<metric> for ingest's split when it is scored beside the run's eval_data",
        "report": "report.md with the deltas plot inlined",
        "evaluation": "the output folder (metadata: uri, gate_passed, metrics); metrics.json holds the verdict "
                      "of each model's own rules",
        "settings": EvaluateSettings,
        "retriever": "the run's retriever block (base model, encoding, registry name)",
        "reranker": "the run's reranker block (base model, pair budget, registry name)",
        "eval_data": "the run's own eval set (folder or prefix, bgeflow's or BEIR's layout): the gate judges on "
                     "it; ingest's split, when it has queries, is scored beside it by the same evaluation (its "
                     f"ingest_split: under {INGEST_SPLIT_DIR}/, never gated) (empty: ingest's split only)",
        "registry": "where champions are looked up (empty: <work_uri>/registry, if any)",
        "work_uri": "s3://bucket/prefix the step writes under (empty: the artifact's folder)",
        "run_id": "the pipeline run's id",
    }, defaults={"settings": run_defaults("evaluate")},
    returns="Output: whether every gate rule passed (each publish task reads its own model's verdict in "
            "metrics.json)")
evaluate = exec_executor(dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)(evaluate))
