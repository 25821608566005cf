"""Ingest: validate, dedupe and split the raw training JSONL (``bgeflow.steps.ingest``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components.images import OPS_IMAGE


@dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)
def ingest(
    train_data: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
    work_uri: str = "",
    run_id: str = "",
    eval_fraction: float = 0.05,
    seed: int = 42,
    eval_distractors: int = 10000,
    on_error: str = "fail",
):
    """Ingest ``train_data`` (comma-separated s3:// or local files/prefixes).

    ``dataset`` holds train.jsonl and eval/ (metadata: uri, train, eval, counts); ``report``
    is the data report shown in the KFP UI.
    """
    import time

    from bgeflow.core.storage import join_uri, open_store
    from bgeflow.platform.kfp_io import record, step_output
    from bgeflow.steps.ingest import IngestConfig
    from bgeflow.steps.ingest import ingest as run_ingest

    started = time.monotonic()
    output = step_output(dataset, work_uri, run_id, "ingest")
    result = run_ingest(IngestConfig(
        inputs=[uri.strip() for uri in train_data.split(",") if uri.strip()], output=output,
        eval_fraction=eval_fraction, seed=seed, eval_distractors=eval_distractors, on_error=on_error,
    ))
    record(dataset, output, started, train=result.train_uri, eval=result.eval_uri, **result.report["counts"])
    with open(report.path, "w", encoding="utf-8") as fh:
        fh.write(open_store(join_uri(output, "report.md")).read_text())
