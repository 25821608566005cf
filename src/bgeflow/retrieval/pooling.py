"""How a bi-encoder turns token states into one vector: the one ``Pooling`` type of bgeflow.

``auto`` (the default in mine, train, evaluate and export) reads the model's own choice from its
sentence-transformers config (``modules.json`` → the Pooling module's ``config.json``), which is
what ``SentenceTransformer(path)`` would use; a model without one gets its family's convention:
last-token pooling for decoder-only LLM embedders (bge-multilingual-gemma2, bge-en-icl, e5-mistral),
CLS for the encoder-only BGE models. A pooling that bgeflow's encoder and FlagEmbedding's runners
cannot compute (max, weighted mean, ...) is refused, never replaced by another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, get_args

from bgeflow.core.errors import ConfigError

Pooling = Literal["auto", "cls", "mean", "last_token"]
ResolvedPooling = Literal["cls", "mean", "last_token"]
POOLINGS: tuple[str, ...] = get_args(Pooling)

#: sentence-transformers' Pooling config keys (``pooling_mode_*``) and their bgeflow names.
ST_MODES: dict[str, str] = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                            "last_token": "pooling_mode_lasttoken"}
#: Modes sentence-transformers has and bgeflow (and FlagEmbedding's trainers) cannot compute.
_UNSUPPORTED_MODES = {"pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
                      "pooling_mode_weightedmean_tokens": "weightedmean"}
#: ``config.json`` model types of decoder-only embedders, pooled at the last token by convention.
DECODER_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "minicpm", "phi3"})


def _read_json(path: Path) -> dict | list | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def saved_pooling(model_dir: str | Path) -> ResolvedPooling | None:
    """The pooling a local sentence-transformers model folder declares, or None without one.

    Raises:
        ConfigError: the folder declares a pooling bgeflow cannot compute.
    """
    root = Path(model_dir)
    modules = _read_json(root / "modules.json")
    if not isinstance(modules, list):
        return None
    module = next((m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")), None)
    if module is None:
        return None
    config = _read_json(root / str(module.get("path", "")) / "config.json")
    if not isinstance(config, dict):
        return None
    for name, key in ST_MODES.items():
        if config.get(key):
            return name  # type: ignore[return-value]
    mode = config.get("pooling_mode")  # newer sentence-transformers write one string
    if mode in ("cls", "mean", "lasttoken", "last_token"):
        return "last_token" if mode in ("lasttoken", "last_token") else mode  # type: ignore[return-value]
    unsupported = [label for key, label in _UNSUPPORTED_MODES.items() if config.get(key)] or ([mode] if mode else [])
    raise ConfigError(f"model {model_dir} pools with {', '.join(map(str, unsupported)) or 'an unknown mode'}, "
                      "which bgeflow and FlagEmbedding cannot compute: choose cls, mean or last_token explicitly")


def family_pooling(model_dir: str | Path) -> ResolvedPooling:
    """The convention of the model's family: last-token for decoder-only embedders, else CLS (BGE)."""
    config = _read_json(Path(model_dir) / "config.json")
    model_type = str(config.get("model_type", "")) if isinstance(config, dict) else ""
    return "last_token" if model_type in DECODER_MODEL_TYPES else "cls"


def resolve_pooling(requested: str, model_dir: str | Path) -> ResolvedPooling:
    """The pooling to compute for the model in ``model_dir`` (a local folder) given ``requested``.

    Raises:
        ConfigError: ``requested`` is not one of ``POOLINGS``, or ``auto`` finds a mode that
            cannot be computed.
    """
    if requested not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {requested!r}")
    if requested != "auto":
        return requested  # type: ignore[return-value]
    return saved_pooling(model_dir) or family_pooling(model_dir)
