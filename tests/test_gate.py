"""The quality gate: its grammar, its errors, and its verdicts."""

from __future__ import annotations

import pytest

from bgeflow.steps.evaluation.gate import check_gate, parse_gate, without_reranker

COLUMNS = {
    "base": {"ndcg@10": 0.40, "recall@100": 0.80, "rerank.ndcg@10": 0.50},
    "finetuned": {"ndcg@10": 0.42, "recall@100": 0.79, "rerank.ndcg@10": 0.55},
    "champion": {"ndcg@10": 0.43, "recall@100": 0.70},
}


def test_parse_full_grammar() -> None:
    rules = parse_gate("ndcg@10>=base+0.01; recall@100 >= champion - 0.005 , rerank.NDCG@10 > base,mrr@10<0.9;")
    assert [(r.metric, r.op, r.reference, r.offset) for r in rules] == [
        ("ndcg@10", ">=", "base", 0.01),
        ("recall@100", ">=", "champion", -0.005),
        ("rerank.ndcg@10", ">", "base", 0.0),
        ("mrr@10", "<", None, 0.9),
    ]
    assert rules[1].text == "recall@100 >= champion - 0.005"
    assert rules[2].is_rerank
    assert parse_gate("") == [] and parse_gate(None) == [] and parse_gate("  ") == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ndcg@10 => base", r"gate rule 1 \('ndcg@10 => base'\) at column 9 .*expected one of >= > <= <"),
        ("ndcg@10>=base; recall@100 >= basis", r"gate rule 2 .* at column 30 .*expected a number, 'base', 'champion' or 'retriever'"),
        ("ndcg>=0.3", r"gate rule 1 .* at column 1 .*expected a metric"),
        ("precision@10>=0.3", r"gate rule 1 .*unknown metric 'precision@10'"),
        ("ndcg@10>=0.3 mrr@10>=0.1", r"gate rule 1 .* at column 14 .*expected ',' or ';'"),
        ("ndcg@10>=base+", r"gate rule 1 .* at column 14 .*expected ',' or ';'"),
    ],
)
def test_parse_errors_name_rule_and_column(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_gate(text)


def test_verdicts_with_values_and_reasons() -> None:
    rules = parse_gate("ndcg@10>=base+0.01, recall@100>=base, ndcg@10>=champion, rerank.ndcg@10>=0.5")
    verdict = check_gate(rules, COLUMNS, "expr")
    assert verdict["expression"] == "expr"
    assert not verdict["passed"]
    by_rule = {r["rule"]: r for r in verdict["rules"]}
    ok = by_rule["ndcg@10>=base+0.01"]
    assert ok["passed"] and ok["value"] == 0.42 and ok["reference"] == pytest.approx(0.41)
    assert "base 0.4000" in ok["reason"]
    assert not by_rule["recall@100>=base"]["passed"]
    assert "is not >=" in by_rule["recall@100>=base"]["reason"]
    assert not by_rule["ndcg@10>=champion"]["passed"]  # 0.42 < 0.43
    assert by_rule["rerank.ndcg@10>=0.5"]["passed"]


def test_champion_rule_passes_without_champion() -> None:
    columns = {k: v for k, v in COLUMNS.items() if k != "champion"}
    verdict = check_gate(parse_gate("ndcg@10>=champion+0.5"), columns)
    assert verdict["passed"]
    assert "no champion" in verdict["rules"][0]["reason"]


def test_equality_is_not_lost_to_float_noise() -> None:
    columns = {"base": {"ndcg@10": 0.1 + 0.2}, "finetuned": {"ndcg@10": 0.3}}
    assert check_gate(parse_gate("ndcg@10>=base"), columns)["passed"]
    assert not check_gate(parse_gate("ndcg@10>base"), columns)["passed"]


def test_metric_not_computed_fails_with_reason() -> None:
    verdict = check_gate(parse_gate("map@5>=0.1"), COLUMNS)
    assert not verdict["passed"]
    assert "not computed" in verdict["rules"][0]["reason"]


def test_no_rules_pass() -> None:
    assert check_gate([], COLUMNS) == {"passed": True, "expression": "", "rules": [], "models": {
        "retriever": {"passed": True, "rules": []}, "reranker": {"passed": True, "rules": []}}}


def test_retriever_reference_compares_reranking_with_not_reranking() -> None:
    rules = parse_gate("ndcg@10>=base, rerank.ndcg@10>=retriever+0.0; rerank.mrr@10 > retriever - 0.01")
    assert [(r.metric, r.reference, r.offset, r.model) for r in rules] == [
        ("ndcg@10", "base", 0.0, "retriever"), ("rerank.ndcg@10", "retriever", 0.0, "reranker"),
        ("rerank.mrr@10", "retriever", -0.01, "reranker")]
    columns = {**COLUMNS, "retriever": {"rerank.ndcg@10": 0.60, "rerank.mrr@10": 0.50}}
    columns["finetuned"] = {**columns["finetuned"], "rerank.mrr@10": 0.495}
    verdict = check_gate(rules, columns, "expr")
    by_rule = {r["rule"]: r for r in verdict["rules"]}
    worse = by_rule["rerank.ndcg@10>=retriever+0.0"]
    assert not worse["passed"] and worse["model"] == "reranker" and worse["reference"] == pytest.approx(0.60)
    assert worse["reason"] == "rerank.ndcg@10 0.5500 is not >= retriever 0.6000"
    assert by_rule["rerank.mrr@10 > retriever - 0.01"]["passed"]  # 0.495 > 0.49
    # Each model answers to its own rules: the retriever passed, the reranker did not.
    assert verdict["models"] == {
        "retriever": {"passed": True, "rules": ["ndcg@10>=base"]},
        "reranker": {"passed": False, "rules": ["rerank.ndcg@10>=retriever+0.0", "rerank.mrr@10 > retriever - 0.01"]}}
    assert not verdict["passed"]


def test_retriever_reference_needs_a_rerank_metric_and_its_column() -> None:
    with pytest.raises(ValueError, match=r"'retriever' compares a reranker .*use it with rerank.ndcg@10"):
        parse_gate("ndcg@10>=retriever")
    verdict = check_gate(parse_gate("rerank.ndcg@10>=retriever"), COLUMNS)  # no "retriever" column
    assert not verdict["passed"] and "was not computed" in verdict["rules"][0]["reason"]


def test_without_reranker_keeps_the_retriever_rules() -> None:
    assert without_reranker("ndcg@10>=base+0.01, rerank.ndcg@10>=retriever; mrr@10>=0.2") == (
        "ndcg@10>=base+0.01, mrr@10>=0.2")
    assert without_reranker("rerank.ndcg@10>=retriever") == "" and without_reranker("") == ""


def test_each_model_reads_its_own_verdict() -> None:
    from bgeflow.steps.publish.verdict import model_verdict

    columns = {**COLUMNS, "retriever": {"rerank.ndcg@10": 0.60}}
    metrics = {"gate": check_gate(parse_gate("ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"), columns)}
    assert model_verdict(metrics, "retriever") == (True, [])
    assert model_verdict(metrics, "reranker") == (False, ["rerank.ndcg@10 0.5500 is not >= retriever 0.6000"])
    # A verdict without per-model parts (written before them) stands for both models.
    old = {"gate": {"passed": False, "rules": [{"rule": "ndcg@10>=0.9", "passed": False, "reason": "low"}]}}
    assert model_verdict(old, "retriever") == (False, ["low"]) == model_verdict(old, "reranker")
    assert model_verdict({}, "reranker") == (None, []) and model_verdict(None, "retriever") == (None, [])


def test_each_model_has_its_own_share_of_the_gate() -> None:
    """What the manifest, the card and ``models show`` record: the model's own rules, not the run's."""
    from bgeflow.steps.publish.verdict import own_gate

    columns = {**COLUMNS, "retriever": {"rerank.ndcg@10": 0.60}}
    metrics = {"gate": check_gate(parse_gate("ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"), columns)}
    retriever, reranker = own_gate(metrics, "retriever"), own_gate(metrics, "reranker")
    assert (retriever["passed"], retriever["expression"]) == (True, "ndcg@10>=base+0.01")
    assert (reranker["passed"], reranker["expression"]) == (False, "rerank.ndcg@10>=retriever")
    assert [r["rule"] for r in retriever["rules"]] == ["ndcg@10>=base+0.01"]
    old = {"gate": {"passed": False, "rules": [{"rule": "ndcg@10>=0.9", "passed": False, "reason": "low"}]}}
    assert own_gate(old, "reranker") == {"passed": False, "rules": old["gate"]["rules"], "expression": "ndcg@10>=0.9"}
    assert own_gate({"metrics": {}}, "retriever") is None and own_gate(None, "reranker") is None
