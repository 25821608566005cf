"""Registry upkeep: what interrupted publishes left behind, listed and reclaimed; versions verified.

An interrupted publish is invisible to readers (no manifest), but its files stay:

- ``unfinished``: ``<name>/<version>/`` objects without ``manifest.json`` (and that version's
  claim), last written more than ``older_than_s`` ago (younger ones may be a publish running now);
- ``staging``: ``<name>/.staging/`` of bgeflow releases before version claims;
- ``tempdir``: ``bgeflow-publish-*`` (and ingest/evaluate) folders in this machine's temp dir
  that a killed process never removed.

``find_orphans`` lists them, ``reclaim`` deletes them. ``bgeflow models gc`` is the command
(listing by default, ``--delete`` to reclaim); ``bgeflow models verify`` checks versions
against their manifests (``bgeflow.cli.models``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.storage import LocalStore, ObjectInfo, Store, join_uri, open_store
from bgeflow.steps.publish.registry import CLAIMS, MANIFEST, POINTERS, STAGING, list_versions, verify

#: A publish that wrote nothing for this long is taken for dead (the pipeline's publish timeout is 2 h).
DEFAULT_OLDER_THAN_S = 3 * 3600.0
TEMP_PREFIXES = ("bgeflow-publish-", "bgeflow-ingest-", "bgeflow-evaluate-")


@dataclass
class Orphan:
    """Something an interrupted publish left: where, what kind, how big, how old."""

    kind: str  # "unfinished" | "staging" | "tempdir"
    uri: str
    objects: int
    bytes: int
    age_s: float | None
    keys: list[str] = field(default_factory=list, repr=False)  # below ``store`` (registry orphans)
    store: Store | None = field(default=None, repr=False)
    #: Younger than ``older_than_s``: it may be a publish still running, so it is shown, never reclaimed.
    young: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "uri": self.uri, "objects": self.objects, "bytes": self.bytes,
                "age_s": None if self.age_s is None else round(self.age_s)}


def registry_store(registry: str) -> Store:
    """The store of a registry root that is read (listed, collected), refusing a local root that is not there.

    A local folder that does not exist listed as no objects: a typo (``models list ./noreg``) looked
    like an empty registry. An existing empty folder stays an empty registry; so does an S3 prefix
    with no objects (a prefix exists only through its objects, so "not there" and "empty" are one).

    Raises:
        NotFoundError: a local root that does not exist.
        ConfigError: a local root that is a file.
    """
    store = open_store(registry)
    if isinstance(store, LocalStore):
        if not store.root.exists():
            raise NotFoundError(f"registry {registry}: no such folder")
        if not store.root.is_dir():
            raise ConfigError(f"registry {registry}: a file, not a registry folder")
    return store


def registry_names(registry: str) -> list[str]:
    """Every model name in a registry (a folder holding versions or pointers)."""
    names = set()
    for info in registry_store(registry).list():
        parts = info.key.split("/")
        if len(parts) >= 2:
            names.add(parts[0])
    return sorted(names)


def _age(infos: list[ObjectInfo], now: float) -> float | None:
    stamps = [i.modified for i in infos if i.modified is not None]
    return now - max(stamps) if stamps else None


def find_orphans(registry: str, name: str | None = None, *, older_than_s: float = DEFAULT_OLDER_THAN_S,
                 temp_dir: str | Path | None = None, include_young: bool = False) -> list[Orphan]:
    """What interrupted publishes left under ``registry`` (one ``name`` or all) and in the temp dir.

    An unfinished version or staging prefix younger than ``older_than_s`` may be a publish still
    running: left out, or with ``include_young`` listed marked ``young`` (so a report can say what it
    did not reclaim; ``reclaim`` never deletes one). Its age is that of its newest object.
    """
    now = time.time()
    orphans: list[Orphan] = []
    for model in [name] if name else registry_names(registry):
        store = open_store(join_uri(registry, model))
        groups: dict[str, list[ObjectInfo]] = {}
        claims: dict[str, ObjectInfo] = {}
        for info in store.list(hidden=True):
            head = info.key.split("/", 1)[0]
            if head == CLAIMS:
                claims[info.key[len(CLAIMS) + 1:].removesuffix(".json")] = info  # goes with its version
            elif "/" in info.key:  # pointers and other top-level files stay
                groups.setdefault(head, []).append(info)
        complete = {v.version for v in list_versions(registry, model)}
        for head, infos in sorted(groups.items()):
            if head in complete or head in POINTERS or any(i.key == f"{head}/{MANIFEST}" for i in infos):
                continue  # a manifest (even an unreadable one) is for `verify`, not for gc
            kind = "staging" if head == STAGING else "unfinished"
            claim = [claims[head]] if kind == "unfinished" and head in claims else []
            age = _age(infos + claim, now)
            young = age is not None and age < older_than_s
            if young and not include_young:
                continue
            keys = [i.key for i in infos] + [i.key for i in claim]
            orphans.append(Orphan(kind, store.url(head), len(infos), sum(i.size for i in infos), age, keys, store,
                                  young=young))
    temp = Path(temp_dir or tempfile.gettempdir())
    for folder in sorted(p for p in temp.glob("bgeflow-*") if p.is_dir() and p.name.startswith(TEMP_PREFIXES)):
        files = [p for p in folder.rglob("*") if p.is_file()]
        stamps = [p.stat().st_mtime for p in files] or [folder.stat().st_mtime]
        age = now - max(stamps)
        if age >= older_than_s or include_young:
            orphans.append(Orphan("tempdir", str(folder), len(files), sum(p.stat().st_size for p in files), age,
                                  young=age < older_than_s))
    return orphans


def reclaim(orphans: list[Orphan]) -> int:
    """Delete what ``find_orphans`` found, never a ``young`` one; returns the number of objects and files removed."""
    removed = 0
    for orphan in orphans:
        if orphan.young:
            continue
        if orphan.kind == "tempdir":
            shutil.rmtree(orphan.uri, ignore_errors=True)
            removed += orphan.objects
            continue
        assert orphan.store is not None
        for key in orphan.keys:
            orphan.store.delete(key)
            removed += 1
        _prune_empty_dirs(orphan.store, orphan.uri)
    return removed


def _prune_empty_dirs(store: Store, uri: str) -> None:
    from bgeflow.core.storage import LocalStore

    if not isinstance(store, LocalStore):
        return  # object stores have no folders
    root = Path(uri)
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()


def verify_versions(registry: str, name: str, version: str | None = None, *,
                    checksums: bool = True) -> dict[str, list[str]]:
    """``{version: problems}`` for one version or every complete version of ``name`` (empty lists: intact)."""
    versions = [version] if version else [v.version for v in list_versions(registry, name)]
    return {v: verify(registry, name, v, checksums=checksums) for v in versions}
