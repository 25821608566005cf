"""``mine(MineSpec) -> MineResult``: read, encode the pool, search, choose, write (see the package docstring)."""

from __future__ import annotations

import gzip
import json
import logging
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bgeflow.core.errors import ConfigError
from bgeflow.core.storage import canonical_uri, open_store, resolve_sources, staged_file
from bgeflow.data import (
    DataError,
    TrainRecord,
    dumps,
    iter_json,
    positives_by_query,
    query_prompt,
    read_train_records,
)
from bgeflow.steps.mining.histogram import ScoreHistograms
from bgeflow.steps.mining.pool import TextPool, text_hash
from bgeflow.steps.mining.select import RULES, choose
from bgeflow.steps.mining.spec import MineSpec

log = logging.getLogger(__name__)

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


def mine(config: MineSpec) -> MineResult:
    """Mine hard negatives for ``config.inputs`` and write ``config.output`` plus its report.

    Raises:
        ConfigError: ``config.output`` is one of the files mining reads (``check_output_is_not_an_input``).
        DataError: an input line or candidate-pool line a later step could not use, naming ``uri:line``.
    """
    check_output_is_not_an_input(config)
    work_dir = Path(config.work_dir) if config.work_dir else config.default_work_dir()
    try:
        return _mine(config, work_dir)
    except BaseException:
        # The default work dir is kept after a failure only for what a rerun resumes: the pool's
        # encoded chunks (``encode_passages_to_file``). A run that failed before encoding any (a model
        # that does not load, a bad pool) leaves nothing a rerun could use, so nothing at all.
        if not config.work_dir and not _encoded_chunks(work_dir, config):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def check_output_is_not_an_input(config: MineSpec) -> None:
    """Refuse an output that is one of the files mining reads, before any work.

    The output is written over whatever is there: given one of the ``--input`` files (or a file of the
    ``--candidate-pool``), mining would replace the data it was given without a word. Compared as
    ``canonical_uri`` spells them, so ``./d/x.jsonl`` and ``d/x.jsonl`` (or a link to it) are one file,
    and with every file a prefix holds, so ``--input d --output d/mined.jsonl`` over an earlier run's
    ``d/mined.jsonl`` is refused too.

    Raises:
        ConfigError: naming the output, the flag and the input file it would overwrite.
        NotFoundError: an input that does not exist (as reading it would).
    """
    target = canonical_uri(config.output)
    for flag, uris in (("--input", config.inputs), ("--candidate-pool", config.candidate_pool or [])):
        for source in resolve_sources(uris):
            if canonical_uri(source.uri) == target:
                raise ConfigError(f"--output {config.output} is the {flag} file {source.uri}: mining would "
                                  "overwrite the data it reads; give --output another file")


def _encoded_chunks(work_dir: Path, config: MineSpec) -> int:
    """How many chunks of the pool's encoding a rerun of this job would find done in ``work_dir``."""
    from bgeflow.retrieval.encoder import MANIFEST_SUFFIX

    manifest = work_dir / f"pool.{config.embedding_dtype}{MANIFEST_SUFFIX}"
    try:
        done = json.loads(manifest.read_text(encoding="utf-8")).get("done", [])
    except (OSError, ValueError, AttributeError):
        return 0
    return len(done) if isinstance(done, list) else 0


def _mine(config: MineSpec, work_dir: Path) -> MineResult:
    from bgeflow.retrieval.encoder import Encoder
    from bgeflow.retrieval.search import check_gpu, gather_rows, search

    timings: dict[str, float] = {}
    clock = time.monotonic()
    if config.use_gpu:
        check_gpu()  # fail before any encoding when no GPU search is possible
    if config.teacher.model:
        _check_teacher(config)  # a teacher that cannot score fails now, not after the whole encode

    records = list(read_train_records(config.inputs))
    if not records:
        raise DataError(f"{', '.join(config.inputs)}: no training records")
    work_dir.mkdir(parents=True, exist_ok=True)
    if config.candidate_pool:
        pool = TextPool.build(_pool_texts(config.candidate_pool), work_dir / "pool_texts.jsonl")
    else:
        pool = TextPool.build(_input_texts(records), work_dir / "pool_texts.jsonl")
    if len(pool) == 0:
        raise DataError("the candidate pool has no non-empty text")
    timings["read_s"] = time.monotonic() - clock
    log.info("mine: %d records, pool of %d unique texts, work dir %s", len(records), len(pool), work_dir)

    encoder = Encoder(config.model, config.encoding)
    clock = time.monotonic()
    encodings_path = work_dir / f"pool.{config.embedding_dtype}"
    passages = encoder.encode_passages_to_file(
        pool, encodings_path, chunk_size=config.chunk_size, dtype=config.embedding_dtype
    )
    timings["encode_pool_s"] = time.monotonic() - clock

    clock = time.monotonic()
    # A query is encoded with its own prompt, else the instruction (the rule train and evaluate apply).
    query_index: dict[tuple[str, str], int] = {}
    for record in records:
        query_index.setdefault(_query_key(record, encoder), len(query_index))
    queries = encoder.encode_queries([q for q, _ in query_index], prompts=[p for _, p in query_index])
    timings["encode_queries_s"] = time.monotonic() - clock

    clock = time.monotonic()
    found = search(queries, passages, config.window.end, max_memory_bytes=config.max_memory_bytes,
                   use_gpu=config.use_gpu, query_batch_size=config.query_batch_size)
    timings["search_s"] = time.monotonic() - clock

    clock = time.monotonic()
    positive_scores = _positive_scores(records, query_index, queries, pool, passages, encoder, config, gather_rows)
    removed: Counter[str] = Counter()
    histograms = ScoreHistograms.over(found.scores[found.ids >= 0], [s for scores in positive_scores for s in scores])
    neg_scores_all: list[float] = []
    short_rows = still_short = filled_total = 0
    # The query's positives on every line it appears on, never only this line's.
    positives = positives_by_query(records)
    for i, record in enumerate(records):
        q = query_index[_query_key(record, encoder)]
        excluded = pool.index_of(np.array([text_hash(t) for t in (*positives[record.query], record.query)],
                                          dtype=np.int64))
        pos_scores = positive_scores[i]
        choice = choose(
            found.ids[q], found.scores[q], window=config.window, excluded=excluded[excluded >= 0],
            reference_score=min(pos_scores) if pos_scores else None, filters=config.filters,
            number=config.negative_number * (2 if config.denoise_margin is not None else 1),  # the teacher drops some
            pool_size=len(pool), rng=random.Random(f"{config.seed}:{i}"),
        )
        removed.update(choice.removed)
        for rule, scores in choice.removed_scores.items():
            histograms.add(rule, scores)
        neg_scores_all.extend(choice.scores)
        filled_total += choice.filled
        short_rows += choice.filled > 0 or len(choice.ids) < config.negative_number
        still_short += len(choice.ids) < config.negative_number
        record.neg = [pool[j] for j in choice.ids]
        record.neg_scores = None  # the input's neg_scores described other negatives
    timings["select_s"] = time.monotonic() - clock

    denoised = None
    if config.teacher.model:
        clock = time.monotonic()
        denoised = _teacher_scores(records, config)
        timings["teacher_s"] = time.monotonic() - clock

    clock = time.monotonic()
    histograms.add("positive", [s for scores in positive_scores for s in scores])
    histograms.add("mined_negative", neg_scores_all)
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
        "histograms": histograms.to_dict(),
        "search": {"method": found.method, "recall_estimate": found.recall_estimate, "k": config.window.end,
                   "max_memory_bytes": config.max_memory_bytes},
        "encoding": {"model": config.model, "pooling": encoder.pooling, "normalize": encoder.normalize,
                     "dim": encoder.dim, "dtype": config.embedding_dtype, "chunk_size": config.chunk_size,
                     **encoder.describe(), "work_dir": str(work_dir)},
        "teacher_reranker": config.teacher.model,
        "denoise": None if denoised is None else {"margin": config.denoise_margin, "dropped": denoised},
        "seed": config.seed,
        "inputs": config.inputs,
        "output": config.output,
        "timings": timings,
    }
    # The report is the output's completion marker: removed before the new output lands, written
    # after it. Killed in between, no report vouches for a half-written or mismatched output.
    # Report and plot are named after the output (``MineSpec.report_uri``): another output in the same
    # folder has its own, and never replaces this one's.
    parent, report_name = _split_uri(config.report_uri)
    _, plot_name = _split_uri(config.plot_uri)
    open_store(parent).delete(report_name)
    _write_output(records, config.output)
    with staged_file(suffix=".png") as plot:
        histograms.plot(plot, f"Search scores of {len(records)} rows: positives vs mined negatives")
        open_store(parent).put_file(plot, plot_name)
    timings["write_s"] = time.monotonic() - clock
    open_store(parent).write_text(report_name, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    pool.close()
    if not config.work_dir:
        shutil.rmtree(work_dir, ignore_errors=True)
    _log_summary(report)
    return MineResult(config.output, config.report_uri, report, len(records))


def _query_key(record: TrainRecord, encoder: Any) -> tuple[str, str]:
    """A query as it is encoded: its text and the prompt it gets (``bgeflow.data.query_prompt``)."""
    return record.query, query_prompt(record.prompt, encoder.query_instruction)


def _check_teacher(config: MineSpec) -> None:
    """The teacher's head and pair budget, checked by the functions every reranker loader uses."""
    from bgeflow.core.models import check_token_limits, resolve_model
    from bgeflow.retrieval.encoder import require_trained_head

    name = config.teacher.model or ""
    path = resolve_model(name)
    require_trained_head(path, name)
    check_token_limits(path, {"teacher max_len": config.teacher.max_len}, model=name, where="mine")


def _positive_scores(
    records: list[TrainRecord], query_index: dict[tuple[str, str], int], queries: np.ndarray, pool: TextPool,
    passages: np.ndarray, encoder: Any, config: MineSpec, gather_rows: Any,
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
    query_rows = np.array([query_index[_query_key(records[i], encoder)] for i, _ in owners], dtype=np.int64)
    scores = np.einsum("ij,ij->i", vectors, queries[query_rows])
    for (i, _), score in zip(owners, scores.tolist(), strict=True):
        out[i].append(score)
    return out


def _teacher_scores(records: list[TrainRecord], config: MineSpec) -> int | None:
    """Teacher scores into ``pos_scores``/``neg_scores``; with ``denoise_margin``, the negatives it judges
    relevant dropped first (returns how many; None without denoising)."""
    from bgeflow.retrieval.encoder import CrossEncoderScorer
    from bgeflow.steps.mining.denoise import keep_true_negatives

    scorer = CrossEncoderScorer(config.teacher.model or "", config.teacher, device=config.encoding.device,
                                precision=config.encoding.precision)
    pairs = [(r.query, text) for r in records for text in (*r.pos, *r.neg)]
    scores = scorer.score(pairs).tolist()
    if config.denoise_margin is not None:
        return keep_true_negatives(records, scores, margin=config.denoise_margin, number=config.negative_number)
    at = 0
    for record in records:
        record.pos_scores = scores[at : at + len(record.pos)]
        at += len(record.pos)
        record.neg_scores = scores[at : at + len(record.neg)]
        at += len(record.neg)
    return None


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
        "median score pos %.3f vs mined neg %s, search %s, encoder %s on %s",
        report["rows"], report["pool_size"], report["negatives_per_row"]["mean"], report["rows_short_of_negatives"],
        report["rows_still_short_after_fill"], report["filtered"], pos.get("p50", float("nan")),
        f"{neg['p50']:.3f}" if neg else "n/a", report["search"]["method"], report["encoding"]["precision"],
        report["encoding"]["device"],
    )
