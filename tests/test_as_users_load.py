"""Models evaluated as users load them (``SentenceTransformer(path)``, ``CrossEncoder(path)``).

Evaluation goes through sentence-transformers' loaders; export writes what they need; bgeflow's own
encoder (mining's out-of-core path) agrees with ``SentenceTransformer`` to 1e-4 on every pooling
it computes; and every reranker loader refuses a model without a trained classification head.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bgeflow.cli import main
from bgeflow.retrieval.encoder import CrossEncoderScorer, Encoder
from bgeflow.steps.evaluation import EvaluateSpec, compute_metrics, evaluate
from test_evaluate import QUERIES, TOPICS, write_eval_dir
from test_models import fake_hub_model, hub_cache, last_token_copy  # noqa: F401  (hub_cache: a fixture)

TEXTS = ["The cat sat on the mat.", "Dogs bark loudly at night when strangers walk past the house.",
         "Python is a programming language.", "短文本", "x", "Faiss searches dense vectors by inner product."]
LIMITS = {"query_max_len": 16, "passage_max_len": 32, "batch_size": 32}


def st_saved(minilm_path: str, dest: Path, pooling: str, *, normalize: bool = True,
             similarity: str | None = None) -> Path:
    """MiniLM saved by sentence-transformers with ``pooling`` (and a Normalize module or not)."""
    from sentence_transformers import SentenceTransformer, models

    transformer = models.Transformer(minilm_path, max_seq_length=64)
    modules = [transformer, models.Pooling(transformer.get_embedding_dimension(), pooling)]
    if normalize:
        modules.append(models.Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", similarity_fn_name=similarity)
    model.save(str(dest))
    return dest


def tiny_decoder(minilm_path: str, dest: Path) -> Path:
    """A random 2-layer Llama (left padding, last-token pooling): the LLM-embedder family, no download."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    raw = dest.parent / (dest.name + "-raw")
    LlamaModel(LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                           pad_token_id=0)).save_pretrained(raw)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(raw)
    transformer = models.Transformer(str(raw), max_seq_length=64)
    pooling = models.Pooling(transformer.get_embedding_dimension(), "lasttoken")
    SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu").save(str(dest))
    return dest


# --------------------------------------------------------------------------- the encoder agrees with ST


@pytest.mark.parametrize("pooling", ["cls", "mean", "lasttoken"])
def test_encoder_agrees_with_sentence_transformers(minilm_path: str, tmp_path: Path, pooling: str) -> None:
    from sentence_transformers import SentenceTransformer

    path = st_saved(minilm_path, tmp_path / pooling, pooling)
    reference = SentenceTransformer(str(path), device="cpu")
    reference.max_seq_length = 32
    encoder = Encoder(str(path), batch_size=3, passage_max_len=32, precision="fp32")
    assert encoder.pooling == {"lasttoken": "last_token"}.get(pooling, pooling) and encoder.normalize
    np.testing.assert_allclose(encoder.encode_passages(TEXTS), reference.encode(TEXTS, batch_size=3), atol=1e-4)


def test_encoder_agrees_on_a_left_padded_decoder(minilm_path: str, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    path = tiny_decoder(minilm_path, tmp_path / "llama")
    reference = SentenceTransformer(str(path), device="cpu")
    reference.max_seq_length = 32
    # One batch each: a decoder's states depend on how much left padding a text gets.
    encoder = Encoder(str(path), batch_size=len(TEXTS), passage_max_len=32, precision="fp32")
    assert encoder.pooling == "last_token" and encoder.tokenizer.padding_side == "left"
    np.testing.assert_allclose(encoder.encode_passages(TEXTS), reference.encode(TEXTS, batch_size=len(TEXTS)),
                               atol=1e-4)


def test_encoder_follows_a_dot_product_model_and_refuses_modules_it_cannot_compute(minilm_path: str,
                                                                                   tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer, models

    from bgeflow.core.errors import ConfigError

    dot = st_saved(minilm_path, tmp_path / "dot", "mean", normalize=False, similarity="dot")
    reference = SentenceTransformer(str(dot), device="cpu")
    reference.max_seq_length = 32
    encoder = Encoder(str(dot), passage_max_len=32, precision="fp32")
    assert encoder.normalize is False
    np.testing.assert_allclose(encoder.encode_passages(TEXTS), reference.encode(TEXTS), atol=1e-4)

    dense = tmp_path / "dense"
    transformer = models.Transformer(minilm_path)
    SentenceTransformer(modules=[transformer, models.Pooling(384, "mean"), models.Dense(384, 64)],
                        device="cpu").save(str(dense))
    with pytest.raises(ConfigError, match=r"module\(s\) Dense .*cannot compute"):
        Encoder(str(dense))


# --------------------------------------------------------------------------- evaluation through the loaders


def metrics_as_users_get_them(path: str, names: list[str], *, cosine: bool) -> dict[str, float]:
    """Brute-force ranking with ``SentenceTransformer(path)`` and its similarity function."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = 32
    passages = model.encode([text for texts in TOPICS.values() for text in texts])
    model.max_seq_length = 16
    queries = model.encode([text for _, text, _ in QUERIES])
    if cosine:
        passages = passages / np.linalg.norm(passages, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"{t}-{i}" for t, texts in TOPICS.items() for i in range(len(texts))]
    order = np.argsort(-(queries @ passages.T), axis=1, kind="stable")
    rankings = {q[0]: [ids[j] for j in row] for q, row in zip(QUERIES, order, strict=True)}
    return compute_metrics(rankings, {q[0]: q[2] for q in QUERIES}, names)


def test_a_hub_model_saved_with_last_token_pooling_is_evaluated_with_it(
    minilm_path: str, tmp_path: Path, hub_cache: Path  # noqa: F811
) -> None:
    """The issue's case: a last-token model was scored with CLS (its hub id is no local folder)."""
    snapshot = fake_hub_model(hub_cache, "org/minilm-last", last_token_copy(minilm_path, tmp_path / "lt"))
    result = evaluate(EvaluateSpec.of(output=str(tmp_path / "out"), eval_data=str(write_eval_dir(tmp_path / "eval")),
                                      retriever="org/minilm-last", **LIMITS))
    tuned = result.metrics["metrics"]["finetuned"]
    assert result.metrics["models"]["finetuned"]["pooling"] == "last_token"
    for metric, value in metrics_as_users_get_them(str(snapshot), list(tuned), cosine=True).items():
        assert tuned[metric] == pytest.approx(value, abs=1e-6), metric


def test_a_dot_product_model_is_not_normalised(minilm_path: str, tmp_path: Path) -> None:
    """A second input of the kind: a model saved without Normalize, declaring dot-product similarity."""
    dot = st_saved(minilm_path, tmp_path / "dot", "mean", normalize=False, similarity="dot")
    result = evaluate(EvaluateSpec.of(output=str(tmp_path / "out"), eval_data=str(write_eval_dir(tmp_path / "eval")),
                                      retriever=str(dot), **LIMITS))
    tuned = result.metrics["metrics"]["finetuned"]
    assert result.metrics["models"]["finetuned"]["normalize"] is False
    as_users = metrics_as_users_get_them(str(dot), list(tuned), cosine=False)
    for metric, value in as_users.items():
        assert tuned[metric] == pytest.approx(value, abs=1e-6), metric
    # The data tell the two apart: normalising would have given other numbers.
    assert as_users != metrics_as_users_get_them(str(dot), list(tuned), cosine=True)
    assert "no (dot product)" in (tmp_path / "out" / "report.md").read_text()


def test_a_dense_module_is_applied_in_evaluation(minilm_path: str, tmp_path: Path) -> None:
    """What bgeflow's own encoder cannot compute, evaluation gets right through the user's loader."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(0)
    dense = tmp_path / "dense"
    transformer = models.Transformer(minilm_path)
    SentenceTransformer(modules=[transformer, models.Pooling(384, "mean"), models.Dense(384, 64),
                                 models.Normalize()], device="cpu").save(str(dense))
    result = evaluate(EvaluateSpec.of(output=str(tmp_path / "out"), eval_data=str(write_eval_dir(tmp_path / "eval")),
                                      retriever=str(dense), **LIMITS))
    tuned = result.metrics["metrics"]["finetuned"]
    for metric, value in metrics_as_users_get_them(str(dense), list(tuned), cosine=True).items():
        assert tuned[metric] == pytest.approx(value, abs=1e-6), metric


# --------------------------------------------------------------------------- rerankers


def test_evaluate_refuses_a_reranker_without_a_trained_head(minilm_path: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A second input of the teacher case: the fine-tuned reranker given to evaluate is a bi-encoder."""
    argv = ["evaluate", "--eval-data", str(write_eval_dir(tmp_path / "eval")), "--retriever", "bundled:minilm",
            "--reranker", "bundled:minilm", "--output", str(tmp_path / "out"), "--query-max-len", "16",
            "--passage-max-len", "32"]
    assert main(argv) == 2
    assert "reranker bundled:minilm has no trained sequence-classification head" in capsys.readouterr().err


def test_a_base_reranker_without_a_head_is_left_out_and_said_so(minilm_path: str, tiny_reranker: str,
                                                                 tmp_path: Path) -> None:
    """A reranker fine-tuned from a bi-encoder (the demo's) has no base scores: not random ones."""
    result = evaluate(EvaluateSpec.of(output=str(tmp_path / "out"), eval_data=str(write_eval_dir(tmp_path / "eval")),
                                      retriever="bundled:minilm", reranker=tiny_reranker,
                                      base_reranker="bundled:minilm", rerank_top_k=3, rerank_max_len=48, **LIMITS))
    assert "rerank.ndcg@10" in result.metrics["metrics"]["finetuned"]
    assert "base" not in result.metrics["metrics"]
    skipped = result.metrics["models"]["base_reranker"]["skipped"]
    assert "no trained sequence-classification head" in skipped
    assert skipped in (tmp_path / "out" / "report.md").read_text()


def test_evaluation_scores_rerankers_as_cross_encoder_does(tiny_reranker: str) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    from bgeflow.retrieval.loaders import load_reranker
    from bgeflow.retrieval.spec import ScoringSettings

    pairs = [("what is a cat", t) for t in TEXTS]
    reference = CrossEncoder(tiny_reranker, device="cpu", max_length=48).predict(
        pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(load_reranker("r", tiny_reranker, ScoringSettings.of(max_len=48)).score(pairs),
                               reference, atol=1e-4)
    np.testing.assert_allclose(CrossEncoderScorer(tiny_reranker, max_len=48, precision="fp32").score(pairs), reference, atol=1e-4)


# --------------------------------------------------------------------------- export


def _fake_run(minilm_path: str, run: Path, *, head: bool = False) -> Path:
    """A FlagEmbedding output folder: the bare transformers model (and tokenizer) it saves."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    cls: Any = AutoModelForSequenceClassification if head else AutoModel
    cls.from_pretrained(minilm_path, **({"num_labels": 1} if head else {})).save_pretrained(run)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(run)
    (run / "training_args.bin").write_bytes(b"pickle")
    return run


@pytest.mark.parametrize(("pooling", "normalize"), [("cls", True), ("last_token", False)])
def test_an_exported_retriever_loads_as_trained(minilm_path: str, tmp_path: Path, pooling: str,
                                                normalize: bool) -> None:
    from sentence_transformers import SentenceTransformer

    from bgeflow.steps.training.export import export_model

    model = export_model(_fake_run(minilm_path, tmp_path / "run"), tmp_path / "model", kind="retriever",
                         pooling=pooling, normalize=normalize, max_seq_length=48, query_prompt="q: ")
    loaded = SentenceTransformer(str(model), device="cpu")
    assert loaded.max_seq_length == 48 and loaded.prompts["query"] == "q: "
    assert loaded.similarity_fn_name == ("cosine" if normalize else "dot")
    encoder = Encoder(str(model), passage_max_len=48, precision="fp32")
    assert (encoder.pooling, encoder.normalize, encoder.query_instruction) == (pooling, normalize, "q: ")
    np.testing.assert_allclose(encoder.encode_passages(TEXTS), loaded.encode(TEXTS), atol=1e-4)


def test_an_exported_reranker_loads_with_its_trained_head(minilm_path: str, tmp_path: Path) -> None:
    import torch
    from sentence_transformers import CrossEncoder

    from bgeflow.steps.training.export import export_model

    torch.manual_seed(0)
    model = export_model(_fake_run(minilm_path, tmp_path / "run", head=True), tmp_path / "model", kind="reranker",
                         max_seq_length=64)
    pairs = [("what is a cat", t) for t in TEXTS]
    reference = CrossEncoder(str(model), device="cpu", max_length=64).predict(pairs, activation_fn=torch.nn.Identity())
    np.testing.assert_allclose(CrossEncoderScorer(str(model), max_len=64, precision="fp32").score(pairs), reference, atol=1e-4)
    shutil.rmtree(tmp_path / "run")
