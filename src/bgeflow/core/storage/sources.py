"""JSONL inputs: a URI (an object or a prefix) expanded into sources, read line by line concurrently."""

from __future__ import annotations

import gzip
import io
import logging
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any

from bgeflow.core.storage.base import (
    _BATCH_BYTES,
    _READ_CHUNK,
    DEFAULT_WORKERS,
    JSONL_SUFFIXES,
    ObjectNotFound,
    StorageError,
    Store,
)

log = logging.getLogger(__name__)


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


#: The data files a directory or prefix contributes: what FlagEmbedding's datasets read from a directory
#: (``*.json``, ``*.jsonl``; one JSON object per line in both), plus their gzipped forms.
DATA_SUFFIXES = (*JSONL_SUFFIXES, ".json", ".json.gz")


def resolve_sources(uris: Iterable[str], suffixes: tuple[str, ...] = DATA_SUFFIXES) -> list[Source]:
    """Expand each URI (an object or a prefix) into the data objects it names, in a stable order.

    A URI naming one object is read whatever its name. Below a prefix, the objects ending in one of
    ``suffixes`` are read and every other (non-hidden) object is named in a warning, so a file that
    would be silently left out of ingest, mining, training or evaluation is visible.

    Raises:
        ObjectNotFound: a URI that is neither an object nor a prefix holding any such object.
    """
    sources: list[Source] = []
    for uri in uris:
        from bgeflow.core.storage import open_store

        store = open_store(uri)
        listed = store.list()
        found = [info for info in listed if info.key.endswith(suffixes)]
        skipped = [info.key for info in listed if not info.key.endswith(suffixes)]
        if skipped and (found or store.stat("") is None):
            shown = ", ".join(skipped[:5]) + (f" (+{len(skipped) - 5} more)" if len(skipped) > 5 else "")
            log.warning("%s: skipping %d file(s) that are not %s: %s", uri, len(skipped), "/".join(suffixes), shown)
        if not found:
            own = store.stat("")
            if own is None:
                raise ObjectNotFound(f"{uri}: no such file, and no {'/'.join(suffixes)} objects below it")
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
