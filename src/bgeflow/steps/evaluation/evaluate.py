"""``evaluate(EvaluateSpec) -> EvalResult``: base vs fine-tuned (vs champion), metrics, gate, report.

Retrievers encode the corpus and the queries through ``bgeflow.retrieval.encoder.Encoder`` (the encoder
mining uses) and search with ``bgeflow.retrieval.search.search`` (faiss, exact inner product on normalised
vectors). Rerankers score the fine-tuned retriever's top ``rerank_top_k`` candidates of each query
with ``bgeflow.retrieval.encoder.CrossEncoderScorer``; a relevant document outside those candidates counts
as not retrieved. Each distinct model is encoded once, whatever column(s) it fills.

Outputs under ``output``: ``report.md``, ``deltas.png`` and, written last so that its presence
means the others are complete, ``metrics.json``::

    {"models": {column: {...}}, "metrics": {column: {metric: value}}, "deltas": {...},
     "gate": {...}, "eval_set": {...}, "rerank_top_k": k, "seconds": {...}, "bgeflow_version": ...}

Columns are ``base``, ``finetuned`` and ``champion``; reranker metrics sit in the same columns
prefixed ``rerank.`` (``rerank.ndcg@10``), so one gate expression covers both. With a reranker, the
column ``retriever`` holds the fine-tuned retriever's own order of the candidates the rerankers
reorder, under the ``rerank.`` names: what the gate's ``retriever`` reference compares with.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgeflow import __version__
from bgeflow.core.errors import ConfigError
from bgeflow.core.storage import open_store
from bgeflow.steps.evaluation.evalset import EvalSet, load_eval_set, resolve_eval_uris
from bgeflow.steps.evaluation.gate import RERANK_PREFIX, RETRIEVER_REFERENCE, check_gate
from bgeflow.steps.evaluation.metrics import compute_metrics, parse_metric
from bgeflow.steps.evaluation.spec import EvaluateSpec

if TYPE_CHECKING:  # numpy comes with the train extra; publish imports this package without it
    import numpy as np

log = logging.getLogger(__name__)

COLUMNS = ("base", "finetuned", "champion")
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
PLOT_FILE = "deltas.png"


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    gate_passed: bool
    output_uri: str
    outputs: dict[str, str] = field(default_factory=dict)


@dataclass
class _Model:
    column: str
    role: str  # "retriever" | "reranker"
    ref: str
    path: str
    registry_version: str | None = None
    pooling: str | None = None


class _Run:
    """One evaluation: models are loaded one at a time and each distinct one is scored once."""

    def __init__(self, config: EvaluateSpec, evalset: EvalSet, workdir: Path) -> None:
        self.config = config
        self.evalset = evalset
        self.workdir = workdir
        self.metric_names = config.metric_names()
        self.retrieval_k = min(
            len(evalset.corpus_ids),
            max(config.rerank_top_k, *(parse_metric(m)[1] for m in self.metric_names)),
        )
        self.seconds: dict[str, float] = {}
        self._retrieved: dict[tuple[str, str], np.ndarray] = {}
        self._reranked: dict[str, dict[str, float]] = {}

    def query_texts(self) -> list[str]:
        instruction = self.config.encoding.query_instruction
        return [(q.prompt if q.prompt is not None else instruction) + q.text for q in self.evalset.queries]

    def retrieve(self, model: _Model) -> np.ndarray:
        """Corpus indices ``(n_queries, retrieval_k)``, best first."""
        from bgeflow.retrieval.encoder import Encoder
        from bgeflow.retrieval.pooling import resolve_pooling
        from bgeflow.retrieval.search import search

        pooling = resolve_pooling(self.config.encoding.pooling, model.path)
        model.pooling = pooling
        key = (model.path, pooling)
        if key in self._retrieved:
            return self._retrieved[key]
        started = time.monotonic()
        log.info("evaluate %s retriever %s (pooling %s)", model.column, model.ref, pooling)
        # Queries arrive with their prompt or the instruction already in front (query_texts).
        encoder = Encoder(model.path, self.config.encoding, pooling=pooling, query_instruction="")
        passages = encoder.encode_passages(self.evalset.corpus_texts)
        queries = encoder.encode_queries(self.query_texts())
        del encoder
        result = search(queries, passages, self.retrieval_k, max_memory_bytes=self.config.max_memory,
                        use_gpu=self.config.use_gpu)
        self._retrieved[key] = result.ids
        self.seconds[f"{model.column}.retriever"] = round(time.monotonic() - started, 3)
        return result.ids

    def rankings(self, ids: np.ndarray, k: int | None = None) -> dict[str, list[str]]:
        corpus_ids = self.evalset.corpus_ids
        return {
            q.id: [corpus_ids[i] for i in row[:k] if i >= 0]
            for q, row in zip(self.evalset.queries, ids, strict=True)
        }

    def rerank(self, model: _Model, candidates: np.ndarray) -> dict[str, float]:
        import numpy as np

        from bgeflow.retrieval.encoder import CrossEncoderScorer

        if model.path in self._reranked:
            return self._reranked[model.path]
        started = time.monotonic()
        log.info("evaluate %s reranker %s on the top %d candidates", model.column, model.ref, candidates.shape[1])
        scorer = CrossEncoderScorer(model.path, self.config.rerank, device=self.config.encoding.device)
        texts = self.evalset.corpus_texts
        pairs = [(q.text, texts[i]) for q, row in zip(self.evalset.queries, candidates, strict=True)
                 for i in row if i >= 0]
        scores = scorer.score(pairs)
        del scorer
        rankings: dict[str, list[str]] = {}
        offset = 0
        for q, row in zip(self.evalset.queries, candidates, strict=True):
            row = row[row >= 0]
            own = scores[offset : offset + len(row)]
            offset += len(row)
            # Stable: ties keep the retriever's order.
            order = np.argsort(-own, kind="stable")
            rankings[q.id] = [self.evalset.corpus_ids[row[j]] for j in order]
        metrics = {RERANK_PREFIX + m: v for m, v in
                   compute_metrics(rankings, self.evalset.qrels, self.metric_names).items()}
        self._reranked[model.path] = metrics
        self.seconds[f"{model.column}.reranker"] = round(time.monotonic() - started, 3)
        return metrics


def _resolve(column: str, role: str, ref: str | None, workdir: Path) -> _Model | None:
    from bgeflow.steps.publish.registry import fetch_model

    if not ref:
        return None
    return _Model(column, role, ref, fetch_model(ref, workdir))


def _resolve_champion(role: str, ref: str | None, workdir: Path) -> _Model | None:
    """The champion's model, downloaded; None when the registry has no champion yet."""
    from bgeflow.steps.publish import registry

    if not ref:
        return None
    if not ref.startswith("bundled:") and registry.is_model_location(ref):
        return _resolve("champion", role, ref, workdir)
    info = registry.find_ref(ref, default="champion")
    if info is None:
        log.info("%s: no champion is published yet; the champion column stays empty", ref)
        return None
    if info.kind and info.kind != role:
        raise ConfigError(f"champion {info.uri} is a {info.kind}, but was given as the champion {role}")
    path = registry.download_model(info.registry, info.name, info.version, workdir / f"champion-{role}")
    return _Model("champion", role, ref, str(path), registry_version=info.version)


def _deltas(columns: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    tuned = columns.get("finetuned", {})
    for reference in ("base", "champion"):
        other = columns.get(reference)
        if other:
            out[f"finetuned-{reference}"] = {m: tuned[m] - other[m] for m in tuned if m in other}
    return out


def evaluate(config: EvaluateSpec) -> EvalResult:
    """Evaluate the configured models, apply the gate, and write metrics.json, report.md, deltas.png."""
    from bgeflow.steps.evaluation.report import plot_deltas, render_report

    started = time.monotonic()
    uris = resolve_eval_uris(config.eval_data, config.corpus, config.queries, config.qrels)
    evalset = load_eval_set(uris)
    log.info("eval set: %d passages, %d queries", len(evalset.corpus_ids), len(evalset.queries))
    out = open_store(config.output)
    with tempfile.TemporaryDirectory(prefix="bgeflow-evaluate-") as tmp:
        workdir = Path(tmp)
        run = _Run(config, evalset, workdir)
        retrievers = [m for m in (
            _resolve("base", "retriever", config.base_retriever, workdir),
            _resolve("finetuned", "retriever", config.retriever, workdir),
            _resolve_champion("retriever", config.champion_ref, workdir),
        ) if m is not None]
        rerankers = [m for m in (
            _resolve("base", "reranker", config.base_reranker, workdir),
            _resolve("finetuned", "reranker", config.reranker, workdir),
            _resolve_champion("reranker", config.champion_reranker_ref, workdir),
        ) if m is not None]

        columns: dict[str, dict[str, float]] = {}
        candidates: np.ndarray | None = None
        for model in retrievers:
            ids = run.retrieve(model)
            columns.setdefault(model.column, {}).update(
                compute_metrics(run.rankings(ids), evalset.qrels, run.metric_names))
            if model.column == "finetuned":
                candidates = ids[:, : config.rerank_top_k]
        if rerankers:
            assert candidates is not None
            for model in rerankers:
                columns.setdefault(model.column, {}).update(run.rerank(model, candidates))
            # Not reranking at all: the retriever's order of the same candidates, the same queries.
            columns[RETRIEVER_REFERENCE] = {RERANK_PREFIX + m: v for m, v in compute_metrics(
                run.rankings(candidates), evalset.qrels, run.metric_names).items()}

        ordered = {c: columns[c] for c in (*COLUMNS, RETRIEVER_REFERENCE) if c in columns}
        gate = check_gate(config.rules, ordered, config.gate)
        run.seconds["total"] = round(time.monotonic() - started, 3)
        document: dict[str, Any] = {
            "bgeflow_version": __version__,
            "eval_set": {"uris": uris, **evalset.sizes()},
            "models": {
                (m.column if m.role == "retriever" else f"{m.column}_reranker"): {
                    "role": m.role, "model": m.ref, **({"pooling": m.pooling} if m.pooling else {}),
                    **({"registry_version": m.registry_version} if m.registry_version else {}),
                }
                for m in [*retrievers, *rerankers]
            },
            "metrics": ordered,
            "deltas": _deltas(ordered),
            "gate": gate,
            "settings": {
                "pooling": config.encoding.pooling, "query_instruction": config.encoding.query_instruction,
                "query_max_len": config.encoding.query_max_len, "passage_max_len": config.encoding.passage_max_len,
                "rerank_max_len": config.rerank.max_len, "retrieval_k": run.retrieval_k,
            },
            "rerank_top_k": config.rerank_top_k if rerankers else None,
            "seconds": run.seconds,
        }
        stage = workdir / "out"
        stage.mkdir()
        (stage / REPORT_FILE).write_text(render_report(document), encoding="utf-8")
        plot_deltas(document, stage / PLOT_FILE)
        for key in (REPORT_FILE, PLOT_FILE):
            out.put_file(stage / key, key)
        # Last: a reader that sees metrics.json sees the report and plot of the same run.
        out.write_text(METRICS_FILE, json.dumps(document, ensure_ascii=False, indent=2))
    log.info("gate %s; metrics at %s", "passed" if gate["passed"] else "FAILED", out.url(METRICS_FILE))
    return EvalResult(
        metrics=document, gate_passed=bool(gate["passed"]), output_uri=config.output,
        outputs={"metrics": out.url(METRICS_FILE), "report": out.url(REPORT_FILE), "plot": out.url(PLOT_FILE)},
    )
