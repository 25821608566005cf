"""Logging and progress that read well in a terminal and in a pod's log.

``BGEFLOW_LOG_FORMAT=json`` switches every record to one JSON object per line (for log
collectors). Progress is a tqdm bar on a terminal and a plain periodic log line elsewhere.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
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
#: Chatty at INFO whatever the level (HTTP and file-lock traffic; matplotlib's font search, ~220 lines at
#: DEBUG per mining run's histogram).
_ALWAYS_QUIET = ("botocore", "boto3", "urllib3", "s3transfer", "filelock", "httpx", "matplotlib")
#: Records libraries log as warnings that say nothing a bgeflow user acts on: (logger prefix, regex
#: matched at the start of the message format), shown only at DEBUG. In the training workers:
#: FlagEmbedding's runners log every process's device at WARNING ("Process rank: 0, device: cpu:0, ...";
#: bgeflow's "node 0/1: N process(es)" line says it once); transformers says a head the base model lacks
#: (a reranker's classifier on an embedding model) is "newly initialized ... You should probably TRAIN
#: this model", which the worker is doing (a head whose shape did not match still shows).
DEBUG_ONLY_RECORDS = (
    ("FlagEmbedding.", r"Process rank: "),
    ("transformers.modeling_utils", r"Some weights of \S+ were not initialized from the model checkpoint at .+ and "
                                    r"are newly initialized: "),
)
#: Python warnings of the same kind (the start of the message, a regex as ``warnings.filterwarnings``
#: takes it), shown only at DEBUG: transformers on FlagEmbedding's collators padding with a max_length
#: (they truncate before, so it is moot); accelerate saying it chose the CPU threads of a lone training
#: process itself.
DEBUG_ONLY_WARNINGS = (r"`max_length` is ignored when `padding`=`True`", r"OMP_NUM_THREADS/MKL_NUM_THREADS unset")
#: Libraries' own switches for output that does not go through logging, set (unless set already) below
#: DEBUG. Environment variables, not calls: the training workers are started later and inherit them,
#: and nothing has to import the libraries to set them. transformers' "advisory" warnings print through
#: its own handler ("You're using a BertTokenizerFast tokenizer. Please note ... `pad` method": advice to
#: FlagEmbedding's collators, not to the user); datasets draws a "Generating train split" bar as it
#: converts the training JSONL (bgeflow logs the data's counts before training).
DEBUG_ONLY_SWITCHES = {"TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
_SWITCHED: set[str] = set()  # the switches this process set (not the user)


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


class _DebugOnlyRecords(logging.Filter):
    """Drops the records of ``DEBUG_ONLY_RECORDS`` unless the root logs DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
            return True
        text = str(record.msg)
        return not any(record.name.startswith(prefix) and re.match(pattern, text)
                       for prefix, pattern in DEBUG_ONLY_RECORDS)


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
    # On the handler, not on the libraries' loggers: a logger's filter misses its children's records.
    handler.addFilter(_DebugOnlyRecords())
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
    # The switches are undone at DEBUG (a second setup in one process, as in tests); one the user set is
    # theirs. The warnings' filters stay: a process that logged below DEBUG once has seen them filtered.
    for name in _SWITCHED & set(DEBUG_ONLY_SWITCHES):
        os.environ.pop(name, None)
    _SWITCHED.clear()
    if debug:
        return
    for pattern in DEBUG_ONLY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, value in DEBUG_ONLY_SWITCHES.items():
        if name not in os.environ:
            os.environ[name] = value
            _SWITCHED.add(name)


def route_transformers_logging() -> None:
    """transformers' records through bgeflow's handler, not the one of its own; call after importing it.

    transformers prints through a handler on its own logger that bypasses the root's: its lines lack
    bgeflow's format (and ``BGEFLOW_LOG_FORMAT=json``), and ``DEBUG_ONLY_RECORDS`` cannot see them.
    Its import also set its logger's level over ``DEBUG_ONLY``'s: set again here.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()
    quiet_libraries()


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
    """Iterate with a tqdm bar on a terminal, or a log line every ``every_s`` seconds elsewhere.

    ``unit``: what one item is, singular as tqdm's (``"line"``: ``10 lines in 0.3s``, ``120 line/s``).
    """
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
            log.info("%s: %s %s (%.0f %s/s)", desc, done, _plural(unit, total or count), rate, unit)
    log.info("%s: %d %s in %.1fs", desc, count, _plural(unit, count), time.monotonic() - start)


def _plural(unit: str, count: int) -> str:
    """``unit`` as a count of ``count`` reads in a log line ("4 chunks", "1 batch", "26 batches").

    A unit that is already a plural ("lines", "tokens": a word ending in one ``s``) is kept as it is: the
    rule that gives "passes" once gave "lineses". Only "ss" takes "es" among words ending in ``s``.
    """
    if count == 1 or unit == "it":  # tqdm's "it" stays as tqdm writes it
        return unit
    if unit.endswith("s") and not unit.endswith("ss"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "ss", "x")) else "s")
