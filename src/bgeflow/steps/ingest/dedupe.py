"""Duplicate handling: records of one query merged, repeats inside a record and negatives equal to a positive dropped."""

from __future__ import annotations

from bgeflow.data import TrainRecord


def merge_into(into: TrainRecord, other: TrainRecord) -> None:
    """Union of pos and neg, first occurrence wins (with its score, when scores are present)."""
    for name in ("pos", "neg"):
        texts: list[str] = getattr(into, name)
        scores: list[float] | None = getattr(into, f"{name}_scores")
        other_scores = getattr(other, f"{name}_scores")
        seen = set(texts)
        for i, text in enumerate(getattr(other, name)):
            if text not in seen:
                seen.add(text)
                texts.append(text)
                if scores is not None:
                    scores.append(other_scores[i] if other_scores is not None else float("nan"))
        if scores is not None and any(s != s for s in scores):  # a merged side had no scores
            setattr(into, f"{name}_scores", None)


def drop_negatives_equal_to_positives(record: TrainRecord) -> int:
    positives = set(record.pos)
    keep = [i for i, text in enumerate(record.neg) if text not in positives]
    removed = len(record.neg) - len(keep)
    if removed:
        record.neg = [record.neg[i] for i in keep]
        if record.neg_scores is not None:
            record.neg_scores = [record.neg_scores[i] for i in keep]
    return removed


def dedupe_within(record: TrainRecord) -> bool:
    """Repeated passages inside one record's own lists (kept once, first score wins); True if any."""
    changed = False
    for name in ("pos", "neg"):
        texts = getattr(record, name)
        if len(set(texts)) == len(texts):
            continue
        changed = True
        first = {}
        for i, text in enumerate(texts):
            first.setdefault(text, i)
        keep = sorted(first.values())
        setattr(record, name, [texts[i] for i in keep])
        scores = getattr(record, f"{name}_scores")
        if scores is not None:
            setattr(record, f"{name}_scores", [scores[i] for i in keep])
    return changed
