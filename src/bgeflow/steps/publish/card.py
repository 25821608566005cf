"""The model card (``model/README.md``) of a published version: a Hugging Face model repo's card.

The card sits next to ``config.json``, so the downloaded ``model/`` folder is a drop-in Hugging Face
/ sentence-transformers repository (``hf upload <org>/<name> <folder>`` publishes it as it is). Its
front matter is built by ``huggingface_hub.ModelCardData`` (``library_name``, ``pipeline_tag``,
``base_model`` as a hub id, ``tags`` and a ``model-index`` from the evaluation), never written by
hand, so ``huggingface_hub.ModelCard.load`` parses it. The load snippets name what the model needs:
``FlagModel(path, pooling_method=...)`` with the pooling it was trained with (FlagModel's default,
CLS, would silently embed a mean-pooled model differently).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow import __version__
from bgeflow.retrieval.families import INFERENCE_FILE
from bgeflow.retrieval.pooling import saved_normalize, saved_pooling

#: What ``{{ body }}`` follows: the YAML ``ModelCardData.to_yaml`` renders, between the card's delimiters.
_TEMPLATE = "---\n{{ card_data }}\n---\n\n{{ body }}"
#: The model-index task of each kind (the names MTEB's cards use for these tasks).
_TASKS = {"retriever": "Retrieval", "reranker": "Reranking"}
_PIPELINE_TAGS = {"retriever": "sentence-similarity", "reranker": "text-ranking"}
_TAGS = {"retriever": ["sentence-transformers", "sentence-similarity", "feature-extraction", "flagembedding",
                       "bgeflow"],
         "reranker": ["sentence-transformers", "cross-encoder", "reranker", "text-ranking", "flagembedding",
                      "bgeflow"]}
#: The evaluation's reranker metrics are ``rerank.<metric>`` in the same columns as the retriever's.
_RERANK_PREFIX = "rerank."


@dataclass(frozen=True)
class FlagLoading:
    """How FlagEmbedding loads the model: ``getattr(FlagEmbedding, cls)(path, **init)``."""

    cls: str
    init: dict[str, Any] = field(default_factory=dict)

    def call(self, path_expr: str = "path") -> str:
        """The constructor call as Python source, every argument as a keyword."""
        args = [path_expr, *(f"{k}={v!r}" for k, v in self.init.items())]
        return f"{self.cls}({', '.join(args)})"


def flag_loading(model_dir: Path, kind: str) -> FlagLoading:
    """What the export recorded in ``flagembedding.json``, else what the model's own configs imply.

    A retriever without that file gets the pooling and normalisation of its sentence-transformers
    config (``1_Pooling``, ``Normalize``): what ``SentenceTransformer(path)`` computes.
    """
    try:
        doc = json.loads((model_dir / INFERENCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("class"), str) and isinstance(doc.get("init"), dict):
        return FlagLoading(doc["class"], dict(doc["init"]))
    if kind == "reranker":
        return FlagLoading("FlagReranker")
    normalize = saved_normalize(model_dir)
    return FlagLoading("FlagModel", {"pooling_method": saved_pooling(model_dir) or "cls",
                                     "normalize_embeddings": True if normalize is None else normalize})


def metric_id(name: str) -> str:
    """``ndcg@10`` → ``ndcg_at_10``: the model-index metric type (as MTEB's cards write it)."""
    return name.replace("@", "_at_").replace(".", "_")


def own_metrics(metrics: dict[str, Any] | None, kind: str) -> dict[str, float]:
    """The fine-tuned model's own scores: a retriever's plain metrics, a reranker's ``rerank.*`` ones."""
    tuned = ((metrics or {}).get("metrics") or {}).get("finetuned") or {}
    if kind == "reranker":
        return {k[len(_RERANK_PREFIX):]: float(v) for k, v in tuned.items() if k.startswith(_RERANK_PREFIX)}
    return {k: float(v) for k, v in tuned.items() if "." not in k}


def own_columns(metrics: dict[str, Any], kind: str) -> dict[str, Any]:
    """``metrics`` with only ``kind``'s rows: the card's table shows what the published model scored.

    A reranker's rows are the ``rerank.*`` ones (with the *not reranked* column); a retriever's the
    rest (with no *not reranked* column, which only ``rerank.*`` rows have).
    """
    def mine(metric: str) -> bool:
        return metric.startswith(_RERANK_PREFIX) is (kind == "reranker")

    columns = {column: {k: v for k, v in (values or {}).items() if mine(k)}
               for column, values in (metrics.get("metrics") or {}).items()}
    return {**metrics, "metrics": {column: values for column, values in columns.items() if values}}


def gate_section(metrics: dict[str, Any], kind: str) -> list[str]:
    """The card's gate lines: this model's own rules and verdict (``verdict.own_gate``), never another's.

    The evaluation's other rules judge the other model; the card names them without a verdict, so a
    retriever whose reranker failed is not called FAILED.
    """
    from bgeflow.steps.publish.verdict import own_gate

    own = own_gate(metrics, kind)
    if own is None or not (metrics.get("gate") or {}).get("rules"):
        return ["No gate rules were given."]
    if not own["rules"]:
        lines = [f"No gate rule judges this {kind}."]
    else:
        verdict = "passed" if own["passed"] else "FAILED (published anyway, with --publish-if-gate-failed)"
        lines = [f"Gate of this {kind} `{own['expression']}`: **{verdict}**", ""]
        lines += [f"- {'✅' if r.get('passed') else '❌'} `{r.get('rule')}`: {r.get('reason')}" for r in own["rules"]]
    mine = {r.get("rule") for r in own["rules"]}
    others = [str(r.get("rule")) for r in metrics["gate"]["rules"] if r.get("rule") not in mine]
    if others:
        lines += ["", f"The evaluation's gate `{metrics['gate'].get('expression', '')}` also has rules for the other "
                  f"model ({', '.join(f'`{o}`' for o in others)}); they do not judge this {kind}."]
    return lines


def card_data(name: str, facts: dict[str, Any]) -> Any:
    """The front matter, as ``huggingface_hub.ModelCardData`` (with a ``model-index`` when evaluated)."""
    from huggingface_hub import EvalResult, ModelCardData

    kind = facts["kind"]
    sizes = (facts.get("metrics") or {}).get("eval_set") or {}
    dataset = (f"held-out eval set ({sizes.get('queries', '?')} queries, {sizes.get('corpus', '?')} passages)")
    results = [EvalResult(task_type=_TASKS[kind], dataset_type="bgeflow-eval", dataset_name=dataset,
                          dataset_split="eval", metric_type=metric_id(metric), metric_name=metric,
                          metric_value=round(value, 4))
               for metric, value in own_metrics(facts.get("metrics"), kind).items()]
    return ModelCardData(
        model_name=name, library_name="sentence-transformers", pipeline_tag=_PIPELINE_TAGS[kind],
        tags=list(_TAGS[kind]), base_model=facts.get("base_model_id") or None, eval_results=results or None)


def _config_summary(configs_dir: Path) -> list[str]:
    path = configs_dir / "train_config.yaml"
    if not path.exists():
        return ["No training config was published with this model."]
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return ["`configs/train_config.yaml` (not parseable as YAML)."]
    if not isinstance(loaded, dict):
        return ["See `configs/train_config.yaml`."]
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, str | int | float | bool) or value is None:
            flat[prefix] = value

    walk("", loaded)
    lines = ["| setting | value |", "|---|---|"]
    # A whole float as a whole number: JSON through KFP (a protobuf Struct) turns every number into a float,
    # and TrainingArguments declares logging_steps/save_steps float (a ratio below 1), so `2` arrives as 2.0.
    lines += [f"| `{k}` | `{int(v) if isinstance(v, float) and v.is_integer() else v}` |"
              for k, v in list(flat.items())[:40]]
    if len(flat) > 40:
        lines.append(f"| … | {len(flat) - 40} more in `configs/train_config.yaml` of the registry version |")
    return lines


def _usage(registry: str, name: str, version: str, kind: str, loading: FlagLoading) -> list[str]:
    folder = f"./{name}-{version}"
    lines = ["## Usage", "", "This folder is a Hugging Face model repository: load it by path, or upload it as it is "
             f"(`hf upload <org>/{name} {folder}`). From the registry (every file checked against the manifest):", "",
             "```bash", f"bgeflow models download {registry}/{name}@{version} {folder}", "```", ""]
    if kind == "reranker":
        lines += ["With sentence-transformers:", "", "```python", "from sentence_transformers import CrossEncoder", "",
                  f'model = CrossEncoder("{folder}")',
                  'scores = model.predict([("what is a panda?", "The giant panda is a bear native to China.")])',
                  "```", "", "With FlagEmbedding:", "", "```python", f"from FlagEmbedding import {loading.cls}", "",
                  f"reranker = {loading.call(repr(folder))}",
                  'score = reranker.compute_score(["what is a panda?", "The giant panda is a bear native to China."])',
                  "```"]
        return lines
    lines += ["With sentence-transformers (pooling, normalisation and query prompt come from the folder):", "",
              "```python", "from sentence_transformers import SentenceTransformer", "",
              f'model = SentenceTransformer("{folder}")',
              'query = model.encode_query(["what is a panda?"])',
              'passages = model.encode_document(["The giant panda is a bear native to China."])',
              "```", "", f"With FlagEmbedding (the arguments this model was trained with; `pooling_method` matters: "
              f"{loading.cls}'s default is CLS):", "",
              "```python", f"from FlagEmbedding import {loading.cls}", "",
              f"model = {loading.call(repr(folder))}",
              'q = model.encode_queries(["what is a panda?"])',
              'p = model.encode_corpus(["The giant panda is a bear native to China."])',
              "```"]
    return lines


def _body(registry: str, name: str, version: str, facts: dict[str, Any]) -> str:
    from bgeflow.steps.evaluation.report import metrics_table

    kind = facts["kind"]
    base_id = facts.get("base_model_id")
    base = f"[`{base_id}`](https://huggingface.co/{base_id})" if base_id else f"`{facts['base_model']}`"
    lines = [f"# {name}", "", f"A {kind} fine-tuned from {base} with [bgeflow](https://pypi.org/project/bgeflow/) "
             f"{__version__} (FlagEmbedding's runners).", "",
             f"- registry: `{registry}/{name}`, version `{version}`",
             f"- base model: `{facts['base_model']}`", ""]
    lines += _usage(registry, name, version, kind, facts["loading"])
    lines += ["", "## Metrics", ""]
    metrics = facts.get("metrics")
    if metrics:
        sizes = metrics.get("eval_set", {})
        lines += [f"On {sizes.get('queries', '?')} held-out queries over {sizes.get('corpus', '?')} passages:", ""]
        if kind == "reranker" and metrics.get("rerank_top_k"):
            lines += [f"Reranking the fine-tuned retriever's top {metrics['rerank_top_k']} candidates (*not reranked*: "
                      "the retriever's own order of them).", ""]
        lines += [metrics_table(own_columns(metrics, kind)), *gate_section(metrics, kind)]
    else:
        lines.append("Published without evaluation metrics.")
    lines += ["", "## Training configuration", "", *_config_summary(facts["configs_dir"])]
    lines += ["", "## Data lineage", ""]
    inputs = facts["lineage"]["inputs"]
    if inputs:
        lines += ["| input | rows | checksum |", "|---|---|---|"]
        lines += [f"| `{i['uri']}` | {i['rows']} | "
                  f"{'sha256 ' + i['sha256'][:16] if 'sha256' in i else 'ETag ' + str(i.get('etag', ''))} |"
                  for i in inputs]
    else:
        lines.append("No input data was recorded.")
    return "\n".join(lines) + "\n"


def render_card(registry: str, name: str, version: str, facts: dict[str, Any]) -> str:
    """The card's text: ``ModelCardData`` front matter, then usage, metrics, configuration and lineage.

    ``facts``: what ``gather`` found (``kind``, ``base_model``, ``base_model_id``, ``loading``,
    ``metrics``, ``lineage``, ``configs_dir``).
    """
    from huggingface_hub import ModelCard

    card = ModelCard.from_template(card_data(name, facts), template_str=_TEMPLATE,
                                   body=_body(registry, name, version, facts))
    return str(card)
