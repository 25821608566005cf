"""Hard-negative mining: ``bgeflow mine`` as a library function.

For every training record, search a candidate pool with the query and take negatives from a rank
window of the hits (see ``bgeflow.mining.select`` for the exact convention and the filters). It
replaces FlagEmbedding's ``hn_mine`` script and accepts its flags.

How it scales: the pool (the ``--candidate-pool`` corpus, or every pos/neg text of the input) is
deduplicated on disk, encoded in length-sorted batches into a memory-mapped file in chunks (a
rerun resumes from the finished chunks), and searched with an exact flat index when it fits
``--max-memory``, else with exact search shard by shard. Memory grows with the number of training
rows, not with the pool.

Outputs: the mined JSONL at ``output`` (every input field kept; ``neg`` replaced by the mined
negatives; ``pos_scores``/``neg_scores`` from a teacher reranker when one is given, else an input
``neg_scores`` is dropped because it scored other negatives), and ``mine_report.json`` beside it.

The work dir (pool texts and encodings) is kept when given explicitly, so a rerun with other
windows or filters skips encoding; the default one, under the system temp, is removed after a
successful run and kept after a failed one, so the rerun resumes.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import random
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bgeflow.data import DataError, TrainRecord, dumps, iter_json, read_train_records
from bgeflow.encoder import EmbeddingDtype, Pooling
from bgeflow.mining.pool import TextPool, text_hash
from bgeflow.mining.select import RULES, Filters, RankWindow, choose
from bgeflow.storage import open_store, staged_file

__all__ = ["REPORT_FILE", "MineConfig", "MineResult", "RankWindow", "mine", "parse_size"]

log = logging.getLogger(__name__)

REPORT_FILE = "mine_report.json"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(value: str | int | None) -> int | None:
    """``"512MB"``, ``"2GiB"``, ``"1.5g"`` or a plain byte count → bytes (None stays None)."""
    if value is None or isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"--max-memory must be a size like 512MB or 2GiB, got {value!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass
class MineConfig:
    """What ``bgeflow mine`` does; every field is a CLI flag of the same name."""

    model: str
    inputs: list[str]
    output: str
    range_for_sampling: str | tuple[int, int] | RankWindow = "2-200"
    negative_number: int = 15
    candidate_pool: list[str] | None = None
    use_gpu: bool = False
    query_instruction: str = ""
    pooling: Pooling = "cls"
    normalize: bool = True
    batch_size: int = 64
    query_max_len: int = 64
    passage_max_len: int = 256
    seed: int = 42
    max_score_ratio: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    teacher_reranker: str | None = None
    teacher_max_len: int = 512
    teacher_batch_size: int = 32
    max_memory: str | int | None = None
    work_dir: str | None = None
    embedding_dtype: EmbeddingDtype = "float32"
    chunk_size: int = 8192
    query_batch_size: int = 4096
    device: str | None = None
    window: RankWindow = field(init=False)
    max_memory_bytes: int | None = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if isinstance(self.candidate_pool, str):
            self.candidate_pool = [self.candidate_pool]
        if not self.model:
            raise ValueError("mine needs --model")
        if not self.inputs:
            raise ValueError("mine needs at least one --input")
        if not self.output or self.output.endswith("/"):
            raise ValueError(f"--output must name a file (…/mined.jsonl), got {self.output!r}")
        if not self.output.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"--output must end in .jsonl or .jsonl.gz, got {self.output!r}")
        self.window = RankWindow.parse(self.range_for_sampling)
        self.max_memory_bytes = parse_size(self.max_memory)
        if self.max_memory_bytes is not None and self.max_memory_bytes <= 0:
            raise ValueError("--max-memory must be positive")
        if self.negative_number < 1:
            raise ValueError(f"--negative-number must be >= 1 (FlagEmbedding needs a negative), got {self.negative_number}")
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"--pooling must be cls or mean, got {self.pooling!r}")
        if self.embedding_dtype not in ("float16", "float32"):
            raise ValueError(f"--embedding-dtype must be float16 or float32, got {self.embedding_dtype!r}")
        for name in ("batch_size", "query_max_len", "passage_max_len", "teacher_max_len", "teacher_batch_size",
                     "chunk_size", "query_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_score_ratio is not None and self.max_score_ratio <= 0:
            raise ValueError(f"--max-score-ratio must be positive, got {self.max_score_ratio}")
        if self.max_score is not None and self.min_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"--min-score ({self.min_score}) must be below --max-score ({self.max_score})")

    @property
    def filters(self) -> Filters:
        return Filters(self.max_score_ratio, self.max_score, self.min_score)

    @property
    def report_uri(self) -> str:
        parent, _ = _split_uri(self.output)
        return f"{parent.rstrip('/')}/{REPORT_FILE}" if parent else REPORT_FILE

    def default_work_dir(self) -> Path:
        """Keyed by model, pool and encoder settings, so a rerun of the same job finds its chunks."""
        key = json.dumps([self.model, self.candidate_pool or self.inputs, self.pooling, self.normalize,
                          self.passage_max_len, self.embedding_dtype])
        return Path(tempfile.gettempdir()) / "bgeflow-mine" / hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class MineResult:
    output: str
    report_uri: str
    report: dict[str, Any]
    records: int


def _split_uri(uri: str) -> tuple[str, str]:
    parent, sep, name = uri.rpartition("/")
    return (parent if sep else "."), name


def _input_texts(records: list[TrainRecord]) -> Any:
    for record in records:
        yield from record.pos
        yield from record.neg


def _pool_texts(uris: list[str]) -> Any:
    for where, obj in iter_json(uris):
        text = obj.get("text")
        if not isinstance(text, str):
            raise DataError(f"{where} [text]: a candidate pool line needs a string field 'text'")
        yield text


def _percentiles(values: list[float] | np.ndarray) -> dict[str, float] | None:
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return None
    p = np.percentile(arr, [5, 25, 50, 75, 95])
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 4),
            **{f"p{q}": round(float(v), 4) for q, v in zip((5, 25, 50, 75, 95), p, strict=True)}}


def mine(config: MineConfig) -> MineResult:
    """Mine hard negatives for ``config.inputs`` and write ``config.output`` plus its report."""
    from bgeflow.encoder import Encoder
    from bgeflow.search import check_gpu, gather_rows, search

    timings: dict[str, float] = {}
    clock = time.monotonic()
    if config.use_gpu:
        check_gpu()  # fail before any encoding when no GPU search is possible

    records = list(read_train_records(config.inputs))
    if not records:
        raise DataError(f"{', '.join(config.inputs)}: no training records")
    work_dir = Path(config.work_dir) if config.work_dir else config.default_work_dir()
    work_dir.mkdir(parents=True, exist_ok=True)
    if config.candidate_pool:
        pool = TextPool.build(_pool_texts(config.candidate_pool), work_dir / "pool_texts.jsonl")
    else:
        pool = TextPool.build(_input_texts(records), work_dir / "pool_texts.jsonl")
    if len(pool) == 0:
        raise DataError("the candidate pool has no non-empty text")
    timings["read_s"] = time.monotonic() - clock
    log.info("mine: %d records, pool of %d unique texts, work dir %s", len(records), len(pool), work_dir)

    from bgeflow.registry import fetch_model

    # An s3:// model (or registry reference) is downloaded into the work dir first: transformers
    # loads only hub names and local directories, and a pod without hub access has only S3.
    encoder = Encoder(
        fetch_model(config.model, work_dir / "models"), pooling=config.pooling, normalize=config.normalize,
        query_instruction=config.query_instruction, query_max_len=config.query_max_len,
        passage_max_len=config.passage_max_len, batch_size=config.batch_size, device=config.device,
    )
    clock = time.monotonic()
    encodings_path = work_dir / f"pool.{config.embedding_dtype}"
    passages = encoder.encode_passages_to_file(
        pool, encodings_path, chunk_size=config.chunk_size, dtype=config.embedding_dtype
    )
    timings["encode_pool_s"] = time.monotonic() - clock

    clock = time.monotonic()
    query_index: dict[str, int] = {}
    for record in records:
        query_index.setdefault(record.query, len(query_index))
    queries = encoder.encode_queries(list(query_index))
    timings["encode_queries_s"] = time.monotonic() - clock

    clock = time.monotonic()
    found = search(queries, passages, config.window.end, max_memory_bytes=config.max_memory_bytes,
                   use_gpu=config.use_gpu, query_batch_size=config.query_batch_size)
    timings["search_s"] = time.monotonic() - clock

    clock = time.monotonic()
    positive_scores = _positive_scores(records, query_index, queries, pool, passages, encoder, config, gather_rows)
    removed: Counter[str] = Counter()
    neg_scores_all: list[float] = []
    short_rows = still_short = filled_total = 0
    for i, record in enumerate(records):
        q = query_index[record.query]
        excluded = pool.index_of(np.array([text_hash(t) for t in (*record.pos, record.query)], dtype=np.int64))
        pos_scores = positive_scores[i]
        choice = choose(
            found.ids[q], found.scores[q], window=config.window, excluded=excluded[excluded >= 0],
            reference_score=min(pos_scores) if pos_scores else None, filters=config.filters,
            number=config.negative_number, pool_size=len(pool), rng=random.Random(f"{config.seed}:{i}"),
        )
        removed.update(choice.removed)
        neg_scores_all.extend(choice.scores)
        filled_total += choice.filled
        short_rows += choice.filled > 0 or len(choice.ids) < config.negative_number
        still_short += len(choice.ids) < config.negative_number
        record.neg = [pool[j] for j in choice.ids]
        record.neg_scores = None  # the input's neg_scores described other negatives
    timings["select_s"] = time.monotonic() - clock

    if config.teacher_reranker:
        clock = time.monotonic()
        _teacher_scores(records, config, work_dir / "models")
        timings["teacher_s"] = time.monotonic() - clock

    clock = time.monotonic()
    negatives = [len(r.neg) for r in records]
    report: dict[str, Any] = {
        "status": "ok",
        "rows": len(records),
        "unique_queries": len(query_index),
        "pool_size": len(pool),
        "pool_source": config.candidate_pool or "input pos+neg texts",
        "range_for_sampling": {"start": config.window.start, "end": config.window.end,
                               "convention": "0-based search ranks, start <= rank < end (hits[start:end])"},
        "negative_number": config.negative_number,
        "negatives_per_row": {"mean": round(float(np.mean(negatives)), 3), "min": int(min(negatives)),
                              "max": int(max(negatives))},
        "rows_short_of_negatives": short_rows,
        "rows_still_short_after_fill": still_short,
        "random_fill_negatives": filled_total,
        "filters": {"max_score_ratio": config.max_score_ratio, "max_score": config.max_score,
                    "min_score": config.min_score},
        "filtered": {rule: int(removed[rule]) for rule in RULES},
        "scores": {"positive": _percentiles([s for scores in positive_scores for s in scores]),
                   "mined_negative": _percentiles(neg_scores_all)},
        "search": {"method": found.method, "recall_estimate": found.recall_estimate, "k": config.window.end,
                   "max_memory_bytes": config.max_memory_bytes},
        "encoding": {"model": config.model, "pooling": config.pooling, "normalize": config.normalize,
                     "dim": encoder.dim, "dtype": config.embedding_dtype, "chunk_size": config.chunk_size,
                     "device": encoder.device, "work_dir": str(work_dir)},
        "teacher_reranker": config.teacher_reranker,
        "seed": config.seed,
        "inputs": config.inputs,
        "output": config.output,
        "timings": timings,
    }
    _write_output(records, config.output)
    timings["write_s"] = time.monotonic() - clock
    parent, _ = _split_uri(config.report_uri)
    open_store(parent).write_text(REPORT_FILE, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    pool.close()
    if not config.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    _log_summary(report)
    return MineResult(config.output, config.report_uri, report, len(records))


def _positive_scores(
    records: list[TrainRecord], query_index: dict[str, int], queries: np.ndarray, pool: TextPool,
    passages: np.ndarray, encoder: Any, config: MineConfig, gather_rows: Any,
) -> list[list[float]]:
    """Query–positive scores per record, from the pool's vectors where the positive is in the pool."""
    owners: list[tuple[int, int]] = []  # (record, position in pos)
    hashes: list[int] = []
    for i, record in enumerate(records):
        for j, text in enumerate(record.pos):
            owners.append((i, j))
            hashes.append(text_hash(text))
    where = pool.index_of(np.asarray(hashes, dtype=np.int64))
    vectors = np.empty((len(hashes), queries.shape[1]), dtype=np.float32)
    in_pool = where >= 0
    vectors[in_pool] = gather_rows(passages, where[in_pool], max_memory_bytes=config.max_memory_bytes)
    missing = np.flatnonzero(~in_pool)
    if len(missing):
        vectors[missing] = encoder.encode_passages([records[owners[m][0]].pos[owners[m][1]] for m in missing])
    out: list[list[float]] = [[] for _ in records]
    query_rows = np.array([query_index[records[i].query] for i, _ in owners], dtype=np.int64)
    scores = np.einsum("ij,ij->i", vectors, queries[query_rows])
    for (i, _), score in zip(owners, scores.tolist(), strict=True):
        out[i].append(score)
    return out


def _teacher_scores(records: list[TrainRecord], config: MineConfig, models_dir: Path) -> None:
    from bgeflow.encoder import CrossEncoderScorer
    from bgeflow.registry import fetch_model

    scorer = CrossEncoderScorer(fetch_model(config.teacher_reranker or "", models_dir), max_len=config.teacher_max_len,
                                batch_size=config.teacher_batch_size, device=config.device)
    pairs = [(r.query, text) for r in records for text in (*r.pos, *r.neg)]
    scores = scorer.score(pairs).tolist()
    at = 0
    for record in records:
        record.pos_scores = scores[at : at + len(record.pos)]
        at += len(record.pos)
        record.neg_scores = scores[at : at + len(record.neg)]
        at += len(record.neg)


def _write_output(records: list[TrainRecord], output: str) -> None:
    parent, name = _split_uri(output)
    with staged_file(suffix=".jsonl") as tmp:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(tmp, "wt", encoding="utf-8") as fh:
            for record in records:
                fh.write(dumps(record.to_dict()))
                fh.write("\n")
        open_store(parent).put_file(tmp, name)


def _log_summary(report: dict[str, Any]) -> None:
    scores = report["scores"]
    pos, neg = scores["positive"] or {}, scores["mined_negative"] or {}
    log.info(
        "mine: %d rows, pool %d, %.1f negatives/row (%d rows short, %d still short), filtered %s, "
        "median score pos %.3f vs mined neg %s, search %s",
        report["rows"], report["pool_size"], report["negatives_per_row"]["mean"], report["rows_short_of_negatives"],
        report["rows_still_short_after_fill"], report["filtered"], pos.get("p50", float("nan")),
        f"{neg['p50']:.3f}" if neg else "n/a", report["search"]["method"],
    )
