"""Ingest: validate, dedupe and split the raw training JSONL (``bgeflow.steps.ingest``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import IngestSettings, RetrieverRun, run_defaults
from components import exec_executor
from components.images import OPS_IMAGE


def ingest(
    data: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
    settings: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None: the defaults
    retriever: dict = None,  # noqa: RUF013
    work_uri: str = "",
    run_id: str = "",
):
    """Validate, dedupe and split the raw training data (parameters: see the compiled component)."""
    from bgeflow.platform.kfp_steps import ingest_step

    ingest_step(data=data, settings=settings, retriever=retriever, dataset=dataset, report=report,
                work_uri=work_uri, run_id=run_id)


ingest.__doc__ = docstring("Validate every line of the raw data, merge duplicate queries, split train/eval.", {
    "data": "raw training JSONL: files or prefixes (s3:// or local), comma-separated",
    "dataset": "train.jsonl and eval/ (metadata: uri, train, eval and the counts)",
    "report": "the data report (counts, failures per rule, length histograms)",
    "settings": IngestSettings,
    "retriever": ("the run's retriever block (its token limits drive the truncation report); keys:", RetrieverRun),
    "work_uri": "s3://bucket/prefix the step writes under (empty: the artifact's folder)",
    "run_id": "the pipeline run's id (keeps runs apart under work_uri)",
}, defaults={"settings": run_defaults("ingest")})
ingest = exec_executor(dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)(ingest))
