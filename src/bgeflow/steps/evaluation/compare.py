"""Two evaluations side by side: every metric, and query by query from their TREC run files.

``bgeflow compare A B`` reads two ``bgeflow evaluate`` outputs (``metrics.json`` and
``runs/<column>.trec``), scores each query of one column (``finetuned`` by default) with one metric
in both, and lists how many queries got better, worse or stayed the same, with the largest changes
and their query texts: where a new model wins and loses, which a mean hides.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from bgeflow.core import reports
from bgeflow.core.errors import ConfigError, DataError, NotFoundError
from bgeflow.core.spec import absolute_local
from bgeflow.core.storage import open_store
from bgeflow.steps.evaluation.evalset import load_eval_set
from bgeflow.steps.evaluation.metrics import parse_metric, query_metric

METRICS_FILE = reports.METRICS
RUNS_DIR = "runs"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """One ``bgeflow evaluate`` output: its metrics document, and where it lies."""

    uri: str
    document: dict[str, Any]

    @classmethod
    def read(cls, uri: str) -> Evaluation:
        """Raises: NotFoundError: no ``metrics.json`` under ``uri`` (not an evaluation output, or unfinished)."""
        store = open_store(uri)
        if not store.exists(METRICS_FILE):
            raise NotFoundError(f"{store.url(METRICS_FILE)}: no such file (not a bgeflow evaluate output, or "
                                "one that did not finish)")
        return cls(store.uri, json.loads(store.read_text(METRICS_FILE)))

    def require_column(self, column: str) -> None:
        """Refuse a column this evaluation did not score: a run file of it can only be an older run's.

        The columns are the models ``metrics.json`` lists (a skipped base reranker has no run); a
        document without that list (written by hand) is left to ``run``.

        Raises:
            ConfigError: ``column`` is not one of them (naming those it lists, and ``--column``).
        """
        models = self.document.get("models")
        if not isinstance(models, dict):
            return
        scored = [name for name, model in models.items() if not (isinstance(model, dict) and model.get("skipped"))]
        if column not in scored:
            raise ConfigError(f"--column {column}: {open_store(self.uri).url(METRICS_FILE)} lists no such column (its "
                              f"columns: {', '.join(scored) or 'none'})")

    def run(self, column: str) -> dict[str, list[str]]:
        """Each query's ranked document ids from ``runs/<column>.trec``.

        Raises:
            NotFoundError: no run file for ``column`` (evaluations before run files, or no such column).
        """
        store = open_store(self.uri)
        key = f"{RUNS_DIR}/{column}.trec"
        if not store.exists(key):
            found = sorted(o.key.removesuffix(".trec") for o in store.child(RUNS_DIR).list((".trec",)))
            raise NotFoundError(f"{store.url(key)}: no such run file (columns with one: {', '.join(found) or 'none'})")
        ranked: dict[str, list[tuple[int, str]]] = {}
        for number, line in enumerate(store.read_text(key).splitlines(), start=1):
            parts = line.split()
            if len(parts) != 6:
                raise DataError(f"{store.url(key)}:{number}: expected 'qid Q0 docid rank score tag'")
            ranked.setdefault(parts[0], []).append((int(parts[3]), parts[2]))
        return {qid: [doc for _, doc in sorted(rows)] for qid, rows in ranked.items()}


def same_eval_sets(a: Evaluation, b: Evaluation) -> bool:
    """Whether ``a`` and ``b`` scored the same eval set: by its files' content hashes when both recorded them
    (``eval_set.sha256``), else by their URIs made absolute (documents written before the hashes).

    Never by how a path was spelled: the same files named once absolute and once relative are one set,
    and other files written to the same path are another.
    """
    sets = [e.document.get("eval_set") or {} for e in (a, b)]
    hashes = [s.get("sha256") for s in sets]
    if all(hashes):
        return hashes[0] == hashes[1]
    uris = [{role: absolute_local(uri) for role, uri in (s.get("uris") or {}).items()} for s in sets]
    return uris[0] == uris[1]


def compare(a_uri: str, b_uri: str, *, column: str = "finetuned", metric: str = "ndcg@10",
            top: int = 10) -> dict[str, Any]:
    """Every metric of ``column`` in both evaluations, and ``metric`` per query (B minus A).

    Judgements and query texts come from A's eval set; queries only one run holds are counted apart
    (``only_in_one_run``, the same whichever is A). Two evaluations on different eval sets
    (``same_eval_sets``) are compared all the same, with a warning: their means are over different
    queries; so are two that reranked a different number of candidates (``rerank_top_k``), whose
    ``rerank.*`` metrics measure different things.

    Raises:
        NotFoundError: an evaluation or run file is missing.
        ConfigError: ``metric`` is not a metric name, or ``column`` is not one that both evaluations list.
    """
    parse_metric(metric)
    a, b = Evaluation.read(a_uri), Evaluation.read(b_uri)
    for evaluation in (a, b):
        evaluation.require_column(column)
    same_eval_set = same_eval_sets(a, b)
    if not same_eval_set:
        sets = [e.document.get("eval_set", {}).get("uris") for e in (a, b)]
        log.warning("%s and %s were evaluated on different eval sets (%s vs %s): the metrics' deltas compare "
                    "means over different queries, and only queries both runs hold are compared one by one",
                    a.uri, b.uri, (sets[0] or {}).get("queries"), (sets[1] or {}).get("queries"))
    top_k = [e.document.get("rerank_top_k") for e in (a, b)]
    if None not in top_k and top_k[0] != top_k[1]:
        log.warning("%s reranked each query's top %s candidates and %s the top %s: their rerank.* metrics (and "
                    "reranker columns) are not comparable", a.uri, top_k[0], b.uri, top_k[1])
    a_metrics = (a.document.get("metrics") or {}).get(column) or {}
    b_metrics = (b.document.get("metrics") or {}).get(column) or {}
    table = {name: {"a": a_metrics.get(name), "b": b_metrics.get(name),
                    "delta": (b_metrics[name] - a_metrics[name]) if name in a_metrics and name in b_metrics else None}
             for name in [*a_metrics, *(n for n in b_metrics if n not in a_metrics)]}
    evalset = load_eval_set(a.document["eval_set"]["uris"])
    texts = {q.id: q.text for q in evalset.queries}
    qrels = evalset.qrels
    run_a, run_b = a.run(column), b.run(column)
    shared = [q for q in qrels if q in run_a and q in run_b]
    changes = sorted(((query_metric(metric, run_b[q], qrels[q]) - query_metric(metric, run_a[q], qrels[q]), q)
                      for q in shared), key=lambda item: (item[0], item[1]))

    def listed(items: list[tuple[float, str]]) -> list[dict[str, Any]]:
        return [{"query_id": q, "query": texts.get(q, ""), "delta": round(d, 4)} for d, q in items]

    return {
        "a": a.uri, "b": b.uri, "column": column, "metrics": table,
        "same_eval_set": same_eval_set,
        "per_query": {
            "metric": metric, "queries": len(shared),
            # Over both runs' queries, not A's judgements alone: B's own queries are not in A's eval set,
            # and restricting to it made the count depend on which evaluation came first.
            "only_in_one_run": len(set(run_a) ^ set(run_b)),
            "better": sum(1 for d, _ in changes if d > 1e-9), "worse": sum(1 for d, _ in changes if d < -1e-9),
            "same": sum(1 for d, _ in changes if abs(d) <= 1e-9),
            "most_improved": listed([c for c in reversed(changes) if c[0] > 1e-9][:top]),
            "most_degraded": listed([c for c in changes if c[0] < -1e-9][:top]),
        },
    }
