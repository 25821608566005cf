"""The quality gate: rules that the fine-tuned model's metrics must meet.

Grammar: ``GRAMMAR`` below (whitespace anywhere between tokens is ignored), written there once so
that ``bgeflow evaluate --help`` prints the very rules ``parse_gate`` reads.

Examples: ``ndcg@10>=base+0.01``, ``recall@100 >= champion-0.005; rerank.ndcg@10 > base``,
``mrr@10 >= 0.3``, ``rerank.ndcg@10 >= retriever``.

The left side is always the fine-tuned model's value (``rerank.`` metrics: the fine-tuned
reranker's, on the fine-tuned retriever's candidates). ``base`` is the base model's value of the
same metric, ``champion`` the currently published champion's. ``retriever`` (``rerank.`` metrics
only) is the fine-tuned retriever's own order of the very candidates the reranker reorders: the
same queries, the same top ``rerank_top_k``, no reranking; ``rerank.ndcg@10 >= retriever`` says
"reranking must not make the ranking worse". A rule against ``champion`` passes when no champion
exists, and its reason says so. Comparisons allow 1e-9 of floating-point slack.

Each rule belongs to one model: ``rerank.`` rules to the reranker, the others to the retriever,
and each model is published only when its own rules pass. The verdict is ``{"passed",
"expression", "rules": [{"rule", "model", "passed", "value", "reference", "reason"}], "models":
{"retriever": {"passed", "rules"}, "reranker": {"passed", "rules"}}}``; ``passed`` is true when
every rule passes (and when there are no rules), a model's when each of its rules does.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import ConfigError
from bgeflow.steps.evaluation.metrics import parse_metric

#: The gate's grammar, as ``bgeflow evaluate --help`` shows it (``parse_gate`` implements it).
GRAMMAR = """\
gate      := rule ( ("," | ";") rule )*
rule      := METRIC OP REFERENCE
METRIC    := ["rerank."] NAME "@" K        NAME: ndcg | mrr | recall | map;  K: a positive integer
OP        := ">=" | ">" | "<=" | "<"
REFERENCE := NUMBER | ("base" | "champion" | "retriever") [ ("+" | "-") NUMBER ]"""
RERANK_PREFIX = "rerank."
REFERENCES = ("base", "champion", "retriever")
#: The column holding the fine-tuned retriever's own order of the reranked candidates (``rerank.`` names).
RETRIEVER_REFERENCE = "retriever"
CANDIDATE = "finetuned"
MODELS = ("retriever", "reranker")
_EPSILON = 1e-9
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b - _EPSILON,
    ">": lambda a, b: a > b + _EPSILON,
    "<=": lambda a, b: a <= b + _EPSILON,
    "<": lambda a, b: a < b - _EPSILON,
}
_TOKENS = {
    "metric": re.compile(r"\s*((?:rerank\.)?[a-z_]+@\d+)", re.IGNORECASE),
    "op": re.compile(r"\s*(>=|<=|>|<)"),
    "number": re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)", re.IGNORECASE),
    "name": re.compile(r"\s*(base|champion|retriever)\b", re.IGNORECASE),
    "offset": re.compile(r"\s*([+-])\s*((?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)", re.IGNORECASE),
    "separator": re.compile(r"\s*([,;])"),
    "end": re.compile(r"\s*$"),
}


@dataclass(frozen=True)
class GateRule:
    text: str
    metric: str
    op: str
    reference: str | None  # "base", "champion", or None for a plain number
    offset: float

    @property
    def is_rerank(self) -> bool:
        return self.metric.startswith(RERANK_PREFIX)

    @property
    def model(self) -> str:
        """The model this rule judges: ``reranker`` for ``rerank.`` metrics, else ``retriever``."""
        return "reranker" if self.is_rerank else "retriever"

    def check(self, columns: Mapping[str, Mapping[str, float] | None]) -> dict[str, Any]:
        """This rule's verdict on ``columns`` (``base``/``finetuned``/``champion`` → metric → value)."""
        candidate = (columns.get(CANDIDATE) or {}).get(self.metric)
        out: dict[str, Any] = {"rule": self.text, "model": self.model, "passed": False, "value": candidate,
                               "reference": None}
        if candidate is None:
            out["reason"] = f"{self.metric} was not computed for the fine-tuned model"
            return out
        if self.reference is None:
            reference = self.offset
            described = f"{reference:g}"
        else:
            column = columns.get(self.reference)
            if column is None:
                if self.reference == "champion":
                    out.update(passed=True, reason="no champion is published; rule not applied")
                elif self.reference == RETRIEVER_REFERENCE:
                    out["reason"] = "the retriever's own ranking of the reranked candidates was not computed"
                else:
                    out["reason"] = "no base model was evaluated"
                return out
            base_value = column.get(self.metric)
            if base_value is None:
                out["reason"] = f"{self.metric} was not computed for {self.reference}"
                return out
            reference = base_value + self.offset
            described = f"{self.reference} {base_value:.4f}" + (f" {self.offset:+g} = {reference:.4f}" if self.offset else "")
        passed = _OPS[self.op](candidate, reference)
        out.update(
            passed=passed,
            reference=reference,
            reason=f"{self.metric} {candidate:.4f} {self.op if passed else 'is not ' + self.op} {described}",
        )
        return out


def _expect(kind: str, text: str, pos: int, index: int, rule_start: int, what: str) -> re.Match[str]:
    match = _TOKENS[kind].match(text, pos)
    if match is None:
        column = len(text) - len(text[pos:].lstrip()) + 1  # point at the offending token, not a space
        raise ConfigError(f"gate rule {index} ({_rule_text(text, rule_start)!r}) at column {column} of {text!r}: "
                         f"expected {what}")
    return match


def _rule_text(text: str, start: int) -> str:
    return re.split(r"[,;]", text[start:], maxsplit=1)[0].strip()


def parse_gate(text: str | None) -> list[GateRule]:
    """The rules of a gate expression; ValueError naming the rule and column on a syntax error."""
    rules: list[GateRule] = []
    if not text or not text.strip():
        return rules
    pos = 0
    while True:
        if _TOKENS["end"].match(text, pos):
            break
        index = len(rules) + 1
        start = pos
        metric_match = _expect("metric", text, pos, index, start, "a metric such as ndcg@10 or rerank.mrr@10")
        metric = metric_match.group(1).lower()
        try:
            parse_metric(metric.removeprefix(RERANK_PREFIX))
        except ValueError as exc:
            raise ConfigError(f"gate rule {index} ({_rule_text(text, start)!r}) at column "
                             f"{metric_match.start(1) + 1} of {text!r}: {exc}") from None
        pos = metric_match.end()
        op = _expect("op", text, pos, index, start, "one of >= > <= <").group(1)
        pos = _TOKENS["op"].match(text, pos).end()  # type: ignore[union-attr]
        reference: str | None
        name_match = _TOKENS["name"].match(text, pos)
        if name_match:
            reference = name_match.group(1).lower()
            pos = name_match.end()
            offset = 0.0
            offset_match = _TOKENS["offset"].match(text, pos)
            if offset_match:
                offset = float(offset_match.group(2)) * (-1 if offset_match.group(1) == "-" else 1)
                pos = offset_match.end()
        else:
            number_match = _expect("number", text, pos, index, start, "a number, 'base', 'champion' or 'retriever'")
            reference = None
            offset = float(number_match.group(1))
            pos = number_match.end()
        if reference == RETRIEVER_REFERENCE and not metric.startswith(RERANK_PREFIX):
            raise ConfigError(f"gate rule {index} ({_rule_text(text, start)!r}) of {text!r}: 'retriever' compares a "
                              f"reranker with the retriever's own ranking: use it with rerank.{metric}")
        rules.append(GateRule(text[start:pos].strip(), metric, op, reference, offset))
        if _TOKENS["end"].match(text, pos):
            break
        pos = _expect("separator", text, pos, index, start, "',' or ';' between rules, or the end").end()
    return rules


def check_gate(rules: list[GateRule], columns: Mapping[str, Mapping[str, float] | None], expression: str = "") -> dict[str, Any]:
    """The verdict of every rule on ``columns``; passed when all pass, each model when its own rules do."""
    verdicts = [rule.check(columns) for rule in rules]
    models = {model: {"passed": all(v["passed"] for v in verdicts if v["model"] == model),
                      "rules": [v["rule"] for v in verdicts if v["model"] == model]} for model in MODELS}
    return {"passed": all(v["passed"] for v in verdicts), "expression": expression, "rules": verdicts,
            "models": models}


def without_reranker(expression: str) -> str:
    """``expression`` less its ``rerank.`` rules: the gate of a run that evaluates no reranker."""
    return ", ".join(rule.text for rule in parse_gate(expression) if not rule.is_rerank)
