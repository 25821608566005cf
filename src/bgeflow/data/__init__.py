"""The data contract: records, the validator, and strict readers for the steps that follow ingest."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from bgeflow.core.storage import iter_lines, resolve_sources
from bgeflow.data.records import CorpusRecord, EvalQuery, TrainRecord, dumps, text_id
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
    "read_train_records",
    "text_id",
    "write_jsonl",
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


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    """Write rows (records with ``to_json`` or plain dicts) as UTF-8 JSONL; returns the count."""
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.to_json() if hasattr(row, "to_json") else dumps(row))
            fh.write("\n")
            count += 1
    return count
