"""The ``Store`` interface, URI helpers and what every store shares (staging, hashing)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bgeflow.core.errors import NotFoundError, StepFailed

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
_READ_CHUNK = 1 << 20
_BATCH_BYTES = 1 << 20  # lines per queue item, by size: memory stays bounded however long lines are
DEFAULT_WORKERS = int(os.environ.get("BGEFLOW_S3_MAX_WORKERS", "8"))


class StorageError(StepFailed):
    """An object or prefix could not be read or written; the message names the URI."""


class ObjectNotFound(StorageError, NotFoundError):
    """The object or prefix a URI names does not exist: bad input, not a failing store."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or file) below a store's root. ``key`` is relative to that root."""

    key: str
    size: int
    etag: str = ""

    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class Store(ABC):
    """A root URI under which objects are read and written by relative key."""

    uri: str

    @abstractmethod
    def child(self, key: str) -> Store: ...

    @abstractmethod
    def list(self, suffixes: tuple[str, ...] = ()) -> list[ObjectInfo]:
        """Every object below the root (recursively), sorted by key."""

    @abstractmethod
    def stat(self, key: str = "") -> ObjectInfo | None:
        """The object at ``key`` (``""``: the root itself), or None when absent."""

    @abstractmethod
    def open_read(self, key: str = "") -> IO[bytes]:
        """A streaming binary reader; nothing is loaded whole."""

    @abstractmethod
    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        """Place a finished local file at ``key`` atomically.

        ``if_absent``: fail with FileExistsError when ``key`` exists (S3 conditional put).
        """

    @abstractmethod
    def get_file(self, key: str, local_path: str | Path) -> None: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def url(self, key: str = "") -> str:
        return join_uri(self.uri, key)

    def exists(self, key: str = "") -> bool:
        return self.stat(key) is not None

    def read_bytes(self, key: str = "") -> bytes:
        with self.open_read(key) as fh:
            return fh.read()

    def read_text(self, key: str = "") -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        with staged_file() as tmp:
            tmp.write_bytes(data)
            self.put_file(tmp, key, if_absent=if_absent)

    def write_text(self, key: str, text: str, *, if_absent: bool = False) -> None:
        self.write_bytes(key, text.encode("utf-8"), if_absent=if_absent)

    def upload_dir(self, local_dir: str | Path, prefix: str = "") -> list[str]:
        """Upload every file under ``local_dir`` below ``prefix``; returns the keys written."""
        local_dir = Path(local_dir)
        keys = []
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            key = join_key(prefix, path.relative_to(local_dir).as_posix())
            self.put_file(path, key)
            keys.append(key)
        return keys

    def download_dir(self, local_dir: str | Path, prefix: str = "") -> list[Path]:
        """Download every object below ``prefix`` into ``local_dir``, keeping relative paths."""
        source = self.child(prefix) if prefix else self
        paths = []
        for info in source.list():
            target = Path(local_dir) / info.key
            source.get_file(info.key, target)
            paths.append(target)
        return paths


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def join_uri(uri: str, key: str = "") -> str:
    if not key:
        return uri
    return uri.rstrip("/") + "/" + key.lstrip("/")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


@contextmanager
def staged_file(directory: str | Path | None = None, suffix: str = "") -> Iterator[Path]:
    """A temporary path that is removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix=".bgeflow-", suffix=suffix, dir=directory)
    os.close(fd)
    path = Path(name)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def is_hidden_key(rel: str) -> bool:
    # Staging files of an interrupted writer (".bgeflow-*.part") are never listed.
    return any(part.startswith(".") for part in rel.split("/"))


def matches_suffixes(name: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or name.endswith(suffixes)


def stream_sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_READ_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return stream_sha256(fh)
