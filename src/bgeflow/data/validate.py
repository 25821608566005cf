"""Line-by-line validation of training JSONL that reports every problem, not just the first.

Each problem names where it is (``uri:line``), the field and the rule it breaks, so a user can
fix a file in one pass. ``parse_line`` never raises on bad data: it returns the problems.

Most lines of real data are clean, so readers try ``parse_clean`` first: msgspec decodes and
type-checks the line in C against the exact schema, and only a line it cannot vouch for goes
through ``parse_line``, which stays the one place that explains problems.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from bgeflow.core.errors import DataError
from bgeflow.data.records import TRAIN_FIELDS, TrainRecord

__all__ = ["MAX_DEPTH", "RULES", "DataError", "Problem", "check_record", "json_problem", "parse_clean", "parse_line"]

#: Deeper JSON is refused: nothing in the contract nests beyond 2 levels, and a value near the
#: interpreter's recursion limit parses but could not be written back out.
MAX_DEPTH = 64

#: Every rule the validator applies, with the sentence a report uses for it.
RULES: dict[str, str] = {
    "not_utf8": "line is not valid UTF-8",
    "invalid_json": "line is not valid JSON",
    "not_object": "line is not a JSON object",
    "missing_field": "a required field is missing",
    "wrong_type": "a field has the wrong type",
    "empty_query": "query is empty",
    "empty_pos": "pos has no passage",
    "empty_text": "a passage is an empty string",
    "score_length": "a score list's length differs from its texts",
    "bad_score": "a score is not a finite number",
    "lone_surrogate": "a text holds an unpaired UTF-16 surrogate escape",
    "too_deep": f"JSON nested deeper than {MAX_DEPTH} levels",
    "line_too_long": "line is longer than max_line_bytes",
    "too_few_negatives": "fewer negatives than --min-negatives",
}


@dataclass(frozen=True)
class Problem:
    where: str
    rule: str
    field: str
    message: str

    def __str__(self) -> str:
        field = f" [{self.field}]" if self.field else ""
        return f"{self.where}{field}: {self.message} ({self.rule})"

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "rule": self.rule, "field": self.field, "message": self.message}


def loads_line(raw: bytes, where: str) -> tuple[Any, Problem | None]:
    """``json.loads`` of one line that never raises: ``(value, None)`` or ``(None, problem)``.

    The one place a line's bytes become JSON for the validator and the strict readers: every
    failure json can have (bad UTF-8, bad syntax, nesting past the recursion limit, an integer of
    more than 4300 digits) ends as a named rule.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Problem(where, "not_utf8", "", f"not valid UTF-8 at byte {exc.start}")
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, Problem(where, "invalid_json", "", json_error_text(exc, text))
    except RecursionError:
        return None, Problem(where, "too_deep", "", f"JSON nested too deeply (more than {MAX_DEPTH} levels)")
    except ValueError as exc:  # int digits limit (sys.set_int_max_str_digits)
        return None, Problem(where, "invalid_json", "", f"invalid JSON: {exc}")


def json_error_text(exc: json.JSONDecodeError, text: str) -> str:
    """``invalid JSON: Unterminated string starting at column 400``: json's sentence, its column once.

    The line's end is no part of the line: whether a reader strips it or not (ingest does), the same
    line gets the same message (a string cut by a stray \r: "Unterminated string", not "Invalid
    control character"). json's messages end in "at" before the position it adds.
    """
    stripped = text.rstrip("\r\n")
    if len(stripped) != len(text):
        try:
            json.loads(stripped)
        except json.JSONDecodeError as again:
            exc = again
        except (ValueError, RecursionError):  # not a syntax error without the line end: keep the first
            pass
    return f"invalid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}"


def parse_line(raw: bytes, where: str, *, min_negatives: int = 0) -> tuple[TrainRecord | None, list[Problem]]:
    """Decode, parse and check one JSONL line. Returns the record (None if unusable) and problems.

    Never raises on any byte sequence: every line ends as a record or as problems.
    """
    obj, problem = loads_line(raw, where)
    if problem is not None:
        return None, [problem]
    if not isinstance(obj, dict):
        return None, [Problem(where, "not_object", "", f"expected a JSON object, got {_type_name(obj)}")]
    problems = check_record(obj, where, min_negatives=min_negatives)
    return (None if problems else TrainRecord.from_dict(obj)), problems


_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


def json_problem(value: Any, where: str, raw: bytes | None = None) -> Problem | None:
    """The first lone surrogate (in a key or a string) or nesting past ``MAX_DEPTH`` in ``value``.

    Such a value parses, but cannot be written back as UTF-8 JSON (or at all). With ``raw`` (the
    line it came from) most values are cleared by two byte scans: a surrogate can only come from
    a ``\\ud8..``-``\\udf..`` escape, and depth needs brackets.
    """
    if raw is not None and not _MAYBE_SURROGATE.search(raw) and raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return None
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:  # iterative: a recursive walk would itself hit the recursion limit
        item, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            return Problem(where, "too_deep", path, f"JSON nested deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return Problem(where, "lone_surrogate", path,
                               "an unpaired surrogate escape (\\ud800-\\udfff): not valid Unicode")
        elif isinstance(item, dict):
            for key, inner in item.items():
                name = f"{path}.{key}" if path else str(key)
                if not key.isascii() and _SURROGATE.search(key):
                    return Problem(where, "lone_surrogate", path or "(key)",
                                   "an unpaired surrogate escape (\\ud800-\\udfff) in a key: not valid Unicode")
                stack.append((inner, name, depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, f"{path}[{i}]", depth + 1) for i, inner in enumerate(item))
    return None


def _all_finite(scores: list[Any]) -> bool:
    try:
        return all(map(math.isfinite, scores))
    except OverflowError:  # an integer too large for a float (a 400-digit score)
        return False


_SURROGATE = re.compile("[\ud800-\udfff]")


class _CleanLine(msgspec.Struct, forbid_unknown_fields=True):
    """The training line with known fields only; anything else is ``parse_line``'s to judge."""

    query: str
    pos: list[str]
    neg: list[str] = []
    # int | float, not float: a clean line keeps its numbers as json.loads reads them.
    pos_scores: list[int | float] | None = None
    neg_scores: list[int | float] | None = None
    prompt: str | None = None
    type: str | None = None


_decode_clean = msgspec.json.Decoder(_CleanLine).decode


def parse_clean(raw: bytes) -> TrainRecord | None:
    """The record of a line that breaks no rule, else None: then ``parse_line`` says why.

    Returns exactly what ``parse_line`` returns for such a line. Lines with fields outside the
    contract, ``null`` lists or JSON that msgspec is stricter about (NaN, out-of-range numbers)
    also get None, and ``parse_line`` accepts or reports them.
    """
    try:
        line = _decode_clean(raw)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    # The rules types cannot say; all/any(map(...)) keep the per-text loop in C. "Not blank" is
    # non-empty and not all whitespace: isspace() tests it without strip()'s copy of a long text.
    if not (line.query and not line.query.isspace() and line.pos and all(line.pos) and all(line.neg)
            and not any(map(str.isspace, line.pos)) and not any(map(str.isspace, line.neg))):
        return None
    if line.pos_scores is not None and (len(line.pos_scores) != len(line.pos) or not _all_finite(line.pos_scores)):
        return None
    if line.neg_scores is not None and (len(line.neg_scores) != len(line.neg) or not _all_finite(line.neg_scores)):
        return None
    return TrainRecord(line.query, line.pos, line.neg, line.pos_scores, line.neg_scores, line.prompt, line.type)


def check_record(obj: dict[str, Any], where: str, *, min_negatives: int = 0) -> list[Problem]:
    problems: list[Problem] = []

    def add(rule: str, field: str, message: str) -> None:
        problems.append(Problem(where, rule, field, message))

    query = obj.get("query")
    if "query" not in obj:
        add("missing_field", "query", "missing required field")
    elif not isinstance(query, str):
        add("wrong_type", "query", f"expected a string, got {_type_name(query)}")
    elif not query or query.isspace():
        add("empty_query", "query", "empty query")

    texts: dict[str, list[str]] = {}
    for name, required in (("pos", True), ("neg", False)):
        value = obj.get(name)
        if value is None:
            if required:
                add("missing_field", name, "missing required field")
            continue
        if not isinstance(value, list):
            add("wrong_type", name, f"expected a list of strings, got {_type_name(value)}")
            continue
        bad = [i for i, item in enumerate(value) if not isinstance(item, str)]
        if bad:
            add("wrong_type", f"{name}[{bad[0]}]", f"expected a string, got {_type_name(value[bad[0]])}")
            continue
        empty = [i for i, item in enumerate(value) if not item or item.isspace()]
        if empty:
            add("empty_text", f"{name}[{empty[0]}]", "empty passage")
        texts[name] = value
    if "pos" in texts and not texts["pos"]:
        add("empty_pos", "pos", "no positive passage")

    for name, of in (("pos_scores", "pos"), ("neg_scores", "neg")):
        scores = obj.get(name)
        if scores is None:
            continue
        if not isinstance(scores, list):
            add("wrong_type", name, f"expected a list of numbers, got {_type_name(scores)}")
            continue
        bad = [i for i, s in enumerate(scores) if isinstance(s, bool) or not isinstance(s, int | float)]
        if bad:
            add("wrong_type", f"{name}[{bad[0]}]", f"expected a number, got {_type_name(scores[bad[0]])}")
            continue
        if not _all_finite(scores):
            add("bad_score", name, "NaN, infinite or out-of-range score")
        if of in texts and len(scores) != len(texts[of]):
            add("score_length", name, f"{len(scores)} scores for {len(texts[of])} {of} passages")

    for name in ("prompt", "type"):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            add("wrong_type", name, f"expected a string, got {_type_name(obj[name])}")

    # json.loads accepts "\\ud800" escapes, but such a text can never be written out as UTF-8.
    fields = [("query", query), *((f"{n}[{i}]", t) for n, ts in texts.items() for i, t in enumerate(ts)),
              *((n, obj.get(n)) for n in ("prompt", "type"))]
    for name, value in fields:
        if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
            add("lone_surrogate", name, "an unpaired surrogate escape (\\ud800-\\udfff): not valid Unicode")
    # Unknown fields are kept and written back: they must be writable too (keys included).
    extra = {key: value for key, value in obj.items() if key not in TRAIN_FIELDS}
    if extra:
        problem = json_problem(extra, where)
        if problem is not None:
            problems.append(problem)

    if min_negatives and not problems:
        n = len(texts.get("neg", []))
        if n < min_negatives:
            add("too_few_negatives", "neg", f"{n} negatives, at least {min_negatives} required")
    return problems


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "string"}.get(type(value), type(value).__name__)
