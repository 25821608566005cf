"""The train/eval split and the held-out eval set (queries, qrels and a corpus with distractors)."""

from __future__ import annotations

import hashlib
import heapq
import zlib

from bgeflow.data import CorpusRecord, EvalQuery, TrainRecord, text_id


def held_out_count(records: int, fraction: float) -> int:
    """How many of ``records`` distinct queries ``split_eval`` holds out (never all of them).

    ``records - held_out_count(records, f)`` never decreases as ``records`` grows: from an upper
    bound on the records, it gives an upper bound on the training split.
    """
    if fraction <= 0 or records < 2:
        return 0
    return min(records - 1, max(1, round(records * fraction)))


def split_eval(queries: list[str], fraction: float, seed: int) -> set[str]:
    """The held-out queries: the ``round(n × fraction)`` smallest seeded hashes (at least one).

    Hash order makes the split independent of input order and stable as data is added.
    """
    k = held_out_count(len(queries), fraction)
    if not k:
        return set()
    return set(heapq.nsmallest(k, queries, key=lambda q: hashlib.sha256(f"{seed}\0{q}".encode()).digest()))


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
    for text in heapq.nsmallest(distractors, pool, key=lambda t: (_crc(t, seed & 0xFFFFFFFF), t)):
        add(text)
    return sorted(corpus.values(), key=lambda c: c.id), queries


_CRC_SLICE = 1 << 20


def _crc(text: str, seed: int) -> int:
    """``zlib.crc32(text.encode(), seed)``, a slice at a time for a long text (no copy of all of it)."""
    if len(text) <= _CRC_SLICE:
        return zlib.crc32(text.encode(), seed)
    for start in range(0, len(text), _CRC_SLICE):
        seed = zlib.crc32(text[start : start + _CRC_SLICE].encode(), seed)
    return seed
