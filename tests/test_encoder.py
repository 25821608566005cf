"""The shared encoder: real model code, order kept, instruction use, resumable file encoding, precision."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bgeflow.core.errors import NotFoundError
from bgeflow.retrieval.encoder import CrossEncoderScorer, Encoder, plan_batches, read_manifest
from bgeflow.retrieval.precision import cpu_native_bf16, resolve_precision

TEXTS = [
    "The cat sat on the mat.",
    "Dogs bark loudly at night when strangers walk past the house and the moon is full.",
    "Python is a programming language.",
    "A feline rested on a rug.",
    "短文本",
    "Faiss searches dense vectors by inner product or L2 distance, on CPU or GPU.",
    "x",
]


@pytest.fixture(scope="module")
def encoder(minilm_path: str) -> Encoder:
    # fp32: these tests compare with sentence-transformers and with itself to fp32 rounding.
    return Encoder(minilm_path, pooling="mean", batch_size=3, query_max_len=32, passage_max_len=32,
                   precision="fp32")


def test_matches_sentence_transformers(encoder: Encoder, minilm_path: str) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path, device="cpu")
    reference.max_seq_length = 32
    expected = reference.encode(TEXTS, normalize_embeddings=True, batch_size=3)
    got = encoder.encode_passages(TEXTS)
    assert got.dtype == np.float32 and got.shape == (len(TEXTS), encoder.dim) == (len(TEXTS), 384)
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_length_sorting_keeps_input_order(encoder: Encoder) -> None:
    forward = encoder.encode_passages(TEXTS)
    backward = encoder.encode_passages(TEXTS[::-1])
    np.testing.assert_allclose(backward[::-1], forward, atol=2e-5)
    single = encoder.encode_passages([TEXTS[1]])
    np.testing.assert_allclose(single[0], forward[1], atol=2e-5)


def test_query_instruction_is_prepended_to_queries_only(minilm_path: str) -> None:
    instruction = "Represent this sentence for searching relevant passages: "
    enc = Encoder(minilm_path, pooling="mean", query_instruction=instruction, query_max_len=48, passage_max_len=48,
                  precision="fp32")
    query = enc.encode_queries(["where did the cat sit"])
    np.testing.assert_allclose(query, enc.encode_passages([instruction + "where did the cat sit"]), atol=2e-5)
    assert not np.allclose(query, enc.encode_passages(["where did the cat sit"]), atol=1e-3)


def test_pooling_and_normalize_options(minilm_path: str, encoder: Encoder) -> None:
    raw_cls = Encoder(minilm_path, pooling="cls", normalize=False, passage_max_len=32,
                      precision="fp32").encode_passages(TEXTS)
    norms = np.linalg.norm(raw_cls, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)
    mean = encoder.encode_passages(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(raw_cls / norms[:, None], mean, atol=1e-2)


def test_bad_arguments_are_value_errors(minilm_path: str) -> None:
    with pytest.raises(ValueError, match="pooling"):
        Encoder(minilm_path, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(NotFoundError, match="/nonexistent/model/dir: no such directory"):
        Encoder("/nonexistent/model/dir")


def _pool(n: int) -> list[str]:
    return [f"passage number {i} about topic {i % 7}" + " word" * (i % 5) for i in range(n)]


def test_encode_to_file_matches_in_memory_in_chunks(encoder: Encoder, tmp_path: Path) -> None:
    texts = _pool(23)
    mm = encoder.encode_passages_to_file(texts, tmp_path / "pool.f32", chunk_size=5)
    assert isinstance(mm, np.memmap) and mm.shape == (23, 384) and mm.dtype == np.float32
    np.testing.assert_allclose(np.asarray(mm), encoder.encode_passages(texts), atol=2e-5)
    manifest = read_manifest(tmp_path / "pool.f32")
    assert manifest["chunks"] == 5 and manifest["done"] == [0, 1, 2, 3, 4] and manifest["rows"] == 23
    half = encoder.encode_passages_to_file(texts, tmp_path / "pool.f16", chunk_size=5, dtype="float16")
    assert half.dtype == np.float16 and (tmp_path / "pool.f16").stat().st_size == 23 * 384 * 2
    np.testing.assert_allclose(np.asarray(half, dtype=np.float32), np.asarray(mm), atol=2e-3)


def test_interrupted_encode_resumes_with_finished_chunks(
    encoder: Encoder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = _pool(23)
    path = tmp_path / "pool.f32"
    real = Encoder._encode
    calls: list[int] = []

    def crash_on_third_chunk(self: Encoder, batch: list[str], max_len: int, desc: str | None) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, batch, max_len, desc)

    monkeypatch.setattr(Encoder, "_encode", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        encoder.encode_passages_to_file(texts, path, chunk_size=5)
    assert read_manifest(path)["done"] == [0, 1]

    def counting(self: Encoder, batch: list[str], max_len: int, desc: str | None) -> np.ndarray:
        calls.append(len(batch))
        return real(self, batch, max_len, desc)

    calls.clear()
    monkeypatch.setattr(Encoder, "_encode", counting)
    resumed = encoder.encode_passages_to_file(texts, path, chunk_size=5)
    assert calls == [5, 5, 3]  # chunks 2, 3, 4 only
    monkeypatch.setattr(Encoder, "_encode", real)
    np.testing.assert_allclose(np.asarray(resumed), encoder.encode_passages(texts), atol=2e-5)

    # Other texts (or settings) never reuse stale chunks.
    calls.clear()
    monkeypatch.setattr(Encoder, "_encode", counting)
    changed = [*texts[:-1], "a different last passage"]
    encoder.encode_passages_to_file(changed, path, chunk_size=5)
    assert calls == [5, 5, 5, 5, 3]


def test_corrupt_manifest_starts_afresh(encoder: Encoder, tmp_path: Path) -> None:
    texts = _pool(6)
    path = tmp_path / "pool.f32"
    encoder.encode_passages_to_file(texts, path, chunk_size=4)
    path.with_name(path.name + ".manifest.json").write_text("{not json")
    again = encoder.encode_passages_to_file(texts, path, chunk_size=4)
    np.testing.assert_allclose(np.asarray(again), encoder.encode_passages(texts), atol=2e-5)
    assert json.loads(path.with_name(path.name + ".manifest.json").read_text())["done"] == [0, 1]


def test_cross_encoder_scores_pairs_in_order(tiny_reranker: str) -> None:
    scorer = CrossEncoderScorer(tiny_reranker, max_len=64, batch_size=2, precision="fp32")
    pairs = [("cat", TEXTS[0]), ("dog", TEXTS[1]), ("python", TEXTS[2]), ("faiss", TEXTS[5]), ("x", TEXTS[6])]
    scores = scorer.score(pairs)
    assert scores.dtype == np.float32 and scores.shape == (5,)
    assert len(set(np.round(scores, 5))) == 5
    np.testing.assert_allclose(scorer.score(pairs[::-1])[::-1], scores, atol=1e-5)
    np.testing.assert_allclose(scorer.score([pairs[3]]), scores[3:4], atol=1e-5)
    assert scorer.score([]).shape == (0,)


# --------------------------------------------------------------------------- precision and batching

#: Varied lengths, languages and a text long enough to be truncated: where bf16 rounding could add up.
AGREEMENT_TEXTS = [*TEXTS, *_pool(20), " ".join(f"token{i} of a long passage about search" for i in range(80)),
                   "Das Modell bettet Sätze ein; la recherche dense compare des vecteurs.", "42", "?!"]


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_bf16_vectors_agree_with_fp32_per_text(minilm_path: str, pooling: str) -> None:
    """The equal-results guarantee of reduced precision: cosine >= 0.999 to fp32 for every text."""
    settings = {"pooling": pooling, "passage_max_len": 128, "batch_size": 4}
    fp32 = Encoder(minilm_path, precision="fp32", **settings)
    bf16 = Encoder(minilm_path, precision="bf16", **settings)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.model.dtype.is_floating_point and str(bf16.model.dtype) == "torch.bfloat16"
    reference, reduced = fp32.encode_passages(AGREEMENT_TEXTS), bf16.encode_passages(AGREEMENT_TEXTS)
    assert reduced.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(reduced, axis=1), 1.0, atol=1e-5)  # normalised in fp32
    cosine = np.einsum("ij,ij->i", reference, reduced)
    assert cosine.min() >= 0.999, dict(zip(AGREEMENT_TEXTS, cosine.round(5).tolist(), strict=True))
    assert not np.array_equal(reference, reduced)  # bf16 really ran: it rounds


def test_precision_choice_follows_the_hardware(monkeypatch: pytest.MonkeyPatch) -> None:
    import bgeflow.retrieval.precision as precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # an explicit choice is kept (with a warning)
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision("int8", "cpu")  # type: ignore[arg-type]


def test_cpu_bf16_detection_reads_the_cpu_flags(tmp_path: Path) -> None:
    def cpuinfo(flags: str) -> str:
        path = tmp_path / f"cpuinfo-{len(flags)}"
        path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
        return str(path)

    assert cpu_native_bf16(cpuinfo("fpu sse avx2 avx512f avx512_bf16 avx512_vnni"))
    assert cpu_native_bf16(cpuinfo("fpu sse avx2 avx512f amx_tile amx_bf16"))
    assert not cpu_native_bf16(cpuinfo("fpu sse avx2 avx512f avx512bw"))  # AVX-512 alone: emulated bf16
    assert not cpu_native_bf16(str(tmp_path / "missing"))


def test_batches_keep_to_the_token_budget_and_cover_every_text() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, size=500)
    batches = plan_batches(lengths, batch_size=64, batch_tokens=4096)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    assert (np.diff(lengths[flat]) <= 0).all()  # longest first
    for batch in batches:
        assert len(batch) <= 64
        assert len(batch) * lengths[batch].max() <= 4096
    assert max(len(b) for b in batches) == 64  # short texts go many at a time
    assert min(len(b) for b in batches) <= 4096 // 290  # long ones few
    assert [len(b) for b in plan_batches(np.array([9000, 10, 10]), 8, 4096)] == [1, 2]  # over budget: alone


def test_encoder_describes_how_it_computes(encoder: Encoder) -> None:
    assert encoder.describe() == {"backend": "torch", "device": "cpu", "precision": "fp32",
                                  "precision_requested": "fp32", "attention": encoder.attention,
                                  "batch_size": 3, "batch_tokens": 8192}
    assert encoder.attention in ("sdpa", "eager")


def test_reranker_logits_in_bf16_track_fp32(tiny_reranker: str) -> None:
    pairs = [("cat", TEXTS[0]), ("dog", TEXTS[1]), ("python", TEXTS[2]), ("faiss", TEXTS[5]), ("x", TEXTS[6])]
    fp32 = CrossEncoderScorer(tiny_reranker, max_len=64, precision="fp32").score(pairs)
    bf16 = CrossEncoderScorer(tiny_reranker, max_len=64, precision="bf16").score(pairs)
    assert bf16.dtype == np.float32
    # bf16 keeps 8 significant bits; this random head's logits span only ~0.04, so the bound is on
    # the spread (measured: within 1% of it), not on the order of near-ties.
    np.testing.assert_allclose(bf16, fp32, atol=0.02 * float(np.ptp(fp32)))
    assert not np.array_equal(bf16, fp32)


def test_evaluation_loader_in_bf16_agrees_with_fp32(minilm_path: str) -> None:
    """Evaluation encodes through sentence-transformers; cast to bf16 it keeps the same guarantee."""
    from bgeflow.retrieval.loaders import load_retriever
    from bgeflow.retrieval.spec import EncodingSettings

    def vectors(precision: str) -> tuple[str, np.ndarray]:
        retriever = load_retriever("minilm", minilm_path, EncodingSettings.of(precision=precision, passage_max_len=128))
        return retriever.precision, retriever.encode_passages(AGREEMENT_TEXTS)

    (p32, reference), (p16, reduced) = vectors("fp32"), vectors("bf16")
    assert (p32, p16) == ("fp32", "bf16") and reduced.dtype == np.float32
    cosine = np.einsum("ij,ij->i", reference, reduced)
    assert cosine.min() >= 0.999 and not np.array_equal(reference, reduced)
