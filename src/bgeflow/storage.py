"""One interface for local paths and ``s3://bucket/prefix`` URIs.

S3 goes through boto3 with its default credential chain (IRSA, Pod Identity, env, profile).
``AWS_ENDPOINT_URL`` (or ``endpoint_url=``) points it at MinIO or any S3-compatible store.

Writes are atomic for readers: local files are written beside their target and renamed into
place; S3 objects are uploaded from a finished local file, and S3 makes an object visible only
once its PUT (or multipart upload) completes. A reader therefore never sees half an object.

This module knows nothing of the pipeline's steps.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
_READ_CHUNK = 1 << 20
_BATCH_BYTES = 1 << 20  # lines per queue item, by size: memory stays bounded however long lines are
DEFAULT_WORKERS = int(os.environ.get("BGEFLOW_S3_MAX_WORKERS", "8"))


class StorageError(RuntimeError):
    """An object or prefix could not be read or written; the message names the URI."""


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


def open_store(uri: str, *, endpoint_url: str | None = None) -> Store:
    """A store rooted at ``uri``: ``s3://bucket/prefix``, ``file:///path`` or a local path."""
    if is_s3(uri):
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"S3 URI without a bucket: {uri!r}")
        return S3Store(bucket, prefix.strip("/"), endpoint_url=endpoint_url)
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r}: use s3://bucket/prefix or a local path")
    return LocalStore(Path(uri.removeprefix("file://")))


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


# --------------------------------------------------------------------------- local


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self.uri = str(self.root)

    def child(self, key: str) -> LocalStore:
        return LocalStore(self._path(key))

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def list(self, suffixes: tuple[str, ...] = ()) -> list[ObjectInfo]:
        if self.root.is_file():
            return [ObjectInfo("", self.root.stat().st_size)] if _matches(self.root.name, suffixes) else []
        if not self.root.exists():
            return []
        out = []
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and not _hidden(rel) and _matches(path.name, suffixes):
                out.append(ObjectInfo(rel, path.stat().st_size))
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str = "") -> ObjectInfo | None:
        path = self._path(key)
        return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def open_read(self, key: str = "") -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise StorageError(f"no such file: {self._path(key)}") from exc

    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(target.parent, suffix=".part") as tmp:
            shutil.copyfile(local_path, tmp)
            if if_absent:
                # link() fails if the target exists: the local equivalent of a conditional put.
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    raise FileExistsError(f"{target} already exists") from None
            else:
                os.replace(tmp, target)

    def get_file(self, key: str, local_path: str | Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(local_path.parent, suffix=".part") as tmp:
            shutil.copyfile(self._path(key), tmp)
            os.replace(tmp, local_path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def _hidden(rel: str) -> bool:
    # Staging files of an interrupted writer (".bgeflow-*.part") are never listed.
    return any(part.startswith(".") for part in rel.split("/"))


def _matches(name: str, suffixes: tuple[str, ...]) -> bool:
    return not suffixes or name.endswith(suffixes)


# --------------------------------------------------------------------------- S3


@lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None = None, region: str | None = None) -> Any:
    """A shared, thread-safe S3 client.

    Retries: botocore's "standard" mode (exponential backoff, throttling aware). Checksums: only
    when an operation requires one, because the newer default CRC trailers are rejected by MinIO
    and several other S3-compatible stores.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": int(os.environ.get("BGEFLOW_S3_MAX_ATTEMPTS", "5"))},
        max_pool_connections=max(DEFAULT_WORKERS * 2, 10),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        connect_timeout=10,
        read_timeout=120,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=config,
    )


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.uri = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"

    @property
    def client(self) -> Any:
        return s3_client(self.endpoint_url)

    def child(self, key: str) -> S3Store:
        return S3Store(self.bucket, join_key(self.prefix, key), endpoint_url=self.endpoint_url)

    def _key(self, key: str) -> str:
        return join_key(self.prefix, key)

    def _wrap(self, exc: Exception, key: str, action: str) -> StorageError:
        return StorageError(f"cannot {action} {join_uri(self.uri, key)}: {exc}")

    def list(self, suffixes: tuple[str, ...] = ()) -> list[ObjectInfo]:
        own = self.stat("") if self.prefix else None
        if own is not None:
            return [own] if _matches(self.prefix, suffixes) else []
        base = self.prefix + "/" if self.prefix else ""
        out = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(base) :]
                    if rel and not _hidden(rel) and _matches(rel, suffixes):
                        out.append(ObjectInfo(rel, obj["Size"], obj.get("ETag", "").strip('"')))
        except Exception as exc:
            raise self._wrap(exc, "", "list") from exc
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str = "") -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._wrap(exc, key, "stat") from exc
        except Exception as exc:
            raise self._wrap(exc, key, "stat") from exc
        return ObjectInfo(key, head["ContentLength"], head.get("ETag", "").strip('"'))

    def open_read(self, key: str = "") -> IO[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:
            raise self._wrap(exc, key, "read") from exc
        return _StreamingBody(body)

    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        from boto3.s3.transfer import TransferConfig

        try:
            if if_absent:
                # S3 conditional writes (If-None-Match: *); stores that lack them ignore the header,
                # so the caller's own existence check still guards.
                if self.exists(key):
                    raise FileExistsError(f"{join_uri(self.uri, key)} already exists")
                with open(local_path, "rb") as fh:
                    self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=fh, IfNoneMatch="*")
            else:
                self.client.upload_file(
                    str(local_path), self.bucket, self._key(key), Config=TransferConfig(use_threads=False)
                )
        except FileExistsError:
            raise
        except Exception as exc:
            if "PreconditionFailed" in str(exc):
                raise FileExistsError(f"{join_uri(self.uri, key)} already exists") from exc
            raise self._wrap(exc, key, "write") from exc

    def get_file(self, key: str, local_path: str | Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(local_path.parent, suffix=".part") as tmp:
            with self.open_read(key) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, _READ_CHUNK)
            os.replace(tmp, local_path)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._wrap(exc, key, "delete") from exc


class _StreamingBody(io.RawIOBase):
    """botocore's StreamingBody as a proper file object (so gzip and io.BufferedReader accept it)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


# --------------------------------------------------------------------------- JSONL sources


@dataclass(frozen=True)
class Source:
    """One JSONL object to read: its store and key, named by URI in every message."""

    store: Store
    key: str
    size: int
    etag: str = ""

    @property
    def uri(self) -> str:
        return self.store.url(self.key)


def resolve_sources(uris: Iterable[str], suffixes: tuple[str, ...] = JSONL_SUFFIXES) -> list[Source]:
    """Expand each URI (an object or a prefix) into the JSONL objects it names, in a stable order."""
    sources: list[Source] = []
    for uri in uris:
        store = open_store(uri)
        found = store.list(suffixes)
        if not found:
            own = store.stat("")
            if own is None:
                raise StorageError(f"{uri}: no such file, and no {'/'.join(suffixes)} objects below it")
            found = [own]
        sources.extend(Source(store, info.key, info.size, info.etag) for info in found)
    return sources


def open_lines(source: Source) -> IO[bytes]:
    """A buffered binary reader over a source, gunzipped when the name or the magic says so."""
    raw = io.BufferedReader(source.store.open_read(source.key), _READ_CHUNK)  # type: ignore[arg-type]
    if source.key.endswith(".gz") or source.uri.endswith(".gz") or raw.peek(2)[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


def iter_lines(sources: list[Source], workers: int = DEFAULT_WORKERS) -> Iterator[tuple[Source, int, bytes]]:
    """Yield ``(source, line_number, raw_line)`` for every line of every source, in source order.

    Up to ``workers`` objects are fetched concurrently; each feeds a small bounded queue of line
    batches (about ``_BATCH_BYTES`` each), so memory stays bounded by ``workers × queue depth ×
    batch`` whatever the object sizes.
    """
    if not sources:
        return
    done = object()
    stop = threading.Event()
    queues: list[queue.Queue] = [queue.Queue(maxsize=4) for _ in sources]

    def put(q: queue.Queue, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def pump(index: int) -> None:
        q = queues[index]
        try:
            with open_lines(sources[index]) as fh:
                # readlines(hint) splits a whole batch in C; a line never spans two batches.
                while batch := fh.readlines(_BATCH_BYTES):
                    if not put(q, batch):
                        return
            put(q, done)
        except BaseException as exc:
            put(q, exc)

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources))), thread_name_prefix="bgeflow-read")
    try:
        for index in range(len(sources)):
            pool.submit(pump, index)
        for index, source in enumerate(sources):
            line_no = 0
            while True:
                item = queues[index].get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise StorageError(f"{source.uri}: {item}") from item
                for line in item:
                    line_no += 1
                    yield source, line_no, line
            queues[index] = queue.Queue()  # release what is no longer needed
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)


def stream_sha256(fh: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in iter(lambda: fh.read(_READ_CHUNK), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return stream_sha256(fh)
