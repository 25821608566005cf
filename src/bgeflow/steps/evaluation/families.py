"""Evaluation by model family: what a BGE family is scored with beyond a dense bi-encoder or cross-encoder.

``bgeflow.steps.evaluation.evaluate`` asks these functions at three points and does its usual
work when they have nothing to add:

- ``format_queries``: the queries as the retriever was trained on them. An ICL-trained LLM embedder
  (bge-en-icl, ``decoder-icl``) ends each query with its suffix (``flagembedding.json``'s
  ``suffix``), as ``FlagICLModel`` does; the instruction is already in front (the encoding's
  ``query_instruction``).
- ``family_metrics``: bge-m3's other two scores. Its dense embedding is evaluated like any
  retriever's; then ``BGEM3FlagModel`` encodes queries and each query's dense candidates (the top
  ``retrieval_k``) with sparse (lexical weights) and multi-vector (ColBERT) outputs, and the
  candidates are re-ranked by the sparse score, the ColBERT score, and their weighted sum with the
  dense one, as ``BGEM3FlagModel.compute_score`` computes them (BGE-M3's hybrid retrieval: dense
  candidates, all three scores to order them). Metrics are named after ``compute_score``'s keys:
  ``m3.sparse.ndcg@10``, ``m3.colbert.ndcg@10``, ``m3.colbert+sparse+dense.ndcg@10``.
- ``rerank_scores``: LLM rerankers scored by ``FlagLLMReranker`` (the logit of ``Yes`` after the
  prompt) or ``LayerWiseFlagLLMReranker`` (the last layer's head), with the instructions the model
  was trained with (its ``flagembedding.json``, else FlagEmbedding's defaults); cross-encoders are
  left to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bgeflow.retrieval.families import Family, family, inference_settings, inspect_model
from bgeflow.steps.evaluation.metrics import compute_metrics

if TYPE_CHECKING:
    import numpy as np

    from bgeflow.core.spec import Spec

log = logging.getLogger(__name__)

M3_PREFIX = "m3."
#: Dense, sparse and ColBERT weights of the combined score: BGE-M3's README's hybrid weights.
M3_WEIGHTS = (0.4, 0.2, 0.4)
#: Scored modes, by ``BGEM3FlagModel.compute_score``'s names.
M3_MODES = ("sparse", "colbert", "colbert+sparse+dense")
#: Passages encoded at once for the sparse and ColBERT scores (ColBERT keeps a vector per token).
M3_CHUNK = 512


def model_family(kind: str, model_path: str | Path) -> Family:
    """The family of a local model folder (``encoder``/``reranker`` when it cannot be read)."""
    facts = inspect_model(str(model_path))
    if facts is None:
        return "encoder" if kind == "retriever" else "reranker"
    return family(kind, facts)


def format_queries(model_path: str | Path, texts: Sequence[str]) -> list[str]:
    """``texts`` (instructions already in front) as the retriever at ``model_path`` reads queries."""
    document = inference_settings(model_path)
    if document.get("class") == "FlagICLModel":
        suffix = str(document.get("init", {}).get("suffix", ""))
        return [text + suffix for text in texts]
    return list(texts)


def _device(settings: Spec) -> str:
    from bgeflow.retrieval.encoder import pick_device

    return pick_device(getattr(settings, "device", None))


def _colbert_dim(model_dir: Path) -> int:
    """The ColBERT head's width (``BGEM3FlagModel`` must be told when it is not the hidden size)."""
    import torch

    head = model_dir / "colbert_linear.pt"
    if not head.is_file():
        return -1
    return int(torch.load(head, map_location="cpu", weights_only=True)["weight"].shape[0])


def m3_scores(model_path: str | Path, queries: Sequence[str], passages: Sequence[str], candidates: np.ndarray,
              encoding: Spec, weights: tuple[float, float, float] = M3_WEIGHTS) -> dict[str, np.ndarray]:
    """Per mode of ``M3_MODES``, the score of each query's candidates: arrays shaped like ``candidates``.

    ``candidates``: ``(n_queries, k)`` indices into ``passages`` (-1: no candidate, scored -inf).
    Scores are ``BGEM3FlagModel``'s: dense inner product, lexical matching of the sparse weights,
    ColBERT late interaction over the passage's tokens, and ``compute_score``'s weighted mean
    ``(w_dense * dense + w_sparse * sparse + w_colbert * colbert) / sum(w)``.
    """
    import numpy as np
    from FlagEmbedding import BGEM3FlagModel

    from bgeflow.retrieval.pooling import resolve_normalize, resolve_pooling

    device = _device(encoding)
    model = BGEM3FlagModel(str(model_path), use_fp16=device.startswith("cuda"), devices=device,
                           pooling_method=resolve_pooling(encoding.pooling, model_path),
                           normalize_embeddings=resolve_normalize(encoding.normalize, model_path), colbert_dim=_colbert_dim(Path(model_path)),
                           batch_size=int(encoding.batch_size))
    outputs = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}
    q = model.encode(list(queries), max_length=int(encoding.query_max_len), **outputs)
    scores = {mode: np.full(candidates.shape, -np.inf, dtype=np.float32) for mode in M3_MODES}
    slots: dict[int, list[tuple[int, int]]] = {}
    for (qi, slot), pid in np.ndenumerate(candidates):
        if pid >= 0:
            slots.setdefault(int(pid), []).append((qi, slot))
    needed = sorted(slots)
    w_dense, w_sparse, w_colbert = weights
    for start in range(0, len(needed), M3_CHUNK):
        chunk = needed[start : start + M3_CHUNK]
        p = model.encode([passages[i] for i in chunk], max_length=int(encoding.passage_max_len), **outputs)
        for j, pid in enumerate(chunk):
            for qi, slot in slots[pid]:
                dense = float(np.dot(q["dense_vecs"][qi], p["dense_vecs"][j]))
                sparse = float(model.compute_lexical_matching_score(q["lexical_weights"][qi],
                                                                    p["lexical_weights"][j]))
                colbert = float(model.colbert_score(q["colbert_vecs"][qi], p["colbert_vecs"][j]))
                scores["sparse"][qi, slot] = sparse
                scores["colbert"][qi, slot] = colbert
                scores["colbert+sparse+dense"][qi, slot] = (
                    (w_dense * dense + w_sparse * sparse + w_colbert * colbert) / sum(weights))
    del model
    return scores


def family_metrics(model_path: str | Path, *, query_ids: Sequence[str], queries: Sequence[str],
                   corpus_ids: Sequence[str], passages: Sequence[str], candidates: np.ndarray,
                   qrels: Mapping[str, Mapping[str, int]], metric_names: Sequence[str],
                   encoding: Spec) -> dict[str, float]:
    """A retriever's metrics beyond its dense ones (bge-m3: ``m3.<mode>.<metric>``); ``{}`` for other families.

    ``candidates``: the dense retrieval's ``(n_queries, k)`` corpus indices, best first; ties in a
    mode's scores keep that order.
    """
    import numpy as np

    if model_family("retriever", model_path) != "m3":
        return {}
    log.info("bge-m3 %s: sparse and ColBERT scores of the top %d dense candidates", model_path,
             candidates.shape[1])
    out: dict[str, float] = {}
    for mode, scores in m3_scores(model_path, queries, passages, candidates, encoding).items():
        rankings: dict[str, list[str]] = {}
        for query_id, row, own in zip(query_ids, candidates, scores, strict=True):
            order = np.argsort(-own, kind="stable")
            rankings[query_id] = [corpus_ids[row[i]] for i in order if row[i] >= 0]
        out.update({f"{M3_PREFIX}{mode}.{m}": v for m, v in compute_metrics(rankings, qrels, metric_names).items()})
    return out


def rerank_scores(model_path: str | Path, pairs: Sequence[tuple[str, str]], scoring: Spec, *,
                  device: str | None = None) -> np.ndarray | None:
    """One score per pair for an LLM reranker (FlagEmbedding's class for its family); None for a cross-encoder."""
    import numpy as np

    kind = model_family("reranker", model_path)
    if kind == "reranker":
        return None
    from FlagEmbedding import FlagLLMReranker, LayerWiseFlagLLMReranker

    from bgeflow.retrieval.encoder import pick_device

    cls: Any = LayerWiseFlagLLMReranker if kind == "layerwise-reranker" else FlagLLMReranker
    document = inference_settings(model_path)
    init = dict(document.get("init", {})) if document.get("class") == cls.__name__ else {}
    init.update(max_length=int(scoring.max_len), batch_size=int(scoring.batch_size))
    where = pick_device(device)
    log.info("%s scores %d pairs with %s", model_path, len(pairs), cls.__name__)
    model = cls(str(model_path), use_fp16=where.startswith("cuda"), devices=where, **init)
    if kind == "layerwise-reranker":
        # FlagEmbedding's layerwise model code predates transformers' Cache classes (see export.merge_lora).
        model.model.config.use_cache = False
    if not pairs:
        return np.empty(0, dtype=np.float32)
    scores = model.compute_score([tuple(p) for p in pairs])
    del model
    return np.asarray(scores, dtype=np.float32).reshape(len(pairs))
