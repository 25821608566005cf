"""JSONL inputs: a URI (an object or a prefix) expanded into sources, read line by line concurrently.

A ``.json`` source may instead hold one JSON array of records (what FlagEmbedding's loader, datasets'
json builder, also reads): its elements are read as the lines (see ``iter_lines``).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
import queue
import re
import threading
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Literal, overload

from bgeflow.core.errors import BgeflowError, DataError
from bgeflow.core.reports import is_report
from bgeflow.core.storage.base import (
    _BATCH_BYTES,
    _READ_CHUNK,
    DEFAULT_WORKERS,
    JSONL_SUFFIXES,
    MAX_LINE_BYTES,
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


#: The names whose content may be one JSON array of records instead of JSON Lines: datasets' json
#: builder (FlagEmbedding's loader) reads either from a ``.json`` file, and so does ``iter_lines``.
ARRAY_SUFFIXES = (".json", ".json.gz")
#: The data files a directory or prefix contributes: what FlagEmbedding's datasets read from a directory
#: (``*.json``, ``*.jsonl``; one JSON object per line, or a ``.json`` holding one array), plus their
#: gzipped forms.
DATA_SUFFIXES = (*JSONL_SUFFIXES, *ARRAY_SUFFIXES)


def resolve_sources(uris: Iterable[str], suffixes: tuple[str, ...] = DATA_SUFFIXES) -> list[Source]:
    """Expand each URI (an object or a prefix) into the data objects it names, in a stable order.

    A URI naming one object is read whatever its name. Below a prefix, the objects ending in one of
    ``suffixes`` are read and every other (non-hidden) object is named in a warning, so a file that
    would be silently left out of ingest, mining, training or evaluation is visible. bgeflow's own
    reports below a prefix (``core.reports``: ``mine_report.json``, ``report.json``, ``metrics.json``,
    ...) are never data: they are left out and named in one INFO line, so a step's output folder can be
    read back by its prefix.

    Raises:
        ObjectNotFound: a URI that is neither an object nor a prefix holding any such object.
    """
    sources: list[Source] = []
    for uri in uris:
        from bgeflow.core.storage import open_store

        store = open_store(uri)
        listed = store.list()
        reports = [info.key for info in listed if is_report(info.key)]
        listed = [info for info in listed if not is_report(info.key)]
        found = [info for info in listed if info.key.endswith(suffixes)]
        skipped = [info.key for info in listed if not info.key.endswith(suffixes)]
        if reports:
            log.info("%s: skipping bgeflow's own report file(s), not data: %s", uri, _shown(reports))
        if skipped and (found or store.stat("") is None):
            log.warning("%s: skipping %d file(s) that are not %s: %s", uri, len(skipped), "/".join(suffixes),
                        _shown(skipped))
        if not found:
            own = store.stat("")
            if own is None:
                raise ObjectNotFound(f"{uri}: no such file, and no {'/'.join(suffixes)} objects below it")
            found = [own]
        sources.extend(Source(store, info.key, info.size, info.etag) for info in found)
    return sources


def _shown(keys: list[str], most: int = 5) -> str:
    """The first ``most`` of ``keys``, comma-separated, and how many more there are."""
    return ", ".join(keys[:most]) + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


def open_lines(source: Source) -> IO[bytes]:
    """A buffered binary reader over a source, gunzipped when its name ends in ``.gz``.

    The name decides, never the content alone: a plain ``.jsonl`` that happens to start with the
    gzip magic ``1f 8b`` is read as text (its lines are then judged like any other), and a ``.gz``
    whose bytes are not gzip is refused here, naming the URI, rather than read as garbage.

    Raises:
        DataError: the name says gzip and the content does not.
    """
    raw = io.BufferedReader(source.store.open_read(source.key), _READ_CHUNK)  # type: ignore[arg-type]
    if not (source.key.endswith(".gz") or source.uri.endswith(".gz")):
        return raw
    head = raw.peek(2)[:2]
    if head and head != GZIP_MAGIC:
        raw.close()
        raise DataError(f"{source.uri}: named .gz but not gzip data (starts with {head.hex(' ')}, not 1f 8b)")
    return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]


GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Overlong:
    """Stands, in ``iter_lines(..., overlong="mark")``, for a line longer than the limit.

    Its bytes were counted and skipped, never held: only its size is known.
    """

    size: int
    limit: int

    def __str__(self) -> str:
        return f"line of {self.size} bytes is longer than the limit of {self.limit} bytes (max_line_bytes)"


def _line_end(chunk: bytes) -> int:
    """The index just past the first line break (``\\n``, ``\\r\\n`` or a lone ``\\r``) in ``chunk``; -1 if none."""
    lf, cr = chunk.find(b"\n"), chunk.find(b"\r")
    if lf < 0 and cr < 0:
        return -1
    if cr < 0 or 0 <= lf < cr:
        return lf + 1
    return cr + 2 if chunk[cr + 1 : cr + 2] == b"\n" else cr + 1


def _line_batches(fh: IO[bytes], limit: int, head: bytes = b"") -> Iterator[list[bytes | Overlong]]:
    """The lines of ``fh`` in batches of about ``_BATCH_BYTES``, each line with its line break.

    ``head``: bytes already read from ``fh`` (by ``_source_batches``'s sniff), read as its start.
    Line breaks are ``\\n``, ``\\r\\n`` and a lone ``\\r`` (files from old Mac tools). A line longer
    than ``limit`` bytes (break included) becomes an ``Overlong``: its bytes are skipped as they
    stream by, so memory holds at most ``limit`` + one chunk whatever the line's length. A line
    within the limit that spans chunks costs about its own size (see ``pending``).
    """
    batch: list[bytes | Overlong] = []
    batch_size = 0
    # A line that spans chunks grows in a BytesIO: its buffer is resized in place, and getvalue()
    # hands that very buffer over (no copy), so a long line costs about its size once.
    pending = io.BytesIO()
    pending_size = 0
    skipped = -1  # >= 0: inside an over-long line, this many bytes of it seen so far

    def emit(line: bytes | Overlong) -> None:
        nonlocal batch_size
        batch.append(line)
        batch_size += len(line) if isinstance(line, bytes) else 0

    for chunk in itertools.chain((head,) if head else (), iter(lambda: fh.read(_READ_CHUNK), b"")):
        # A chunk never ends between the \r and \n of one line break.
        while chunk.endswith(b"\r") and (more := fh.read(1)):
            chunk += more
        if skipped >= 0:
            end = _line_end(chunk)
            if end < 0:
                skipped += len(chunk)
                continue
            emit(Overlong(skipped + end, limit))
            skipped = -1
            chunk = chunk[end:]
        if pending_size:
            end = _line_end(chunk)
            if end < 0:
                pending.write(chunk)
                pending_size += len(chunk)
                if pending_size > limit:
                    skipped, pending, pending_size = pending_size, io.BytesIO(), 0
                continue
            if pending_size + end > limit:
                emit(Overlong(pending_size + end, limit))
            else:
                pending.write(chunk[:end])
                emit(pending.getvalue())
            pending, pending_size = io.BytesIO(), 0
            chunk = chunk[end:]
        lines = chunk.splitlines(keepends=True)
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            last = lines.pop()
            if len(last) > limit:
                skipped = len(last)
            else:
                pending.write(last)
                pending_size = len(last)
        if len(chunk) <= limit:  # the usual case: no line of this chunk can be over the limit
            batch.extend(lines)
            batch_size += len(chunk)
        else:
            for line in lines:
                emit(line if len(line) <= limit else Overlong(len(line), limit))
        if batch_size >= _BATCH_BYTES:
            yield batch
            batch, batch_size = [], 0
    if skipped >= 0:
        emit(Overlong(skipped, limit))
    elif pending_size:
        emit(pending.getvalue())
    if batch:
        yield batch


#: What may come before an array's ``[``: a UTF-8 byte order mark, then JSON whitespace.
_ARRAY_LEAD = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\n\r]*")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")
#: A line break and the indent after it. A JSON string cannot hold a raw line break, so such a run is
#: always whitespace between tokens: one space in its place changes no value (and no line of a
#: pretty-printed record is written back as a run of indent).
_BREAK_AND_INDENT = re.compile(r"[\r\n][ \t\r\n]*")


class _Numbered(list):
    """A batch of ``(line_number, line)`` pairs: an array's elements, each numbered by where it starts.

    The batches of ``_line_batches`` are numbered by counting them; an element may span lines or share
    one, so its number (the line it starts on) comes with it.
    """


def _source_batches(source: Source, fh: IO[bytes], limit: int) -> Iterator[list[Any]]:
    """The batches of one source: ``_array_batches`` for a ``.json``/``.json.gz`` whose content starts
    with ``[`` (after an optional UTF-8 BOM and whitespace), ``_line_batches`` for anything else.

    The sniff reads whole chunks until one holds a byte other than whitespace, and hands them on; it
    gives up (JSON Lines) after ``limit`` bytes of whitespace, which a line reader holds no more of.

    Raises:
        DataError: a malformed array (from ``_array_batches``).
    """
    if not (source.key.endswith(ARRAY_SUFFIXES) or source.uri.endswith(ARRAY_SUFFIXES)):
        return _line_batches(fh, limit)
    head = fh.read(_READ_CHUNK)
    while (lead := _ARRAY_LEAD.match(head).end()) == len(head) and len(head) <= limit:  # type: ignore[union-attr]
        more = fh.read(_READ_CHUNK)
        if not more:
            break
        head += more
    if head[lead : lead + 1] != b"[":
        return _line_batches(fh, limit, head)
    # An array has no line structure to stream by: it is read whole, as datasets' json builder does.
    return _array_batches(head + fh.read(), limit, source.uri)


def _array_batches(data: bytes, limit: int, uri: str) -> Iterator[_Numbered]:
    """The elements of the JSON array ``data``, in ``_Numbered`` batches of about ``_BATCH_BYTES``.

    Each element is one line: its own text, each line break and the indent after it made one space
    (``_BREAK_AND_INDENT``: only whitespace between tokens changes), and a ``\\n``, numbered by the
    line it starts on in ``data`` (line breaks counted as ``_line_end`` counts them),
    so ``uri:line`` in any message points at the element's first line. Numbers only grow: an element
    starting on a line an earlier one started on (elements sharing a line, as in a minified array)
    takes the next number, so in a one-line array the number is the element's position (1 = first).
    An element longer than ``limit`` bytes (its ``\\n`` included) becomes an ``Overlong``. Whether an
    element is a usable record (an object, valid UTF-8, ...) is left to the readers' line checks.

    Raises:
        DataError: ``data`` is not one JSON array (invalid JSON within or between elements, a missing
            comma, no closing ``]``, text after it), naming ``uri:line`` and the column.
    """
    # surrogateescape: bytes that are not UTF-8 pass through the parse and come back as they were, so
    # an element holding them is reported by the readers' own not_utf8 rule, at its line.
    text = data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")
    del data
    decoder = json.JSONDecoder()
    batch, batch_size = _Numbered(), 0
    line_no, seen, seen_line = 0, 0, 1  # the last number given; an offset and its 1-based line in text

    def line_at(pos: int) -> int:
        nonlocal seen, seen_line
        seen_line += _breaks(text, seen, pos)
        seen = pos
        return seen_line

    def malformed(pos: int, what: str) -> DataError:
        line = 1 + _breaks(text, 0, pos)
        column = pos - max(text.rfind("\n", 0, pos), text.rfind("\r", 0, pos))
        return DataError(f"{uri}:{line}: invalid JSON array: {what} at column {column}")

    pos = _skip_space(text, text.index("[") + 1)
    if text.startswith("]", pos):
        pos += 1
    else:
        while True:
            start = pos
            try:
                _, end = decoder.raw_decode(text, start)
            except json.JSONDecodeError as exc:
                raise malformed(exc.pos, exc.msg.removesuffix(" at")) from None
            except RecursionError:
                raise malformed(start, "an element nested too deeply to read") from None
            except ValueError as exc:  # an integer over Python's digit limit
                raise malformed(start, str(exc)) from None
            line_no = max(line_no + 1, line_at(start))
            line = _BREAK_AND_INDENT.sub(" ", text[start:end]).encode("utf-8", "surrogateescape") + b"\n"
            batch.append((line_no, line if len(line) <= limit else Overlong(len(line), limit)))
            batch_size += min(len(line), limit)
            if batch_size >= _BATCH_BYTES:
                yield batch
                batch, batch_size = _Numbered(), 0
            pos = _skip_space(text, end)
            if text.startswith("]", pos):
                pos += 1
                break
            if pos == len(text):
                raise malformed(pos, "no closing ']' (the array is cut short)")
            if not text.startswith(",", pos):
                raise malformed(pos, f"expected ',' or ']' after an element, found {text[pos]!r}")
            pos = _skip_space(text, pos + 1)
    pos = _skip_space(text, pos)
    if pos < len(text):
        raise malformed(pos, "text after the array's closing ']'")
    if batch:
        yield batch


def _skip_space(text: str, pos: int) -> int:
    """The offset of the first character at or after ``pos`` in ``text`` that is not JSON whitespace."""
    return _JSON_SPACE.match(text, pos).end()  # type: ignore[union-attr]  # ``*``: it always matches


def _breaks(text: str, start: int, end: int) -> int:
    """The line breaks in ``text[start:end]``, counted as ``_line_end`` counts them.

    ``\\n``, ``\\r\\n`` and a lone ``\\r``: an offset's line then matches the line a reader of the file sees.
    """
    return text.count("\n", start, end) + text.count("\r", start, end) - text.count("\r\n", start, end)


@overload
def iter_lines(sources: list[Source], workers: int = ..., *, max_line_bytes: int = ...,
               overlong: Literal["raise"] = ...) -> Iterator[tuple[Source, int, bytes]]: ...


@overload
def iter_lines(sources: list[Source], workers: int = ..., *, max_line_bytes: int = ...,
               overlong: Literal["mark"]) -> Iterator[tuple[Source, int, bytes | Overlong]]: ...


def iter_lines(sources: list[Source], workers: int = DEFAULT_WORKERS, *, max_line_bytes: int = MAX_LINE_BYTES,
               overlong: Literal["raise", "mark"] = "raise") -> Iterator[tuple[Source, int, Any]]:
    """Yield ``(source, line_number, raw_line)`` for every line of every source, in source order.

    A ``.json``/``.json.gz`` source whose content starts with ``[`` (after an optional UTF-8 BOM and
    whitespace) is one JSON array of records, as FlagEmbedding reads it: each element is yielded as
    one line, numbered by the line it starts on (``_array_batches`` says what the number is when
    elements share a line), and such a source is read whole, for an array has no lines to stream by.

    Up to ``workers`` objects are fetched concurrently; each feeds a small bounded queue of line
    batches (about ``_BATCH_BYTES`` each), and no line longer than ``max_line_bytes`` is ever held,
    so memory stays bounded by ``workers × queue depth × (batch + max_line_bytes)`` whatever the
    objects hold. An over-long line raises DataError (``overlong="raise"``, the strict readers) or
    is yielded as an ``Overlong`` in its place (``"mark"``: ingest reports it and reads on).

    Raises:
        DataError: an over-long line (``"raise"``), a ``.gz`` that is not gzip or is truncated, a
            ``.json`` array that is malformed, naming ``uri:line``.
        StorageError: the object could not be read.
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
                for batch in _source_batches(sources[index], fh, max_line_bytes):
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
                if isinstance(item, BgeflowError):
                    raise item
                if isinstance(item, (EOFError, zlib.error, gzip.BadGzipFile)):
                    raise DataError(f"{source.uri}:{line_no + 1}: not valid gzip data ({item})") from item
                if isinstance(item, BaseException):
                    raise StorageError(f"{source.uri}: {item}") from item
                # An array's elements come numbered; lines are numbered by counting them.
                numbered = item if type(item) is _Numbered else enumerate(item, line_no + 1)
                for line_no, line in numbered:
                    if type(line) is Overlong and overlong == "raise":
                        raise DataError(f"{source.uri}:{line_no}: {line}")
                    yield source, line_no, line
            queues[index] = queue.Queue()  # release what is no longer needed
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
