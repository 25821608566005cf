"""Evaluation: retrieval and reranking metrics, base vs fine-tuned vs champion, and the quality gate.

Metric definitions are in ``bgeflow.steps.evaluation.metrics``, the gate grammar in
``bgeflow.steps.evaluation.gate``. Importing this package loads neither torch nor faiss.
"""

from bgeflow.steps.evaluation.evaluate import EvalResult, evaluate
from bgeflow.steps.evaluation.gate import GateRule, check_gate, parse_gate
from bgeflow.steps.evaluation.metrics import DEFAULT_METRICS, compute_metrics
from bgeflow.steps.evaluation.spec import DEFAULT_GATE, EvaluateSettings, EvaluateSpec

__all__ = [
    "DEFAULT_GATE",
    "DEFAULT_METRICS",
    "EvalResult",
    "EvaluateSettings",
    "EvaluateSpec",
    "GateRule",
    "check_gate",
    "compute_metrics",
    "evaluate",
    "parse_gate",
]
