"""``evaluate(EvaluateSpec) -> EvalResult``: base vs fine-tuned (vs champion), metrics, gate, report.

Models are scored the way their users load them (``bgeflow.retrieval.loaders``): retrievers through
``SentenceTransformer(path)`` (saved pooling, Normalize module or similarity function, prompts,
``max_seq_length`` capped by the run's token limits, any other module), then searched with
``bgeflow.retrieval.search.search`` (faiss, exact inner product); rerankers through
``CrossEncoder(path)``, after the head check every reranker loader makes, on the fine-tuned retriever's
top ``rerank_top_k`` candidates of each query; a relevant document outside those candidates counts
as not retrieved. A query is encoded with its own ``prompt``, else the query instruction (else the
model's saved query prompt): the rule mining and training apply. Each distinct model is encoded once,
whatever column(s) it fills. A base reranker without a trained classification head (a reranker
fine-tuned from a bi-encoder) has no scores to compare: its column is left out, and the report says why.

Outputs under ``output``: ``report.md``, ``deltas.png``, ``runs/<column>.trec`` (each model's
ranking of every query as a TREC run file: ``base``, ``finetuned``, ``champion``,
``finetuned_reranker``, ..., for ``trec_eval``/``ir_measures`` per-query comparisons) and, written
last so that its presence means the others are complete, ``metrics.json``::

    {"models": {column: {...}}, "metrics": {column: {metric: value}}, "deltas": {...},
     "gate": {...}, "ingest_split": null | {"uri", "output", "eval_set", "metrics", "deltas"},
     "eval_set": {...}, "rerank_top_k": k, "seconds": {...}, "bgeflow_version": ...}

A second eval set (``ingest_split``: in a run, ingest's held-out split beside the run's own
``eval_data``) is scored by the same models, in the same columns but ``champion``, into
``ingest-split/`` under ``output`` with the same files (its ``metrics.json`` has ``"gate": null``),
before the main ``metrics.json``; the main report gives it a section. It is reported only: the gate
judges the first set alone, and no champion is scored on the second.

Each model under ``models`` has its ``fingerprint`` (``core.weights.content_fingerprint``: a hash of
its files' bytes), by which ``bgeflow publish`` checks that ``--metrics`` scored the model it publishes;
``eval_set`` has each file role's absolute URI and ``sha256``, by which ``bgeflow compare`` tells
whether two evaluations ran on the same set.

Columns are ``base``, ``finetuned`` and ``champion``; reranker metrics sit in the same columns
prefixed ``rerank.`` (``rerank.ndcg@10``), so one gate expression covers both. With a reranker, the
column ``retriever`` holds the fine-tuned retriever's own order of the candidates the rerankers
reorder, under the ``rerank.`` names: what the gate's ``retriever`` reference compares with.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgeflow import __version__
from bgeflow.core import reports
from bgeflow.core.errors import ConfigError
from bgeflow.core.storage import Store, open_store
from bgeflow.core.weights import content_fingerprint, require_safetensors
from bgeflow.data.records import query_prompt
from bgeflow.steps.evaluation import families
from bgeflow.steps.evaluation.evalset import EvalSet, load_eval_set, resolve_eval_uris
from bgeflow.steps.evaluation.gate import RERANK_PREFIX, RETRIEVER_REFERENCE, GateRule, check_gate
from bgeflow.steps.evaluation.metrics import compute_metrics, parse_metric
from bgeflow.steps.evaluation.spec import INGEST_SPLIT_DIR, EvaluateSpec

if TYPE_CHECKING:  # numpy comes with the train extra; publish imports this package without it
    import numpy as np

log = logging.getLogger(__name__)

COLUMNS = ("base", "finetuned", "champion")
METRICS_FILE = reports.METRICS
REPORT_FILE = reports.MARKDOWN_REPORT
PLOT_FILE = reports.METRICS_PLOT
#: ``runs/<column>.trec``: each model's ranking of every query, as a TREC run file.
RUNS_DIR = "runs"


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
    normalize: bool | None = None
    precision: str | None = None  # the arithmetic it was encoded in (bgeflow.retrieval.precision)
    skipped: str | None = None
    #: ``core.weights.content_fingerprint`` of its files: what publish checks --metrics against
    fingerprint: str | None = None


@dataclass
class _Retrieved:
    ids: np.ndarray
    scores: np.ndarray
    pooling: str | None
    normalize: bool | None
    precision: str | None


def trec_run(rankings: dict[str, list[tuple[str, float]]], tag: str) -> str:
    """A TREC run file: ``qid Q0 docid rank score tag`` per retrieved document, best first per query.

    What ``trec_eval``, ``ir_measures`` and ``ranx`` read to compare two runs query by query.

    Raises:
        DataError: an id with whitespace (the format's separator) that no reader could split back.
    """
    from bgeflow.core.errors import DataError

    lines = []
    for qid, ranked in rankings.items():
        for rank, (doc, score) in enumerate(ranked, start=1):
            if any(c.isspace() for c in qid + doc):
                raise DataError(f"TREC run {tag}: id {qid if any(c.isspace() for c in qid) else doc!r} holds "
                                "whitespace, the run format's separator")
            lines.append(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")
    return "".join(lines)


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
        self._retrieved: dict[str, _Retrieved] = {}
        self._reranked: dict[str, dict[str, float]] = {}
        self._reranked_runs: dict[str, dict[str, list[tuple[str, float]]]] = {}
        #: column name → each query's ranked (doc id, score): the run files of ``RUNS_DIR``
        self.runs: dict[str, dict[str, list[tuple[str, float]]]] = {}

    def query_texts(self) -> list[str]:
        """Each query with its prompt (or the run's instruction) in front: the text a FlagEmbedding model reads."""
        instruction = self.config.encoding.query_instruction or ""
        return [query_prompt(q.prompt, instruction) + q.text for q in self.evalset.queries]

    def retrieve(self, model: _Model) -> np.ndarray:
        """Corpus indices ``(n_queries, retrieval_k)``, best first."""
        from bgeflow.retrieval.loaders import load_retriever
        from bgeflow.retrieval.search import search

        if model.path in self._retrieved:
            cached = self._retrieved[model.path]
            model.pooling, model.normalize, model.precision = cached.pooling, cached.normalize, cached.precision
            self.runs[model.column] = self.scored(cached.ids, cached.scores)
            return cached.ids
        started = time.monotonic()
        retriever = load_retriever(model.ref, model.path, self.config.encoding)
        model.pooling, model.normalize, model.precision = retriever.pooling, retriever.normalize, retriever.precision
        log.info("evaluate %s retriever %s (pooling %s, %s, %s on %s)", model.column, model.ref, retriever.pooling,
                 "normalised" if retriever.normalize else "dot product", retriever.precision, retriever.model.device)
        passages = retriever.encode_passages(self.evalset.corpus_texts)
        # An ICL embedder's queries end with its suffix (families.format_queries); prompts go in front.
        queries = retriever.encode_queries(families.format_queries(model.path, [q.text for q in self.evalset.queries]),
                                           [q.prompt for q in self.evalset.queries])
        del retriever
        result = search(queries, passages, self.retrieval_k, max_memory_bytes=self.config.max_memory,
                        use_gpu=self.config.use_gpu)
        self._retrieved[model.path] = _Retrieved(result.ids, result.scores, model.pooling, model.normalize,
                                                 model.precision)
        self.runs[model.column] = self.scored(result.ids, result.scores)
        self.seconds[f"{model.column}.retriever"] = round(time.monotonic() - started, 3)
        return result.ids

    def scored(self, ids: np.ndarray, scores: np.ndarray) -> dict[str, list[tuple[str, float]]]:
        """Each query's retrieved (corpus id, score), best first."""
        corpus_ids = self.evalset.corpus_ids
        return {q.id: [(corpus_ids[i], float(v)) for i, v in zip(row, values, strict=True) if i >= 0]
                for q, row, values in zip(self.evalset.queries, ids, scores, strict=True)}

    def rankings(self, ids: np.ndarray, k: int | None = None) -> dict[str, list[str]]:
        corpus_ids = self.evalset.corpus_ids
        return {
            q.id: [corpus_ids[i] for i in row[:k] if i >= 0]
            for q, row in zip(self.evalset.queries, ids, strict=True)
        }

    def rerank(self, model: _Model, candidates: np.ndarray) -> dict[str, float]:
        import numpy as np

        from bgeflow.retrieval.loaders import load_reranker

        if model.path in self._reranked:
            self.runs[f"{model.column}_reranker"] = self._reranked_runs[model.path]
            return self._reranked[model.path]
        started = time.monotonic()
        log.info("evaluate %s reranker %s on the top %d candidates", model.column, model.ref, candidates.shape[1])
        texts = self.evalset.corpus_texts
        pairs = [(q.text, texts[i]) for q, row in zip(self.evalset.queries, candidates, strict=True)
                 for i in row if i >= 0]
        # LLM rerankers score as their FlagEmbedding class does; cross-encoders below.
        scores = families.rerank_scores(model.path, pairs, self.config.rerank, device=self.config.encoding.device)
        if scores is None:
            scorer = load_reranker(model.ref, model.path, self.config.rerank, device=self.config.encoding.device)
            scores = scorer.score(pairs)
            del scorer
        rankings: dict[str, list[str]] = {}
        scored: dict[str, list[tuple[str, float]]] = {}
        offset = 0
        for q, row in zip(self.evalset.queries, candidates, strict=True):
            row = row[row >= 0]
            own = scores[offset : offset + len(row)]
            offset += len(row)
            # Stable: ties keep the retriever's order.
            order = np.argsort(-own, kind="stable")
            scored[q.id] = [(self.evalset.corpus_ids[row[j]], float(own[j])) for j in order]
            rankings[q.id] = [doc for doc, _ in scored[q.id]]
        self._reranked_runs[model.path] = scored
        self.runs[f"{model.column}_reranker"] = scored
        metrics = {RERANK_PREFIX + m: v for m, v in
                   compute_metrics(rankings, self.evalset.qrels, self.metric_names).items()}
        self._reranked[model.path] = metrics
        self.seconds[f"{model.column}.reranker"] = round(time.monotonic() - started, 3)
        return metrics


def _resolve(column: str, role: str, ref: str | None, workdir: Path) -> _Model | None:
    from bgeflow.steps.publish.registry import fetch_model

    if not ref:
        return None
    path = fetch_model(ref, workdir)
    require_safetensors(path, f"{column} {role} {ref}")
    return _Model(column, role, ref, path)


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
    require_safetensors(path, f"champion {role} {info.uri}")
    return _Model("champion", role, ref, str(path), registry_version=info.version)


def _untrained_base(model: _Model) -> str | None:
    """Why a base reranker cannot be scored (no trained classification head), or None when it can."""
    from bgeflow.retrieval.encoder import UntrainedHead, require_trained_head

    try:
        require_trained_head(model.path, model.ref)
    except UntrainedHead:
        return (f"not scored: {model.ref} has no trained sequence-classification head (a reranker fine-tuned "
                "from a bi-encoder starts from a random one, so its base has no scores to compare)")
    return None


def _deltas(columns: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    tuned = columns.get("finetuned", {})
    for reference in ("base", "champion"):
        other = columns.get(reference)
        if other:
            out[f"finetuned-{reference}"] = {m: tuned[m] - other[m] for m in tuned if m in other}
    return out


#: The swing of one query above which a gate with no margin at all is called one query's verdict: at
#: fewer than 100 queries one query moves a mean by more than 0.01, the margin of ``DEFAULT_GATE``'s
#: rule. Not a margin of the user's gate, and never quoted as one.
NO_MARGIN_SWING = 0.01


def few_queries(queries: int, rules: list[GateRule]) -> str | None:
    """A warning when the eval set is too small for the gate to mean anything; None otherwise.

    A mean metric in [0, 1] (nDCG, recall, MRR) over ``queries`` queries moves by up to ``1/queries``
    when one query's ranking changes. When that exceeds the smallest margin a gate rule asks over a
    reference (``ndcg@10>=base+0.01``: 0.01), one query decides the verdict. A gate whose rules have
    no margin (``ndcg@10>=base``, ``rerank.ndcg@10>=retriever``, ``mrr@10>=0.3``) can be flipped by
    one query whatever the set's size; it is named when one query moves a mean by more than
    ``NO_MARGIN_SWING``. No gate, no verdict to decide: no warning.

    Args:
        queries: the eval set's query count.
        rules: the gate's rules (empty: no gate).

    Returns:
        One line naming the size, the swing of one query, the rules at stake and what to do, or None.
    """
    if not queries or not rules:
        return None
    swing = 1 / queries
    size = f"the eval set has {queries} quer{'y' if queries == 1 else 'ies'}: one query moves a mean metric by up to " \
           f"{swing:.3g}"
    margins = [abs(r.offset) for r in rules if r.reference is not None and r.offset]
    if margins:
        margin = min(margins)
        if swing <= margin:
            return None
        return (f"{size}, more than the gate's margin {margin:g}, so one query decides the verdict; hold out at least "
                f"{math.ceil(1 / margin)} queries (ingest.eval_fraction, or your own eval_data)")
    if swing <= NO_MARGIN_SWING:
        return None
    bare = ", ".join(r.text for r in rules)
    return (f"{size}, and the gate rule{'s' if len(rules) > 1 else ''} {bare} {'have' if len(rules) > 1 else 'has'} "
            "no margin, so one query can flip the verdict; hold out at least "
            f"{math.ceil(1 / NO_MARGIN_SWING)} queries (ingest.eval_fraction, or your own eval_data), or give a rule "
            "a margin over its reference (ndcg@10>=base+0.01)")


def _score(run: _Run, retrievers: list[_Model], rerankers: list[_Model]) -> dict[str, dict[str, float]]:
    """Every column's metrics on ``run``'s eval set, in report order (``COLUMNS``, then ``retriever``).

    Args:
        run: the eval set, with the caches that encode each distinct model once.
        retrievers: the retrievers to score; the ``finetuned`` one's candidates are what rerankers reorder.
        rerankers: the rerankers to score; one whose ``skipped`` says why not is left out.
    """
    evalset = run.evalset
    columns: dict[str, dict[str, float]] = {}
    candidates: np.ndarray | None = None
    for model in retrievers:
        ids = run.retrieve(model)
        columns.setdefault(model.column, {}).update(
            compute_metrics(run.rankings(ids), evalset.qrels, run.metric_names))
        # A family's other scores (bge-m3: sparse, ColBERT, their mix) re-rank the dense candidates.
        columns[model.column].update(families.family_metrics(
            model.path, query_ids=[q.id for q in evalset.queries], corpus_ids=evalset.corpus_ids,
            queries=families.format_queries(model.path, run.query_texts()), passages=evalset.corpus_texts,
            candidates=ids, qrels=evalset.qrels, metric_names=run.metric_names, encoding=run.config.encoding))
        if model.column == "finetuned":
            candidates = ids[:, : run.config.rerank_top_k]
    if rerankers:
        assert candidates is not None
        for model in rerankers:
            if not model.skipped:
                columns.setdefault(model.column, {}).update(run.rerank(model, candidates))
        # Not reranking at all: the retriever's order of the same candidates, the same queries.
        columns[RETRIEVER_REFERENCE] = {RERANK_PREFIX + m: v for m, v in compute_metrics(
            run.rankings(candidates), evalset.qrels, run.metric_names).items()}
    return {c: columns[c] for c in (*COLUMNS, RETRIEVER_REFERENCE) if c in columns}


def _document(run: _Run, uris: dict[str, str], models: list[_Model], columns: dict[str, dict[str, float]], *,
              gate: dict[str, Any] | None, warnings: list[str], reranked: bool,
              ingest_split: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``metrics.json`` document of one scored eval set (``gate`` None: an ungated one; ``ingest_split``:
    what was scored beside it)."""
    config = run.config
    return {
        "bgeflow_version": __version__,
        "eval_set": {"uris": uris, **run.evalset.sizes(), "sha256": run.evalset.sha256()},
        "warnings": warnings,
        "models": {
            (m.column if m.role == "retriever" else f"{m.column}_reranker"): {
                "role": m.role, "model": m.ref, **({"pooling": m.pooling} if m.pooling else {}),
                **({"normalize": m.normalize} if m.normalize is not None else {}),
                **({"precision": m.precision} if m.precision else {}),
                **({"skipped": m.skipped} if m.skipped else {}),
                **({"registry_version": m.registry_version} if m.registry_version else {}),
                **({"fingerprint": m.fingerprint} if m.fingerprint else {}),
            }
            for m in models
        },
        "metrics": columns,
        "deltas": _deltas(columns),
        "gate": gate,
        "ingest_split": ingest_split,
        "settings": {
            "pooling": config.encoding.pooling, "normalize": config.encoding.normalize,
            "precision": config.encoding.precision, "query_instruction": config.encoding.query_instruction,
            "query_max_len": config.encoding.query_max_len, "passage_max_len": config.encoding.passage_max_len,
            "rerank_max_len": config.rerank.max_len, "retrieval_k": run.retrieval_k,
        },
        "rerank_top_k": config.rerank_top_k if reranked else None,
        "seconds": run.seconds,
    }


def _write(out: Store, stage: Path, document: dict[str, Any], runs: dict[str, dict[str, list[tuple[str, float]]]],
           ) -> dict[str, str]:
    """``report.md``, ``deltas.png`` and ``runs/<column>.trec`` of one scored eval set into ``out``, then
    ``metrics.json``, last: a reader that sees it sees the others of the same run.

    Args:
        out: where the files go.
        stage: a local folder, not there yet, where they are made first.
        document: the ``metrics.json`` document (``_document``).
        runs: column → each query's ranked (doc id, score).

    Returns:
        ``metrics``, ``report`` and ``plot`` → their URLs.

    Raises:
        DataError: an id with whitespace (``trec_run``).
        StorageError: ``out`` cannot be written.
    """
    from bgeflow.steps.evaluation.report import plot_deltas, render_report

    stage.mkdir()
    (stage / REPORT_FILE).write_text(render_report(document), encoding="utf-8")
    plot_deltas(document, stage / PLOT_FILE)
    for key in (REPORT_FILE, PLOT_FILE):
        out.put_file(stage / key, key)
    for column, ranked in runs.items():  # per query, to diff two models or two evaluations
        (stage / f"{column}.trec").write_text(trec_run(ranked, column), encoding="utf-8")
        out.put_file(stage / f"{column}.trec", f"{RUNS_DIR}/{column}.trec")
    out.write_text(METRICS_FILE, json.dumps(document, ensure_ascii=False, indent=2))
    return {"metrics": out.url(METRICS_FILE), "report": out.url(REPORT_FILE), "plot": out.url(PLOT_FILE)}


def _remove_previous(out: Store) -> None:
    """Delete what an earlier evaluation wrote into ``out``: its files are never mixed with this one's.

    A run file of a column this run does not score (``runs/base.trec`` of a run with a base model)
    would otherwise sit beside the new ones and be read as current (``bgeflow compare``).
    ``metrics.json`` goes first: from then on no reader takes the folder for a finished evaluation
    until this one writes its own. Only evaluate's own names: anything else under ``out`` stays.

    Raises:
        StorageError: ``out`` cannot be listed or an object cannot be deleted.
    """
    for key in (METRICS_FILE, REPORT_FILE, PLOT_FILE):
        out.delete(key)
    for prefix in (RUNS_DIR, INGEST_SPLIT_DIR):
        folder = out.child(prefix)
        for obj in folder.list():
            folder.delete(obj.key)


def evaluate(config: EvaluateSpec) -> EvalResult:
    """Evaluate the configured models, apply the gate, and write metrics.json, report.md, deltas.png.

    With ``ingest_split``, that set is scored too, by the same models (each resolved once), into
    ``<output>/ingest-split/`` (``INGEST_SPLIT_DIR``: its own ``metrics.json``, ``report.md``,
    ``deltas.png``, ``runs/``), under ``ingest_split`` in the main ``metrics.json`` and in a section of
    the main ``report.md``. Those numbers are reported only: the gate never reads them and no champion
    is scored on that set.

    Args:
        config: the eval sets, the models, the gate and where the results go.

    What an earlier evaluation wrote into ``output`` (``metrics.json``, ``report.md``, ``deltas.png``,
    ``runs/``, ``ingest-split/``) is deleted once the models are scored, before the first new file.

    Returns:
        The main ``metrics.json`` document, the gate's verdict, and the outputs' URLs (``metrics``,
        ``report``, ``plot``, and ``ingest_split``: that set's ``metrics.json``, with ``ingest_split``).

    Raises:
        DataError: an eval set that cannot be read (named by file and line).
        NotFoundError: an eval set, model or champion that is not there.
        ConfigError: a champion of the wrong kind.
        StorageError: the output cannot be written.
    """
    started = time.monotonic()
    uris = resolve_eval_uris(config.eval_data, config.corpus, config.queries, config.qrels)
    evalset = load_eval_set(uris)
    log.info("eval set: %d passages, %d queries", len(evalset.corpus_ids), len(evalset.queries))
    # Read before any model is: a bad second set fails here, not after the first is scored.
    split_uris = resolve_eval_uris(config.ingest_split, None, None, None) if config.ingest_split else None
    split_set = load_eval_set(split_uris) if split_uris else None
    if split_set is not None:
        log.info("%s (scored beside, not gated): %d passages, %d queries", INGEST_SPLIT_DIR,
                 len(split_set.corpus_ids), len(split_set.queries))
    warnings = [w for w in (few_queries(len(evalset.queries), config.rules), config.gate_note) if w]
    for warning in warnings:
        log.warning("evaluate: %s", warning)
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
        # Each distinct folder read once (base and fine-tuned may be one model): publish compares it with --model's.
        fingerprints = {path: content_fingerprint(path) for path in {m.path for m in (*retrievers, *rerankers)}}
        for model in (*retrievers, *rerankers):
            model.fingerprint = fingerprints[model.path]
        for model in rerankers:
            if model.column == "base" and (reason := _untrained_base(model)):
                model.skipped = reason
                log.warning("base reranker %s: %s", model.ref, reason)

        ordered = _score(run, retrievers, rerankers)
        gate = check_gate(config.rules, ordered, config.gate)
        # After scoring, before the first write: a run that fails to score leaves the earlier results whole.
        _remove_previous(out)
        beside: dict[str, Any] | None = None
        beside_outputs: dict[str, str] = {}
        if split_set is not None:
            assert split_uris is not None
            # Never against a champion: that comparison is the gate's, on the judged set alone.
            models = [m for m in (*retrievers, *rerankers) if m.column != "champion"]
            split_started = time.monotonic()
            split_run = _Run(config, split_set, workdir)
            columns = _score(split_run, [m for m in models if m.role == "retriever"],
                             [m for m in models if m.role == "reranker"])
            split_run.seconds["total"] = round(time.monotonic() - split_started, 3)
            split_document = _document(split_run, split_uris, models, columns, gate=None, warnings=[],
                                       reranked=any(m.role == "reranker" for m in models))
            # Before the main metrics.json: its presence says this set's outputs are complete too.
            beside_outputs = _write(out.child(INGEST_SPLIT_DIR), workdir / "split-out", split_document,
                                    split_run.runs)
            beside = {"uri": config.ingest_split, "output": out.url(INGEST_SPLIT_DIR),
                      "eval_set": split_document["eval_set"], "metrics": columns, "deltas": split_document["deltas"]}
        run.seconds["total"] = round(time.monotonic() - started, 3)
        document = _document(run, uris, [*retrievers, *rerankers], ordered, gate=gate, warnings=warnings,
                             reranked=bool(rerankers), ingest_split=beside)
        outputs = _write(out, workdir / "out", document, run.runs)
    if beside_outputs:
        outputs["ingest_split"] = beside_outputs["metrics"]
    log.info("gate %s; metrics at %s", "passed" if gate["passed"] else "FAILED", outputs["metrics"])
    return EvalResult(metrics=document, gate_passed=bool(gate["passed"]), output_uri=config.output, outputs=outputs)
