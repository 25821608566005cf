"""Hard-negative mining: ``bgeflow mine`` as a library function.

For every training record, search a candidate pool with the query and take negatives from a rank
window of the hits (see ``bgeflow.steps.mining.select`` for the exact convention and the filters). It
replaces FlagEmbedding's ``hn_mine`` script and accepts its flags.

How it scales: the pool (the ``--candidate-pool`` corpus, or every pos/neg text of the input) is
deduplicated on disk, encoded in length-sorted batches into a memory-mapped file in chunks (a
rerun resumes from the finished chunks), and searched with an exact flat index when it fits
``--max-memory``, else with exact search shard by shard. Memory grows with the number of training
rows, not with the pool.

Outputs: the mined JSONL at ``output`` (every input field kept; ``neg`` replaced by the mined
negatives; ``pos_scores``/``neg_scores`` from a teacher reranker when one is given, else an input
``neg_scores`` is dropped because it scored other negatives), and ``mine_report.json`` (with score
histograms: positives, mined negatives, what each filter removed) and ``score_histogram.png`` beside it.

The work dir (pool texts and encodings) is kept when given explicitly, so a rerun with other
windows or filters skips encoding; the default one, under the system temp, is removed after a
successful run and kept after a failed one, so the rerun resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bgeflow.steps.mining.spec import REPORT_FILE, MineSettings, MineSpec, TeacherSettings, parse_size
from bgeflow.steps.mining.window import Filters, RankWindow

if TYPE_CHECKING:
    from bgeflow.steps.mining.run import MineResult

__all__ = ["REPORT_FILE", "Filters", "MineResult", "MineSettings", "MineSpec", "RankWindow", "TeacherSettings",
           "mine", "parse_size"]


def mine(spec: MineSpec) -> MineResult:
    """Mine hard negatives (``bgeflow.steps.mining.run.mine``); numpy, faiss and torch load only here."""
    from bgeflow.steps.mining.run import mine as run

    return run(spec)


def __getattr__(name: str) -> Any:
    if name == "MineResult":
        from bgeflow.steps.mining.run import MineResult

        return MineResult
    raise AttributeError(name)
