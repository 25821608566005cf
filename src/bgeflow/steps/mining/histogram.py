"""Score histograms of a mining run: positives vs mined negatives, and what each filter removed.

What users look at when they suspect false negatives: mined negatives scoring like the positives
are likely unlabelled positives, and the ``max_score_ratio`` filter's removals show where it cut.
Counts are accumulated per record over fixed bins (the search's own score range), so a run of
millions of queries never holds every removed candidate's score.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BINS = 60
_LABELS = {"positive": "positives", "mined_negative": "mined negatives",
           "max_score_ratio": "removed: max_score_ratio", "max_score": "removed: max_score",
           "min_score": "removed: min_score"}


@dataclass
class ScoreHistograms:
    """Counts of search scores per series (``positive``, ``mined_negative``, one per filter rule)."""

    edges: np.ndarray
    counts: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def over(cls, *score_arrays: np.ndarray, bins: int = BINS) -> ScoreHistograms:
        """Bins spanning every finite score of ``score_arrays`` (the search's hits and the positives)."""
        finite = [a[np.isfinite(a)] for a in (np.asarray(x, dtype=np.float64).ravel() for x in score_arrays)]
        values = np.concatenate([a for a in finite if a.size]) if any(a.size for a in finite) else np.zeros(1)
        low, high = float(values.min()), float(values.max())
        if high <= low:
            low, high = low - 0.5, high + 0.5
        return cls(np.linspace(low, high, bins + 1))

    def add(self, name: str, scores: list[float] | np.ndarray) -> None:
        if len(scores) == 0:
            return
        clipped = np.clip(np.asarray(scores, dtype=np.float64), self.edges[0], self.edges[-1])
        counts, _ = np.histogram(clipped, bins=self.edges)
        self.counts[name] = self.counts.get(name, np.zeros(len(self.edges) - 1, dtype=np.int64)) + counts

    def to_dict(self) -> dict[str, Any]:
        return {"edges": [round(float(e), 5) for e in self.edges],
                "counts": {name: [int(c) for c in counts] for name, counts in self.counts.items()}}

    def plot(self, path: str | Path, title: str) -> None:
        """Each series as a step line of its share per bin (series differ in size by orders of magnitude)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7.0, 4.0), dpi=100)
        try:
            for name, counts in self.counts.items():
                total = int(counts.sum())
                ax.stairs(counts / max(total, 1), self.edges, label=f"{_LABELS.get(name, name)} ({total})",
                          fill=name == "positive", alpha=0.35 if name == "positive" else 1.0)
            if not self.counts:
                ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("search score (query · passage)")
            ax.set_ylabel("share of the series")
            ax.set_title(title)
            ax.legend(loc="best", fontsize="small")
            fig.tight_layout()
            fig.savefig(path, format="png")
        finally:
            plt.close(fig)
