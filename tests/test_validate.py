"""The fast reader (msgspec) against the full validator: it may only ever agree or step aside."""

from __future__ import annotations

import json

import pytest

from bgeflow.data import parse_clean, parse_line

CLEAN = [
    b'{"query": "q", "pos": ["p"]}',
    b'{"query": "q", "pos": ["p"], "neg": ["n1", "n2"]}\n',
    b'{"query": "q", "pos": ["p"], "neg": ["n"]}\r\n',
    b'{"query": "q", "pos": ["p", "p2"], "neg": ["n"], "pos_scores": [1, 0.5], "neg_scores": [0.25]}',
    b'{"query": "q", "pos": ["p"], "neg": [], "prompt": "Represent this: ", "type": "symmetric"}',
    b'{"query": "q", "pos": ["p"], "prompt": null, "type": null, "pos_scores": null}',
    '{"query": "什么是向量检索？", "pos": ["向量检索用嵌入找相近的文本。"], "neg": ["今天天气很好。"]}'.encode(),
    b'{"query": "caf\\u00e9", "pos": ["\\u4e2d\\u6587"], "neg": ["tab\\there"]}',
    b'{"query": "first", "query": "second", "pos": ["p"]}',
    b'  {"query": "q", "pos": ["p"], "neg": ["p"]}  ',
]

# Lines the fast reader must hand to parse_line: broken, or outside what it vouches for.
NOT_FAST = [
    b"",
    b"   \n",
    b"not json",
    b'{"query": "q", "pos": ["p"]',
    b'["query", "pos"]',
    b'"a string"',
    b'{"pos": ["p"]}',
    b'{"query": "q"}',
    b'{"query": 3, "pos": ["p"]}',
    b'{"query": "", "pos": ["p"]}',
    b'{"query": "  ", "pos": ["p"]}',
    b'{"query": "q", "pos": []}',
    b'{"query": "q", "pos": "p"}',
    b'{"query": "q", "pos": ["p", 1]}',
    b'{"query": "q", "pos": ["p"], "neg": [" "]}',
    b'{"query": "q", "pos": [""]}',
    b'{"query": "q", "pos": ["p"], "neg": null}',
    b'{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}',
    b'{"query": "q", "pos": ["p"], "neg": ["n"], "neg_scores": []}',
    b'{"query": "q", "pos": ["p"], "pos_scores": [NaN]}',
    b'{"query": "q", "pos": ["p"], "pos_scores": [Infinity]}',
    b'{"query": "q", "pos": ["p"], "pos_scores": [1e400]}',
    b'{"query": "q", "pos": ["p"], "pos_scores": [true]}',
    b'{"query": "q", "pos": ["p"], "pos_scores": ["1"]}',
    b'{"query": "q", "pos": ["p"], "prompt": 1}',
    b'{"query": "q", "pos": ["p"], "source": "wiki"}',
    b'{"query": "q\xff", "pos": ["p"]}',
    b'{"query": "q", "pos": ["\\ud800"]}',
]


@pytest.mark.parametrize("raw", CLEAN, ids=range(len(CLEAN)))
def test_clean_lines_take_the_fast_path_and_equal_the_full_parse(raw: bytes) -> None:
    fast = parse_clean(raw)
    full, problems = parse_line(raw.rstrip(b"\r\n"), "f.jsonl:1")
    assert problems == [] and fast is not None
    assert fast == full
    # The same Python types as json.loads (ints stay ints), so re-serialised lines match too.
    assert fast.to_json() == full.to_json()


@pytest.mark.parametrize("raw", NOT_FAST, ids=range(len(NOT_FAST)))
def test_everything_else_is_left_to_the_full_validator(raw: bytes) -> None:
    assert parse_clean(raw) is None


def test_a_line_with_extra_fields_keeps_them_through_the_full_parse() -> None:
    raw = b'{"query": "q", "pos": ["p"], "source": "wiki"}'
    record, problems = parse_line(raw, "f.jsonl:1")
    assert parse_clean(raw) is None and problems == [] and record is not None
    assert json.loads(record.to_json())["source"] == "wiki"


def test_an_unpaired_surrogate_escape_is_a_problem_not_a_crash_at_write_time() -> None:
    record, problems = parse_line(b'{"query": "q", "pos": ["ok", "bad \\udc80 here"]}', "f.jsonl:7")
    assert record is None
    assert [(p.where, p.rule, p.field) for p in problems] == [("f.jsonl:7", "lone_surrogate", "pos[1]")]
    # A paired escape is one real character and fine.
    record, problems = parse_line(b'{"query": "\\ud83d\\ude00", "pos": ["p"]}', "f.jsonl:8")
    assert problems == [] and record is not None and record.query == "\U0001f600"


# A line cut by a stray \r (bytes' splitlines ends a line there) and other broken lines: one message, whichever
# reader meets them, with json's column once and no empty field marker.
BROKEN_LINES = [
    (b'{"query": "q", "pos": ["a\r', "invalid JSON: Unterminated string starting at column 24"),
    (b'{"query": "q", "pos": ["a\tb"]}', "invalid JSON: Invalid control character at column 26"),
    (b'{"query": "q", "pos": ["p"]', "invalid JSON: Expecting ',' delimiter at column 28"),
    (b"not json", "invalid JSON: Expecting value at column 1"),
]


@pytest.mark.parametrize(("raw", "message"), BROKEN_LINES, ids=[m.split(": ")[1] for _, m in BROKEN_LINES])
def test_a_broken_line_reads_the_same_from_every_reader(raw: bytes, message: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bgeflow.core.errors import DataError
    from bgeflow.data import iter_json

    expected = f"x.jsonl:1: {message} (invalid_json)"
    for line in (raw, raw + b"\n", raw + b"\r\n"):
        _, problems = parse_line(line.rstrip(b"\r\n"), "x.jsonl:1")  # as ingest reads a line
        assert [str(p) for p in problems] == [expected]
        _, problems = parse_line(line, "x.jsonl:1")
        assert [str(p) for p in problems] == [expected]
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\n".join([raw, b'{"query": "q", "pos": ["p"]}']) + b"\n")
    with pytest.raises(DataError) as caught:  # the strict reader of mine, train and evaluate
        list(iter_json(str(path)))
    assert str(caught.value) == f"{path}:1: {message} (invalid_json)" and " at at " not in str(caught.value)


def test_ingest_prints_each_problem_as_the_strict_readers_do(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from bgeflow.cli import main

    path = tmp_path / "raw.jsonl"
    path.write_bytes(b'{"query": "q", "pos": ["a\r' + b'"]}\n' + b"not json\n")
    assert main(["ingest", "--input", str(path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"  {path}:1: invalid JSON: Unterminated string starting at column 24 (invalid_json)\n" in err
    assert f"  {path}:3: invalid JSON: Expecting value at column 1 (invalid_json)\n" in err
    assert "[]" not in err and " at at " not in err
