"""Whether one model's own gate rules passed, read from an evaluation's ``metrics.json``.

The gate judges each rule's model apart (``bgeflow.steps.evaluation.gate``: ``rerank.`` rules judge
the reranker, the others the retriever), so a run publishes a retriever that beat its base even
when its reranker made the ranking worse, and the other way round. A ``metrics.json`` written
before verdicts were split has only the overall one, which then stands for both models.

Everything publish says about a model's gate reads it from here: whether it is published
(``refusal``), whether it becomes the champion, the manifest's ``gate_passed``, the model card's
gate section and ``bgeflow models show``. The overall verdict never stands for one model that has
its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def own_gate(metrics: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """``kind``'s share of the gate in ``metrics``: ``{"passed", "rules", "expression"}``, or None.

    ``rules`` are the verdicts of ``kind``'s own rules (each ``{"rule", "passed", "reason", ...}``),
    ``expression`` those rules joined; ``passed`` is True when every one of them passed (and when
    ``kind`` has none). None when ``metrics`` holds no gate verdict at all.

    Args:
        metrics: an evaluation's ``metrics.json`` document, or None.
        kind: ``retriever`` or ``reranker``; another (or a verdict from before per-model rules):
            the overall verdict and every rule.
    """
    gate = (metrics or {}).get("gate")
    if not isinstance(gate, Mapping) or "passed" not in gate:
        return None
    rules = [dict(r) for r in gate.get("rules", []) if isinstance(r, Mapping)]
    own = (gate.get("models") or {}).get(kind)
    if isinstance(own, Mapping) and "passed" in own:
        mine = set(own.get("rules", []))
        rules, passed = [r for r in rules if r.get("rule") in mine], bool(own["passed"])
    else:
        passed = bool(gate["passed"])
    return {"passed": passed, "rules": rules, "expression": ", ".join(str(r.get("rule")) for r in rules)}


def model_verdict(metrics: Mapping[str, Any] | None, kind: str) -> tuple[bool | None, list[str]]:
    """``(passed, reasons)`` of ``kind``'s (``retriever`` or ``reranker``) own rules in ``metrics``.

    ``passed`` is None when ``metrics`` holds no gate verdict at all; ``reasons`` are the failed
    rules' reasons (empty when they passed).
    """
    own = own_gate(metrics, kind)
    if own is None:
        return None, []
    return own["passed"], [str(r.get("reason")) for r in own["rules"] if not r.get("passed")]


def refusal(metrics: Mapping[str, Any] | None, kind: str) -> str | None:
    """Why ``kind``'s model must not be published, from ``metrics``; None when it may be.

    The one publish decision (``bgeflow publish``, the pipeline's publish step and the chart's
    direct mode alike): a model whose own gate rules failed never reaches the registry, unless a
    human asks for it (``PublishSpec.publish_if_gate_failed``). No verdict at all (no gate, or no
    metrics) holds nothing back.

    Args:
        metrics: an evaluation's ``metrics.json`` document, or None.
        kind: the model's resolved kind, ``retriever`` or ``reranker`` (``gather.model_kind``).

    Returns:
        ``"its gate rules failed: <reason>; ..."``, or None.
    """
    passed, reasons = model_verdict(metrics, kind)
    return "its gate rules failed: " + "; ".join(reasons) if passed is False else None
