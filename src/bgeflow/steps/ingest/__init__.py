"""Ingest: read raw training JSONL, validate every line, dedupe, split train/eval, report.

Outputs under ``--output``:

- ``train.jsonl``: clean, deduplicated training records (FlagEmbedding's format);
- ``eval/corpus.jsonl`` and ``eval/queries.jsonl``: the held-out split as a retrieval eval set
  (queries with their relevant corpus ids);
- ``report.json`` and ``report.md``: counts, failures per rule with the first offenders, length
  histograms and the share of texts that would be truncated.

Everything is staged locally and uploaded only when the data passes. ``report.json`` is the
completion marker: removed before anything else is written and written last, so a reader that
sees it with status ok sees one complete set. A failed run writes only ``report.json`` (status
failed, every count) and ``report.md``.
"""

from __future__ import annotations

from bgeflow.steps.ingest.report import IngestFailed, render_markdown
from bgeflow.steps.ingest.run import IngestResult, check_line, ingest
from bgeflow.steps.ingest.spec import (
    EVAL_CORPUS_FILE,
    EVAL_QUERIES_FILE,
    REPORT_FILE,
    TRAIN_FILE,
    IngestSettings,
    IngestSpec,
    OnError,
)
from bgeflow.steps.ingest.split import build_eval_set, split_eval

__all__ = [
    "EVAL_CORPUS_FILE",
    "EVAL_QUERIES_FILE",
    "REPORT_FILE",
    "TRAIN_FILE",
    "IngestFailed",
    "IngestResult",
    "IngestSettings",
    "IngestSpec",
    "OnError",
    "build_eval_set",
    "check_line",
    "ingest",
    "render_markdown",
    "split_eval",
]
