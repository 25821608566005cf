"""Gathering a version locally: model files, metrics, configs, lineage; their digests and content hash."""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgeflow.core.errors import BgeflowError, ConfigError, DataError, NotFoundError, StepFailed
from bgeflow.core.models import hub_model_id
from bgeflow.core.spec import absolute_local
from bgeflow.core.storage import (
    LocalStore,
    Store,
    file_sha256,
    files_digest,
    iter_lines,
    open_store,
    resolve_sources,
    safe_join,
)
from bgeflow.core.weights import CARD_NAME, content_fingerprint, require_safetensors
from bgeflow.steps.publish.card import flag_loading
from bgeflow.steps.publish.registry import MODEL_DIR
from bgeflow.steps.publish.spec import TRAINING_CONFIGS, PublishSpec

#: The model card, next to ``config.json`` (a Hugging Face repo's README); it names the version, so it
#: is left out of the content hash.
CARD = f"{MODEL_DIR}/{CARD_NAME}"
#: The ``metrics.json`` column (``bgeflow evaluate``'s) of the model a publish of each kind is evaluated as.
EVALUATED_COLUMNS = {"retriever": "finetuned", "reranker": "finetuned_reranker"}


@dataclass
class FileEntry:
    path: str  # relative to the version prefix
    local: Path
    size: int
    sha256: str
    md5: str

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def digest_file(local: Path, path: str) -> FileEntry:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(local, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return FileEntry(path, local, local.stat().st_size, sha.hexdigest(), md5.hexdigest())


def content_hash(files: list[FileEntry]) -> str:
    """The version's content hash: ``files_digest`` of every file but the card (which names the version)."""
    return files_digest({f.path: f.sha256 for f in files if f.path != CARD})


def _model_root(uri: str) -> tuple[Store, str]:
    """``(store, key of the model folder in it)``: a training output's ``model/``, or the folder itself."""
    store = open_store(uri)
    if store.exists(f"{MODEL_DIR}/config.json"):
        return store, MODEL_DIR
    if store.exists("config.json"):
        return store, ""
    raise NotFoundError(f"--model {uri}: neither a model directory (config.json) nor a training output "
                        f"(model/config.json)")


def _locate_model(uri: str, workdir: Path) -> tuple[Path, Path | None]:
    """``(model dir, training output dir or None)`` on local disk, downloading from S3 if needed."""
    root, model_key = _model_root(uri)
    if isinstance(root, LocalStore):
        base = root.root
    else:
        base = workdir / "download"
        root.download_dir(base / model_key if model_key else base, model_key)
        for name in TRAINING_CONFIGS:
            if model_key and root.exists(name):
                root.get_file(name, base / name)
    return (base / model_key if model_key else base), (base if model_key else None)


def _kind_of(config_text: str, where: str) -> str:
    """``reranker`` when the model's ``config.json`` names a sequence-classification head, else ``retriever``."""
    try:
        config = json.loads(config_text)
    except ValueError as exc:
        raise DataError(f"{where} cannot be read: {exc}") from exc
    architectures = (config.get("architectures") if isinstance(config, dict) else None) or []
    return "reranker" if any(str(a).endswith("ForSequenceClassification") for a in architectures) else "retriever"


def _model_kind(model_dir: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        text = (model_dir / "config.json").read_text()
    except OSError as exc:
        raise DataError(f"{model_dir}/config.json cannot be read: {exc}") from exc
    return _kind_of(text, f"{model_dir}/config.json")


def model_kind(config: PublishSpec) -> str:
    """The kind ``gather`` publishes ``config.model`` as: ``--kind``, or for ``auto`` what its
    ``config.json`` says (only that file is read, nothing is downloaded).

    Raises:
        NotFoundError: ``--model`` holds no model.
        DataError: its ``config.json`` is not JSON.
    """
    if config.kind != "auto":
        return config.kind
    store, key = _model_root(config.model)
    path = f"{key}/config.json" if key else "config.json"
    return _kind_of(store.read_text(path), store.url(path))


def _read_json_uri(uri: str, what: str) -> dict[str, Any]:
    store = open_store(uri)
    if store.stat("") is None:
        raise NotFoundError(f"{what} {uri}: no such file")
    try:
        doc = json.loads(store.read_text())
    except ValueError as exc:
        raise DataError(f"{what} {uri}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{what} {uri}: expected a JSON object")
    return doc


def read_metrics(config: PublishSpec) -> dict[str, Any] | None:
    """The ``--metrics`` document of ``config`` (None without one).

    Raises:
        NotFoundError: no such file.
        DataError: not a JSON object.
    """
    return _read_json_uri(config.metrics, "--metrics") if config.metrics else None


def _model_folder(ref: str) -> str:
    """The absolute URI of the model folder ``ref`` names (a training output's ``model/``), else ``ref`` made
    absolute: how a path in an older ``metrics.json`` is compared with ``--model``."""
    uri = absolute_local(ref).rstrip("/")
    try:
        store, key = _model_root(uri)
    except (BgeflowError, StepFailed, OSError):  # gone, or no folder (a hub id): the reference itself
        return uri
    return store.url(key).rstrip("/")


def require_evaluated(config: PublishSpec, metrics: dict[str, Any] | None, kind: str) -> None:
    """Refuse ``--metrics`` that scored another model than ``--model``: its numbers, gate verdict and card
    would be that other model's.

    The model is the one ``metrics`` lists in ``kind``'s column (``EVALUATED_COLUMNS``). Compared by
    ``content_fingerprint`` when ``bgeflow evaluate`` recorded one (wherever either copy lies: a KFP
    run evaluates one URI of the model and publishes another), else by their folders' absolute paths
    (``metrics.json`` written before fingerprints; a relative path is taken from the current folder).
    A document that lists no fine-tuned model at all (written by hand) has nothing to compare: allowed.

    Args:
        config: the publish; ``config.model`` is read (every file, for a fingerprint).
        metrics: its ``--metrics`` document (None: nothing to check).
        kind: the kind ``config.model`` is published as (``model_kind``).

    Raises:
        ConfigError: naming the evaluated model and ``--model``, or the column missing for ``kind``.
        NotFoundError: ``--model`` holds no model.
    """
    models = (metrics or {}).get("models")
    models = models if isinstance(models, dict) else {}
    column = EVALUATED_COLUMNS[kind]
    evaluated = models.get(column)
    flag = f"bgeflow evaluate --{kind} {config.model}"
    if not isinstance(evaluated, dict) or not evaluated.get("model"):
        scored = [c for c in EVALUATED_COLUMNS.values() if isinstance(models.get(c), dict)]
        if scored:
            raise ConfigError(f"--metrics {config.metrics} scored no fine-tuned {kind} (no {column!r} column, only "
                              f"{', '.join(scored)}): --model {config.model} is published as a {kind}; publish it with "
                              f"the metrics.json of `{flag} ...`")
        return
    store, key = _model_root(config.model)  # NotFoundError for a --model that holds no model
    if evaluated.get("fingerprint"):
        mine = content_fingerprint(store.url(key))
        if mine == evaluated["fingerprint"]:
            return
        how = f"content fingerprint {str(evaluated['fingerprint'])[:12]}, --model's {mine[:12]}"
    else:
        if _model_folder(str(evaluated["model"])) == _model_folder(config.model):
            return
        how = "compared by path: that metrics.json predates model fingerprints"
    raise ConfigError(f"--metrics {config.metrics} describes the {column} model {evaluated['model']}, not --model "
                      f"{config.model} ({how}): its metrics and gate verdict are another model's; publish with the "
                      f"metrics.json of `{flag} ...`")


def lineage(uris: list[str]) -> list[dict[str, Any]]:
    """For each input object: URI, size, ETag (S3) or sha256 (local), and its non-blank row count."""
    out = []
    for source in resolve_sources(uris):
        rows = sum(1 for _, _, raw in iter_lines([source], workers=1) if raw.strip())
        entry: dict[str, Any] = {"uri": source.uri, "size": source.size, "rows": rows}
        if isinstance(source.store, LocalStore):
            entry["sha256"] = file_sha256(source.store.root / source.key)
        else:
            entry["etag"] = source.etag
        out.append(entry)
    return out


def _base_model(config: PublishSpec, kind: str, metrics: dict[str, Any] | None, configs_dir: Path) -> str:
    if config.base_model:
        return config.base_model
    if metrics:
        # The evaluation names both bases (columns base and base_reranker): this kind's is the one.
        base = metrics.get("models", {}).get("base" if kind == "retriever" else "base_reranker")
        if base and base.get("model"):
            return str(base["model"])
    summary = configs_dir / "train_summary.json"
    candidates: list[dict[str, Any]] = []
    if summary.exists():
        with contextlib.suppress(ValueError):
            candidates.append(json.loads(summary.read_text()))
    train_config = configs_dir / "train_config.yaml"
    if train_config.exists():
        import yaml

        try:
            loaded = yaml.safe_load(train_config.read_text())
            if isinstance(loaded, dict):
                candidates.append(loaded)
        except yaml.YAMLError:
            pass
    for doc in candidates:
        for key in ("base_model", "model_name_or_path", "model"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return value
    return "unknown"


def gather(config: PublishSpec, workdir: Path) -> tuple[list[FileEntry], dict[str, Any]]:
    """Every file of the version except the model card, plus what the card and manifest need."""
    model_dir, training_dir = _locate_model(config.model, workdir)
    require_safetensors(model_dir, "--model")
    generated = workdir / "generated"
    generated.mkdir()
    files: list[FileEntry] = []
    for local in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = local.relative_to(model_dir).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files (caches, VCS) are not part of a model, and storage listings skip them
        if f"{MODEL_DIR}/{rel}" == CARD:
            continue  # a card the model came with (its base's) is replaced by this version's own
        files.append(digest_file(local, f"{MODEL_DIR}/{rel}"))
    if not files:
        raise DataError(f"--model {config.model}: the model directory is empty")

    metrics = read_metrics(config)
    if metrics is not None:
        (generated / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2))
        files.append(digest_file(generated / "metrics.json", "metrics.json"))

    config_uris = list(config.configs)
    if not config_uris and training_dir is not None:
        config_uris = [str(training_dir / name) for name in TRAINING_CONFIGS if (training_dir / name).is_file()]
    configs_dir = generated / "configs"
    configs_dir.mkdir()
    for uri in config_uris:
        store = open_store(uri)
        if store.stat("") is None:
            raise NotFoundError(f"--train-config {uri}: no such file")
        target = safe_join(configs_dir, uri.rstrip("/").rsplit("/", 1)[-1], what=f"--train-config {uri}: file name")
        if target.exists():
            raise DataError(f"--train-config {uri}: a config named {target.name!r} is given twice")
        store.get_file("", target)
        files.append(digest_file(target, f"configs/{target.name}"))

    lineage_doc = {"inputs": lineage(config.lineage_inputs), "model_source": config.model}
    (generated / "lineage.json").write_text(json.dumps(lineage_doc, ensure_ascii=False, indent=2))
    files.append(digest_file(generated / "lineage.json", "lineage.json"))

    kind = _model_kind(model_dir, config.kind)
    base_model = _base_model(config, kind, metrics, configs_dir)
    facts = {
        "kind": kind,
        "base_model": base_model,
        "base_model_id": hub_model_id(base_model),
        "loading": flag_loading(model_dir, kind),
        "metrics": metrics,
        "lineage": lineage_doc,
        "configs": sorted(p.name for p in configs_dir.iterdir()),
        "configs_dir": configs_dir,
        "generated": generated,
    }
    return files, facts
