"""Ingest: read raw training JSONL, validate every line, dedupe, split train/eval, report.

Outputs under ``--output``:

- ``train.jsonl``: clean, deduplicated training records (FlagEmbedding's format);
- ``eval/corpus.jsonl`` and ``eval/queries.jsonl``: the held-out split as a retrieval eval set
  (queries with their relevant corpus ids);
- ``report.json`` and ``report.md``: counts, failures per rule with the first offenders, length
  histograms and the share of texts that would be truncated.

Everything is staged locally and uploaded only when the data passes, ``report.json`` last, so a
failed run writes nothing and a reader that sees the report sees complete outputs.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import json
import logging
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bgeflow.data import (
    RULES,
    CorpusRecord,
    DataError,
    EvalQuery,
    Problem,
    TrainRecord,
    parse_clean,
    parse_line,
    text_id,
    write_jsonl,
)
from bgeflow.data.lengths import histogram, share_over, token_counter
from bgeflow.log import progress
from bgeflow.storage import DEFAULT_WORKERS, iter_lines, open_store, resolve_sources

log = logging.getLogger(__name__)

OnError = Literal["fail", "skip"]
TRAIN_FILE = "train.jsonl"
EVAL_CORPUS_FILE = "eval/corpus.jsonl"
EVAL_QUERIES_FILE = "eval/queries.jsonl"
REPORT_FILE = "report.json"


@dataclass
class IngestConfig:
    """What ``bgeflow ingest`` does; every field is a CLI flag of the same name."""

    inputs: list[str]
    output: str
    eval_fraction: float = 0.05
    seed: int = 42
    min_negatives: int = 0
    on_error: OnError = "fail"
    tokenizer: str | None = None
    query_max_len: int = 64
    passage_max_len: int = 256
    # Extra passages from the training split added to the eval corpus as distractors, so
    # retrieval is not a lookup among a handful of candidates.
    eval_distractors: int = 10_000
    examples_per_rule: int = 5
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if not self.inputs:
            raise ValueError("ingest needs at least one --input")
        if not self.output:
            raise ValueError("ingest needs --output")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"--on-error must be 'fail' or 'skip', got {self.on_error!r}")
        for name in ("min_negatives", "eval_distractors", "examples_per_rule"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.query_max_len <= 0 or self.passage_max_len <= 0 or self.workers <= 0:
            raise ValueError("--query-max-len, --passage-max-len and --workers must be positive")


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


class _Tally:
    """Problems per rule, keeping the first few offenders of each."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Problem]] = defaultdict(list)
        self.bad_lines = 0

    def add(self, problems: list[Problem]) -> None:
        self.bad_lines += 1
        for problem in problems:
            self.counts[problem.rule] += 1
            if len(self.examples[problem.rule]) < self.keep:
                self.examples[problem.rule].append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            rule: {
                "count": self.counts[rule],
                "description": RULES[rule],
                "examples": [p.to_dict() for p in self.examples[rule]],
            }
            for rule in sorted(self.counts)
        }


def _merge(into: TrainRecord, other: TrainRecord) -> None:
    """Union of pos and neg, first occurrence wins (with its score, when scores are present)."""
    for name in ("pos", "neg"):
        texts: list[str] = getattr(into, name)
        scores: list[float] | None = getattr(into, f"{name}_scores")
        other_scores = getattr(other, f"{name}_scores")
        seen = set(texts)
        for i, text in enumerate(getattr(other, name)):
            if text not in seen:
                seen.add(text)
                texts.append(text)
                if scores is not None:
                    scores.append(other_scores[i] if other_scores is not None else float("nan"))
        if scores is not None and any(s != s for s in scores):  # a merged side had no scores
            setattr(into, f"{name}_scores", None)


def _drop_negatives_equal_to_positives(record: TrainRecord) -> int:
    positives = set(record.pos)
    keep = [i for i, text in enumerate(record.neg) if text not in positives]
    removed = len(record.neg) - len(keep)
    if removed:
        record.neg = [record.neg[i] for i in keep]
        if record.neg_scores is not None:
            record.neg_scores = [record.neg_scores[i] for i in keep]
    return removed


def _dedupe_within(record: TrainRecord) -> bool:
    """Repeated passages inside one record's own lists (kept once, first score wins); True if any."""
    changed = False
    for name in ("pos", "neg"):
        texts = getattr(record, name)
        if len(set(texts)) == len(texts):
            continue
        changed = True
        first = {}
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        keep = sorted(first.values())
        setattr(record, name, [texts[i] for i in keep])
        scores = getattr(record, f"{name}_scores")
        if scores is not None:
            setattr(record, f"{name}_scores", [scores[i] for i in keep])
    return changed


def split_eval(queries: list[str], fraction: float, seed: int) -> set[str]:
    """The held-out queries: the ``round(n × fraction)`` smallest seeded hashes (at least one).

    Hash order makes the split independent of input order and stable as data is added.
    """
    if fraction <= 0 or len(queries) < 2:
        return set()
    k = min(len(queries) - 1, max(1, round(len(queries) * fraction)))
    return set(heapq.nsmallest(k, queries, key=lambda q: hashlib.sha256(f"{seed}\0{q}".encode()).digest()))


def ingest(config: IngestConfig) -> IngestResult:
    """Run the ingest step. Raises DataError (nothing written) when the data fails under ``fail``."""
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


def _ingest(config: IngestConfig) -> IngestResult:
    started = time.monotonic()
    sources = resolve_sources(config.inputs)
    log.info("ingest: %d object(s), %d bytes", len(sources), sum(s.size for s in sources))

    tally = _Tally(config.examples_per_rule)
    records: dict[str, TrainRecord] = {}
    raw_lines: dict[str, bytes] = {}
    suspects: set[str] = set()
    lines = blank = duplicates = 0
    for source, line_no, raw in progress(
        iter_lines(sources, workers=config.workers), "ingest", unit="lines", logger=log
    ):
        lines += 1
        record = parse_clean(raw)
        if record is None:
            if not raw.strip():
                blank += 1
                continue
            record, problems = parse_line(raw.rstrip(b"\r\n"), f"{source.uri}:{line_no}", min_negatives=0)
            if problems:
                tally.add(problems)
                continue
            assert record is not None
        # Most records' texts are all distinct, and one set says so; only the others (and merged
        # ones) can hold a repeated passage or a negative equal to a positive.
        distinct = len(record.pos) + len(record.neg) == len({*record.pos, *record.neg})
        changed = not distinct and _dedupe_within(record)
        query = record.query
        if query in records:
            duplicates += 1
            _merge(records[query], record)
            raw_lines.pop(query, None)
            suspects.add(query)
        else:
            records[query] = record
            if not distinct:
                suspects.add(query)
            # An untouched line is written back byte for byte (cheaper than re-serialising), unless
            # it escapes non-ASCII: outputs keep Chinese readable.
            if not changed and b"\\u" not in raw:
                raw_lines[query] = raw

    negatives_removed = 0
    for query in suspects:
        removed = _drop_negatives_equal_to_positives(records[query])
        if removed:
            negatives_removed += removed
            raw_lines.pop(query, None)
    if config.min_negatives:
        # Checked after merging: duplicates may together have enough negatives.
        for query, record in list(records.items()):
            if len(record.neg) < config.min_negatives:
                where = f"query {query[:60]!r}"
                tally.add([Problem(where, "too_few_negatives", "neg",
                                   f"{len(record.neg)} negatives, at least {config.min_negatives} required")])
                del records[query]

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
    report["lengths"] = _length_report(list(records.values()), config)

    failed = bool(tally.counts) and config.on_error == "fail"
    if failed or not records:
        report["status"] = "failed"
        first = next(iter(tally.examples.values()))[0] if tally.counts else None
        summary = (
            f"{tally.bad_lines} of {lines} lines failed validation "
            f"({', '.join(f'{r}={n}' for r, n in sorted(tally.counts.items()))}); first: {first}"
            if first
            else f"no usable records in {len(sources)} input object(s)"
        )
        raise IngestFailed(summary, report)

    report["status"] = "ok" if not tally.counts else "ok_with_skipped_lines"
    outputs = _write_outputs(config, train, held_out, raw_lines, report)
    report["seconds"] = round(time.monotonic() - started, 3)
    log.info(
        "ingest: %d records (%d train, %d eval) from %d lines; %d invalid, %d duplicates merged",
        len(records), len(train), len(held_out), lines, tally.bad_lines, duplicates,
    )
    return IngestResult(report, outputs)


class IngestFailed(DataError):
    """The data failed validation; ``report`` holds every problem found."""

    def __init__(self, summary: str, report: dict[str, Any]) -> None:
        super().__init__(summary)
        self.report = report


def _length_report(records: list[TrainRecord], config: IngestConfig) -> dict[str, Any]:
    count, method = token_counter(config.tokenizer)
    queries = [r.query for r in records]
    passages = [text for r in records for text in (*r.pos, *r.neg)]
    query_lengths: list[int] = []
    passage_lengths: list[int] = []
    for texts, out in ((queries, query_lengths), (passages, passage_lengths)):
        for start in range(0, len(texts), 4096):
            out.extend(count(texts[start : start + 4096]))

    return {
        "method": method,
        "query": {
            "max_len": config.query_max_len,
            "truncated_share": share_over(query_lengths, config.query_max_len),
            "histogram": histogram(query_lengths),
        },
        "passage": {
            "max_len": config.passage_max_len,
            "truncated_share": share_over(passage_lengths, config.passage_max_len),
            "histogram": histogram(passage_lengths),
        },
    }


def build_eval_set(
    held_out: list[TrainRecord], train: list[TrainRecord], distractors: int, seed: int
) -> tuple[list[CorpusRecord], list[EvalQuery]]:
    """Queries with their positives as qrels; corpus = their pos+neg plus sampled train passages."""
    corpus: dict[str, CorpusRecord] = {}

    def add(text: str) -> str:
        doc_id = text_id(text)
        corpus.setdefault(doc_id, CorpusRecord(doc_id, text))
        return doc_id

    queries = []
    for record in held_out:
        relevant = {add(text): 1 for text in record.pos}
        for text in record.neg:
            add(text)
        queries.append(EvalQuery(text_id(record.query, "q"), record.query, relevant, record.prompt))
    # The passages with the smallest seeded CRCs: a sample independent of input order that needs no
    # sort (nor shuffle) of every training passage.
    pool = {text for r in train for text in (*r.pos, *r.neg)}
    for text in heapq.nsmallest(distractors, pool, key=lambda t: (zlib.crc32(t.encode(), seed & 0xFFFFFFFF), t)):
        add(text)
    return sorted(corpus.values(), key=lambda c: c.id), queries


def _write_outputs(
    config: IngestConfig,
    train: list[TrainRecord],
    held_out: list[TrainRecord],
    raw_lines: dict[str, bytes],
    report: dict[str, Any],
) -> dict[str, str]:
    store = open_store(config.output)
    with tempfile.TemporaryDirectory(prefix="bgeflow-ingest-") as tmp:
        stage = Path(tmp)
        (stage / "eval").mkdir()
        with open(stage / TRAIN_FILE, "wb") as fh:
            for record in train:
                raw = raw_lines.get(record.query)
                if raw is None:
                    fh.write(record.to_json().encode("utf-8") + b"\n")
                elif raw.endswith(b"\n") and not raw.endswith(b"\r\n"):
                    fh.write(raw)
                else:  # a CRLF line, or the last line without a newline
                    fh.write(raw.rstrip(b"\r\n") + b"\n")
        corpus, queries = build_eval_set(held_out, train, config.eval_distractors, config.seed)
        write_jsonl(stage / EVAL_CORPUS_FILE, corpus)
        write_jsonl(stage / EVAL_QUERIES_FILE, queries)
        report["counts"]["eval_corpus"] = len(corpus)
        (stage / "report.md").write_text(render_markdown(report), encoding="utf-8")
        for key in (TRAIN_FILE, EVAL_CORPUS_FILE, EVAL_QUERIES_FILE, "report.md"):
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


def render_markdown(report: dict[str, Any]) -> str:
    counts = report["counts"]
    lines = ["# Ingest report", "", f"Status: **{report.get('status', '?')}**", "", "| count | value |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()]
    lines += ["", "## Inputs", ""] + [f"- `{i['uri']}` ({i['bytes']} bytes)" for i in report["inputs"]]
    lines += ["", "## Failures by rule", ""]
    if not report["failures"]:
        lines.append("None.")
    for rule, info in report["failures"].items():
        lines.append(f"### `{rule}` — {info['description']}: {info['count']}")
        lines += [f"- `{e['where']}` {e['field']}: {e['message']}" for e in info["examples"]]
        lines.append("")
    lengths = report["lengths"]
    lines += ["", f"## Lengths (tokens, {lengths['method']})", ""]
    for kind in ("query", "passage"):
        info = lengths[kind]
        lines.append(f"**{kind}**: {info['truncated_share']:.2%} over max_len {info['max_len']}")
        lines += ["", "| tokens | count |", "|---|---|"]
        lines += [f"| {bucket} | {n} |" for bucket, n in info["histogram"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"
