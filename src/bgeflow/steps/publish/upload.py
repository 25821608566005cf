"""Uploading a version through a staging prefix: copy, move, verify, clean up (steps 3–4 of the protocol)."""

from __future__ import annotations

import logging
import os
import shutil

from bgeflow.core.storage import LocalStore, S3Store, Store, join_key
from bgeflow.steps.publish.gather import FileEntry
from bgeflow.steps.publish.registry import MANIFEST, RegistryError, sha256_of

log = logging.getLogger(__name__)


def _already_there(store: Store, key: str, item: FileEntry) -> bool:
    """An earlier attempt's object with the same bytes (judged by size and MD5 ETag; S3 only)."""
    if not isinstance(store, S3Store):
        return False
    found = store.stat(key)
    return found is not None and found.size == item.size and found.etag == item.md5


def _move(store: Store, src: str, dst: str, item: FileEntry) -> None:
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


def _verify(store: Store, key: str, item: FileEntry) -> None:
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


def upload_version(store: Store, version: str, files: list[FileEntry], staging: str) -> None:
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


def remove_prefix(store: Store, prefix: str) -> None:
    """Best effort: a leftover staging prefix is hidden and harmless."""
    try:
        if isinstance(store, LocalStore):
            shutil.rmtree(store.root / prefix, ignore_errors=True)
        else:
            for obj in store.child(prefix).list():
                store.delete(f"{prefix}/{obj.key}")
    except Exception as exc:  # never fail a finished publish over cleanup
        log.warning("could not remove %s: %s", store.url(prefix), exc)
