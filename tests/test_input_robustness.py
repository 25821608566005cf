"""No input crashes a reader: every line ends as a record or as a named rule with file:line.

Counts add up (lines = blank + valid + invalid; valid = records + merged duplicates), the report
is written on failure too, memory stays bounded by the line-length limit, and gzip is decided by
the name and checked, never guessed from the content.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from pathlib import Path

import pytest

from bgeflow.core.errors import DataError
from bgeflow.core.storage import iter_lines, open_store, resolve_sources
from bgeflow.data import iter_json, parse_line, read_train_records
from bgeflow.steps.ingest import IngestFailed, IngestSpec, ingest

GOOD = {"query": "what is a cat", "pos": ["a cat is a small feline"], "neg": ["dogs bark"]}

# Lines the validator must turn into a named rule (never an exception), with that rule.
HOSTILE: dict[str, tuple[bytes, str]] = {
    "deep": (b'{"query": "q", "pos": ["p"], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "too_deep"),
    "deep_top": (b"[" * 100_000, "too_deep"),
    "deep_parses": (b'{"query": "q", "pos": ["p"], "x": ' + b"[" * 500 + b"]" * 500 + b"}", "too_deep"),
    "int_400_digits": (b'{"query": "q", "pos": ["p"], "pos_scores": [' + b"9" * 400 + b"]}", "bad_score"),
    "int_5000_digits": (b'{"query": "q", "pos": ["p"], "pos_scores": [' + b"9" * 5000 + b"]}", "invalid_json"),
    "surrogate_in_unknown_value": (b'{"query": "q", "pos": ["p"], "meta": {"a": ["\\udc00"]}}', "lone_surrogate"),
    "surrogate_in_unknown_key": (b'{"query": "q", "pos": ["p"], "\\ud800": 1}', "lone_surrogate"),
}


def _write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    path.write_bytes(end.join(lines) + end)
    return path


def _counts_add_up(counts: dict[str, int]) -> None:
    assert counts["lines"] == counts["blank_lines"] + counts["valid_lines"] + counts["invalid_lines"]
    assert counts["valid_lines"] == counts["records"] + counts["duplicate_queries_merged"]
    assert counts["records"] == counts["train_records"] + counts["eval_queries"]


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_parse_line_names_the_rule_instead_of_raising(name: str) -> None:
    raw, rule = HOSTILE[name]
    record, problems = parse_line(raw, "f.jsonl:7")
    assert record is None and [p.rule for p in problems] == [rule]
    assert problems[0].where == "f.jsonl:7"


def test_ingest_skips_every_hostile_line_with_file_and_line(tmp_path: Path) -> None:
    lines = [json.dumps(GOOD).encode(), *(raw for raw, _ in HOSTILE.values())]
    data = _write(tmp_path / "in.jsonl", lines)
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), on_error="skip",
                                  eval_fraction=0))
    found = {e["where"]: rule for rule, info in result.report["failures"].items() for e in info["examples"]}
    expected = {f"{data}:{i}": rule for i, (_, rule) in enumerate(HOSTILE.values(), start=2)}
    assert found == expected
    _counts_add_up(result.report["counts"])
    # What was written can be read back by the strict reader of the next steps.
    assert [r.query for r in read_train_records(str(tmp_path / "out" / "train.jsonl"))] == [GOOD["query"]]


def test_surrogates_in_unknown_fields_never_reach_the_output(tmp_path: Path) -> None:
    data = _write(tmp_path / "in.jsonl", [json.dumps(GOOD).encode(), HOSTILE["surrogate_in_unknown_value"][0]])
    with pytest.raises(IngestFailed, match="lone_surrogate=1"):
        ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), eval_fraction=0))


def test_a_plain_jsonl_starting_with_the_gzip_magic_is_read_as_text(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl"
    data.write_bytes(b"\x1f\x8b not gzip at all\n" + json.dumps(GOOD).encode() + b"\n")
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), on_error="skip",
                                  eval_fraction=0))
    assert result.report["counts"]["records"] == 1
    assert result.report["failures"]["not_utf8"]["examples"][0]["where"] == f"{data}:1"


def test_a_gz_name_with_other_content_is_refused_naming_the_uri(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl.gz"
    data.write_bytes(json.dumps(GOOD).encode() + b"\n")
    with pytest.raises(DataError, match=r"in\.jsonl\.gz: named \.gz but not gzip"):
        ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), eval_fraction=0))


def test_a_truncated_gzip_is_a_data_error_with_the_line(tmp_path: Path) -> None:
    data = tmp_path / "in.jsonl.gz"
    full = gzip.compress(b"".join(json.dumps({**GOOD, "query": f"q{i}"}).encode() + b"\n" for i in range(2000)))
    data.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match=r"in\.jsonl\.gz:\d+: not valid gzip data"):
        list(iter_json(str(data)))


def test_cr_only_line_breaks_count_every_record(tmp_path: Path) -> None:
    lines = [json.dumps({**GOOD, "query": f"q{i}"}).encode() for i in range(9)]
    data = _write(tmp_path / "mac.jsonl", lines, end=b"\r")
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), eval_fraction=0))
    counts = result.report["counts"]
    assert counts["lines"] == 9 and counts["records"] == 9 and counts["invalid_lines"] == 0
    assert (tmp_path / "out" / "train.jsonl").read_bytes().count(b"\n") == 9


def test_duplicates_failing_min_negatives_together_count_every_line(tmp_path: Path) -> None:
    lines = [json.dumps({"query": "q", "pos": ["p"], "neg": ["n1"]}).encode(),
             json.dumps({"query": "q", "pos": ["p"], "neg": ["n1"]}).encode(),
             json.dumps({"query": "ok", "pos": ["p"], "neg": ["a", "b"]}).encode()]
    data = _write(tmp_path / "in.jsonl", lines)
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), on_error="skip",
                                  min_negatives=2, eval_fraction=0))
    counts = result.report["counts"]
    assert counts["invalid_lines"] == 2 and counts["valid_lines"] == 1 and counts["records"] == 1
    assert counts["duplicate_queries_merged"] == 0
    _counts_add_up(counts)
    example = result.report["failures"]["too_few_negatives"]["examples"][0]
    assert example["where"] == f"{data}:1 (+1 duplicate line(s) merged)"
    assert (tmp_path / "out" / "train.jsonl").read_text().count("\n") == 1


def test_report_on_failure_has_every_count_and_the_rest_of_the_offenders(tmp_path: Path) -> None:
    lines = [json.dumps(GOOD).encode(), *(b"{broken %d" % i for i in range(7))]
    data = _write(tmp_path / "in.jsonl", lines)
    with pytest.raises(IngestFailed):
        ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), examples_per_rule=2))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    info = report["failures"]["invalid_json"]
    assert report["status"] == "failed" and info["count"] == 7 and len(info["examples"]) == 2 and info["more"] == 5
    assert "- +5 more" in (tmp_path / "out" / "report.md").read_text()


def test_a_rerun_killed_while_writing_leaves_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _write(tmp_path / "in.jsonl", [json.dumps({**GOOD, "query": f"q{i}"}).encode() for i in range(20)])
    out = tmp_path / "out"
    ingest(IngestSpec.of(inputs=[str(data)], output=str(out)))
    assert json.loads((out / "report.json").read_text())["status"] == "ok"

    from bgeflow.core.storage import LocalStore

    real = LocalStore.put_file

    def killed_after_train(self: LocalStore, local: object, key: str, **kw: object) -> None:
        if key != "train.jsonl":
            raise KeyboardInterrupt("killed")  # as a SIGKILL would stop it: after train.jsonl, before the rest
        real(self, local, key, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalStore, "put_file", killed_after_train)
    with pytest.raises(KeyboardInterrupt):
        ingest(IngestSpec.of(inputs=[str(data)], output=str(out), eval_fraction=0.5))
    # The new train.jsonl sits beside the old eval/: without report.json nobody takes that for a set.
    assert not (out / "report.json").exists()


def test_over_long_lines_are_a_rule_and_the_rest_is_read(tmp_path: Path) -> None:
    long_line = json.dumps({"query": "long", "pos": ["x" * 5000]}).encode()
    data = _write(tmp_path / "in.jsonl", [json.dumps(GOOD).encode(), long_line, json.dumps({**GOOD, "query": "b"}).encode()])
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), on_error="skip",
                                  max_line_bytes=1000, eval_fraction=0))
    info = result.report["failures"]["line_too_long"]
    assert info["count"] == 1 and info["examples"][0]["where"] == f"{data}:2"
    assert result.report["counts"]["records"] == 2
    # The strict readers refuse such a line with its place.
    with pytest.raises(DataError, match=r"in\.jsonl:2: line of \d+ bytes is longer than the limit of 1000"):
        list(iter_lines(resolve_sources([str(data)]), max_line_bytes=1000))


def test_memory_stays_bounded_by_the_line_limit(tmp_path: Path) -> None:
    from bgeflow.core.storage import Overlong

    data = tmp_path / "huge.jsonl"
    with open(data, "wb") as fh:  # one 24 MB line between two short ones
        fh.write(b'{"a": 1}\n{"query": "')
        for _ in range(24):
            fh.write(b"x" * (1 << 20))
        fh.write(b'"}\n{"b": 2}\n')
    tracemalloc.start()
    try:
        seen = [(n, line if isinstance(line, Overlong) else len(line))
                for _, n, line in iter_lines(resolve_sources([str(data)]), max_line_bytes=4 << 20, overlong="mark")]
        _, over_limit_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        within = [len(line) for _, _, line in iter_lines(resolve_sources([str(data)]), max_line_bytes=64 << 20)]
        _, within_limit_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen[0] == (1, 9) and isinstance(seen[1][1], Overlong) and seen[2] == (3, 9)
    assert over_limit_peak < 12 << 20  # the limit plus a few chunks, not the 24 MB line
    assert max(within) > 24 << 20 and within_limit_peak < 2.5 * (24 << 20)  # the line joined once, not 4x


# ---------------------------------------------------------------------- the strict readers of later steps


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_strict_readers_raise_only_data_errors(tmp_path: Path, name: str) -> None:
    data = _write(tmp_path / "in.jsonl", [json.dumps(GOOD).encode(), HOSTILE[name][0]])
    with pytest.raises(DataError, match=r"in\.jsonl:2"):
        list(read_train_records(str(data)))
    if HOSTILE[name][1] != "bad_score":  # a score's range is the training contract's, not JSON's
        with pytest.raises(DataError, match=r"in\.jsonl:2"):
            list(iter_json(str(data)))


def test_evalset_readers_turn_out_of_range_grades_into_data_errors(tmp_path: Path) -> None:
    from bgeflow.steps.evaluation.evalset import read_qrels, read_queries

    queries = _write(tmp_path / "queries.jsonl", [b'{"id": "q1", "text": "t", "relevant": {"d1": 1e999}}'])
    with pytest.raises(DataError, match=r"queries\.jsonl:1"):
        read_queries(str(queries), need_relevant=True)
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query_id\tdoc_id\tgrade\nq1\td1\tinf\n")
    with pytest.raises(DataError, match=r"qrels\.tsv:2"):
        read_qrels(str(qrels))


def test_mine_candidate_pool_reader_raises_only_data_errors(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from bgeflow.steps.mining.run import _pool_texts

    pool = _write(tmp_path / "pool.jsonl", [b'{"text": "fine"}', b'{"text": "half a pair \\udc00"}'])
    with pytest.raises(DataError, match=r"pool\.jsonl:2"):
        list(_pool_texts([str(pool)]))


def test_s3_and_local_readers_agree_on_line_breaks(tmp_path: Path, s3_bucket: str) -> None:
    body = b'{"a": 1}\r{"a": 2}\r\n{"a": 3}\n{"a": 4}'
    store = open_store(f"s3://{s3_bucket}/in")
    store.write_bytes("x.jsonl", body)
    (tmp_path / "x.jsonl").write_bytes(body)
    remote = [json.loads(raw)["a"] for _, _, raw in iter_lines(resolve_sources([store.url("x.jsonl")]))]
    local = [json.loads(raw)["a"] for _, _, raw in iter_lines(resolve_sources([str(tmp_path / "x.jsonl")]))]
    assert remote == local == [1, 2, 3, 4]


def test_a_mine_rerun_killed_while_writing_leaves_no_report(minilm_path: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import bgeflow.steps.mining.run as mining
    from bgeflow.steps.mining import MineSpec, mine

    rows = [{"query": f"question {i}", "pos": [f"answer number {i}"], "neg": [f"distractor {i}"]} for i in range(4)]
    data = _write(tmp_path / "in.jsonl", [json.dumps(r).encode() for r in rows])
    spec = MineSpec.of(model=minilm_path, inputs=[str(data)], output=str(tmp_path / "out" / "mined.jsonl"),
                       negative_number=2, pooling="mean", query_max_len=32, passage_max_len=32,
                       work_dir=str(tmp_path / "work"))
    mine(spec)
    assert (tmp_path / "out" / "mine_report.json").exists()
    real = mining._write_output

    def killed_after_output(records: list, output: str) -> None:
        real(records, output)
        raise KeyboardInterrupt("killed after mined.jsonl, before its report")

    monkeypatch.setattr(mining, "_write_output", killed_after_output)
    with pytest.raises(KeyboardInterrupt):
        mine(spec.model_copy(update={"negative_number": 1}))
    assert not (tmp_path / "out" / "mine_report.json").exists()


def test_ingest_of_one_long_line_costs_about_three_times_the_line(tmp_path: Path) -> None:
    """The audit measured 4.4x (a 100 MB line peaked at 437 MB); now the line is read once (no
    join), blank checks copy nothing, and the last line is not held while the outputs are written."""
    import subprocess
    import sys

    size = 32 << 20
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"query": "q", "pos": ["word " * (size // 5)], "neg": ["n"]}) + "\n")
    code = (
        "import resource, sys\n"
        "from bgeflow.steps.ingest import IngestSpec, ingest\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"ingest(IngestSpec.of(inputs=[{str(data)!r}], output={str(tmp_path / 'out')!r}, eval_fraction=0,"
        " max_line_bytes=64 << 20))\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    grown = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grown < 3.3 * size, f"{grown / size:.2f}x the line"
