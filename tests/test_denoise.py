"""Denoising mined negatives with a cross-encoder teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgeflow.data import TrainRecord
from bgeflow.steps.mining import MineSpec, mine
from bgeflow.steps.mining.denoise import keep_true_negatives


def test_negatives_the_teacher_finds_relevant_are_dropped() -> None:
    records = [TrainRecord(query="q1", pos=["p"], neg=["a", "b", "c", "d"]),
               TrainRecord(query="q2", pos=["p2", "p3"], neg=["e", "f"])]
    # q1: positive 5.0, margin 1 → a negative at >= 4.0 is a suspected false negative.
    scores = [5.0, 4.5, 1.0, 3.99, 0.5,
              2.0, 3.0, 1.9, 0.0]  # q2: lowest positive 2.0 → drop >= 1.0
    dropped = keep_true_negatives(records, scores, margin=1.0, number=2)
    assert dropped == 2
    assert records[0].neg == ["b", "c"] and records[0].neg_scores == [1.0, 3.99] and records[0].pos_scores == [5.0]
    assert records[1].neg == ["f"] and records[1].pos_scores == [2.0, 3.0] and records[1].neg_scores == [0.0]


def test_mining_with_denoising(minilm_path: str, tiny_reranker: str, tmp_path: Path) -> None:
    texts = [f"The {w} command handles files." for w in ("cp", "mv", "rm", "ln", "cat", "stat", "find", "touch")]
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"query": f"what does {w} do", "pos": [texts[i]]}) + "\n"
                            for i, w in enumerate(("cp", "mv", "rm"))))
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    spec = MineSpec.of(model=minilm_path, input=str(data), output=str(tmp_path / "mined.jsonl"),
                       candidate_pool=str(pool), range_for_sampling="0-8", negative_number=2,
                       teacher={"model": tiny_reranker, "max_len": 64}, denoise_margin=0.0)
    result = mine(spec)
    rows = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    for row in rows:  # every kept negative scores below its positive by the teacher, at most 2 kept
        assert len(row["neg"]) <= 2 and all(s < min(row["pos_scores"]) for s in row["neg_scores"])
    assert result.report["denoise"]["margin"] == 0.0
    # 4 sampled per record (twice negative_number); a record left short lost the rest to the teacher.
    short = sum(4 - len(r["neg"]) for r in rows if len(r["neg"]) < 2)
    assert short <= result.report["denoise"]["dropped"] <= 4 * len(rows)
    with pytest.raises(ValueError, match="denoise_margin needs a teacher"):
        MineSpec.of(model=minilm_path, input=str(data), output=str(tmp_path / "m.jsonl"), denoise_margin=0.5)
