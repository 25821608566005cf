"""``EvaluateSpec``: what ``bgeflow evaluate`` does."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from bgeflow.core.spec import FolderUri, Spec, nested, setting
from bgeflow.core.storage import SAFE_NAME_PATTERN, join_uri
from bgeflow.retrieval.spec import EncodingSettings, ScoringSettings
from bgeflow.steps.evaluation.gate import RERANK_PREFIX, GateRule, parse_gate
from bgeflow.steps.evaluation.metrics import DEFAULT_METRICS

#: The gate a pipeline run applies unless told otherwise: the fine-tuned retriever beats its base, and
#: reranking its candidates with the fine-tuned reranker does not rank worse than the retriever alone.
DEFAULT_GATE = "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"
#: Where ``EvaluateSpec.ingest_split``'s results go under ``output`` (the setting's name as a path), and
#: the prefix of their metric names in a KFP run (``ingest-split.finetuned.ndcg@10``): named here only.
INGEST_SPLIT_DIR = "ingest-split"


class EvaluateSettings(Spec):
    """How models are compared and gated (the pipeline's ``evaluate`` block)."""

    gate: str = setting("", "quality gate rules (grammar: bgeflow evaluate --help); empty: no rules, the gate passes",
                        metavar="RULES")
    rerank_top_k: int = setting(100, "candidates of the fine-tuned retriever each reranker reorders per query",
                                gt=0)
    use_gpu: bool = setting(False, "search with a faiss GPU index")
    max_memory: int | None = setting(None, "memory budget of the exact search", gt=0, unit="bytes", hidden=True)

    @field_validator("gate")
    @classmethod
    def _gate(cls, value: str) -> str:
        parse_gate(value)
        return value

    @property
    def rules(self) -> list[GateRule]:
        return parse_gate(self.gate)

    def metric_names(self) -> list[str]:
        """The default metrics plus any other cutoff a gate rule asks for."""
        names = list(DEFAULT_METRICS)
        for rule in self.rules:
            plain = rule.metric.removeprefix(RERANK_PREFIX)
            if plain not in names:
                names.append(plain)
        return names


class EvaluateSpec(EvaluateSettings):
    """What ``bgeflow evaluate`` does: the settings, the eval set, the models and where results go."""

    output: FolderUri = setting(help="where metrics.json, report.md and deltas.png go", metavar="URI", min_length=1)
    eval_data: str | None = setting(None, "directory/prefix with corpus.jsonl and queries.jsonl (ingest's eval/, or "
                                    "your own set): the gate judges on it", metavar="URI")
    # A run with its own eval_data still shows how the models do on the data they were trained from
    # (ingest's split); declared here, once, so every runner (KFP, bgeflow run, direct mode's one
    # evaluate Job, a hand-run evaluate) scores it the same way, in the same call.
    ingest_split: str | None = setting(
        None, "a second eval set of the same layout (in a run: ingest's held-out split, beside the run's own "
        "eval_data), scored with the same models and columns, written under <output>/" + INGEST_SPLIT_DIR +
        "/ and in report.md; reported only: never gated, no champion", metavar="URI")
    corpus: str | None = setting(None, 'corpus JSONL {"id", "text"} (instead of --eval-data)', metavar="URI")
    queries: str | None = setting(None, 'queries JSONL {"id", "text", "relevant": {doc_id: grade}} (instead of '
                                  "--eval-data)", metavar="URI")
    qrels: str | None = setting(None, "judgements: BEIR TSV query_id<TAB>doc_id<TAB>grade or JSONL; replace the "
                                "queries' own", metavar="URI")
    retriever: str = setting(help="the fine-tuned retriever (or the one whose candidates the rerankers reorder): "
                             "a path, s3:// URI, training output, hub name, bundled:minilm or registry ref",
                             metavar="MODEL", min_length=1)
    base_retriever: str | None = setting(None, "the retriever it was fine-tuned from", metavar="MODEL")
    reranker: str | None = setting(None, "the fine-tuned reranker", metavar="MODEL")
    base_reranker: str | None = setting(None, "the reranker it was fine-tuned from", metavar="MODEL")
    champion: str | None = setting(None, "the published champion retriever: <registry>/<name>[@version] (or a "
                                   "model dir)", metavar="REF")
    champion_reranker: str | None = setting(None, "the published champion reranker", metavar="REF")
    registry: str | None = setting(None, "with --name / --reranker-name: where champions are looked up",
                                   metavar="URI")
    # Names become path segments of the registry: refused here unless one safe segment.
    name: str | None = setting(None, "registry name of the retriever (champion = <registry>/<name>)",
                               pattern=SAFE_NAME_PATTERN)
    reranker_name: str | None = setting(None, "registry name of the reranker", pattern=SAFE_NAME_PATTERN)
    fail_on_gate: bool = setting(False, "exit 3 when the gate fails")
    # A run that evaluates no reranker drops its gate's rerank.* rules (run_spec.evaluate_spec): the
    # reason travels here so the report that shows the shorter gate also says why.
    gate_note: str | None = setting(None, "why rules were left out of the gate, reported as a warning in "
                                    "metrics.json and report.md", metavar="TEXT")
    encoding: EncodingSettings = nested(EncodingSettings, "encoding")
    rerank: ScoringSettings = nested(ScoringSettings, "reranking", prefix="rerank-")

    @model_validator(mode="after")
    def _consistent(self) -> EvaluateSpec:
        if not self.eval_data and not (self.corpus and self.queries):
            raise ValueError("evaluate needs eval_data, or both corpus and queries")
        if self.base_reranker and not self.reranker:
            raise ValueError("base_reranker needs reranker (the fine-tuned reranker to compare it with)")
        if (self.name or self.reranker_name) and not self.registry:
            raise ValueError("name / reranker_name need registry")
        for rule in self.rules:
            if rule.is_rerank and not self.reranker:
                raise ValueError(f"gate rule {rule.text!r} needs reranker metrics: give reranker")
            if rule.reference == "base" and not (self.base_reranker if rule.is_rerank else self.base_retriever):
                raise ValueError(f"gate rule {rule.text!r} compares with base: give "
                                 f"{'base_reranker' if rule.is_rerank else 'base_retriever'}")
        return self

    @property
    def champion_ref(self) -> str | None:
        """The champion retriever: ``champion``, else ``<registry>/<name>`` when both are given."""
        return self.champion or (join_uri(self.registry, self.name) if self.registry and self.name else None)

    @property
    def champion_reranker_ref(self) -> str | None:
        if self.champion_reranker:
            return self.champion_reranker
        return join_uri(self.registry, self.reranker_name) if self.registry and self.reranker_name else None
