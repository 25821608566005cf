"""Which BGE family a model belongs to, read from its files; and how FlagEmbedding loads each family.

A model's family decides the FlagEmbedding runner that fine-tunes it and how mining, evaluation and
export treat it:

====================  ==========================================================  =======================
family                recognised by                                               FlagEmbedding class
====================  ==========================================================  =======================
``encoder``           any other encoder (BERT, XLM-R: bge-*-v1.5)                 ``FlagModel``
``m3``                XLM-R with ``colbert_linear.pt`` / ``sparse_linear.pt``      ``BGEM3FlagModel``
``llm``               a decoder-only LM (``config.json`` model type or a           ``FlagLLMModel``
                      ``*ForCausalLM`` architecture): bge-multilingual-gemma2
``reranker``          a cross-encoder (any encoder, as a reranker)                ``FlagReranker``
``llm-reranker``      a decoder-only LM, as a reranker: bge-reranker-v2-gemma     ``FlagLLMReranker``
``layerwise-reranker``  a layerwise config (``head_type`` and ``start_layer``):     ``LayerWiseFlagLLMReranker``
                      bge-reranker-v2-minicpm-layerwise
====================  ==========================================================  =======================

A model bgeflow exported says more in ``flagembedding.json`` (``INFERENCE_FILE``): the class and the
arguments to load it with (the instruction it was trained with, the ICL suffix, ColBERT's width), so
that ``getattr(FlagEmbedding, doc["class"])(path, **doc["init"])`` scores as training did.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bgeflow.retrieval.pooling import DECODER_MODEL_TYPES

log = logging.getLogger(__name__)

Family = Literal["encoder", "m3", "llm", "reranker", "llm-reranker", "layerwise-reranker"]
#: bge-m3's extra heads, saved next to the encoder's weights by FlagEmbedding's m3 runner.
M3_HEADS = ("colbert_linear.pt", "sparse_linear.pt")
#: What a bgeflow export says about loading the model with FlagEmbedding (class, init arguments).
INFERENCE_FILE = "flagembedding.json"
#: FlagEmbedding's class per family, when the model has no ``INFERENCE_FILE``.
CLASSES: dict[str, str] = {"encoder": "FlagModel", "m3": "BGEM3FlagModel", "llm": "FlagLLMModel",
                           "reranker": "FlagReranker", "llm-reranker": "FlagLLMReranker",
                           "layerwise-reranker": "LayerWiseFlagLLMReranker"}


@dataclass(frozen=True)
class ModelFacts:
    """What a model's files say: its ``config.json`` and the names of the files beside it."""

    ref: str
    config: dict[str, Any]
    files: frozenset[str]
    inference: dict[str, Any] | None = None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def inspect_model(ref: str) -> ModelFacts | None:
    """The facts of a local model folder or a Hugging Face hub model; None when neither can be read.

    A hub model's ``config.json`` comes through ``huggingface_hub`` (its cache when offline); its
    file list from the hub, else (offline) whichever of bge-m3's head files the cache holds.
    Remote URIs (``s3://``) are not read here: the pod that fetches the model reads it.
    """
    local = Path(ref)
    if local.is_dir():
        config = _read_json(local / "config.json")
        if config is None:
            return None
        files = frozenset(p.name for p in local.iterdir() if p.is_file())
        return ModelFacts(ref, config, files, _read_json(local / INFERENCE_FILE))
    if "://" in ref or ref.startswith(("/", ".")) or ref.count("/") > 1:
        return None
    return _inspect_hub(ref)


def _inspect_hub(repo: str) -> ModelFacts | None:
    from huggingface_hub import HfApi, hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        config = _read_json(Path(hf_hub_download(repo, "config.json")))
    except (OSError, HFValidationError) as exc:  # offline and not cached, unknown repo, no network
        log.debug("cannot read %s's config.json: %s", repo, exc)
        return None
    if config is None:
        return None
    try:
        files = frozenset(HfApi().list_repo_files(repo))
    except (OSError, HFValidationError):
        # Offline: the cache knows only what was downloaded; bge-m3's heads are what matters here.
        files = frozenset(name for name in (*M3_HEADS, INFERENCE_FILE)
                          if isinstance(try_to_load_from_cache(repo, name), str))
    return ModelFacts(repo, config, files | {"config.json"})


def is_decoder(config: dict[str, Any]) -> bool:
    """A decoder-only LM: a known decoder model type, or a causal-LM architecture."""
    architectures = [str(a) for a in config.get("architectures") or []]
    return (str(config.get("model_type", "")) in DECODER_MODEL_TYPES
            or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures))


def is_layerwise(config: dict[str, Any]) -> bool:
    """A layerwise reranker (bge-reranker-v2-minicpm-layerwise): score heads from ``start_layer`` on."""
    architectures = [str(a) for a in config.get("architectures") or []]
    return any(a.startswith("LayerWise") for a in architectures) or ("head_type" in config and "start_layer" in config)


def is_m3(facts: ModelFacts) -> bool:
    """bge-m3's layout: an XLM-R encoder with its ColBERT or sparse head beside it."""
    return str(facts.config.get("model_type", "")) == "xlm-roberta" and any(h in facts.files for h in M3_HEADS)


def family(kind: str, facts: ModelFacts) -> Family:
    """The family of a ``kind`` ("retriever" or "reranker") model with these facts."""
    if kind == "reranker":
        if is_layerwise(facts.config):
            return "layerwise-reranker"
        return "llm-reranker" if is_decoder(facts.config) else "reranker"
    if is_m3(facts):
        return "m3"
    return "llm" if is_decoder(facts.config) else "encoder"


def family_of(kind: str, ref: str) -> Family | None:
    """The family of the model at ``ref`` (local folder or hub name); None when it cannot be read."""
    facts = inspect_model(ref)
    return None if facts is None else family(kind, facts)


def inference_settings(model_dir: str | Path) -> dict[str, Any]:
    """``flagembedding.json`` of a model folder (``{"class", "runner", "init"}``), or ``{}`` without one."""
    return _read_json(Path(model_dir) / INFERENCE_FILE) or {}
