"""Choosing one record's hard negatives from its search hits.

Rank convention (FlagEmbedding's ``hn_mine``): ranks are 0-based positions in the query's
search results, best first, counting every hit (the query's own positives and its own text
included). ``--range-for-sampling A-B`` keeps the hits at ranks ``A <= r < B``, i.e. Python's
``hits[A:B]``; ``2-200`` skips the two best hits and samples among the next 198.

Within that window, in this order:

1. the query's positives and the query's own text are removed (never negatives);
2. positive-aware filters, each off unless set, remove suspected false negatives:
   ``max_score_ratio`` (score > ratio × the query's reference positive score; NV-Retriever's
   TopK-PercPos uses 0.95), ``max_score`` (score > value) and ``min_score`` (score < value);
3. ``negative_number`` survivors are sampled at random and returned best first;
4. a short list is filled with random pool texts that are none of the above.

Each rule's removals are counted once, by the first rule that removes a candidate.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from bgeflow.steps.mining.window import Filters, RankWindow

#: Filter names as they appear in the report, in the order they apply.
RULES = ("positive_or_query", "max_score_ratio", "max_score", "min_score")


@dataclass
class Choice:
    ids: list[int]  # pool indices, mined first (best first), then random fill
    scores: list[float]  # search scores of the mined ones (the fill has none)
    filled: int  # how many came from the random fill
    removed: Counter[str]
    #: filter rule → search scores of the candidates it removed (the report's histograms)
    removed_scores: dict[str, list[float]] = field(default_factory=dict)


def choose(
    hit_ids: np.ndarray,
    hit_scores: np.ndarray,
    *,
    window: RankWindow,
    excluded: np.ndarray,
    reference_score: float | None,
    filters: Filters,
    number: int,
    pool_size: int,
    rng: random.Random,
) -> Choice:
    """One record's negatives. ``hit_*``: its search results (best first); ``excluded``: pool ids
    of its positives and its own query text."""
    removed: Counter[str] = Counter()
    removed_scores: dict[str, list[float]] = {}
    banned = {int(i) for i in excluded}
    candidates: list[tuple[int, float]] = []
    ratio_limit = (
        filters.max_score_ratio * reference_score
        if filters.max_score_ratio is not None and reference_score is not None
        else None
    )
    for pool_id, score in zip(hit_ids[window.start : window.end].tolist(),
                              hit_scores[window.start : window.end].tolist(), strict=True):
        if pool_id < 0:
            break
        if pool_id in banned:
            removed["positive_or_query"] += 1
            continue
        rule = _rule_hit(score, ratio_limit, filters)
        if rule:
            removed[rule] += 1
            removed_scores.setdefault(rule, []).append(score)
            banned.add(pool_id)  # a suspected false negative must not come back as random fill
            continue
        candidates.append((pool_id, score))
    if len(candidates) > number:
        keep = sorted(rng.sample(range(len(candidates)), number))
        candidates = [candidates[i] for i in keep]
    ids = [c[0] for c in candidates]
    scores = [c[1] for c in candidates]
    filled = _fill(ids, banned, number - len(ids), pool_size, rng)
    return Choice(ids + filled, scores, len(filled), removed, removed_scores)


def _rule_hit(score: float, ratio_limit: float | None, filters: Filters) -> str | None:
    if ratio_limit is not None and score > ratio_limit:
        return "max_score_ratio"
    if filters.max_score is not None and score > filters.max_score:
        return "max_score"
    if filters.min_score is not None and score < filters.min_score:
        return "min_score"
    return None


def _fill(chosen: list[int], banned: set[int], missing: int, pool_size: int, rng: random.Random) -> list[int]:
    """Up to ``missing`` random pool ids that are neither chosen nor banned."""
    if missing <= 0:
        return []
    taken = banned | set(chosen)
    available = pool_size - len(taken)
    if available <= 0:
        return []
    missing = min(missing, available)
    out: list[int] = []
    if available <= 4 * missing:
        # A small pool: enumerate what is left rather than drawing blindly.
        rest = [i for i in range(pool_size) if i not in taken]
        return rng.sample(rest, missing)
    while len(out) < missing:
        i = rng.randrange(pool_size)
        if i not in taken:
            taken.add(i)
            out.append(i)
    return out
