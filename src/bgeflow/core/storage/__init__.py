"""One interface for local paths, ``s3://bucket/prefix`` URIs and every other fsspec scheme.

S3 goes through boto3 with its default credential chain (IRSA, Pod Identity, env, profile).
``AWS_ENDPOINT_URL`` (or ``endpoint_url=``) points it at MinIO or any S3-compatible store.

Writes are atomic for readers: local files are written beside their target and renamed into
place; S3 objects are uploaded from a finished local file, and S3 makes an object visible only
once its PUT (or multipart upload) completes. A reader therefore never sees half an object.

This module knows nothing of the pipeline's steps.
"""

from __future__ import annotations

from pathlib import Path

from bgeflow.core.errors import ConfigError
from bgeflow.core.storage.base import (
    DEFAULT_WORKERS,
    JSONL_SUFFIXES,
    MAX_LINE_BYTES,
    SAFE_NAME_PATTERN,
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    file_mode,
    file_sha256,
    files_digest,
    is_remote,
    is_s3,
    join_key,
    join_uri,
    object_sha256,
    redact,
    safe_join,
    safe_name,
    staged_file,
    stream_sha256,
)
from bgeflow.core.storage.local import LocalStore
from bgeflow.core.storage.lock import OutputLock, output_lock
from bgeflow.core.storage.s3 import S3Store, s3_client
from bgeflow.core.storage.sources import Overlong, Source, iter_lines, open_lines, resolve_sources

__all__ = [
    "DEFAULT_WORKERS",
    "JSONL_SUFFIXES",
    "MAX_LINE_BYTES",
    "SAFE_NAME_PATTERN",
    "LocalStore",
    "ObjectInfo",
    "ObjectNotFound",
    "OutputLock",
    "Overlong",
    "S3Store",
    "Source",
    "StorageError",
    "Store",
    "canonical_uri",
    "file_mode",
    "file_sha256",
    "files_digest",
    "is_remote",
    "is_s3",
    "iter_lines",
    "join_key",
    "join_uri",
    "object_sha256",
    "open_lines",
    "open_store",
    "output_lock",
    "redact",
    "resolve_sources",
    "s3_client",
    "safe_join",
    "safe_name",
    "staged_file",
    "stream_sha256",
]


def open_store(uri: str, *, endpoint_url: str | None = None) -> Store:
    """A store rooted at ``uri``: ``s3://bucket/prefix``, ``file:///path``, a local path, or any other
    scheme an installed fsspec filesystem serves (``gs://``, ``az://``, ``hf://``; ``remote.FsspecStore``).

    Raises:
        ConfigError: an S3 URI without a bucket, or a scheme no installed package serves.
    """
    if is_s3(uri):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ConfigError(f"S3 URI without a bucket: {uri!r}")
        return S3Store(bucket, prefix.strip("/"), endpoint_url=endpoint_url)
    if is_remote(uri):
        from bgeflow.core.storage.remote import FsspecStore

        return FsspecStore(uri)
    return LocalStore(Path(uri.removeprefix("file://")))


def canonical_uri(uri: str) -> str:
    """One spelling of the object or prefix ``uri`` names, so that two URIs can be compared.

    A local path or ``file://`` URI becomes absolute with its symlinks resolved: ``./d/x.jsonl``,
    ``file:///w/d/x.jsonl`` and a link to that file are one file. Any other URI is spelled as its store
    spells it (``s3://bkt/d/`` is ``s3://bkt/d``). Nothing is read.

    Raises:
        ConfigError: as ``open_store``.
    """
    store = open_store(uri)
    return str(store.root.resolve()) if isinstance(store, LocalStore) else store.uri
