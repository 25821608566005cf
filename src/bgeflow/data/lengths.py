"""Text length in tokens: the model's tokenizer when given, else an estimate from words.

The estimate counts each CJK character as one token (BERT-style Chinese vocabularies do) and
1.3 tokens per whitespace word otherwise (WordPiece/BPE average on English prose).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
HISTOGRAM_EDGES = (16, 32, 64, 128, 256, 512, 1024)

Counter = Callable[[Sequence[str]], list[int]]


def estimate_tokens(text: str) -> int:
    if text.isascii():  # the common case: count separators instead of building word lists
        return round((text.count(" ") + 1) * 1.3) if text.strip() else 0
    cjk = len(_CJK.findall(text))
    words = len(_CJK.sub(" ", text).split())
    return cjk + round(words * 1.3)


def token_counter(tokenizer: str | None) -> tuple[Counter, str]:
    """A batch length function and the name of the method it uses."""
    if not tokenizer:
        return (lambda texts: [estimate_tokens(t) for t in texts]), "word estimate"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    return count, f"tokenizer {tokenizer}"


def histogram(lengths: Sequence[int]) -> dict[str, int]:
    """Counts per length bucket, labelled like ``"<=64"`` and ``">1024"``."""
    labels = [f"<={edge}" for edge in HISTOGRAM_EDGES] + [f">{HISTOGRAM_EDGES[-1]}"]
    counts = [0] * len(labels)
    for n in lengths:
        counts[bisect.bisect_left(HISTOGRAM_EDGES, n)] += 1
    return dict(zip(labels, counts, strict=True))
