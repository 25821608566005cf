"""Length estimates and histograms: the batch forms agree with the one-text definitions."""

from __future__ import annotations

import bisect
import random

from bgeflow.data.lengths import HISTOGRAM_EDGES, estimate_many, estimate_tokens, histogram, share_over


def test_the_batch_estimate_equals_the_estimate_of_each_text() -> None:
    texts = ["", " ", "\t\n", "one", "two words", " padded  text ", "什么是向量检索？", "BGE 模型 fine-tuning",
             "x " * 300, "café au lait"]
    assert estimate_many(texts) == [estimate_tokens(t) for t in texts]
    assert estimate_tokens("") == estimate_tokens("  ") == 0 and estimate_tokens("什么") == 2


def test_histogram_buckets_hold_their_edges_and_count_everything() -> None:
    lengths = [0, 16, 17, 64, 65, 1024, 1025, 5000] + [random.Random(3).randrange(2000) for _ in range(500)]
    hist = histogram(lengths)
    # Reference: bucket i holds n <= edge i (and above edge i-1), one lookup per length.
    expected = [0] * (len(HISTOGRAM_EDGES) + 1)
    for n in lengths:
        expected[bisect.bisect_left(HISTOGRAM_EDGES, n)] += 1
    assert list(hist) == [f"<={e}" for e in HISTOGRAM_EDGES] + [f">{HISTOGRAM_EDGES[-1]}"]
    assert list(hist.values()) == expected and hist["<=16"] == sum(n <= 16 for n in lengths)
    assert share_over(lengths, 1024) == round(hist[">1024"] / len(lengths), 4) and share_over([], 5) == 0.0
