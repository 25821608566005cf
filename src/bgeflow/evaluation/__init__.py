"""Evaluation: retrieval and reranking metrics, base vs fine-tuned vs champion, and the quality gate.

Metric definitions are in ``bgeflow.evaluation.metrics``, the gate grammar in
``bgeflow.evaluation.gate``. Importing this package loads neither torch nor faiss.
"""

from bgeflow.evaluation.evaluate import EvalConfig, EvalResult, evaluate
from bgeflow.evaluation.gate import GateRule, check_gate, parse_gate
from bgeflow.evaluation.metrics import DEFAULT_METRICS, compute_metrics

__all__ = [
    "DEFAULT_METRICS",
    "EvalConfig",
    "EvalResult",
    "GateRule",
    "check_gate",
    "compute_metrics",
    "evaluate",
    "parse_gate",
]
