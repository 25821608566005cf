"""Logging and progress that read well in a terminal and in a pod's log.

``BGEFLOW_LOG_FORMAT=json`` switches every record to one JSON object per line (for log
collectors). Progress is a tqdm bar on a terminal and a plain periodic log line elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFormatter(logging.Formatter):
    """Every line with URL passwords masked (``user:***@host``): libraries log endpoints as given."""

    def format(self, record: logging.LogRecord) -> str:
        from bgeflow.core.storage.base import redact

        return redact(super().format(record))


class JsonFormatter(RedactingFormatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        from bgeflow.core.storage.base import redact

        return redact(json.dumps(payload, ensure_ascii=False, default=str))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when logging was set up.

    Test runners and notebooks swap ``sys.stderr``; a handler bound to an old, closed stream
    would fail with "I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once, from ``BGEFLOW_LOG_FORMAT`` and ``BGEFLOW_LOG_LEVEL``."""
    level = level or os.environ.get("BGEFLOW_LOG_LEVEL", "INFO")
    handler = _StderrHandler()
    if os.environ.get("BGEFLOW_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(_PLAIN_FORMAT, "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("BGEFLOW_LOG_FORMAT", "").lower() != "json"


def progress(
    items: Iterable[T],
    desc: str,
    total: int | None = None,
    unit: str = "it",
    every_s: float = 30.0,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Iterate with a tqdm bar on a terminal, or a log line every ``every_s`` seconds elsewhere."""
    if interactive():
        from tqdm.auto import tqdm

        yield from tqdm(items, desc=desc, total=total, unit=unit, dynamic_ncols=True)
        return
    log = logger or logging.getLogger("bgeflow.progress")
    start = last = time.monotonic()
    count = 0
    for item in items:
        yield item
        count += 1
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            rate = count / max(now - start, 1e-9)
            done = f"{count}/{total}" if total else str(count)
            log.info("%s: %s %s (%.0f %s/s)", desc, done, unit, rate, unit)
    log.info("%s: %d %s in %.1fs", desc, count, unit, time.monotonic() - start)
