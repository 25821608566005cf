"""The ``Store`` interface, URI helpers and what every store shares (staging, hashing)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bgeflow.core.errors import ConfigError, NotFoundError, StepFailed, UnsafePathError

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
_READ_CHUNK = 1 << 20
_BATCH_BYTES = 1 << 20  # lines per queue item, by size: memory stays bounded however long lines are
DEFAULT_WORKERS = int(os.environ.get("BGEFLOW_S3_MAX_WORKERS", "8"))
#: The longest line a JSONL reader accepts: a longer one is a problem named at file:line, never a
#: line built in memory (one training record of 200 passages of 10 KB is about 2 MB).
MAX_LINE_BYTES = 32 << 20


class StorageError(StepFailed):
    """An object or prefix could not be read or written; the message names the URI.

    The message is redacted (``redact``): a library's error text may quote the endpoint with its
    credentials.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(redact(message))


class ObjectNotFound(StorageError, NotFoundError):
    """The object or prefix a URI names does not exist: bad input, not a failing store."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object (or file) below a store's root. ``key`` is relative to that root."""

    key: str
    size: int
    etag: str = ""
    modified: float | None = None  # seconds since the epoch, when the store says

    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


class Store(ABC):
    """A root URI under which objects are read and written by relative key."""

    uri: str

    @abstractmethod
    def child(self, key: str) -> Store: ...

    @abstractmethod
    def list(self, suffixes: tuple[str, ...] = (), *, hidden: bool = False) -> list[ObjectInfo]:
        """Every object below the root (recursively), sorted by key.

        ``hidden``: include keys with a part starting with ``.`` (staging, locks, claims): only
        the tools that reclaim them look there.
        """

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
        """Download every object below ``prefix`` into ``local_dir``, keeping relative paths.

        Raises:
            UnsafePathError: a key that would land outside ``local_dir`` (``/abs``, ``..``, ``a//b``);
                checked for every key before anything is written.
        """
        source = self.child(prefix) if prefix else self
        found = source.list()
        # Every key first: a hostile listing must not leave half a download behind either.
        targets = [safe_join(local_dir, info.key, what=f"object key under {source.uri}") if info.key
                   else Path(local_dir) for info in found]
        for info, target in zip(found, targets, strict=True):
            source.get_file(info.key, target)
        return targets


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def join_uri(uri: str, key: str = "") -> str:
    if not key:
        return uri
    return uri.rstrip("/") + "/" + key.lstrip("/")


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_remote(uri: str) -> bool:
    """Any URI of an object store or remote filesystem (``s3://``, ``gs://``, ``hf://``, ...): not a local path."""
    return "://" in uri and not uri.startswith("file://")


def safe_join(root: str | Path, key: str, *, what: str = "key") -> Path:
    """``root / key`` for a key that comes from outside (an object key, a manifest entry, a name).

    The one place such a key becomes a local path: a key that could land outside ``root`` is
    refused rather than normalised, because a key like ``model//etc/x`` or ``../../x`` is never
    a file of the folder it claims to be in. One trailing ``/`` (a prefix) is allowed.

    Raises:
        UnsafePathError: ``key`` is empty, absolute, or has an empty, ``.`` or ``..`` part or a NUL.
    """
    parts = key[:-1].split("/") if key.endswith("/") and len(key) > 1 else key.split("/")
    bad = not key or key.startswith("/") or "\0" in key or any(part in ("", ".", "..") for part in parts)
    if bad:
        raise UnsafePathError(f"{what} {key!r} is not a relative path inside {root}: refusing absolute paths, "
                              "'..', '.' and empty parts")
    return Path(root).joinpath(*parts)


#: One path segment that is safe anywhere: a registry name or version, a run id. Specs declare
#: their name settings with ``pattern=SAFE_NAME_PATTERN`` so a bad one is refused at the edge.
SAFE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_SAFE_NAME = re.compile(SAFE_NAME_PATTERN)


def safe_name(value: object, what: str) -> str:
    """A name that becomes one path segment (a registry name or version, a run id).

    Raises:
        ConfigError: not 1-128 letters, digits, ``.``, ``_``, ``-`` starting with a letter or digit.
    """
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or value in (".", ".."):
        raise ConfigError(f"{what} {value!r} is not valid: use letters, digits, '.', '_', '-' (not starting with "
                          "'.', '_' or '-'), at most 128 characters")
    return value


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/?#@\s:]*)(?::[^/?#@\s]*)?@")


def redact(text: object) -> str:
    """``text`` with the password of every URL's userinfo replaced: ``http://user:***@host``.

    A userinfo without a password is often a token itself (``https://TOKEN@host``): it becomes
    ``***``. The one redaction every message naming an endpoint goes through.
    """
    def mask(match: re.Match[str]) -> str:
        user = match.group("user")
        has_password = match.group(0)[len(match.group("scheme")) + len(user)] == ":"
        return f"{match.group('scheme')}{user}:***@" if has_password and user else f"{match.group('scheme')}***@"

    return _USERINFO.sub(mask, str(text))


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where Linux tells (``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
        return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0644 under the usual umask 022."""
    return 0o666 & ~_umask()


@contextmanager
def staged_file(directory: str | Path | None = None, suffix: str = "") -> Iterator[Path]:
    """A temporary path that is removed afterwards whatever happens.

    Created with the mode a plain ``open()`` would give (0644 under umask 022), not mkstemp's 0600:
    it is renamed into place, and a registry or output on a shared volume must stay readable.
    """
    fd, name = tempfile.mkstemp(prefix=".bgeflow-", suffix=suffix, dir=directory)
    try:
        os.fchmod(fd, file_mode())
    finally:
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


def object_sha256(store: Store, key: str = "") -> str:
    """The sha256 (hex) of the object at ``key``, streamed: nothing is loaded whole or written to disk."""
    with store.open_read(key) as fh:
        return stream_sha256(fh)


def files_digest(files: Mapping[str, str]) -> str:
    """One sha256 (hex) naming a set of files, from ``{path: sha256}``: over their sorted ``path<TAB>sha256`` lines.

    Equal exactly when every file's path and bytes are: the registry's content hash of a version, a
    model's fingerprint and an eval set's hash all use this one rule.
    """
    return hashlib.sha256("\n".join(sorted(f"{path}\t{sha}" for path, sha in files.items())).encode()).hexdigest()
