"""What a bi-encoder's own sentence-transformers config says: pooling, normalisation, query prompt.

The one ``Pooling`` type of bgeflow and the readers of a model folder's sentence-transformers files
(``modules.json``, the Pooling module's ``config.json``, ``config_sentence_transformers.json``).
Every verb resolves a setting left at its default (``auto`` / unset) from these files, so a model is
used as ``SentenceTransformer(path)`` would use it.

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


#: Module types bgeflow's own encoder computes; a model with any other (Dense, LayerNorm, a Router)
#: would get vectors that differ from ``SentenceTransformer(path)``'s.
ENCODER_MODULES = ("Transformer", "Pooling", "Normalize")


def saved_modules(model_dir: str | Path) -> list[str] | None:
    """The module types of a sentence-transformers model folder (last dotted part), None without modules.json."""
    modules = _read_json(Path(model_dir) / "modules.json")
    if not isinstance(modules, list):
        return None
    return [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]


def saved_normalize(model_dir: str | Path) -> bool | None:
    """Whether the model's users compare unit vectors; None without a sentence-transformers config.

    True when its modules end in Normalize, or when its similarity function is cosine (what
    ``SentenceTransformer.similarity`` uses unless the config says otherwise); False for a model
    that declares dot-product similarity without a Normalize module.
    """
    modules = saved_modules(model_dir)
    if modules is None:
        return None
    if "Normalize" in modules:
        return True
    config = _read_json(Path(model_dir) / "config_sentence_transformers.json")
    similarity = config.get("similarity_fn_name") if isinstance(config, dict) else None
    return similarity in (None, "cosine")


def resolve_normalize(requested: bool | None, model_dir: str | Path) -> bool:
    """L2-normalise or not: as requested, else as the model's config says, else yes (the BGE convention)."""
    if requested is not None:
        return requested
    saved = saved_normalize(model_dir)
    return True if saved is None else saved


def saved_query_prompt(model_dir: str | Path) -> str:
    """The query prompt the model's sentence-transformers config declares (``prompts["query"]``), else ""."""
    config = _read_json(Path(model_dir) / "config_sentence_transformers.json")
    prompts = config.get("prompts") if isinstance(config, dict) else None
    prompt = prompts.get("query") if isinstance(prompts, dict) else None
    return prompt if isinstance(prompt, str) else ""


def resolve_query_instruction(requested: str, model_dir: str | Path) -> str:
    """The instruction for queries without a prompt of their own: as requested, else the model's saved one.

    Queries with a prompt of their own keep it (``bgeflow.data.query_prompt``).
    """
    return requested or saved_query_prompt(model_dir)


def check_encoder_modules(model_dir: str | Path, model: str) -> None:
    """Refuse a model whose sentence-transformers modules bgeflow's encoder cannot compute.

    Raises:
        ConfigError: naming the modules (e.g. Dense) that sentence-transformers would apply.
    """
    modules = saved_modules(model_dir) or []
    other = [m for m in modules if m not in ENCODER_MODULES]
    if other:
        raise ConfigError(f"model {model} has sentence-transformers module(s) {', '.join(other)} after its "
                          "transformer, which bgeflow's encoder cannot compute (its vectors would differ from "
                          "SentenceTransformer's): use a model of Transformer, Pooling and Normalize modules only")
