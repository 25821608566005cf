"""Ranking metrics, defined precisely so that numbers are comparable between runs.

For one query with graded judgements ``rel(d) >= 0`` (a document counts as *relevant* when its
grade is > 0; documents without a judgement have grade 0) and a ranked list ``d_1, d_2, ...``
(rank ``i`` starts at 1):

- ``ndcg@k`` = DCG@k / IDCG@k with **linear gains**: DCG@k = Σ_{i<=k} rel(d_i) / log2(i + 1);
  IDCG@k is the same sum over the judged grades sorted high to low. Linear gains are what
  trec_eval, pytrec_eval, BEIR and MTEB report, so the numbers line up with published ones.
- ``mrr@k``: 1 / (rank of the first relevant document) when it is within the top k, else 0.
- ``recall@k`` = |relevant ∩ top k| / |relevant|.
- ``map@k``: average precision cut at k, Σ_{i<=k, d_i relevant} precision@i divided by
  **min(|relevant|, k)**, so that a perfect ranking scores 1.0 even with more than k relevant
  documents (trec_eval's ``map_cut`` divides by |relevant| instead; the two agree whenever
  |relevant| <= k).

Each reported value is the mean over queries. Queries without any relevant document have no
defined value and are rejected by the eval-set reader, not silently averaged in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bgeflow.core.errors import ConfigError

#: The metrics every retriever (and reranker) evaluation reports, in table order.
DEFAULT_METRICS: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")
METRIC_NAMES = ("ndcg", "mrr", "recall", "map")


def parse_metric(metric: str) -> tuple[str, int]:
    """``"ndcg@10"`` → ``("ndcg", 10)``; ValueError for anything else."""
    name, sep, cutoff = metric.partition("@")
    if not sep or name not in METRIC_NAMES or not cutoff.isdigit() or int(cutoff) <= 0:
        raise ConfigError(f"unknown metric {metric!r}: expected NAME@K with NAME one of {', '.join(METRIC_NAMES)}")
    return name, int(cutoff)


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    dcg = sum(grades.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    for i, doc in enumerate(ranked[:k]):
        if grades.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    relevant = {doc for doc, g in grades.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def map_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int) -> float:
    n_relevant = sum(1 for g in grades.values() if g > 0)
    if not n_relevant:
        return 0.0
    hits = 0
    precision_sum = 0.0
    for i, doc in enumerate(ranked[:k]):
        if grades.get(doc, 0) > 0:
            hits += 1
            precision_sum += hits / (i + 1)
    return precision_sum / min(n_relevant, k)


_FUNCTIONS = {"ndcg": ndcg_at_k, "mrr": mrr_at_k, "recall": recall_at_k, "map": map_at_k}


def query_metric(metric: str, ranked: Sequence[str], grades: Mapping[str, int]) -> float:
    name, k = parse_metric(metric)
    return _FUNCTIONS[name](ranked, grades, k)


def compute_metrics(
    rankings: Mapping[str, Sequence[str]],
    qrels: Mapping[str, Mapping[str, int]],
    metrics: Sequence[str] = DEFAULT_METRICS,
) -> dict[str, float]:
    """Mean of each metric over the queries of ``qrels``; a query missing from ``rankings`` ranks nothing."""
    for metric in metrics:
        parse_metric(metric)
    if not qrels:
        raise ConfigError("no queries to evaluate")
    totals = dict.fromkeys(metrics, 0.0)
    for query_id, grades in qrels.items():
        ranked = rankings.get(query_id, ())
        for metric in metrics:
            totals[metric] += query_metric(metric, ranked, grades)
    return {metric: totals[metric] / len(qrels) for metric in metrics}
