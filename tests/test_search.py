"""Search: flat and sharded out-of-core paths agree with brute force, GPU requests fail clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bgeflow.core.errors import ConfigError
from bgeflow.retrieval.search import SearchResult, gather_rows, read_rows, search


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_force(q: np.ndarray, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = q @ p.T
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, ids, axis=1), ids


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return _unit(rng, 37, 16), _unit(rng, 501, 16)


def test_flat_search_is_exact(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, p = data
    result = search(q, p, 10, query_batch_size=8)
    assert isinstance(result, SearchResult) and result.method == "flat" and result.recall_estimate == 1.0
    scores, ids = _brute_force(q, p, 10)
    np.testing.assert_array_equal(result.ids, ids)
    np.testing.assert_allclose(result.scores, scores, atol=1e-5)


def test_sharded_search_over_memmap_equals_flat(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    q, p = data
    path = tmp_path / "p.f32"
    p.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=p.shape)
    budget = 50 * 16 * 4  # 50 rows per shard -> 11 shards, the last one short
    result = search(q, mm, 10, max_memory_bytes=budget, query_batch_size=5)
    assert result.method == "sharded-flat" and result.recall_estimate == 1.0
    flat = search(q, p, 10)
    np.testing.assert_array_equal(result.ids, flat.ids)
    np.testing.assert_allclose(result.scores, flat.scores, atol=1e-6)
    # A shard smaller than k still contributes its rows.
    tiny = search(q, mm, 10, max_memory_bytes=3 * 16 * 4)
    np.testing.assert_array_equal(tiny.ids, flat.ids)


def test_float16_memmap_is_read_as_float32(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    q, p = data
    path = tmp_path / "p.f16"
    p.astype(np.float16).tofile(path)
    mm = np.memmap(path, dtype=np.float16, mode="r", shape=p.shape)
    rows = read_rows(mm, 7, 19)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, p[7:19], atol=2e-3)
    result = search(q, mm, 5, max_memory_bytes=100 * 16 * 4)
    top1 = _brute_force(q, p, 1)[1][:, 0]
    assert (result.ids[:, 0] == top1).mean() > 0.9


def test_gather_rows_in_any_order(data: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    _, p = data
    path = tmp_path / "p.f32"
    p.tofile(path)
    mm = np.memmap(path, dtype=np.float32, mode="r", shape=p.shape)
    idx = np.array([400, 3, 3, 250, 0, 500])
    np.testing.assert_array_equal(gather_rows(mm, idx, max_memory_bytes=64 * 16 * 4), p[idx])
    np.testing.assert_array_equal(gather_rows(p, idx), p[idx])


def test_k_larger_than_pool_is_cut(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, p = data
    result = search(q, p[:4], 10)
    assert result.ids.shape == (37, 4) and set(result.ids[0]) == {0, 1, 2, 3}


def test_bad_shapes_and_k(data: tuple[np.ndarray, np.ndarray]) -> None:
    q, p = data
    with pytest.raises(ValueError, match="same dim"):
        search(q[:, :8], p, 3)
    with pytest.raises(ValueError, match="k must be positive"):
        search(q, p, 0)


def test_use_gpu_without_gpu_is_a_clear_error(data: tuple[np.ndarray, np.ndarray]) -> None:
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    q, p = data
    with pytest.raises(ConfigError, match="--use-gpu"):
        search(q, p, 3, use_gpu=True)
