"""Ranking metrics against values computed by hand on a tiny fixed ranking."""

from __future__ import annotations

import pytest

from bgeflow.steps.evaluation.metrics import (
    compute_metrics,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    parse_metric,
    recall_at_k,
)

# log2(2) = 1, log2(3) = 1.5849625007, log2(4) = 2, log2(5) = 2.3219280949
TIGHT = 1e-9

# Query A: graded judgements, two relevant documents at ranks 2 and 4.
RANK_A = ["d2", "d1", "d4", "d3", "d5"]
QRELS_A = {"d1": 2, "d3": 1, "d4": 0}  # d4 is judged non-relevant (grade 0)
# Query B: its only relevant document was not retrieved at all.
RANK_B = ["d1", "d2"]
QRELS_B = {"d9": 1}
# Query C: three relevant documents, two of them retrieved (ranks 1 and 3).
RANK_C = ["e2", "x", "e1"]
QRELS_C = {"e1": 1, "e2": 1, "e3": 1}


def test_ndcg_linear_gains() -> None:
    # A: DCG@10 = 0/log2(2) + 2/log2(3) + 0/log2(4) + 1/log2(5) = 1.2618595 + 0.4306766 = 1.6925361
    #    IDCG@10 = 2/log2(2) + 1/log2(3) = 2 + 0.6309298 = 2.6309298   ->  0.6433224
    assert ndcg_at_k(RANK_A, QRELS_A, 10) == pytest.approx(0.6433224083306327, abs=TIGHT)
    # A@3: DCG = 1.2618595, IDCG@3 = 2.6309298 (only two relevant)  ->  0.4796249
    assert ndcg_at_k(RANK_A, QRELS_A, 3) == pytest.approx(0.4796249331362629, abs=TIGHT)
    # A@1: the first document is not relevant.
    assert ndcg_at_k(RANK_A, QRELS_A, 1) == 0.0
    # C: DCG = 1/1 + 0 + 1/2 = 1.5; IDCG = 1 + 0.6309298 + 0.5 = 2.1309298  ->  0.7039181
    assert ndcg_at_k(RANK_C, QRELS_C, 10) == pytest.approx(0.7039180890341347, abs=TIGHT)
    assert ndcg_at_k(RANK_B, QRELS_B, 10) == 0.0


def test_mrr() -> None:
    assert mrr_at_k(RANK_A, QRELS_A, 10) == 0.5  # first relevant at rank 2
    assert mrr_at_k(RANK_A, QRELS_A, 1) == 0.0  # ... which is outside the top 1
    assert mrr_at_k(RANK_C, QRELS_C, 10) == 1.0
    assert mrr_at_k(RANK_B, QRELS_B, 10) == 0.0


def test_recall() -> None:
    assert recall_at_k(RANK_A, QRELS_A, 1) == 0.0
    assert recall_at_k(RANK_A, QRELS_A, 2) == 0.5  # d1 of {d1, d3}; d4 (grade 0) does not count
    assert recall_at_k(RANK_A, QRELS_A, 10) == 1.0
    assert recall_at_k(RANK_C, QRELS_C, 10) == pytest.approx(2 / 3, abs=TIGHT)


def test_map_denominator_is_min_of_relevant_and_k() -> None:
    # A: hits at rank 2 (precision 1/2) and rank 4 (precision 2/4): (0.5 + 0.5) / min(2, 100) = 0.5
    assert map_at_k(RANK_A, QRELS_A, 100) == 0.5
    # C@100: hits at rank 1 (1/1) and rank 3 (2/3): (1 + 0.6666667) / min(3, 100) = 0.5555556
    assert map_at_k(RANK_C, QRELS_C, 100) == pytest.approx(5 / 9, abs=TIGHT)
    # C@2: hit at rank 1 only: 1 / min(3, 2) = 0.5 (trec_eval's map_cut would say 1/3)
    assert map_at_k(RANK_C, QRELS_C, 2) == 0.5
    # A perfect ranking scores 1 even with more relevant documents than k.
    assert map_at_k(["e1", "e2"], QRELS_C, 2) == 1.0


def test_compute_metrics_means_over_queries() -> None:
    rankings = {"A": RANK_A, "B": RANK_B, "C": RANK_C}
    qrels = {"A": QRELS_A, "B": QRELS_B, "C": QRELS_C}
    got = compute_metrics(rankings, qrels)
    assert list(got) == ["ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100"]
    # ndcg@10: (0.6433224 + 0 + 0.7039181) / 3 = 0.4490802
    assert got["ndcg@10"] == pytest.approx(0.44908016578825577, abs=TIGHT)
    # mrr@10: (1/2 + 0 + 1) / 3 = 0.5
    assert got["mrr@10"] == pytest.approx(0.5, abs=TIGHT)
    # recall@1: (0 + 0 + 1/3) / 3 = 0.1111111
    assert got["recall@1"] == pytest.approx(1 / 9, abs=TIGHT)
    # recall@10 = recall@100: (1 + 0 + 2/3) / 3 = 0.5555556
    assert got["recall@10"] == pytest.approx(5 / 9, abs=TIGHT)
    assert got["recall@100"] == pytest.approx(5 / 9, abs=TIGHT)
    # map@100: (0.5 + 0 + 5/9) / 3 = 0.3518519
    assert got["map@100"] == pytest.approx(0.35185185185185186, abs=TIGHT)


def test_query_without_ranking_counts_as_zero() -> None:
    got = compute_metrics({"A": RANK_A}, {"A": QRELS_A, "C": QRELS_C}, ["mrr@10"])
    assert got["mrr@10"] == 0.25  # (0.5 + 0) / 2


@pytest.mark.parametrize("bad", ["ndcg", "ndcg@0", "ndcg@x", "precision@10", "@10"])
def test_unknown_metric(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric(bad)


def test_no_queries() -> None:
    with pytest.raises(ValueError, match="no queries"):
        compute_metrics({}, {})
