"""The data contract: records, the validator, and strict readers for the steps that follow ingest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bgeflow.core.storage import iter_lines, resolve_sources
from bgeflow.data.records import (
    CorpusRecord,
    EvalQuery,
    TrainRecord,
    dumps,
    positives_by_query,
    query_prompt,
    text_id,
)
from bgeflow.data.validate import (
    RULES,
    DataError,
    Problem,
    check_record,
    json_problem,
    loads_line,
    parse_clean,
    parse_line,
)

__all__ = [
    "RULES",
    "CorpusRecord",
    "DataError",
    "EvalQuery",
    "Problem",
    "TrainRecord",
    "check_record",
    "dumps",
    "iter_json",
    "json_problem",
    "loads_line",
    "parse_clean",
    "parse_line",
    "positives_by_query",
    "query_prompt",
    "read_train_records",
    "text_id",
    "write_jsonl",
    "write_line",
]


def iter_json(uris: str | Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for every non-blank line of the JSONL objects named by ``uris``.

    The strict reader of every step after ingest: whatever the bytes, the only error is one
    DataError naming ``uri:line`` and the rule (invalid JSON, too deep, a lone surrogate, a line
    over ``MAX_LINE_BYTES``, ...), never a raw library exception.

    Raises:
        DataError: the first line that is not a JSON object a later step could use and write.
        NotFoundError, StorageError: an input that is absent or cannot be read.
    """
    uris = [uris] if isinstance(uris, str) else list(uris)
    for source, line_no, raw in iter_lines(resolve_sources(uris)):
        if not raw.strip():
            continue
        where = f"{source.uri}:{line_no}"
        obj, problem = loads_line(raw, where)
        if problem is None and not isinstance(obj, dict):
            problem = Problem(where, "not_object", "", "expected a JSON object")
        if problem is None:
            problem = json_problem(obj, where, raw)
        if problem is not None:
            raise DataError(str(problem))
        yield where, obj


def read_train_records(uris: str | Iterable[str], *, min_negatives: int = 0) -> Iterator[TrainRecord]:
    """Training records from JSONL, strictly: the first problem raises DataError naming ``uri:line``.

    Ingest is where messy data is reported in full; steps after it expect clean input.
    """
    for where, obj in iter_json(uris):
        problems = check_record(obj, where, min_negatives=min_negatives)
        if problems:
            raise DataError(f"{problems[0]} (+{len(problems) - 1} more on this line)" if len(problems) > 1 else str(problems[0]))
        yield TrainRecord.from_dict(obj)


_WRITE_SLICE = 1 << 20


def write_line(fh: IO[bytes], text: str) -> None:
    """Write ``text`` and a newline as UTF-8, encoding a slice at a time.

    ``fh.write(text.encode())`` would hold the text twice (and ``+ b"\\n"`` three times): for a
    100 MB passage, 200-300 MB more at once.
    """
    for start in range(0, len(text), _WRITE_SLICE):
        fh.write(text[start : start + _WRITE_SLICE].encode("utf-8"))
    fh.write(b"\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows (records with ``to_json`` or plain dicts) as UTF-8 JSONL; returns the count."""
    count = 0
    with open(path, "wb") as fh:
        for row in rows:
            write_line(fh, row.to_json() if hasattr(row, "to_json") else dumps(row))
            count += 1
    return count
