"""Writing a version's files: claim the version, upload, verify (steps 3-4 of the protocol).

A version folder has one writer per content: before its first byte, a publish claims the folder
with a conditional put of ``<name>/.claims/<version>.json`` naming its content hash. Another
publish of the same content may write beside it (the same bytes to the same keys, harmless); one
of other content is refused. So no version ever holds files of two contents, and an interrupted
publish is resumed by rerunning it (or reclaimed by ``bgeflow models gc``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time

from bgeflow.core.errors import ConflictError
from bgeflow.core.storage import LocalStore, S3Store, Store, object_sha256
from bgeflow.steps.publish.gather import FileEntry
from bgeflow.steps.publish.registry import CLAIMS, MANIFEST, RegistryError

log = logging.getLogger(__name__)


def claim_version(store: Store, version: str, digest: str) -> None:
    """Make this publish (of content ``digest``) a writer of ``<version>/``, or refuse.

    Raises:
        ConflictError: another publish of other content holds the version (running, or died: the
            message says how to reclaim it).
    """
    body = json.dumps({"content_hash": digest, "host": socket.gethostname(), "pid": os.getpid(),
                       "created": time.time()})
    key = f"{CLAIMS}/{version}.json"
    try:
        store.write_text(key, body, if_absent=True)
        return
    except FileExistsError:
        pass
    try:
        held = json.loads(store.read_text(key))
    except ValueError:
        held = {}
    if isinstance(held, dict) and held.get("content_hash") == digest:
        log.info("publish: %s is claimed for this very content (an earlier or concurrent attempt); writing the "
                 "same files", store.url(version))
        return
    other = held.get("content_hash", "?") if isinstance(held, dict) else "?"
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(held["created"])) \
        if isinstance(held, dict) and isinstance(held.get("created"), int | float) else "an unknown time"
    raise ConflictError(
        f"{store.url(version)} is being published with other content (content hash {str(other)[:12]}, this model "
        f"{digest[:12]}, claimed at {started}): choose another --version; if that publish died, "
        f"`bgeflow models gc <registry> --name <name> --delete` reclaims its files")


def _already_there(store: Store, key: str, item: FileEntry) -> bool:
    """An earlier attempt's object with the same bytes (judged by size and MD5 ETag; S3 only)."""
    if not isinstance(store, S3Store):
        return False
    found = store.stat(key)
    return found is not None and found.size == item.size and found.etag == item.md5


def _verify(store: Store, key: str, item: FileEntry) -> None:
    found = store.stat(key)
    if found is None:
        raise RegistryError(f"{store.url(key)}: missing after upload")
    if found.size != item.size:
        raise RegistryError(f"{store.url(key)}: {found.size} bytes after upload, expected {item.size}")
    if found.etag and "-" not in found.etag:
        if found.etag != item.md5:
            raise RegistryError(f"{store.url(key)}: ETag {found.etag} is not the file's MD5 {item.md5}")
    elif object_sha256(store, key) != item.sha256:
        raise RegistryError(f"{store.url(key)}: sha256 after upload differs from the local file")


def upload_version(store: Store, version: str, files: list[FileEntry]) -> None:
    """Put every file into the claimed ``<version>/`` (each object atomic), verify each, drop strays.

    Nothing is visible to readers until the manifest; a rerun skips S3 objects already intact.
    """
    for item in files:
        key = f"{version}/{item.path}"
        if not _already_there(store, key, item):
            store.put_file(item.local, key)
    for item in files:
        _verify(store, f"{version}/{item.path}", item)
    wanted = {item.path for item in files}
    for stale in store.child(version).list():
        if stale.key not in wanted and stale.key != MANIFEST:
            store.delete(f"{version}/{stale.key}")


def remove_prefix(store: Store, prefix: str) -> None:
    """Delete everything below ``prefix``, hidden keys included (best effort: never fails a caller)."""
    try:
        if isinstance(store, LocalStore):
            shutil.rmtree(store.root / prefix, ignore_errors=True)
        else:
            for obj in store.child(prefix).list(hidden=True):
                store.delete(f"{prefix}/{obj.key}")
    except Exception as exc:
        log.warning("could not remove %s: %s", store.url(prefix), exc)
