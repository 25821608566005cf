"""Mining out of core: several encoding chunks, a tiny --max-memory, and an interrupted run resumed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bgeflow.retrieval.encoder import Encoder, read_manifest
from bgeflow.steps.mining import MineSpec, mine

# fp32: these tests compare runs that batch the pool differently (chunks, shards) byte for byte. In
# bf16 a vector moves by ~1e-3 with its batch's shape (oneDNN picks kernels by shape), enough to swap
# near-tied ranks; the same chunking gives the same bytes (test_bf16_resume_equals_an_uninterrupted_run).
FAST = {"pooling": "mean", "query_max_len": 32, "passage_max_len": 32, "batch_size": 32, "precision": "fp32"}


@pytest.fixture(scope="module")
def train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 records over a pool of ~120 texts (each record: one positive, two negatives)."""
    import inspect
    import textwrap

    docs = []
    for name, obj in sorted(vars(textwrap).items()) + sorted(vars(inspect).items()):
        doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
        if callable(obj) and not name.startswith("_") and doc and len(doc[0]) > 25 and doc[0] not in docs:
            docs.append(doc[0].strip())
    assert len(docs) >= 60
    rows = [{"query": f"how to use {i}: {d[:30]}", "pos": [d], "neg": [docs[(i * 7 + 3) % len(docs)],
                                                                      docs[(i * 11 + 5) % len(docs)]]}
            for i, d in enumerate(docs[:40])]
    path = tmp_path_factory.mktemp("scale") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(minilm_path: str, train_file: Path, out: Path, work: Path, **kw: Any) -> MineSpec:
    return MineSpec.of(model=minilm_path, inputs=[str(train_file)], output=str(out), work_dir=str(work),
                      range_for_sampling="1-25", negative_number=6, **{**FAST, **kw})


@pytest.fixture(scope="module")
def reference(minilm_path: str, train_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    """The in-memory run: one chunk, one flat index."""
    base = tmp_path_factory.mktemp("reference")
    result = mine(_config(minilm_path, train_file, base / "mined.jsonl", base / "w"))
    assert result.report["search"]["method"] == "flat"
    return (base / "mined.jsonl").read_text(), result.report


def test_out_of_core_equals_in_memory(minilm_path: str, train_file: Path, tmp_path: Path,
                                      reference: tuple[str, dict]) -> None:
    expected, ref_report = reference
    work = tmp_path / "w"
    result = mine(_config(minilm_path, train_file, tmp_path / "mined.jsonl", work, chunk_size=8, max_memory="8KB"))
    report = result.report
    pool = report["pool_size"]
    assert pool == ref_report["pool_size"] and pool > 4 * 8  # several chunks
    assert read_manifest(work / "pool.float32")["chunks"] == -(-pool // 8)
    assert report["search"] == {**report["search"], "method": "sharded-flat", "recall_estimate": 1.0,
                                "max_memory_bytes": 8000}
    assert (tmp_path / "mined.jsonl").read_text() == expected


def test_float16_encodings_stay_close(minilm_path: str, train_file: Path, tmp_path: Path,
                                      reference: tuple[str, dict]) -> None:
    expected, _ = reference
    mine(_config(minilm_path, train_file, tmp_path / "mined.jsonl", tmp_path / "w", chunk_size=8,
                 max_memory="8KB", embedding_dtype="float16"))
    manifest = read_manifest(tmp_path / "w" / "pool.float16")
    assert (tmp_path / "w" / "pool.float16").stat().st_size == manifest["rows"] * 384 * 2
    got = [json.loads(line)["neg"] for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    want = [json.loads(line)["neg"] for line in expected.splitlines()]
    overlap = np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, want, strict=True)])
    assert overlap > 0.9


def test_interrupted_run_resumes_finished_chunks(minilm_path: str, train_file: Path, tmp_path: Path,
                                                 reference: tuple[str, dict],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    expected, _ = reference
    real = Encoder._encode
    pool_chunks: list[int] = []

    def interrupt_at_chunk_4(self: Encoder, texts: list[str], max_len: int, desc: str | None) -> np.ndarray:
        if desc is None:  # the chunked pool encoding
            pool_chunks.append(len(texts))
            if len(pool_chunks) == 4:
                raise KeyboardInterrupt
        return real(self, texts, max_len, desc)

    monkeypatch.setattr(Encoder, "_encode", interrupt_at_chunk_4)
    config = _config(minilm_path, train_file, tmp_path / "mined.jsonl", tmp_path / "w", chunk_size=8,
                     max_memory="8KB")
    with pytest.raises(KeyboardInterrupt):
        mine(config)
    assert not (tmp_path / "mined.jsonl").exists() and not (tmp_path / "mine_report.json").exists()
    assert read_manifest(tmp_path / "w" / "pool.float32")["done"] == [0, 1, 2]

    def count_chunks(self: Encoder, texts: list[str], max_len: int, desc: str | None) -> np.ndarray:
        if desc is None:
            pool_chunks.append(len(texts))
        return real(self, texts, max_len, desc)

    pool_chunks.clear()
    monkeypatch.setattr(Encoder, "_encode", count_chunks)
    result = mine(config)
    total = -(-result.report["pool_size"] // 8)
    assert len(pool_chunks) == total - 3  # only the chunks the first run did not finish
    assert (tmp_path / "mined.jsonl").read_text() == expected


def test_bf16_resume_equals_an_uninterrupted_run(minilm_path: str, train_file: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Reduced precision keeps resumption exact: a chunk's batches depend only on the chunk's texts."""
    settings = {"chunk_size": 8, "precision": "bf16"}
    whole = mine(_config(minilm_path, train_file, tmp_path / "whole.jsonl", tmp_path / "w1", **settings))
    assert whole.report["encoding"]["precision"] == "bf16"
    real = Encoder._encode
    calls: list[int] = []

    def interrupt_at_chunk_3(self: Encoder, texts: list[str], max_len: int, desc: str | None) -> np.ndarray:
        if desc is None:
            calls.append(len(texts))
            if len(calls) == 3:
                raise KeyboardInterrupt
        return real(self, texts, max_len, desc)

    monkeypatch.setattr(Encoder, "_encode", interrupt_at_chunk_3)
    config = _config(minilm_path, train_file, tmp_path / "resumed.jsonl", tmp_path / "w2", **settings)
    with pytest.raises(KeyboardInterrupt):
        mine(config)
    monkeypatch.setattr(Encoder, "_encode", real)
    mine(config)
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    assert (tmp_path / "w2" / "pool.float32").read_bytes() == (tmp_path / "w1" / "pool.float32").read_bytes()
