"""``publish(PublishConfig) -> PublishResult``: put a model into the registry, atomically.

What a version holds is described in ``bgeflow.registry``. The steps, and why each is safe to
interrupt at any point:

1. Everything is gathered locally: the model files, ``metrics.json``, the resolved configs,
   ``lineage.json`` (each input object's URI, ETag or sha256, size and row count) and the model
   card ``README.md``; each file's sha256 is computed. The *content hash* is the sha256 over the
   sorted ``path<TAB>sha256`` lines of every file but the model card (which names the version).
2. The version is ``--version`` or ``<UTC timestamp>-<first 8 hex of the content hash>``. If a
   complete version already holds this content, nothing is uploaded (idempotent rerun).
3. Files are uploaded to the hidden staging prefix ``<name>/.staging/<content hash>/``. A rerun
   after an interruption finds the same prefix and skips objects already there intact (S3 ETag
   = MD5 of a single-part upload).
4. Files are moved into ``<name>/<version>/`` (S3: server-side copy; local: rename), then each
   is verified (size, and the MD5 ETag or a re-read sha256). Objects in that prefix that belong
   to no file of this version (left by an earlier, different attempt) are deleted.
5. ``manifest.json`` is written last, with a conditional put (S3 ``If-None-Match: *``, local
   ``link``): from this moment readers see the version, never before.
6. Pointers move only after the manifest: ``latest.json`` and, when asked (and the gate allows),
   ``champion.json``. The staging prefix is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bgeflow import __version__
from bgeflow.registry import (
    MANIFEST,
    MANIFEST_FORMAT,
    MODEL_DIR,
    STAGING,
    RegistryError,
    VersionInfo,
    check_name,
    list_versions,
    read_manifest,
    read_pointer,
    sha256_of,
)
from bgeflow.storage import (
    LocalStore,
    S3Store,
    Store,
    file_sha256,
    iter_lines,
    join_key,
    join_uri,
    open_store,
    resolve_sources,
)

log = logging.getLogger(__name__)

CHAMPION_POLICIES = ("never", "always", "if-gate-passed")
KINDS = ("auto", "retriever", "reranker")
TRAINING_CONFIGS = ("train_config.yaml", "train_summary.json")
CARD = "README.md"


@dataclass
class PublishConfig:
    """What ``bgeflow publish`` does; every field is a CLI flag of the same name."""

    model: str
    name: str
    registry: str
    version: str | None = None
    metrics: str | None = None
    # Resolved configs to keep with the model; default: the training output's own.
    configs: list[str] = field(default_factory=list)
    lineage_inputs: list[str] = field(default_factory=list)
    champion: str = "never"
    kind: str = "auto"
    base_model: str | None = None

    def __post_init__(self) -> None:
        for flag in ("model", "name", "registry"):
            if not getattr(self, flag):
                raise ValueError(f"publish needs --{flag}")
        check_name(self.name, "--name")
        self.version = self.version or None
        if self.version is not None:
            check_name(self.version, "--version")
        # Callers (pipeline components) pass "" for an input they do not have; "" would mean the cwd.
        self.configs = [u for u in ([self.configs] if isinstance(self.configs, str) else self.configs) if u]
        self.lineage_inputs = [u for u in ([self.lineage_inputs] if isinstance(self.lineage_inputs, str)
                                           else self.lineage_inputs) if u]
        self.metrics = self.metrics or None
        if self.champion not in CHAMPION_POLICIES:
            raise ValueError(f"champion policy must be one of {', '.join(CHAMPION_POLICIES)}, got {self.champion!r}")
        if self.champion == "if-gate-passed" and not self.metrics:
            raise ValueError("--only-if-gate-passed needs --metrics (the metrics.json with the gate verdict)")
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@dataclass
class PublishResult:
    name: str
    version: str
    uri: str
    content_hash: str
    created: bool  # False: an identical version already existed (idempotent rerun)
    champion: bool  # this version is the champion now
    latest: bool
    files: int
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _File:
    path: str  # relative to the version prefix
    local: Path
    size: int
    sha256: str
    md5: str

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


def _digest(local: Path, path: str) -> _File:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(local, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
            md5.update(chunk)
    return _File(path, local, local.stat().st_size, sha.hexdigest(), md5.hexdigest())


def content_hash(files: list[_File]) -> str:
    lines = sorted(f"{f.path}\t{f.sha256}" for f in files if f.path != CARD)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------- gathering


def _locate_model(uri: str, workdir: Path) -> tuple[Path, Path | None]:
    """``(model dir, training output dir or None)`` on local disk, downloading from S3 if needed."""
    store = open_store(uri)
    if store.exists(f"{MODEL_DIR}/config.json"):
        root, model_key = store, MODEL_DIR
    elif store.exists("config.json"):
        root, model_key = store, ""
    else:
        raise FileNotFoundError(f"--model {uri}: neither a model directory (config.json) nor a training output "
                                f"(model/config.json)")
    if isinstance(root, LocalStore):
        base = root.root
    else:
        base = workdir / "download"
        root.download_dir(base / model_key if model_key else base, model_key)
        for name in TRAINING_CONFIGS:
            if model_key and root.exists(name):
                root.get_file(name, base / name)
    return (base / model_key if model_key else base), (base if model_key else None)


def _model_kind(model_dir: Path, requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{model_dir}/config.json cannot be read: {exc}") from exc
    architectures = config.get("architectures") or []
    return "reranker" if any(a.endswith("ForSequenceClassification") for a in architectures) else "retriever"


def _read_json_uri(uri: str, what: str) -> dict[str, Any]:
    store = open_store(uri)
    if store.stat("") is None:
        raise FileNotFoundError(f"{what} {uri}: no such file")
    try:
        doc = json.loads(store.read_text())
    except ValueError as exc:
        raise ValueError(f"{what} {uri}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{what} {uri}: expected a JSON object")
    return doc


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


def _base_model(config: PublishConfig, metrics: dict[str, Any] | None, configs_dir: Path) -> str:
    if config.base_model:
        return config.base_model
    if metrics:
        base = metrics.get("models", {}).get("base" if "base" in metrics.get("models", {}) else "base_reranker")
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


def _gather(config: PublishConfig, workdir: Path) -> tuple[list[_File], dict[str, Any]]:
    """Every file of the version except the model card, plus what the card and manifest need."""
    model_dir, training_dir = _locate_model(config.model, workdir)
    generated = workdir / "generated"
    generated.mkdir()
    files: list[_File] = []
    for local in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = local.relative_to(model_dir).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue  # hidden files (caches, VCS) are not part of a model, and storage listings skip them
        files.append(_digest(local, f"{MODEL_DIR}/{rel}"))
    if not files:
        raise ValueError(f"--model {config.model}: the model directory is empty")

    metrics = _read_json_uri(config.metrics, "--metrics") if config.metrics else None
    if metrics is not None:
        (generated / "metrics.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2))
        files.append(_digest(generated / "metrics.json", "metrics.json"))

    config_uris = list(config.configs)
    if not config_uris and training_dir is not None:
        config_uris = [str(training_dir / name) for name in TRAINING_CONFIGS if (training_dir / name).is_file()]
    configs_dir = generated / "configs"
    configs_dir.mkdir()
    for uri in config_uris:
        store = open_store(uri)
        if store.stat("") is None:
            raise FileNotFoundError(f"--train-config {uri}: no such file")
        target = configs_dir / uri.rstrip("/").rsplit("/", 1)[-1]
        if target.exists():
            raise ValueError(f"--train-config {uri}: a config named {target.name!r} is given twice")
        store.get_file("", target)
        files.append(_digest(target, f"configs/{target.name}"))

    lineage_doc = {"inputs": lineage(config.lineage_inputs), "model_source": config.model}
    (generated / "lineage.json").write_text(json.dumps(lineage_doc, ensure_ascii=False, indent=2))
    files.append(_digest(generated / "lineage.json", "lineage.json"))

    facts = {
        "kind": _model_kind(model_dir, config.kind),
        "base_model": _base_model(config, metrics, configs_dir),
        "metrics": metrics,
        "lineage": lineage_doc,
        "configs": sorted(p.name for p in configs_dir.iterdir()),
        "configs_dir": configs_dir,
        "generated": generated,
    }
    return files, facts


# --------------------------------------------------------------------------- model card


def _config_summary(configs_dir: Path) -> list[str]:
    path = configs_dir / "train_config.yaml"
    if not path.exists():
        return ["No training config was published with this model."]
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return ["`configs/train_config.yaml` (not parseable as YAML)."]
    if not isinstance(loaded, dict):
        return ["See `configs/train_config.yaml`."]
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, str | int | float | bool) or value is None:
            flat[prefix] = value

    walk("", loaded)
    lines = ["| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | `{v}` |" for k, v in list(flat.items())[:40]]
    if len(flat) > 40:
        lines.append(f"| … | {len(flat) - 40} more in `configs/train_config.yaml` |")
    return lines


def render_card(registry: str, name: str, version: str, facts: dict[str, Any]) -> str:
    from bgeflow.evaluation.report import gate_lines, metrics_table

    kind = facts["kind"]
    lines = [f"# {name}", "", f"- version: `{version}`", f"- kind: {kind}",
             f"- base model: `{facts['base_model']}`", f"- produced by: bgeflow {__version__}", ""]
    lines += ["## Metrics", ""]
    metrics = facts.get("metrics")
    if metrics:
        sizes = metrics.get("eval_set", {})
        lines += [f"On {sizes.get('queries', '?')} held-out queries over {sizes.get('corpus', '?')} passages:", ""]
        lines += [metrics_table(metrics), *gate_lines(metrics.get("gate", {}))]
    else:
        lines.append("Published without evaluation metrics.")
    lines += ["", "## Training configuration", "", *_config_summary(facts["configs_dir"])]
    lines += ["", "## Data lineage", ""]
    inputs = facts["lineage"]["inputs"]
    if inputs:
        lines += ["| input | rows | checksum |", "|---|---|---|"]
        lines += [f"| `{i['uri']}` | {i['rows']} | "
                  f"{'sha256 ' + i['sha256'][:16] if 'sha256' in i else 'ETag ' + str(i.get('etag', ''))} |"
                  for i in inputs]
    else:
        lines.append("No input data was recorded.")
    lines += ["", "## Usage", "", "Download the model (its files are checked against the manifest):", "",
              "```python", "from bgeflow.registry import download_model", "",
              f'path = str(download_model("{registry}", "{name}", "{version}", "./{name}-{version}"))', "```", ""]
    if kind == "reranker":
        lines += ["Then, with sentence-transformers:", "", "```python", "from sentence_transformers import CrossEncoder", "",
                  'model = CrossEncoder(path)',
                  'scores = model.predict([("what is a panda?", "The giant panda is a bear native to China.")])',
                  "```", "", "With FlagEmbedding:", "", "```python", "from FlagEmbedding import FlagReranker", "",
                  'reranker = FlagReranker(path)',
                  'score = reranker.compute_score(["what is a panda?", "The giant panda is a bear native to China."])',
                  "```"]
    else:
        lines += ["Then, with sentence-transformers:", "", "```python", "from sentence_transformers import SentenceTransformer", "",
                  'model = SentenceTransformer(path)',
                  'embeddings = model.encode(["what is a panda?"], normalize_embeddings=True)',
                  "```", "", "With FlagEmbedding:", "", "```python", "from FlagEmbedding import FlagModel", "",
                  'model = FlagModel(path, query_instruction_for_retrieval="")',
                  'q = model.encode_queries(["what is a panda?"])',
                  'p = model.encode(["The giant panda is a bear native to China."])',
                  "```"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- upload and promotion


def _already_there(store: Store, key: str, item: _File) -> bool:
    """An earlier attempt's object with the same bytes (judged by size and MD5 ETag; S3 only)."""
    if not isinstance(store, S3Store):
        return False
    found = store.stat(key)
    return found is not None and found.size == item.size and found.etag == item.md5


def _move(store: Store, src: str, dst: str, item: _File) -> None:
    if isinstance(store, S3Store):
        store.client.copy(
            {"Bucket": store.bucket, "Key": join_key(store.prefix, src)}, store.bucket, join_key(store.prefix, dst)
        )
    elif isinstance(store, LocalStore):
        target = store.root / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(store.root / src, target)
    else:
        store.put_file(item.local, dst)


def _verify(store: Store, key: str, item: _File) -> None:
    found = store.stat(key)
    if found is None:
        raise RegistryError(f"{store.url(key)}: missing after upload")
    if found.size != item.size:
        raise RegistryError(f"{store.url(key)}: {found.size} bytes after upload, expected {item.size}")
    if found.etag and "-" not in found.etag:
        if found.etag != item.md5:
            raise RegistryError(f"{store.url(key)}: ETag {found.etag} is not the file's MD5 {item.md5}")
    elif sha256_of(store, key) != item.sha256:
        raise RegistryError(f"{store.url(key)}: sha256 after upload differs from the local file")


def _upload(store: Store, version: str, files: list[_File], staging: str) -> None:
    for item in files:
        key = f"{staging}/{item.path}"
        if not _already_there(store, key, item):
            store.put_file(item.local, key)
    for item in files:
        _move(store, f"{staging}/{item.path}", f"{version}/{item.path}", item)
    for item in files:
        _verify(store, f"{version}/{item.path}", item)
    wanted = {item.path for item in files}
    for stale in store.child(version).list():
        if stale.key not in wanted and stale.key != MANIFEST:
            store.delete(f"{version}/{stale.key}")


def _remove_prefix(store: Store, prefix: str) -> None:
    """Best effort: a leftover staging prefix is hidden and harmless."""
    try:
        if isinstance(store, LocalStore):
            shutil.rmtree(store.root / prefix, ignore_errors=True)
        else:
            for obj in store.child(prefix).list():
                store.delete(f"{prefix}/{obj.key}")
    except Exception as exc:  # never fail a finished publish over cleanup
        log.warning("could not remove %s: %s", store.url(prefix), exc)


def _write_pointer(store: Store, pointer: str, version: str, manifest_sha256: str) -> None:
    store.write_text(f"{pointer}.json", json.dumps({
        "version": version, "manifest_sha256": manifest_sha256,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))


def _champion_decision(config: PublishConfig, metrics: dict[str, Any] | None) -> tuple[bool, str]:
    if config.champion == "never":
        return False, "not asked to promote (--set-champion)"
    if config.champion == "always":
        return True, "promoted to champion (--set-champion)"
    gate = (metrics or {}).get("gate")
    if not isinstance(gate, dict) or "passed" not in gate:
        return False, f"not promoted: {config.metrics} holds no gate verdict"
    if gate["passed"]:
        return True, "promoted to champion: the quality gate passed"
    return False, "not promoted: the quality gate failed"


def _update_pointers(
    store: Store, registry: str, config: PublishConfig, info: VersionInfo, manifest_sha256: str,
    metrics: dict[str, Any] | None,
) -> tuple[bool, bool, list[str]]:
    reasons = []
    latest_target = read_pointer(registry, config.name, "latest")
    current = read_manifest(registry, config.name, latest_target) if latest_target else None
    # Never move latest backwards: a rerun of an older publish leaves a newer latest alone.
    is_latest = latest_target == info.version or current is None or str(current.get("created", "")) <= info.created
    if is_latest and latest_target != info.version:
        _write_pointer(store, "latest", info.version, manifest_sha256)
    promote, reason = _champion_decision(config, metrics)
    reasons.append(reason)
    champion_target = read_pointer(registry, config.name, "champion")
    if promote and champion_target != info.version:
        _write_pointer(store, "champion", info.version, manifest_sha256)
    return is_latest, promote or champion_target == info.version, reasons


def publish(config: PublishConfig) -> PublishResult:
    """Publish a model version (see the module docstring for the protocol)."""
    started = time.monotonic()
    registry = config.registry.rstrip("/")
    store = open_store(join_uri(registry, config.name))
    with tempfile.TemporaryDirectory(prefix="bgeflow-publish-") as tmp:
        files, facts = _gather(config, Path(tmp))
        digest = content_hash(files)
        existing = _existing(registry, config, digest)
        if existing is not None:
            manifest_sha = hashlib.sha256(store.read_bytes(f"{existing.version}/{MANIFEST}")).hexdigest()
            is_latest, is_champion, reasons = _update_pointers(
                store, registry, config, existing, manifest_sha, facts["metrics"])
            log.info("publish: %s already holds this content; nothing uploaded", existing.uri)
            return PublishResult(config.name, existing.version, existing.uri, digest, False, is_champion, is_latest,
                                 len(existing.files), ["identical content already published", *reasons])

        created = datetime.now(timezone.utc)
        version = config.version or f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}"
        card = facts["generated"] / CARD
        card.write_text(render_card(registry, config.name, version, facts), encoding="utf-8")
        files.append(_digest(card, CARD))
        staging = f"{STAGING}/{digest[:16]}"
        log.info("publish: %d files (%d bytes) to %s", len(files), sum(f.size for f in files),
                 store.url(version))
        _upload(store, version, files, staging)

        manifest = {
            "format": MANIFEST_FORMAT,
            "name": config.name,
            "version": version,
            "kind": facts["kind"],
            "base_model": facts["base_model"],
            "created": created.isoformat(timespec="seconds"),
            "content_hash": digest,
            "bgeflow_version": __version__,
            "gate_passed": ((facts["metrics"] or {}).get("gate") or {}).get("passed"),
            "files": [f.entry() for f in sorted(files, key=lambda f: f.path)],
        }
        body = json.dumps(manifest, ensure_ascii=False, indent=2)
        try:
            store.write_text(f"{version}/{MANIFEST}", body, if_absent=True)
        except FileExistsError:
            other = read_manifest(registry, config.name, version)
            if other is None or other.get("content_hash") != digest:
                raise FileExistsError(f"{store.url(version)} was published concurrently with different content") from None
            manifest, body = other, store.read_text(f"{version}/{MANIFEST}")
        _remove_prefix(store, staging)

    info = VersionInfo(registry, config.name, version, manifest)
    is_latest, is_champion, reasons = _update_pointers(
        store, registry, config, info, hashlib.sha256(body.encode()).hexdigest(), facts["metrics"])
    log.info("publish: %s complete in %.1fs", info.uri, time.monotonic() - started)
    return PublishResult(config.name, version, info.uri, digest, True, is_champion, is_latest, len(files), reasons)


def _existing(registry: str, config: PublishConfig, digest: str) -> VersionInfo | None:
    """The complete version already holding this content; an error if ``--version`` holds other content."""
    if config.version:
        manifest = read_manifest(registry, config.name, config.version)
        if manifest is None:
            return None
        if manifest.get("content_hash") != digest:
            raise FileExistsError(
                f"{join_uri(registry, config.name)}/{config.version} is already published with different content "
                f"(content hash {str(manifest.get('content_hash'))[:12]}, this model {digest[:12]}); "
                "choose another --version"
            )
        return VersionInfo(registry, config.name, config.version, manifest)
    for info in reversed(list_versions(registry, config.name)):
        if info.content_hash == digest:
            return info
    return None
