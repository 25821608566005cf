"""Fuzzing every reader with hypothesis: no byte sequence makes one raise anything but a named rule.

Properties, over lines built from arbitrary bytes, hostile JSON (deep nesting, huge integers,
lone surrogate escapes in keys and values, gzip magic, NaN) and mutated training records, joined
by any mix of ``\\n``, ``\\r\\n`` and ``\\r``:

- the line splitter yields exactly the lines a reference split gives, over-long ones marked;
- ``parse_line`` never raises, names only known rules, agrees with ``parse_clean``, and whatever
  it accepts can be written back as UTF-8 JSON;
- ingest (``--on-error skip``) ends as a result whose counts add up, or as IngestFailed;
- the strict readers of later steps (``iter_json``, ``read_train_records``, evaluate's corpus,
  queries and qrels readers, mine's candidate pool reader) succeed or raise DataError.

Profiles (``HYPOTHESIS_PROFILE``): ``quick`` (default: seconds, in ``make test``), ``fuzz``
(``make test-all``: a few minutes), ``long`` (``scripts/fuzz.sh``: as long as asked).
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bgeflow.core.errors import DataError
from bgeflow.data import RULES, iter_json, parse_clean, parse_line, read_train_records

_COMMON = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("quick", max_examples=25, **_COMMON)
settings.register_profile("fuzz", max_examples=1500, **_COMMON)
settings.register_profile("long", max_examples=1_000_000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "quick"))

# ---------------------------------------------------------------------- strategies

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20) | st.sampled_from(["", " ", "中文", "\t\n"])
_KEYS = st.sampled_from(["query", "pos", "neg", "pos_scores", "neg_scores", "prompt", "type", "id", "text", "relevant",
                         "_id", "title", "query_id", "doc_id", "grade", "x"]) | _TEXT
_SCALARS = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True) | _TEXT
            | st.integers(min_value=10**399, max_value=10**400))
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
                     max_leaves=12)


@st.composite
def _record(draw: st.DrawFn) -> dict[str, Any]:
    """A training record, often valid, sometimes with one field swapped for anything."""
    pos = draw(st.lists(_TEXT, min_size=0, max_size=3))
    neg = draw(st.lists(_TEXT, max_size=3))
    record: dict[str, Any] = {"query": draw(_TEXT), "pos": pos, "neg": neg}
    if draw(st.booleans()):
        record["pos_scores"] = draw(st.lists(_SCALARS, min_size=len(pos), max_size=len(pos)))
    if draw(st.booleans()):
        record[draw(_KEYS)] = draw(_JSON)
    return record


_SURROGATE_ESCAPE = st.sampled_from([b"\\ud800", b"\\udfff", b"\\uDC00", b"\\ud83d"])


@st.composite
def _line(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        depth = draw(st.integers(1, 3000))
        return b'{"query": "q", "pos": ["p"], "x": ' + b"[" * depth + b"]" * draw(st.sampled_from([0, depth])) + b"}"
    if kind == 2:
        digits = draw(st.sampled_from([20, 310, 400, 4301, 5000]))
        return b'{"query": "q", "pos": ["p"], "pos_scores": [' + b"9" * digits + b"]}"
    if kind == 3:  # a lone surrogate escape in a key or a value, known field or not
        escape = draw(_SURROGATE_ESCAPE)
        where = draw(st.sampled_from([b'"query": "a%s"', b'"%s": 1', b'"meta": {"k": ["%s"]}', b'"pos": ["%s"]']))
        return b'{"query": "q", "pos": ["p"], ' + where.replace(b"%s", escape) + b"}" \
            if not where.startswith(b'"query"') else b'{' + where.replace(b"%s", escape) + b', "pos": ["p"]}'
    if kind == 4:
        return b"\x1f\x8b" + draw(st.binary(max_size=16))
    raw = json.dumps(draw(_record() if kind < 8 else _JSON), ensure_ascii=draw(st.booleans())).encode()
    if draw(st.booleans()) and len(raw) > 2:  # cut somewhere, or splice in bytes
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=4)) + raw[cut:]
    return raw


_BREAK = st.sampled_from([b"\n", b"\r\n", b"\r"])


@st.composite
def _file(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(_line(), min_size=1, max_size=8))
    out = b"".join(line + draw(_BREAK) for line in lines)
    return out if draw(st.booleans()) else out.rstrip(b"\r\n")


def _tmp_file(data: bytes, name: str = "in.jsonl") -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bgeflow-fuzz-"))
    path = folder / name
    path.write_bytes(data)
    return path


def _cleanup(path: Path) -> None:
    import shutil

    shutil.rmtree(path.parent, ignore_errors=True)


# ---------------------------------------------------------------------- the line splitter


def _reference_lines(data: bytes, limit: int) -> list[Any]:
    return [line if len(line) <= limit else ("overlong", len(line)) for line in data.splitlines(keepends=True)]


@given(data=st.binary(max_size=300) | _file(), chunk=st.integers(1, 64), limit=st.integers(1, 400))
def test_line_splitter_matches_a_reference_split(data: bytes, chunk: int, limit: int) -> None:
    import bgeflow.core.storage.sources as sources

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources, "_READ_CHUNK", chunk)
        got = [line if isinstance(line, bytes) else ("overlong", line.size)
               for batch in sources._line_batches(io.BytesIO(data), limit) for line in batch]
    assert got == _reference_lines(data, limit)


# ---------------------------------------------------------------------- the validator


@given(raw=_line())
def test_parse_line_never_raises_and_agrees_with_parse_clean(raw: bytes) -> None:
    record, problems = parse_line(raw, "f.jsonl:3")
    assert (record is None) == bool(problems)
    assert all(p.rule in RULES and p.where == "f.jsonl:3" for p in problems)
    clean = parse_clean(raw)
    if clean is not None:  # the fast path accepts only what the full check accepts, identically
        assert not problems and clean.to_dict() == record.to_dict()  # type: ignore[union-attr]
    if record is not None:  # whatever is accepted can be written back
        assert json.loads(record.to_json().encode("utf-8")) == record.to_dict()


# ---------------------------------------------------------------------- ingest end to end


_WHERE = re.compile(r"^.+\.jsonl:\d+( \(\+\d+ duplicate line\(s\) merged\))?$|^query ")


@given(data=_file(), min_negatives=st.integers(0, 2))
def test_ingest_ends_as_counts_that_add_up_or_a_named_failure(data: bytes, min_negatives: int) -> None:
    from bgeflow.steps.ingest import IngestFailed, IngestSpec, ingest

    path = _tmp_file(data)
    try:
        try:
            report = ingest(IngestSpec.of(inputs=[str(path)], output=str(path.parent / "out"), on_error="skip",
                                          min_negatives=min_negatives, eval_fraction=0.3, max_line_bytes=4096)).report
        except IngestFailed as exc:
            report = exc.report
            assert json.loads((path.parent / "out" / "report.json").read_text())["status"] == "failed"
        counts = report["counts"]
        assert counts["lines"] == counts["blank_lines"] + counts["valid_lines"] + counts["invalid_lines"]
        assert counts["valid_lines"] == counts["records"] + counts["duplicate_queries_merged"]
        for rule, info in report["failures"].items():
            assert rule in RULES and info["count"] == len(info["examples"]) + info["more"]
            assert all(_WHERE.match(e["where"]) for e in info["examples"]), info["examples"]
        if report["status"] != "failed":  # the next step's strict reader takes what ingest wrote
            list(read_train_records(str(path.parent / "out" / "train.jsonl")))
    finally:
        _cleanup(path)


# ---------------------------------------------------------------------- every later step's reader


def _only_data_errors(call: Any) -> None:
    try:
        call()
    except DataError as exc:
        assert re.search(r"\.(jsonl|tsv)(:\d+)?|corpus|queries|qrels|query ", str(exc)), str(exc)


@given(data=_file())
def test_strict_readers_raise_only_data_errors(data: bytes) -> None:
    from bgeflow.steps.evaluation.evalset import read_corpus, read_qrels, read_queries
    from bgeflow.steps.mining.run import _pool_texts

    path = _tmp_file(data)
    qrels = path.with_name("qrels.tsv")
    qrels.write_bytes(data)
    try:
        _only_data_errors(lambda: list(iter_json(str(path))))
        _only_data_errors(lambda: list(read_train_records(str(path), min_negatives=1)))
        _only_data_errors(lambda: read_corpus(str(path)))
        _only_data_errors(lambda: read_queries(str(path), need_relevant=True))
        _only_data_errors(lambda: read_qrels(str(path)))
        _only_data_errors(lambda: read_qrels(str(qrels)))
        _only_data_errors(lambda: list(_pool_texts([str(path)])))
    finally:
        _cleanup(path)


@given(data=_file())
def test_gzip_inputs_are_judged_by_name(data: bytes) -> None:
    import gzip

    path = _tmp_file(gzip.compress(data), "in.jsonl.gz")
    plain = path.with_name("raw.jsonl.gz")
    plain.write_bytes(data)  # named .gz, not gzip: refused with its name, never read as text
    try:
        _only_data_errors(lambda: list(iter_json(str(path))))
        with pytest.raises(DataError, match=r"raw\.jsonl\.gz"):
            if data:
                list(iter_json(str(plain)))
            else:
                raise DataError("raw.jsonl.gz: empty is empty")
    finally:
        _cleanup(path)
