"""A published model folder is a drop-in Hugging Face / sentence-transformers repository.

Its ``README.md`` sits next to ``config.json``, its front matter parses with
``huggingface_hub.ModelCard`` (base model as a hub id, model-index from the evaluation), and the
load snippets it shows run as written and embed as ``SentenceTransformer`` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bgeflow.core.models import BUNDLED_MINILM, hub_model_id
from bgeflow.steps.publish import PublishSpec, publish, registry
from bgeflow.steps.publish.card import FlagLoading, flag_loading, metric_id, own_metrics
from test_as_users_load import _fake_run

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _metrics(path: Path, *, reranker: bool = False) -> Path:
    """An evaluation of both models, as ``bgeflow evaluate`` writes it."""
    path.write_text(json.dumps({
        "eval_set": {"queries": 7, "corpus": 30},
        "models": {"base": {"role": "retriever", "model": BUNDLED_MINILM},
                   "base_reranker": {"role": "reranker", "model": "BAAI/bge-reranker-base"}},
        "metrics": {"base": {"ndcg@10": 0.4, "recall@10": 0.6, "rerank.ndcg@10": 0.3},
                    "finetuned": {"ndcg@10": 0.5, "recall@10": 0.7, "rerank.ndcg@10": 0.45}},
        "gate": {"passed": True, "expression": "ndcg@10>=base", "models": {}, "rules": []},
    }))
    return path


def _code_blocks(card: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", card, flags=re.DOTALL)


def _run_snippet(code: str, folder: str, path: Path) -> dict[str, Any]:
    """Execute a card's snippet as a user would, with the folder it names replaced by ``path``."""
    assert f'"{folder}"' in code or repr(folder) in code, code
    scope: dict[str, Any] = {}
    exec(code.replace(f'"{folder}"', repr(str(path))).replace(repr(folder), repr(str(path))), scope)
    return scope


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_a_published_retriever_loads_as_its_card_says(minilm_path: str, tmp_path: Path, pooling: str) -> None:
    from huggingface_hub import ModelCard
    from sentence_transformers import SentenceTransformer

    from bgeflow.steps.training.export import export_model

    output = tmp_path / "train"
    export_model(_fake_run(minilm_path, tmp_path / "run"), output / "model", kind="retriever", pooling=pooling,
                 normalize=True, max_seq_length=64, runner_args={"query_max_len": 32, "passage_max_len": 64})
    reg = str(tmp_path / "registry")
    result = publish(PublishSpec.of(model=str(output), name="minilm-qa", registry=reg,
                                    metrics=str(_metrics(tmp_path / "metrics.json"))))
    manifest = registry.get_version(reg, "minilm-qa", result.version).manifest
    assert manifest["base_model"] == BUNDLED_MINILM and manifest["base_model_id"] == MINILM_HUB_ID
    assert "README.md" not in {e["path"] for e in manifest["files"]}  # the card is in model/, not the root

    folder = registry.download_model(reg, "minilm-qa", result.version, tmp_path / "download")
    assert (folder / "README.md").is_file() and (folder / "config.json").is_file()
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == MINILM_HUB_ID
    assert (card.data.library_name, card.data.pipeline_tag) == ("sentence-transformers", "sentence-similarity")
    assert "bgeflow" in card.data.tags and card.data.model_name == "minilm-qa"
    scores = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert scores == {"ndcg_at_10": 0.5, "recall_at_10": 0.7}  # the retriever's own, not the reranker's
    assert {r.task_type for r in card.data.eval_results} == {"Retrieval"}
    text = (folder / "README.md").read_text()
    assert f"pooling_method='{pooling}'" in text

    # The snippets as printed, run against the downloaded folder.
    shown = f"./minilm-qa-{result.version}"
    assert f"bgeflow models download {reg}/minilm-qa@{result.version} {shown}" in text
    st_code, flag_code = _code_blocks(text, "python")
    st = _run_snippet(st_code, shown, folder)
    flag = _run_snippet(flag_code.replace(")\n", ", devices='cpu', use_fp16=False)\n", 1), shown, folder)
    reference = SentenceTransformer(str(folder), device="cpu").encode(
        ["The giant panda is a bear native to China."])
    np.testing.assert_allclose(st["passages"], reference, atol=1e-5)
    np.testing.assert_allclose(np.asarray(flag["p"]), reference, atol=1e-4)


def test_a_reranker_card_names_its_own_metrics_and_base(tiny_reranker: str, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    reg = str(tmp_path / "registry")
    result = publish(PublishSpec.of(model=tiny_reranker, name="rr", registry=reg,
                                    metrics=str(_metrics(tmp_path / "metrics.json"))))
    folder = registry.download_model(reg, "rr", result.version, tmp_path / "download")
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "BAAI/bge-reranker-base"  # base_reranker, not the retriever's base
    assert card.data.pipeline_tag == "text-ranking" and "cross-encoder" in card.data.tags
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"ndcg_at_10": 0.45}
    assert "CrossEncoder(" in card.text and "FlagReranker(" in card.text


def test_a_model_published_without_metrics_or_hub_base_has_a_valid_card(minilm_path: str, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    reg = str(tmp_path / "registry")
    result = publish(PublishSpec.of(model=minilm_path, name="plain", registry=reg, base_model=str(tmp_path)))
    card = ModelCard.load(Path(reg) / "plain" / result.version / "model" / "README.md")
    assert card.data.base_model is None and card.data.eval_results is None
    assert "Published without evaluation metrics." in card.text
    # The bundled model's own README (its hub card) was replaced, not published beside ours.
    assert "bgeflow" in card.data.tags


def test_base_model_hub_ids() -> None:
    assert hub_model_id(BUNDLED_MINILM) == MINILM_HUB_ID
    assert hub_model_id("BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"
    for not_on_the_hub in ("s3://bucket/models/x", "gs://bucket/x", "./no/such/dir", "bundled:nope"):
        assert hub_model_id(not_on_the_hub) is None


def test_flag_loading_follows_the_export_or_the_models_own_config(minilm_path: str, tmp_path: Path) -> None:
    # MiniLM's sentence-transformers config says mean pooling + Normalize: FlagModel must be told so.
    assert flag_loading(Path(minilm_path), "retriever") == FlagLoading(
        "FlagModel", {"pooling_method": "mean", "normalize_embeddings": True})
    (tmp_path / "flagembedding.json").write_text(json.dumps(
        {"class": "BGEM3FlagModel", "init": {"pooling_method": "cls", "colbert_dim": 8}}))
    loading = flag_loading(tmp_path, "retriever")
    assert loading.call("p") == "BGEM3FlagModel(p, pooling_method='cls', colbert_dim=8)"
    assert flag_loading(tmp_path / "nothing", "reranker").call() == "FlagReranker(path)"


def test_metric_names_and_own_metrics() -> None:
    assert metric_id("ndcg@10") == "ndcg_at_10" and metric_id("map@100") == "map_at_100"
    doc = {"metrics": {"finetuned": {"ndcg@10": 0.5, "rerank.ndcg@10": 0.4, "m3.sparse.ndcg@10": 0.1}}}
    assert own_metrics(doc, "retriever") == {"ndcg@10": 0.5}
    assert own_metrics(doc, "reranker") == {"ndcg@10": 0.4}
    assert own_metrics(None, "retriever") == {}


#: (evaluation, the card's model) → the card's gate verdict line (None: no rule judges it).
CARD_GATES = [
    ("all passed", "retriever", "Gate of this retriever `ndcg@10>=base+0.01`: **passed**"),
    ("all passed", "reranker", "Gate of this reranker `rerank.ndcg@10>=retriever`: **passed**"),
    ("reranker failed", "retriever", "Gate of this retriever `ndcg@10>=base+0.01`: **passed**"),
    ("reranker failed", "reranker",
     "Gate of this reranker `rerank.ndcg@10>=retriever`: **FAILED (published anyway, with --publish-if-gate-failed)**"),
    ("retriever failed", "retriever",
     "Gate of this retriever `ndcg@10>=base+0.01`: **FAILED (published anyway, with --publish-if-gate-failed)**"),
    ("retriever failed", "reranker", "Gate of this reranker `rerank.ndcg@10>=retriever`: **passed**"),
    ("no gate", "retriever", "No gate rules were given."),
    ("retriever rules only", "reranker", "No gate rule judges this reranker."),
]


@pytest.mark.parametrize(("case", "kind", "line"), CARD_GATES, ids=[f"{c}:{k}" for c, k, _ in CARD_GATES])
def test_the_cards_gate_and_table_are_the_published_models_own(tmp_path: Path, case: str, kind: str, line: str) -> None:
    from bgeflow.steps.publish.card import gate_section, own_columns
    from test_publish import METRICS_CASES, gate_metrics

    params = METRICS_CASES.get(case, {"gate": "ndcg@10>=base+0.01"})
    metrics = json.loads(gate_metrics(tmp_path / "m.json", **params).read_text())
    lines = gate_section(metrics, kind)
    assert lines[0] == line
    verdicts = [text for text in lines if text.startswith("- ")]
    own = {"retriever": "ndcg@10>=base+0.01", "reranker": "rerank.ndcg@10>=retriever"}[kind]
    assert all(f"`{own}`" in text for text in verdicts)  # only its own rules get a ✅/❌
    assert len(verdicts) == (1 if line.startswith("Gate") else 0)
    table = own_columns(metrics, kind)["metrics"]
    assert {metric for values in table.values() for metric in values} == (
        {"rerank.ndcg@10"} if kind == "reranker" else {"ndcg@10"})
    assert ("retriever" in table) is (kind == "reranker")  # "not reranked" is the reranker's reference


def test_the_cards_settings_table_shows_whole_numbers_as_given(tmp_path: Path) -> None:
    """Numbers through KFP's Struct arrive as floats, and logging_steps/save_steps are float fields: the card
    said `logging_steps` `2.0`; fractions and strings stay as they are."""
    from bgeflow.steps.publish.card import _config_summary

    (tmp_path / "train_config.yaml").write_text(
        "hyperparameters:\n  logging_steps: 2.0\n  save_steps: 100000.0\n  learning_rate: 5.0e-05\n  warmup_ratio: 0.1\n"
        "  report_to: none\n")
    table = _config_summary(tmp_path)
    assert {"| `hyperparameters.logging_steps` | `2` |", "| `hyperparameters.save_steps` | `100000` |",
            "| `hyperparameters.learning_rate` | `5e-05` |", "| `hyperparameters.warmup_ratio` | `0.1` |",
            "| `hyperparameters.report_to` | `none` |"} <= set(table)


def test_a_relative_registry_is_published_and_carded_absolute(minilm_path: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`bgeflow publish --registry reg`: the card's registry and download command work from any folder."""
    monkeypatch.chdir(tmp_path)
    spec = PublishSpec.of(model=minilm_path, name="plain", registry="reg", base_model=str(tmp_path))
    assert spec.registry == str(tmp_path / "reg")
    result = publish(spec)
    text = (tmp_path / "reg" / "plain" / result.version / "model" / "README.md").read_text()
    assert f"bgeflow models download {tmp_path}/reg/plain@{result.version}" in text
    assert f"- registry: `{tmp_path}/reg/plain`" in text
