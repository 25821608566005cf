"""The records bgeflow reads and writes.

- ``TrainRecord``: FlagEmbedding's fine-tuning line ``{"query", "pos", "neg"}`` with the optional
  ``pos_scores``, ``neg_scores`` (distillation), ``prompt`` and ``type``. Unknown fields are kept
  and written back unchanged.
- ``CorpusRecord``: one passage of an evaluation corpus or candidate pool, ``{"id", "text"}``.
- ``EvalQuery``: a held-out query with its relevant corpus ids (qrels) and their grades.

JSON is written as UTF-8 with non-ASCII characters unescaped, so Chinese stays readable.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

TRAIN_FIELDS = ("query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type")


def dumps(obj: Any) -> str:
    """One JSONL line (without the newline): UTF-8 friendly, non-ASCII unescaped."""
    return json.dumps(obj, ensure_ascii=False)


def text_id(text: str, prefix: str = "d") -> str:
    """A stable id for a text: the same passage gets the same id in every run and file."""
    return prefix + hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def query_prompt(prompt: str | None, instruction: str) -> str:
    """The text put in front of a query: its record's own ``prompt`` when it has one, else the instruction.

    The one rule of mine, train and evaluate. An empty ``prompt`` is a record's explicit choice of no
    prompt; only a missing one (None) falls back to the run's query instruction.
    """
    return instruction if prompt is None else prompt


def positives_by_query(records: Iterable[TrainRecord]) -> dict[str, list[str]]:
    """Every query's positives: the union over all records of that query text, first seen first.

    A query on several lines is one query (ingest merges such lines); a passage that is positive on
    any of them must never become a negative of the others.
    """
    out: dict[str, list[str]] = {}
    seen: dict[str, set[str]] = {}
    for record in records:
        texts = out.setdefault(record.query, [])
        known = seen.setdefault(record.query, set())
        for text in record.pos:
            if text not in known:
                known.add(text)
                texts.append(text)
    return out


@dataclass(slots=True)
class TrainRecord:
    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    pos_scores: list[float] | None = None
    neg_scores: list[float] | None = None
    prompt: str | None = None
    type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TrainRecord:
        """Build from an already validated dict (see ``bgeflow.data.validate``)."""
        return cls(
            query=obj["query"],
            pos=list(obj["pos"]),
            neg=list(obj.get("neg") or []),
            pos_scores=obj.get("pos_scores"),
            neg_scores=obj.get("neg_scores"),
            prompt=obj.get("prompt"),
            type=obj.get("type"),
            extra={k: v for k, v in obj.items() if k not in TRAIN_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"query": self.query, "pos": self.pos, "neg": self.neg}
        for name in ("pos_scores", "neg_scores", "prompt", "type"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return dumps(self.to_dict())


@dataclass(frozen=True)
class CorpusRecord:
    id: str
    text: str

    def to_json(self) -> str:
        return dumps({"id": self.id, "text": self.text})


@dataclass
class EvalQuery:
    id: str
    text: str
    relevant: dict[str, int]
    prompt: str | None = None

    def to_json(self) -> str:
        out: dict[str, Any] = {"id": self.id, "text": self.text, "relevant": self.relevant}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return dumps(out)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> EvalQuery:
        relevant = obj["relevant"]
        if isinstance(relevant, list):  # a plain list of ids means grade 1 each
            relevant = {str(doc_id): 1 for doc_id in relevant}
        return cls(str(obj["id"]), obj["text"], {str(k): int(v) for k, v in relevant.items()}, obj.get("prompt"))
