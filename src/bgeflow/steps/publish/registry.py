"""Reading the model registry that ``bgeflow publish`` writes.

Layout under a registry root (an S3 prefix or a local directory)::

    <registry>/<name>/<version>/model/...        the model files, with its card README.md: a Hugging Face repo
    <registry>/<name>/<version>/metrics.json     evaluation metrics (when published with them)
    <registry>/<name>/<version>/configs/...      the resolved training configs
    <registry>/<name>/<version>/lineage.json     input URIs with ETags/sha256 and row counts
    <registry>/<name>/<version>/manifest.json    every file above with size and sha256; written last
    <registry>/<name>/latest.json                {"version": ...}: the most recently published version
    <registry>/<name>/champion.json              {"version": ...}: the promoted version
    <registry>/<name>/.claims/<version>.json     the one content hash allowed to write that version

A version exists for readers only once its ``manifest.json`` does: files without a manifest are an
unfinished publish and are never returned. A pointer naming a version without a manifest is
ignored, and the newest complete version is used instead.

Model references (``fetch_model``) accepted wherever bgeflow loads a model: a Hugging Face name,
``bundled:minilm``, a model directory, a training output (holding ``model/``), either of those
under ``s3://``, or a registry reference ``<registry>/<name>`` (its champion, else its latest),
``<registry>/<name>@<version|latest|champion>`` or ``<registry>/<name>/<version>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bgeflow.core.errors import ConfigError, ConflictError, NotFoundError, StepFailed
from bgeflow.core.models import resolve_model
from bgeflow.core.storage import (
    SAFE_NAME_PATTERN,
    Store,
    is_remote,
    join_uri,
    object_sha256,
    open_store,
    safe_join,
    safe_name,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
POINTERS = ("latest", "champion")
#: Uploads of bgeflow before version claims (reclaimed by ``bgeflow models gc``).
STAGING = ".staging"
#: ``<name>/.claims/<version>.json``: the content hash of the one content a version may hold.
CLAIMS = ".claims"
MODEL_DIR = "model"
MANIFEST_FORMAT = 1
_NAME = re.compile(SAFE_NAME_PATTERN)


class RegistryError(StepFailed):
    """The registry holds something inconsistent (a checksum mismatch, a corrupt manifest)."""


def check_name(value: str, what: str) -> str:
    """A registry name or version: one safe path segment (``safe_name``), and not a pointer's name.

    Raises:
        ConfigError: naming ``what`` and the rule.
    """
    if value in POINTERS:
        raise ConfigError(f"{what} {value!r} is not valid: {' and '.join(POINTERS)} are the registry's pointers")
    return safe_name(value, what)


@dataclass(frozen=True)
class VersionInfo:
    """One complete (manifested) version."""

    registry: str
    name: str
    version: str
    manifest: dict[str, Any]

    @property
    def uri(self) -> str:
        return join_uri(self.registry, f"{self.name}/{self.version}")

    @property
    def created(self) -> str:
        return str(self.manifest.get("created", ""))

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash", ""))

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", ""))

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("files", []))

    def store(self) -> Store:
        return open_store(self.uri)


def name_store(registry: str, name: str) -> Store:
    return open_store(join_uri(registry, check_name(name, "model name")))


def read_manifest(registry: str, name: str, version: str) -> dict[str, Any] | None:
    """The version's manifest, or None when it has none (not published, or not finished)."""
    store = name_store(registry, name)
    key = f"{version}/{MANIFEST}"
    if not store.exists(key):
        return None
    try:
        manifest = json.loads(store.read_text(key))
    except ValueError as exc:
        raise RegistryError(f"{store.url(key)}: corrupt manifest ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("version") != version or not isinstance(manifest.get("files"), list):
        raise RegistryError(f"{store.url(key)}: not a bgeflow manifest for version {version!r}")
    return manifest


def _sort_key(info: VersionInfo) -> tuple[str, str]:
    return info.created, info.version


def list_versions(registry: str, name: str) -> list[VersionInfo]:
    """Every complete version of ``name``, oldest first (by creation time, then version)."""
    store = name_store(registry, name)
    versions = []
    for obj in store.list((MANIFEST,)):
        parts = obj.key.split("/")
        if len(parts) != 2 or parts[1] != MANIFEST:
            continue
        try:
            manifest = read_manifest(registry, name, parts[0])
        except RegistryError as exc:
            log.warning("skipping version %s: %s", parts[0], exc)
            continue
        if manifest is not None:
            versions.append(VersionInfo(registry, name, parts[0], manifest))
    return sorted(versions, key=_sort_key)


def read_pointer(registry: str, name: str, pointer: str) -> str | None:
    """The version a pointer (``latest`` or ``champion``) names, or None when it is absent."""
    store = name_store(registry, name)
    key = f"{pointer}.json"
    if not store.exists(key):
        return None
    try:
        version = json.loads(store.read_text(key)).get("version")
    except (ValueError, AttributeError):
        log.warning("%s is not valid JSON; ignored", store.url(key))
        return None
    return version if isinstance(version, str) else None


def find_version(registry: str, name: str, ref: str = "latest") -> VersionInfo | None:
    """A complete version by name or pointer; None when there is none.

    ``champion`` is None when no champion was ever promoted. A pointer to a version without a
    manifest is not trusted: the newest complete version stands in for it.
    """
    if ref not in POINTERS:
        manifest = read_manifest(registry, name, check_name(ref, "version"))
        return VersionInfo(registry, name, ref, manifest) if manifest is not None else None
    target = read_pointer(registry, name, ref)
    if ref == "champion" and target is None:
        return None
    if target is not None:
        try:
            manifest = read_manifest(registry, name, check_name(target, "version"))
        except ValueError:
            manifest = None
        if manifest is not None:
            return VersionInfo(registry, name, target, manifest)
        log.warning("%s/%s: %s.json names version %r, which has no manifest; using the newest complete version",
                    registry, name, ref, target)
    versions = list_versions(registry, name)
    return versions[-1] if versions else None


def require_kind(registry: str, name: str, kind: str, what: str) -> None:
    """Refuse to give ``name`` a ``kind`` version when the name stands for the other kind.

    A name is one kind: ``bgeflow evaluate`` scores its champion as the retriever or the reranker it
    was asked for, and users load it as one. Its kind is its champion's, else its latest version's
    (a name with nothing published takes any kind; versions from before manifests named a kind, none).

    Args:
        registry: the registry root.
        name: the model's name in it.
        kind: ``retriever`` or ``reranker``: what is about to be published or promoted.
        what: that model, as the message names it (``--model <uri>``, ``version <v>``).

    Raises:
        ConflictError: naming the name, its kind (and the version that says so) and ``kind``.
    """
    for pointer in ("champion", "latest"):  # the champion first: what readers of the name load
        current = find_version(registry, name, pointer)
        if current is not None:
            break
    if current is None or not current.kind or current.kind == kind:
        return
    raise ConflictError(f"{join_uri(registry, name)} is a {current.kind} name (its {pointer} {current.version} is a "
                        f"{current.kind}), and {what} is a {kind}: a name's versions are one kind, the one evaluate "
                        f"and users load its champion as; publish the {kind} under a name of its own (--name)")


def get_version(registry: str, name: str, ref: str = "latest") -> VersionInfo:
    """Like ``find_version``, but FileNotFoundError when there is nothing to return."""
    info = find_version(registry, name, ref)
    if info is None:
        raise NotFoundError(f"registry {join_uri(registry, name)}: no complete version for {ref!r}")
    return info


def verify(registry: str, name: str, ref: str = "latest", *, checksums: bool = True) -> list[str]:
    """Problems with a version's files (missing, wrong size, wrong sha256); empty when intact."""
    info = get_version(registry, name, ref)
    store = info.store()
    problems = []
    for entry in info.files:
        found = store.stat(entry["path"])
        if found is None:
            problems.append(f"{store.url(entry['path'])}: missing")
        elif found.size != entry["size"]:
            problems.append(f"{store.url(entry['path'])}: {found.size} bytes, manifest says {entry['size']}")
        elif checksums and object_sha256(store, entry["path"]) != entry["sha256"]:
            problems.append(f"{store.url(entry['path'])}: sha256 differs from the manifest")
    return problems


def download_model(registry: str, name: str, ref: str, dest: str | Path, *, replace: bool = False) -> Path:
    """Download a version's ``model/`` files into ``dest``, checking each sha256; returns ``dest``.

    The files land in a hidden temporary sibling of ``dest`` first and reach ``dest`` only once every
    one matched the manifest: a failed check leaves no ``dest`` (and an existing one as it was), never a
    loadable folder holding a tampered file. A ``dest`` that does not exist (or is empty) is renamed
    into place whole. A ``dest`` holding only files of this version (an earlier download of it) gets each
    file moved over its namesake. Any other file in ``dest`` would be loaded with the model (another
    model's ``adapter_config.json``, ``modules.json`` or ``pytorch_model.bin`` changes what
    ``from_pretrained`` builds), so such a folder is refused unless ``replace``: then it is swapped for
    the downloaded one whole (renamed aside, the new one renamed in, the old one deleted).

    Raises:
        UnsafePathError: a manifest entry that would land outside ``dest``.
        RegistryError: no model files, or a file whose sha256 differs from the manifest.
        ConfigError: ``dest`` holds files this version does not have, and not ``replace``.
    """
    from bgeflow.core.storage import file_sha256

    info = get_version(registry, name, ref)
    store = info.store()
    dest = Path(dest)
    prefix = MODEL_DIR + "/"
    entries = [e for e in info.files if isinstance(e.get("path"), str) and e["path"].startswith(prefix)]
    if not entries:
        raise RegistryError(f"{info.uri}: the manifest lists no {prefix} files")
    rels = [e["path"][len(prefix):] for e in entries]
    # Every entry checked before the first download: a manifest naming model/../../x writes nothing.
    for rel in rels:
        safe_join(dest, rel, what=f"manifest entry of {info.uri}")
    strays = _other_files(dest, set(rels))
    if strays and not replace:
        raise ConfigError(f"{dest} holds {len(strays)} file(s) that {name}@{info.version} does not have (first: "
                          f"{strays[0]}): loaded with the model, they would change it; give an empty or new folder, "
                          "or --replace to replace the folder's contents with this version's files")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A sibling: on the same file system, so the moves below are renames. mkdir, not mkdtemp: the folder
    # renamed into place gets the usual mode (0755 under umask 022), not mkdtemp's 0700.
    staging = dest.parent / f".{dest.name}.bgeflow-download-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        for entry, rel in zip(entries, rels, strict=True):
            target = staging / rel
            store.get_file(entry["path"], target)
            if file_sha256(target) != entry["sha256"]:
                raise RegistryError(f"{store.url(entry['path'])}: downloaded file's sha256 differs from the manifest; "
                                    f"nothing was written to {dest}")
        if strays:
            _swap_in(staging, dest)
        else:
            try:
                os.rename(staging, dest)  # absent or empty: the whole folder at once
            except OSError:
                if not dest.is_dir():
                    raise
                for rel in rels:  # this version's files only: each verified file over its namesake
                    (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.replace(staging / rel, dest / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("downloaded %s (%d files) to %s", info.uri, len(entries), dest)
    return dest


def _other_files(folder: Path, expected: set[str]) -> list[str]:
    """Files (and links) under ``folder`` whose relative path is not in ``expected``, sorted."""
    if not folder.is_dir():
        return []
    return sorted(rel for p in folder.rglob("*") if (p.is_file() or p.is_symlink())
                  and (rel := p.relative_to(folder).as_posix()) not in expected)


def _swap_in(staging: Path, dest: Path) -> None:
    """Put ``staging`` where ``dest`` is: ``dest`` renamed aside first, back again if the swap fails."""
    aside = dest.parent / f".{dest.name}.bgeflow-replaced-{uuid.uuid4().hex[:8]}"
    os.rename(dest, aside)
    try:
        os.rename(staging, dest)
    except OSError:
        os.rename(aside, dest)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _split_last(uri: str) -> tuple[str, str]:
    parent, _, last = uri.rstrip("/").rpartition("/")
    return parent, last


def parse_ref(uri: str, default: str = "champion") -> tuple[str, str, str] | None:
    """``(registry, name, version-or-pointer)`` when ``uri`` is a registry reference, else None."""
    base, at, ref = uri.rstrip("/").rpartition("@") if "@" in uri.rsplit("/", 1)[-1] else (uri, "", "")
    base = base if at else uri.rstrip("/")
    store = open_store(base)
    if store.exists(MANIFEST):
        parent, version = _split_last(base)
        registry, name = _split_last(parent)
        return registry, name, version
    registry, name = _split_last(base)
    if not registry or not _NAME.match(name) or name in POINTERS or _model_root(store) is not None:
        return None
    # A name with nothing published yet is still a registry reference: it just has no versions.
    return registry, name, ref if at else default


def find_ref(uri: str, default: str = "champion") -> VersionInfo | None:
    """The version a registry reference names (``default`` for a bare ``<registry>/<name>``).

    None when the name has no such version (nothing published yet, or no champion promoted). A
    URI that cannot be a registry reference (a model directory) raises FileNotFoundError.
    """
    parsed = parse_ref(uri, default)
    if parsed is None:
        raise NotFoundError(f"{uri}: not a registry reference (<registry>/<name>[@version])")
    return find_version(*parsed)


def _model_root(store: Store) -> str | None:
    """The key prefix of the model inside a model dir or a training output; None if neither."""
    if store.exists(f"{MODEL_DIR}/config.json"):
        return MODEL_DIR
    if store.exists("config.json"):
        return ""
    return None


def is_model_location(ref: str) -> bool:
    """Whether ``ref`` is a model directory or a training output (local, ``s3://`` or another store)."""
    if "@" in ref.rsplit("/", 1)[-1]:
        return False
    if not is_remote(ref) and not Path(ref.removeprefix("file://")).is_dir():
        return False
    return _model_root(open_store(ref)) is not None


def fetch_model(ref: str, workdir: str | Path) -> str:
    """A local folder that transformers can load for any model reference (see module doc).

    Registry references are downloaded below ``workdir``; every other reference goes through the one
    resolver of all verbs, ``bgeflow.core.models.resolve_model`` (hub id, path, ``s3://``, ``bundled:``).

    Raises:
        NotFoundError: ``ref`` is neither a model, a training output nor a registry name with a
            complete version.
    """
    if "@" not in ref.rsplit("/", 1)[-1]:
        try:
            return resolve_model(ref)
        except NotFoundError:
            # A prefix without config.json may still be a registry name; anything else is not found.
            if not (is_remote(ref) or Path(ref.removeprefix("file://")).exists()):
                raise
    info = find_ref(ref, default="champion")
    if info is None:
        info = find_ref(ref, default="latest")
    if info is None:
        raise NotFoundError(f"model {ref}: not a model directory (config.json), a training output "
                            "(model/config.json), or a registry name with a complete version")
    dest = Path(workdir) / f"{info.name}-{info.version}"
    return str(download_model(info.registry, info.name, info.version, dest))
