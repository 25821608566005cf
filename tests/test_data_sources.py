"""Which files a data directory holds: one lister (``resolve_sources``) for every verb, FlagEmbedding's set.

FlagEmbedding reads ``*.json`` and ``*.jsonl`` from a ``--train_data`` directory; ingest, mine,
train and evaluate read the same files (plus their ``.gz`` forms) and name every file they skip.
"""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from bgeflow.core.errors import DataError
from bgeflow.core.storage import Overlong, iter_lines, open_store, resolve_sources
from bgeflow.data import iter_json, read_train_records


def _records(prefix: str, n: int = 5) -> list[dict]:
    return [{"query": f"{prefix} query {i}", "pos": [f"{prefix} positive {i}"],
             "neg": [f"{prefix} negative {i}-{j}" for j in range(3)]} for i in range(n)]


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def two_parts(tmp_path: Path) -> Path:
    """The issue's directory: part1.jsonl and part2.json, five records each."""
    data = tmp_path / "train"
    data.mkdir()
    (data / "part1.jsonl").write_text(_lines(_records("one")))
    (data / "part2.json").write_text(_lines(_records("two")))
    return data


def test_flagembedding_reads_json_and_jsonl_from_a_directory(two_parts: Path) -> None:
    """The set this module claims to match, checked against FlagEmbedding's own dataset code."""
    import inspect

    from FlagEmbedding.abc.finetune.embedder.AbsDataset import AbsEmbedderTrainDataset

    source = inspect.getsource(AbsEmbedderTrainDataset.__init__)
    assert "file.endswith('.json') or file.endswith('.jsonl')" in source
    assert sorted(s.key for s in resolve_sources([str(two_parts)])) == ["part1.jsonl", "part2.json"]


def test_ingest_reads_every_part(two_parts: Path, tmp_path: Path) -> None:
    from bgeflow.steps.ingest import IngestSpec, ingest

    result = ingest(IngestSpec.of(inputs=[str(two_parts)], output=str(tmp_path / "out"), eval_fraction=0.0))
    assert result.report["counts"]["records"] == 10
    assert [i["uri"].rsplit("/", 1)[-1] for i in result.report["inputs"]] == ["part1.jsonl", "part2.json"]


def test_train_fetches_every_part(two_parts: Path, tmp_path: Path) -> None:
    from bgeflow.steps.training.pod import fetch_train_data
    from bgeflow.steps.training.spec import TrainSpec

    spec = TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=str(two_parts), output=str(tmp_path))
    stats = fetch_train_data(spec, spec.resolved_hyperparameters(), tmp_path / "scratch" / "train.jsonl")
    assert stats.records == 10


def test_train_fetches_an_array_part(two_parts: Path, tmp_path: Path) -> None:
    """part2.json holding one pretty-printed array, as FlagEmbedding reads it: the same ten records train."""
    from bgeflow.steps.training.pod import fetch_train_data
    from bgeflow.steps.training.spec import TrainSpec

    (two_parts / "part2.json").write_text(json.dumps(_records("two"), indent=2))
    spec = TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=str(two_parts), output=str(tmp_path))
    stats = fetch_train_data(spec, spec.resolved_hyperparameters(), tmp_path / "scratch" / "train.jsonl")
    fetched = [json.loads(line) for line in stats.path.read_text().splitlines()]
    assert stats.records == 10 and [r["query"] for r in fetched[5:]] == [r["query"] for r in _records("two")]


def test_mine_reads_every_part(two_parts: Path, tmp_path: Path) -> None:
    from bgeflow.steps.mining import MineSpec, mine

    result = mine(MineSpec.of(model="bundled:minilm", inputs=[str(two_parts)], output=str(tmp_path / "m.jsonl"),
                              negative_number=2, range_for_sampling="0-10", query_max_len=16, passage_max_len=16))
    assert result.records == 10


def test_evaluate_finds_a_json_corpus(tmp_path: Path) -> None:
    from bgeflow.steps.evaluation.evalset import resolve_eval_uris

    (tmp_path / "corpus.json").write_text('{"id": "d1", "text": "x"}\n')
    (tmp_path / "queries.jsonl").write_text('{"id": "q1", "text": "y", "relevant": {"d1": 1}}\n')
    assert resolve_eval_uris(str(tmp_path), None, None, None)["corpus"] == str(tmp_path / "corpus.json")


def test_skipped_files_are_named(two_parts: Path, caplog: pytest.LogCaptureFixture) -> None:
    (two_parts / "README.md").write_text("about this data\n")
    (two_parts / "_SUCCESS").write_text("")
    (two_parts / ".part1.jsonl.crc").write_text("")  # hidden: a writer's own, never data
    with caplog.at_level(logging.WARNING, logger="bgeflow.core.storage.sources"):
        sources = resolve_sources([str(two_parts)])
    assert len(sources) == 2
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipping 2 file(s)" in warning and "README.md" in warning and "_SUCCESS" in warning
    assert ".crc" not in warning


def test_an_s3_prefix_with_gzipped_and_json_parts(s3_bucket: str, caplog: pytest.LogCaptureFixture) -> None:
    """A second input of the kind: an S3 prefix holding part1.jsonl.gz, part2.json and a stray notes.txt."""
    store = open_store(f"s3://{s3_bucket}/data")
    store.write_bytes("part1.jsonl.gz", gzip.compress(_lines(_records("one")).encode()))
    store.write_text("part2.json", _lines(_records("two")))
    store.write_text("notes.txt", "not data\n")
    with caplog.at_level(logging.WARNING, logger="bgeflow.core.storage.sources"):
        records = list(read_train_records(store.uri))
    assert len(records) == 10 and {r.query.split()[0] for r in records} == {"one", "two"}
    assert "notes.txt" in " ".join(r.getMessage() for r in caplog.records)


def test_a_file_named_explicitly_is_read_whatever_its_name(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_text(_lines(_records("x", 2)))
    assert len(list(read_train_records(str(path)))) == 2


def _own_reports() -> list[str]:
    """What the steps write beside their data, by the steps' own constants (and mining's naming rule)."""
    from bgeflow.platform.local_run import SUMMARY_FILE as RUN_SUMMARY
    from bgeflow.steps.evaluation.evaluate import METRICS_FILE, PLOT_FILE, REPORT_FILE
    from bgeflow.steps.ingest.spec import REPORT_FILE as INGEST_REPORT
    from bgeflow.steps.ingest.spec import REPORT_MD_FILE
    from bgeflow.steps.mining.spec import PLOT_FILE as MINE_PLOT
    from bgeflow.steps.mining.spec import REPORT_FILE as MINE_REPORT
    from bgeflow.steps.mining.spec import beside_output
    from bgeflow.steps.training.pod import SUMMARY_FILE as TRAIN_SUMMARY

    return list(dict.fromkeys([INGEST_REPORT, REPORT_MD_FILE, MINE_REPORT, MINE_PLOT, METRICS_FILE, REPORT_FILE,
                               PLOT_FILE, TRAIN_SUMMARY, RUN_SUMMARY, beside_output("a_minedHN.jsonl", MINE_REPORT),
                               beside_output("a_minedHN.jsonl.gz", MINE_PLOT), f"ingest-split/{METRICS_FILE}"]))


@pytest.mark.parametrize("report", _own_reports())
def test_own_reports_below_a_prefix_are_not_data(report: str, two_parts: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A user gave `mine --output W/mdir/mined.jsonl`'s folder to ingest: its mine_report.json was read as
    290 lines of data (invalid_json=276). A report is named once at INFO, never warned about, never read."""
    (two_parts / report).parent.mkdir(parents=True, exist_ok=True)
    (two_parts / report).write_text(json.dumps({"status": "ok", "rows": 5}, indent=2) + "\n")
    with caplog.at_level(logging.INFO, logger="bgeflow.core.storage.sources"):
        sources = resolve_sources([str(two_parts)])
    assert [s.key for s in sources] == ["part1.jsonl", "part2.json"]
    named = [r for r in caplog.records if report in r.getMessage()]
    assert [r.levelno for r in named] == [logging.INFO] and "own report" in named[0].getMessage()


def test_a_report_named_explicitly_is_read_as_given(two_parts: Path) -> None:
    (two_parts / "report.json").write_text(_lines(_records("r", 2)))
    assert [s.uri for s in resolve_sources([str(two_parts / "report.json")])] == [str(two_parts / "report.json")]


def test_mine_output_folder_is_read_back_by_its_prefix(two_parts: Path, tmp_path: Path) -> None:
    """The user's commands: mine into a folder (two outputs, each with its report and plot), ingest the folder."""
    from bgeflow.steps.ingest import IngestSpec, ingest
    from bgeflow.steps.mining import MineSpec, mine

    mdir = tmp_path / "mdir"
    for name in ("mined.jsonl", "a_minedHN.jsonl"):
        mine(MineSpec.of(model="bundled:minilm", inputs=[str(two_parts)], output=str(mdir / name), negative_number=2,
                         range_for_sampling="0-10", query_max_len=16, passage_max_len=16))
    assert {"mine_report.json", "a_minedHN.mine_report.json"} <= {p.name for p in mdir.iterdir()}
    result = ingest(IngestSpec.of(inputs=[str(mdir)], output=str(tmp_path / "out"), eval_fraction=0.0))
    assert [i["uri"].rsplit("/", 1)[-1] for i in result.report["inputs"]] == ["a_minedHN.jsonl", "mined.jsonl"]
    assert result.report["counts"]["invalid_lines"] == 0 and result.report["counts"]["records"] == 10


# A .json file may hold one JSON array of records (FlagEmbedding's loader, datasets' json builder,
# reads it): a user's `ingest --input dir/` with a.jsonl and b.json = [{...}, ...] was refused with
# `b.json:1: expected a JSON object, got list (not_object)`. Each layout: its file name, its bytes, and
# the line each record is numbered by (where it starts; numbers only grow, see _array_batches).
ARRAY_ROWS = [{"query": f"array query {i} 猫", "pos": [f"positive\n{i}"], "neg": [f"n{i}-{j}" for j in range(3)]}
              for i in range(3)]
ARRAY_LAYOUTS = {
    "pretty": ("b.json", json.dumps(ARRAY_ROWS, indent=2, ensure_ascii=False).encode(), [2, 13, 24]),
    "minified, one line": ("b.json", json.dumps(ARRAY_ROWS).encode(), [1, 2, 3]),
    "gzipped, pretty": ("b.json.gz", gzip.compress(json.dumps(ARRAY_ROWS, indent=1).encode()), [2, 13, 24]),
    "CRLF and tabs": ("b.json", ("[\r\n\t" + ",\r\n\t".join(json.dumps(r, indent="\t").replace("\n", "\r\n\t")
                                                        for r in ARRAY_ROWS) + "\r\n]\r\n").encode(), [2, 13, 24]),
    # Two elements share line 1: the second takes the next number, and so does the one after it on line 2.
    "shared lines": ("b.json", ("[" + ", ".join(json.dumps(r) for r in ARRAY_ROWS[:2]) + ",\n"
                                + json.dumps(ARRAY_ROWS[2]) + "]").encode(), [1, 2, 3]),
    "JSON Lines in a .json": ("b.json", _lines(ARRAY_ROWS).encode(), [1, 2, 3]),
}


@pytest.mark.parametrize("layout", list(ARRAY_LAYOUTS))
def test_a_json_array_reads_as_its_records_as_flagembedding_reads_it(layout: str, tmp_path: Path) -> None:
    import datasets

    name, content, lines = ARRAY_LAYOUTS[layout]
    data = tmp_path / "train"
    data.mkdir()
    (data / "a.jsonl").write_text(_lines(_records("one", 2)))
    (data / name).write_bytes(content)
    read = list(iter_json(str(data)))
    assert [obj for _, obj in read] == _records("one", 2) + ARRAY_ROWS
    assert [where for where, _ in read[2:]] == [f"{data / name}:{n}" for n in lines]
    # The promise is parity with FlagEmbedding, whose datasets loader reads the same file as the same records.
    datasets.disable_progress_bars()
    loaded = datasets.load_dataset("json", data_files=str(data / name), split="train", cache_dir=str(tmp_path / "hf"))
    assert loaded.to_list() == ARRAY_ROWS


def test_an_array_after_a_bom_and_blank_lines_is_read(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(b"\xef\xbb\xbf\n \n" + json.dumps(ARRAY_ROWS, indent=2).encode())
    assert [(where, obj) for where, obj in iter_json(str(path))] == [
        (f"{path}:{n}", row) for n, row in zip([4, 15, 26], ARRAY_ROWS, strict=True)]


def test_an_array_element_is_yielded_as_one_line_of_its_own_text(tmp_path: Path) -> None:
    """Only the whitespace between tokens changes: a line break and its indent become one space."""
    (tmp_path / "b.json").write_text('[\n  {"query": "a  b",\n\t\t"pos": ["x\\ny"]},\r\n  "tail"\n]')
    assert [(n, raw) for _, n, raw in iter_lines(resolve_sources([str(tmp_path / "b.json")]))] == [
        (2, b'{"query": "a  b", "pos": ["x\\ny"]}\n'), (4, b'"tail"\n')]


@pytest.mark.parametrize(("content", "line", "what"), [
    ('[\n{"a": 1}\n{"b": 2}\n]', 3, "expected ',' or ']' after an element, found '{' at column 1"),
    ('[\n{"a": 1}]\nextra\n', 3, "text after the array's closing ']' at column 1"),
    ('[\n{"a": 1},\n{"b": 2}\n', 4, "no closing ']' (the array is cut short) at column 1"),
    ('[\n{"a": 1},\n{"b": ', 3, "Expecting value at column 7"),
    ('[\n{"a": 1},\n  {"b": tru}\n]', 3, "Expecting value at column 9"),
    ('[{"a": 1},]', 1, "Expecting value at column 11"),
    ('[\n{"a": "x\ny"}]', 2, "Invalid control character at column 9"),
])
def test_a_malformed_array_names_file_line_and_what_is_wrong(content: str, line: int, what: str,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(DataError) as raised:
        list(iter_json(str(path)))
    assert str(raised.value) == f"{path}:{line}: invalid JSON array: {what}"


def test_an_overlong_array_element_is_an_overlong_line(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text('[\n{"a": 1},\n{"a": "' + "x" * 100 + '"},\n{"a": 3}\n]')
    sources = resolve_sources([str(path)])
    read = [(n, raw) for _, n, raw in iter_lines(sources, max_line_bytes=64, overlong="mark")]
    assert read == [(2, b'{"a": 1}\n'), (3, Overlong(110, 64)), (4, b'{"a": 3}\n')]
    with pytest.raises(DataError, match=rf"^{path}:3: line of 110 bytes is longer than the limit of 64 bytes"):
        list(iter_lines(sources, max_line_bytes=64))
