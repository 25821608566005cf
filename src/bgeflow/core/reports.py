"""The names of the reports bgeflow's steps write beside their data: declared here, once.

Each step's own constant is one of these (``steps.ingest.spec.REPORT_FILE`` is ``INGEST_REPORT``,
``steps.mining.spec.REPORT_FILE`` is ``MINE_REPORT``, ``steps.evaluation.evaluate.METRICS_FILE`` is
``METRICS``, ...), and the lister of data files (``core.storage.sources.resolve_sources``) reads them
from here: a folder a step wrote (``bgeflow mine --output dir/mined.jsonl`` leaves ``mine_report.json``
beside the data) can be given back by its prefix without its reports being read as data. Declared in
``core`` so that the lister knows the names without importing any step; a new report added here is
skipped by every reader at once.
"""

from __future__ import annotations

#: ingest's report, its completion marker (``report.md`` is its Markdown form).
INGEST_REPORT = "report.json"
#: The Markdown report of ingest and of evaluate.
MARKDOWN_REPORT = "report.md"
#: mine's report, its output's completion marker (``<stem>.mine_report.json`` beside another output name).
MINE_REPORT = "mine_report.json"
#: mine's score histogram (``<stem>.score_histogram.png`` beside another output name).
MINE_PLOT = "score_histogram.png"
#: evaluate's metrics and gate verdict, written last.
METRICS = "metrics.json"
#: evaluate's plot of the metric deltas.
METRICS_PLOT = "deltas.png"
#: train's summary, written last into the training output.
TRAIN_SUMMARY = "train_summary.json"
#: ``bgeflow run``'s summary of the whole run.
RUN_SUMMARY = "run_summary.json"

#: Every report, by its plain file name.
REPORT_FILES = frozenset({INGEST_REPORT, MARKDOWN_REPORT, MINE_REPORT, MINE_PLOT, METRICS, METRICS_PLOT,
                          TRAIN_SUMMARY, RUN_SUMMARY})
#: The reports also written as ``<stem>.<name>``, named after their output (mining's ``beside_output``).
STEM_REPORTS = (MINE_REPORT, MINE_PLOT)
_STEM_SUFFIXES = tuple(f".{name}" for name in STEM_REPORTS)


def is_report(key: str) -> bool:
    """Whether the object ``key`` (a key or path; only its last part counts) is one of bgeflow's reports.

    ``mine_report.json``, ``eval/metrics.json`` and ``a_minedHN.mine_report.json`` are; ``train.jsonl``,
    ``mined.jsonl`` and ``""`` (a store's own object) are not.
    """
    name = key.rsplit("/", 1)[-1]
    return name in REPORT_FILES or name.endswith(_STEM_SUFFIXES)
