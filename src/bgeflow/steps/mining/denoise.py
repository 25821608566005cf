"""Denoising mined negatives with a cross-encoder teacher: drop the ones it judges as relevant as a positive.

The rank window and TopK-PercPos (``max_score_ratio``) judge candidates by the retriever that mined
them, which is the model that confuses a false negative with a true one. A cross-encoder reads the
query and the passage together and is the better judge (RocketQA's denoised hard negatives, Qu et
al. 2021, https://arxiv.org/abs/2010.08191, §4.2). With ``denoise_margin`` M, mining samples twice the
negatives it needs, the teacher scores every (query, text) pair, and a negative is dropped when its
score is at least the query's lowest positive score minus M; the first ``negative_number`` survivors
(in the sampled order) are kept, with the teacher's scores as ``pos_scores``/``neg_scores``.
"""

from __future__ import annotations

from bgeflow.data import TrainRecord


def keep_true_negatives(records: list[TrainRecord], scores: list[float], *, margin: float, number: int) -> int:
    """Filter each record's ``neg`` in place (teacher ``scores``: its pos then neg pairs, record by record);
    set ``pos_scores``/``neg_scores``; return how many negatives were dropped."""
    dropped = 0
    at = 0
    for record in records:
        pos = scores[at : at + len(record.pos)]
        at += len(record.pos)
        neg = scores[at : at + len(record.neg)]
        at += len(record.neg)
        line = min(pos) - margin
        kept = [(text, score) for text, score in zip(record.neg, neg, strict=True) if score < line]
        dropped += len(record.neg) - len(kept)
        kept = kept[:number]
        record.neg = [text for text, _ in kept]
        record.pos_scores = pos
        record.neg_scores = [score for _, score in kept]
    return dropped
