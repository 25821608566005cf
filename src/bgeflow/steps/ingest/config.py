"""``IngestConfig``: what ``bgeflow ingest`` does, and the names of its outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bgeflow.core.storage import DEFAULT_WORKERS

OnError = Literal["fail", "skip"]
TRAIN_FILE = "train.jsonl"
EVAL_CORPUS_FILE = "eval/corpus.jsonl"
EVAL_QUERIES_FILE = "eval/queries.jsonl"
REPORT_FILE = "report.json"


@dataclass
class IngestConfig:
    """What ``bgeflow ingest`` does; every field is a CLI flag of the same name."""

    inputs: list[str]
    output: str
    eval_fraction: float = 0.05
    seed: int = 42
    min_negatives: int = 0
    on_error: OnError = "fail"
    tokenizer: str | None = None
    query_max_len: int = 64
    passage_max_len: int = 256
    # Extra passages from the training split added to the eval corpus as distractors, so
    # retrieval is not a lookup among a handful of candidates.
    eval_distractors: int = 10_000
    examples_per_rule: int = 5
    workers: int = DEFAULT_WORKERS

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str):
            self.inputs = [self.inputs]
        if not self.inputs:
            raise ValueError("ingest needs at least one --input")
        if not self.output:
            raise ValueError("ingest needs --output")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        if self.on_error not in ("fail", "skip"):
            raise ValueError(f"--on-error must be 'fail' or 'skip', got {self.on_error!r}")
        for name in ("min_negatives", "eval_distractors", "examples_per_rule"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.query_max_len <= 0 or self.passage_max_len <= 0 or self.workers <= 0:
            raise ValueError("--query-max-len, --passage-max-len and --workers must be positive")
