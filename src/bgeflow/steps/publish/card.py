"""The model card (``README.md``) of a published version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bgeflow import __version__


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
    lines += [f"| `{k}` | `{v}` |" for k, v in list(flat.items())[:40]]
    if len(flat) > 40:
        lines.append(f"| … | {len(flat) - 40} more in `configs/train_config.yaml` |")
    return lines


def render_card(registry: str, name: str, version: str, facts: dict[str, Any]) -> str:
    from bgeflow.steps.evaluation.report import gate_lines, metrics_table

    kind = facts["kind"]
    lines = [f"# {name}", "", f"- version: `{version}`", f"- kind: {kind}",
             f"- base model: `{facts['base_model']}`", f"- produced by: bgeflow {__version__}", ""]
    lines += ["## Metrics", ""]
    metrics = facts.get("metrics")
    if metrics:
        sizes = metrics.get("eval_set", {})
        lines += [f"On {sizes.get('queries', '?')} held-out queries over {sizes.get('corpus', '?')} passages:", ""]
        lines += [metrics_table(metrics), *gate_lines(metrics.get("gate", {}))]
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
    lines += ["", "## Usage", "", "Download the model (its files are checked against the manifest):", "",
              "```python", "from bgeflow.steps.publish.registry import download_model", "",
              f'path = str(download_model("{registry}", "{name}", "{version}", "./{name}-{version}"))', "```", ""]
    if kind == "reranker":
        lines += ["Then, with sentence-transformers:", "", "```python", "from sentence_transformers import CrossEncoder", "",
                  'model = CrossEncoder(path)',
                  'scores = model.predict([("what is a panda?", "The giant panda is a bear native to China.")])',
                  "```", "", "With FlagEmbedding:", "", "```python", "from FlagEmbedding import FlagReranker", "",
                  'reranker = FlagReranker(path)',
                  'score = reranker.compute_score(["what is a panda?", "The giant panda is a bear native to China."])',
                  "```"]
    else:
        lines += ["Then, with sentence-transformers:", "", "```python", "from sentence_transformers import SentenceTransformer", "",
                  'model = SentenceTransformer(path)',
                  'embeddings = model.encode(["what is a panda?"], normalize_embeddings=True)',
                  "```", "", "With FlagEmbedding:", "", "```python", "from FlagEmbedding import FlagModel", "",
                  'model = FlagModel(path, query_instruction_for_retrieval="")',
                  'q = model.encode_queries(["what is a panda?"])',
                  'p = model.encode(["The giant panda is a bear native to China."])',
                  "```"]
    return "\n".join(lines) + "\n"
