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
#: Libraries whose INFO records are dumps or noise to a bgeflow user: shown only at DEBUG. faiss logs
#: "Could not load library with AVX512 support" at every import as it falls back (harmless);
#: FlagEmbedding's runners dump their TrainingArguments, model and data arguments and the model
#: config (~150 lines); transformers its model configs; sentence-transformers every model it loads.
DEBUG_ONLY = ("faiss.loader", "FlagEmbedding.abc.finetune", "FlagEmbedding.finetune", "transformers",
              "sentence_transformers")
#: Chatty at INFO whatever the level (HTTP and file-lock traffic).
_ALWAYS_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx")


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
    """Configure the root logger once, from ``BGEFLOW_LOG_FORMAT`` and ``BGEFLOW_LOG_LEVEL``.

    Below DEBUG, the libraries of ``DEBUG_ONLY`` log their warnings and errors only.
    """
    level = level or os.environ.get("BGEFLOW_LOG_LEVEL", "INFO")
    handler = _StderrHandler()
    if os.environ.get("BGEFLOW_LOG_FORMAT", "").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter(_PLAIN_FORMAT, "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()


def quiet_libraries() -> None:
    """Libraries' chatter (``DEBUG_ONLY``, ``_ALWAYS_QUIET``) down to warnings unless the root logs DEBUG.

    Also for processes whose logging another program set up (a KFP component under kfp's executor):
    their root logger's level decides, as ``BGEFLOW_LOG_LEVEL`` does for bgeflow's own.
    """
    for noisy in _ALWAYS_QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    wanted = os.environ.get("BGEFLOW_LOG_LEVEL", "").upper()
    debug = wanted == "DEBUG" or logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in DEBUG_ONLY:
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


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
