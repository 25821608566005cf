"""The data contract: records, the validator, and strict readers for the steps that follow ingest."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
from bgeflow.data.validate import RULES, DataError, Problem, check_record, parse_clean, parse_line

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
    "parse_clean",
    "parse_line",
    "positives_by_query",
    "query_prompt",
    "read_train_records",
    "text_id",
    "write_jsonl",
]


def iter_json(uris: str | Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, object)`` for every non-blank line of the JSONL objects named by ``uris``.

    Raises DataError naming ``uri:line`` on the first line that is not a JSON object.
    """
    uris = [uris] if isinstance(uris, str) else list(uris)
    for source, line_no, raw in iter_lines(resolve_sources(uris)):
        if not raw.strip():
            continue
        where = f"{source.uri}:{line_no}"
        try:
            obj = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"{where}: invalid JSON ({exc})") from exc
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object")
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
