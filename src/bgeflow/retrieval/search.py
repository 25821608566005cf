"""Top-k inner-product search over passage vectors, in memory or out of core.

- When the passages fit ``max_memory_bytes`` (as float32), one exact flat search covers them all
  (faiss' BLAS brute force straight on the array on CPU, so the vectors are held once; a flat
  index on GPU).
- Otherwise the passages (usually a memory-mapped file from ``Encoder.encode_passages_to_file``)
  are searched shard by shard, each shard sized to the budget, and the per-shard top-k merged in
  a heap. This is still exact, so the recall estimate is 1.0; memory is one shard plus the results.

Shards of a memory-mapped file are read with plain file reads rather than through the map, so
the pool's pages are never counted in this process's resident memory.

``faiss`` is imported lazily: importing this module costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from bgeflow.core.errors import ConfigError, StepFailed
from bgeflow.core.log import progress

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """``scores`` and ``ids`` are ``(n_queries, k)``, best first; ``ids`` index the passages (-1: none)."""

    scores: np.ndarray
    ids: np.ndarray
    method: str
    recall_estimate: float | None


def _faiss(use_gpu: bool) -> Any:
    import faiss

    if use_gpu:
        gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
        if not hasattr(faiss, "StandardGpuResources") or gpus < 1:
            raise ConfigError(
                "GPU search requested (--use-gpu) but "
                + ("this faiss build has no GPU support (install faiss-gpu)" if not hasattr(faiss, "StandardGpuResources")
                   else "faiss sees no CUDA GPU")
                + "; drop --use-gpu to search on CPU"
            )
    return faiss


def check_gpu() -> None:
    """RuntimeError, with what to do, unless faiss can search on a GPU here."""
    _faiss(use_gpu=True)


def read_rows(passages: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``[start, stop)`` as a float32 array, read from the file when ``passages`` is a memmap."""
    if isinstance(passages, np.memmap) and passages.filename and passages.ndim == 2:
        row_bytes = passages.shape[1] * passages.dtype.itemsize
        count = stop - start
        buffer = np.empty((count, passages.shape[1]), dtype=passages.dtype)
        with open(passages.filename, "rb") as fh:
            fh.seek(passages.offset + start * row_bytes)
            got = fh.readinto(memoryview(buffer).cast("B"))
        if got != count * row_bytes:
            raise StepFailed(f"{passages.filename}: short read at row {start} ({got} of {count * row_bytes} bytes)")
        return buffer.astype(np.float32, copy=False)
    return np.ascontiguousarray(passages[start:stop], dtype=np.float32)


def iter_shards(passages: np.ndarray, rows_per_shard: int) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, len(passages), rows_per_shard):
        yield start, read_rows(passages, start, min(start + rows_per_shard, len(passages)))


def gather_rows(passages: np.ndarray, indices: np.ndarray, *, max_memory_bytes: int | None = None) -> np.ndarray:
    """``passages[indices]`` as float32, reading a memmap shard by shard (one sequential pass)."""
    indices = np.asarray(indices, dtype=np.int64)
    out = np.empty((len(indices), passages.shape[1]), dtype=np.float32)
    if not len(indices):
        return out
    if not isinstance(passages, np.memmap):
        out[:] = passages[indices]
        return out
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    rows = _rows_per_shard(passages.shape[1], max_memory_bytes, len(passages))
    for start, shard in iter_shards(passages, rows):
        lo, hi = np.searchsorted(sorted_idx, [start, start + len(shard)])
        if hi > lo:
            out[order[lo:hi]] = shard[sorted_idx[lo:hi] - start]
    return out


def _rows_per_shard(dim: int, max_memory_bytes: int | None, n: int) -> int:
    if max_memory_bytes is None:
        return max(n, 1)
    return max(1, int(max_memory_bytes // (dim * 4)))


def search(
    queries: np.ndarray,
    passages: np.ndarray,
    k: int,
    *,
    max_memory_bytes: int | None = None,
    use_gpu: bool = False,
    query_batch_size: int = 4096,
) -> SearchResult:
    """The ``k`` passages with the highest inner product for each query.

    ``k`` larger than the number of passages is cut to it. ``max_memory_bytes`` bounds the float32
    passage vectors held at once (None: no bound). ``use_gpu`` needs faiss with GPU support and a
    CUDA device, else RuntimeError.
    """
    if k <= 0:
        raise ConfigError(f"k must be positive, got {k}")
    if query_batch_size <= 0:
        raise ConfigError("query_batch_size must be positive")
    if queries.ndim != 2 or passages.ndim != 2 or queries.shape[1] != passages.shape[1]:
        raise ConfigError(f"queries {queries.shape} and passages {passages.shape} must be 2-D with the same dim")
    faiss = _faiss(use_gpu)
    n, dim = passages.shape
    k = min(k, n)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if k == 0:
        empty = np.zeros((len(queries), 0))
        return SearchResult(empty.astype(np.float32), empty.astype(np.int64), "empty", 1.0)
    resources = faiss.StandardGpuResources() if use_gpu else None
    rows = _rows_per_shard(dim, max_memory_bytes, n)
    sharded = rows < n
    method = ("sharded-flat" if sharded else "flat") + ("-gpu" if use_gpu else "")
    if sharded:
        log.info("search: %d passages exceed the memory budget; exact search in %d shards of %d rows",
                 n, -(-n // rows), rows)
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    shards = iter_shards(passages, rows)
    if sharded:
        shards = progress(shards, desc="search shards", total=-(-n // rows), unit="shard")
    for start, shard in shards:
        top_k = _shard_searcher(faiss, shard, min(k, len(shard)), resources)
        del shard
        for q0 in range(0, len(queries), query_batch_size):
            batch = queries[q0 : q0 + query_batch_size]
            scores, ids = top_k(batch)
            ids = np.where(ids >= 0, ids + start, -1)
            heap.add_result_subset(np.arange(q0, q0 + len(batch), dtype=np.int64), scores, ids)
        del top_k  # release this shard before the next one is read
    heap.finalize()
    return SearchResult(heap.D.astype(np.float32), heap.I.astype(np.int64), method, 1.0)


def _shard_searcher(
    faiss: Any, shard: np.ndarray, k: int, resources: Any
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if resources is None:
        # BLAS brute force straight on the shard: no index copy, so the vectors are held once.
        return lambda batch: faiss.knn(batch, shard, k, metric=faiss.METRIC_INNER_PRODUCT)
    index = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlatIP(shard.shape[1]))
    index.add(shard)  # the GPU holds its own copy
    return lambda batch: index.search(batch, k)
