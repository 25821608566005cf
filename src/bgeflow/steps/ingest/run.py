"""``ingest(IngestSpec) -> IngestResult``: one pass over every line, then dedupe, split, write."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow.core.log import progress
from bgeflow.core.storage import Overlong, iter_lines, open_store, resolve_sources
from bgeflow.data import Problem, TrainRecord, parse_clean, parse_line, write_jsonl, write_line
from bgeflow.data.lengths import token_counter
from bgeflow.steps.ingest.dedupe import dedupe_within, drop_negatives_equal_to_positives, merge_into
from bgeflow.steps.ingest.report import IngestFailed, ProblemTally, length_report, render_markdown
from bgeflow.steps.ingest.spec import (
    EVAL_CORPUS_FILE,
    EVAL_QUERIES_FILE,
    REPORT_FILE,
    REPORT_MD_FILE,
    TRAIN_FILE,
    IngestSpec,
)
from bgeflow.steps.ingest.split import build_eval_set, split_eval

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    report: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def train_uri(self) -> str:
        return self.outputs["train"]

    @property
    def eval_uri(self) -> str:
        return self.outputs["eval"]


def ingest(config: IngestSpec) -> IngestResult:
    """Run the ingest step. Raises DataError when the data fails under ``fail``: then only the report is
    written, and an earlier run's data files in the output folder are removed (``_write_failure``)."""
    with _collector_paused():
        return _ingest(config)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Records hold no reference cycles, so the collector's passes over the hundreds of thousands
    of objects ingest keeps alive find nothing and cost about a fifth of the run."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_line(uri: str, line_no: int, raw: bytes | Overlong) -> tuple[TrainRecord | None, list[Problem]]:
    """Ingest's validation of one input line: ``(record, [])``, ``(None, problems)``, or ``(None, [])`` when blank.

    The one line validator: ingest's pass and ``bgeflow run``'s pre-flight both call it, so the
    pre-flight refuses exactly the lines ingest would (``min_negatives`` is checked by ingest after
    duplicates merge, not per line). ``raw`` is as ``iter_lines(..., overlong="mark")`` yields it.
    """
    if isinstance(raw, Overlong):
        return None, [Problem(f"{uri}:{line_no}", "line_too_long", "", str(raw))]
    record = parse_clean(raw)  # the fast path of a clean line; None for anything it does not vouch for
    if record is not None:
        return record, []
    if not raw or raw.isspace():
        return None, []
    record, problems = parse_line(raw.rstrip(b"\r\n"), f"{uri}:{line_no}", min_negatives=0)
    return (None, problems) if problems else (record, [])


def _ingest(config: IngestSpec) -> IngestResult:
    started = time.monotonic()
    # The tokenizer first: a reference that cannot work fails before the whole input is read.
    counter = token_counter(config.tokenizer)
    sources = resolve_sources(config.inputs)
    log.info("ingest: %d object(s), %d bytes", len(sources), sum(s.size for s in sources))

    tally = ProblemTally(config.examples_per_rule)
    records: dict[str, TrainRecord] = {}
    raw_lines: dict[str, bytes] = {}
    suspects: set[str] = set()
    # Lines merged into each record beyond its first (only for queries seen more than once), and,
    # when --min-negatives may drop records after merging, where each record began: a record dropped
    # then accounts for every line it was made of.
    merged_lines: dict[str, int] = {}
    first_where: dict[str, tuple[int, int]] = {}
    source_index = {id(source): i for i, source in enumerate(sources)}
    lines = blank = duplicates = 0
    for source, line_no, raw in progress(
        iter_lines(sources, workers=config.workers, max_line_bytes=config.max_line_bytes, overlong="mark"),
        "ingest", unit="line", logger=log,
    ):
        lines += 1
        record, problems = check_line(source.uri, line_no, raw)
        if record is None:
            if problems:
                tally.add(problems, at=(source_index[id(source)], line_no))
            else:
                blank += 1
            continue
        # Most records' texts are all distinct, and one set says so; only the others (and merged
        # ones) can hold a repeated passage or a negative equal to a positive.
        distinct = len(record.pos) + len(record.neg) == len({*record.pos, *record.neg})
        changed = not distinct and dedupe_within(record)
        query = record.query
        if query in records:
            duplicates += 1
            merged_lines[query] = merged_lines.get(query, 0) + 1
            merge_into(records[query], record)
            raw_lines.pop(query, None)
            suspects.add(query)
        else:
            records[query] = record
            if config.min_negatives:
                first_where[query] = (source_index[id(source)], line_no)
            if not distinct:
                suspects.add(query)
            # An untouched line is written back byte for byte (cheaper than re-serialising), unless
            # it escapes non-ASCII: outputs keep Chinese readable.
            if not changed and b"\\u" not in raw:
                raw_lines[query] = raw

    # The loop's last line would stay referenced until ingest returns: a long one held twice.
    raw = record = None  # type: ignore[assignment]

    negatives_removed = 0
    for query in suspects:
        removed = drop_negatives_equal_to_positives(records[query])
        if removed:
            negatives_removed += removed
            raw_lines.pop(query, None)
    if config.min_negatives:
        # Checked after merging: duplicates may together have enough negatives. A record that has
        # too few is every one of its lines failing, and its merges did not happen.
        for query, record in list(records.items()):
            if len(record.neg) < config.min_negatives:
                index, line_no = first_where[query]
                merged = merged_lines.pop(query, 0)
                where = f"{sources[index].uri}:{line_no}" + (f" (+{merged} duplicate line(s) merged)" if merged else "")
                tally.add([Problem(where, "too_few_negatives", "neg",
                                   f"{len(record.neg)} negatives, at least {config.min_negatives} required")],
                          at=(index, line_no), lines=1 + merged)
                duplicates -= merged
                del records[query]
                raw_lines.pop(query, None)

    eval_queries = split_eval(list(records), config.eval_fraction, config.seed)
    train = [r for q, r in records.items() if q not in eval_queries]
    held_out = [r for q, r in records.items() if q in eval_queries]

    report: dict[str, Any] = {
        "inputs": [{"uri": s.uri, "bytes": s.size, "etag": s.etag} for s in sources],
        "counts": {
            "lines": lines,
            "blank_lines": blank,
            "valid_lines": lines - blank - tally.bad_lines,
            "invalid_lines": tally.bad_lines,
            "duplicate_queries_merged": duplicates,
            "negatives_equal_to_positive_removed": negatives_removed,
            "records": len(records),
            "train_records": len(train),
            "eval_queries": len(held_out),
        },
        "failures": tally.to_dict(),
        "policy": {"on_error": config.on_error, "min_negatives": config.min_negatives},
        "split": {"eval_fraction": config.eval_fraction, "seed": config.seed},
    }
    report["lengths"] = length_report(list(records.values()), config, counter)

    failed = bool(tally.counts) and config.on_error == "fail"
    if failed or not records:
        report["status"] = "failed"
        offenders = tally.in_order()
        first = offenders[0] if offenders else None
        summary = (
            f"{tally.bad_lines} of {lines} lines failed validation "
            f"({', '.join(f'{r}={n}' for r, n in sorted(tally.counts.items()))}); first: {first}"
            if tally.counts
            else f"no usable records in {len(sources)} input object(s)"
        )
        report["seconds"] = round(time.monotonic() - started, 3)
        report["outputs"] = _write_failure(config, report)
        raise IngestFailed(f"{summary}; report: {report['outputs']['report']}", report, offenders)

    report["status"] = "ok" if not tally.counts else "ok_with_skipped_lines"
    outputs = _write_outputs(config, train, held_out, raw_lines, report)
    report["seconds"] = round(time.monotonic() - started, 3)
    log.info(
        "ingest: %d records (%d train, %d eval) from %d lines; %d invalid, %d duplicates merged",
        len(records), len(train), len(held_out), lines, tally.bad_lines, duplicates,
    )
    return IngestResult(report, outputs)


#: The data outputs of a successful run: a failed run leaves none of them in its folder.
DATA_FILES = (TRAIN_FILE, EVAL_CORPUS_FILE, EVAL_QUERIES_FILE)


def _write_failure(config: IngestSpec, report: dict[str, Any]) -> dict[str, str]:
    """The report of a failed run: ``report.json`` (status failed) and ``report.md``, and no data.

    An earlier run's data files in the folder are removed (logged): readers such as ``bgeflow mine
    --input <folder>/train.jsonl`` take a file, not the report beside it, so stale data left next to
    a failed report would be used as if this run had made it. The old ``report.json`` (their
    completion marker) goes first, so no marker vouches for a half-removed set.
    """
    store = open_store(config.output)
    store.delete(REPORT_FILE)  # first: the old marker must not vouch for anything while this runs
    stale = [key for key in DATA_FILES if store.exists(key)]
    for key in stale:
        store.delete(key)
    if stale:
        log.warning("ingest: removed %s of an earlier run from %s: this run failed and wrote no data",
                    ", ".join(stale), store.url())
        _drop_empty_folder(store, "eval")
    store.write_text(REPORT_MD_FILE, render_markdown(report))
    outputs = {"report": store.url(REPORT_FILE)}
    report["outputs"] = outputs
    store.write_text(REPORT_FILE, json.dumps(report, ensure_ascii=False, indent=2))
    return outputs


def _drop_empty_folder(store: Any, key: str) -> None:
    """A local folder left empty by the deletes goes too (object stores have no folders to leave)."""
    root = getattr(store, "root", None)
    if isinstance(root, Path):
        # Absent, or holding files this step did not write: left as it is.
        with contextlib.suppress(OSError):
            (root / key).rmdir()


def _write_outputs(
    config: IngestSpec,
    train: list[TrainRecord],
    held_out: list[TrainRecord],
    raw_lines: dict[str, bytes],
    report: dict[str, Any],
) -> dict[str, str]:
    store = open_store(config.output)
    # The marker goes first and comes back last: killed in between, the output has no report.json
    # and no reader takes a mix of old and new files for a complete set.
    store.delete(REPORT_FILE)
    with tempfile.TemporaryDirectory(prefix="bgeflow-ingest-") as tmp:
        stage = Path(tmp)
        (stage / "eval").mkdir()
        with open(stage / TRAIN_FILE, "wb") as fh:
            for record in train:
                # Popped: each original line is freed once written (a long line is not held twice
                # while the eval set is built).
                raw = raw_lines.pop(record.query, None)
                if raw is None:
                    write_line(fh, record.to_json())
                elif raw.endswith(b"\n") and not raw.endswith(b"\r\n"):
                    fh.write(raw)
                else:  # a CRLF line, or the last line without a newline
                    fh.write(raw.rstrip(b"\r\n") + b"\n")
        raw = None  # the last line written: not held while the eval set is built
        corpus, queries = build_eval_set(held_out, train, config.eval_distractors, config.seed)
        write_jsonl(stage / EVAL_CORPUS_FILE, corpus)
        write_jsonl(stage / EVAL_QUERIES_FILE, queries)
        report["counts"]["eval_corpus"] = len(corpus)
        (stage / REPORT_MD_FILE).write_text(render_markdown(report), encoding="utf-8")
        for key in (TRAIN_FILE, EVAL_CORPUS_FILE, EVAL_QUERIES_FILE, REPORT_MD_FILE):
            store.put_file(stage / key, key)
        outputs = {
            "train": store.url(TRAIN_FILE),
            "eval": store.url("eval"),
            "report": store.url(REPORT_FILE),
        }
        report["outputs"] = outputs
        # Last: its presence says the other outputs are complete.
        store.write_text(REPORT_FILE, json.dumps(report, ensure_ascii=False, indent=2))
    return outputs
