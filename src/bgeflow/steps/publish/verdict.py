"""Whether one model's own gate rules passed, read from an evaluation's ``metrics.json``.

The gate judges each rule's model apart (``bgeflow.steps.evaluation.gate``: ``rerank.`` rules judge
the reranker, the others the retriever), so a run publishes a retriever that beat its base even
when its reranker made the ranking worse, and the other way round. A ``metrics.json`` written
before verdicts were split has only the overall one, which then stands for both models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def model_verdict(metrics: Mapping[str, Any] | None, kind: str) -> tuple[bool | None, list[str]]:
    """``(passed, reasons)`` of ``kind``'s (``retriever`` or ``reranker``) own rules in ``metrics``.

    ``passed`` is None when ``metrics`` holds no gate verdict at all; ``reasons`` are the failed
    rules' reasons (empty when they passed).
    """
    gate = (metrics or {}).get("gate")
    if not isinstance(gate, Mapping) or "passed" not in gate:
        return None, []
    rules = [r for r in gate.get("rules", []) if isinstance(r, Mapping)]
    own = (gate.get("models") or {}).get(kind)
    if isinstance(own, Mapping) and "passed" in own:
        mine = set(own.get("rules", []))
        failed = [str(r.get("reason")) for r in rules if r.get("rule") in mine and not r.get("passed")]
        return bool(own["passed"]), failed
    return bool(gate["passed"]), [str(r.get("reason")) for r in rules if not r.get("passed")]


def refusal(metrics: Mapping[str, Any] | None, kind: str) -> str | None:
    """Why ``kind``'s model must not be published, from ``metrics``; None when it may be.

    The one publish decision of a run (the pipeline's publish step and ``bgeflow publish
    --skip-if-gate-failed``, which the chart's direct mode runs): a model whose own gate rules failed
    never reaches the registry. No verdict at all (no gate, or no metrics) holds nothing back.

    Args:
        metrics: an evaluation's ``metrics.json`` document, or None.
        kind: ``retriever``, ``reranker``, or ``auto``/"" (then the overall verdict judges).

    Returns:
        ``"its gate rules failed: <reason>; ..."``, or None.
    """
    passed, reasons = model_verdict(metrics, "" if kind == "auto" else kind)
    return "its gate rules failed: " + "; ".join(reasons) if passed is False else None
