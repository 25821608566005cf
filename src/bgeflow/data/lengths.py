"""Text length in tokens: the model's tokenizer when given, else an estimate from words.

The estimate counts each CJK character as one token (BERT-style Chinese vocabularies do) and
1.3 tokens per whitespace word otherwise (WordPiece/BPE average on English prose).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from itertools import repeat

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
HISTOGRAM_EDGES = (16, 32, 64, 128, 256, 512, 1024)

Counter = Callable[[Sequence[str]], list[int]]


TOKENS_PER_WORD = 1.3


def estimate_tokens(text: str) -> int:
    return estimate_many([text])[0]


def estimate_many(texts: Sequence[str]) -> list[int]:
    """The estimate of each text. The common case, non-blank ASCII, counts separators in C loops
    (``map``) instead of building word lists."""
    spaces = map(str.count, texts, repeat(" "))
    # isspace(), not strip(): the same test of "blank" without a copy of every (possibly huge) text.
    return [round((n + 1) * TOKENS_PER_WORD) if plain and t and not blank else _estimate_mixed(t)
            for t, n, plain, blank in zip(texts, spaces, map(str.isascii, texts), map(str.isspace, texts),
                                          strict=True)]


def _estimate_mixed(text: str) -> int:
    cjk = len(_CJK.findall(text))
    words = len(_CJK.sub(" ", text).split())
    return cjk + round(words * TOKENS_PER_WORD)


def token_counter(tokenizer: str | None) -> tuple[Counter, str]:
    """A batch length function and the name of the method it uses.

    ``tokenizer`` is a model reference as every verb takes one (``bgeflow.core.models``: bundled,
    local folder or training output, ``s3://``, hub id), resolved by the one resolver.

    Raises:
        ConfigError: an unknown ``bundled:`` name, or a model folder without a loadable tokenizer.
        NotFoundError: nothing where the reference points (or a hub id not cached while offline).
    """
    if not tokenizer:
        return estimate_many, "word estimate"
    from transformers import AutoTokenizer

    from bgeflow.core.errors import ConfigError
    from bgeflow.core.models import resolve_model

    path = resolve_model(tokenizer)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    # What transformers raises for a folder without (or with broken) tokenizer files: TypeError for a
    # missing vocab file, OSError/ValueError for unknown types, KeyError for a bad config.
    except (OSError, ValueError, KeyError, TypeError, AttributeError, ImportError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"tokenizer {tokenizer}: cannot load a tokenizer from {path} ({reason})") from exc

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tok(list(texts), add_special_tokens=True, truncation=False)["input_ids"]]

    return count, f"tokenizer {tokenizer}"


def histogram(lengths: Sequence[int]) -> dict[str, int]:
    """Counts per length bucket, labelled like ``"<=64"`` and ``">1024"``."""
    ordered = sorted(lengths)
    cuts = [0, *(bisect.bisect_right(ordered, edge) for edge in HISTOGRAM_EDGES), len(ordered)]
    labels = [f"<={edge}" for edge in HISTOGRAM_EDGES] + [f">{HISTOGRAM_EDGES[-1]}"]
    return {label: cuts[i + 1] - cuts[i] for i, label in enumerate(labels)}


def share_over(lengths: Sequence[int], limit: int) -> float:
    """The share of lengths above ``limit`` (what truncation at ``limit`` would cut), 4 decimals."""
    return round(sum(n > limit for n in lengths) / len(lengths), 4) if lengths else 0.0
