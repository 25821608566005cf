"""The ingest step: every problem reported with file:line, nothing written on failure, dedupe, split."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from bgeflow.cli import main
from bgeflow.core.storage import open_store
from bgeflow.steps.ingest import IngestFailed, IngestSpec, ingest, split_eval

GOOD = {"query": "what is a cat", "pos": ["a cat is a small feline"], "neg": ["dogs bark"]}

# Five defects on known lines (1-based): 2, 4, 5, 7, 8. Lines 1, 3, 6 are clean.
DEFECTIVE_LINES = [
    json.dumps(GOOD),
    '{"query": "broken json", "pos": [',  # 2: invalid_json
    json.dumps({"query": "fine", "pos": ["p"], "neg": ["n"]}),
    json.dumps({"query": "", "pos": ["p"], "neg": ["n"]}),  # 4: empty_query
    json.dumps({"query": "no positives", "pos": [], "neg": ["n"]}),  # 5: empty_pos
    json.dumps({"query": "also fine", "pos": ["p2"], "neg": ["n2"]}),
    json.dumps({"query": "scores", "pos": ["p"], "neg": ["n1", "n2"], "neg_scores": [0.5]}),  # 7: score_length
    json.dumps({"query": 42, "pos": ["p"], "neg": ["n"]}),  # 8: wrong_type
]
EXPECTED = {2: "invalid_json", 4: "empty_query", 5: "empty_pos", 7: "score_length", 8: "wrong_type"}


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _problems(report: dict) -> dict[int, str]:
    found = {}
    for rule, info in report["failures"].items():
        for example in info["examples"]:
            found[int(example["where"].rsplit(":", 1)[1])] = rule
    return found


def test_every_defect_reported_with_file_and_line_and_only_the_report_written(tmp_path: Path) -> None:
    data = _write(tmp_path / "bad.jsonl", DEFECTIVE_LINES)
    out = tmp_path / "out"
    with pytest.raises(IngestFailed) as failed:
        ingest(IngestSpec.of(inputs=[str(data)], output=str(out), eval_fraction=0))
    assert _problems(failed.value.report) == EXPECTED
    assert all(e["where"].startswith(str(data)) for i in failed.value.report["failures"].values() for e in i["examples"])
    assert "5 of 8 lines failed validation" in str(failed.value)
    # The report of the failed run, with every count; no data file.
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]
    written = json.loads((out / "report.json").read_text())
    assert written["status"] == "failed" and written["counts"]["invalid_lines"] == 5
    assert {rule: info["count"] for rule, info in written["failures"].items()} == {
        rule: 1 for rule in EXPECTED.values()}


def test_cli_fails_with_a_summary_and_lists_each_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "bad.jsonl", DEFECTIVE_LINES)
    code = main(["ingest", "--input", str(data), "--output", str(tmp_path / "out"), "--on-error", "fail"])
    err = capsys.readouterr().err
    assert code != 0
    for line_no in EXPECTED:  # each as Problem writes it: `where [field]: message (rule)`, no empty `[]`
        assert re.search(rf"bad\.jsonl:{line_no}( \[[\w.\[\]]+\])?: ", err), err
    assert "[]" not in err
    assert "bgeflow ingest: error: 5 of 8 lines" in err.splitlines()[-1] and code == 2
    assert not (tmp_path / "out" / "train.jsonl").exists()


def test_cli_lists_failures_in_file_then_line_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A user read `:3, :7, :5, :8`: the failures grouped by rule, and too_few_negatives (found after merging) last."""
    bare = json.dumps({"query": "no negatives", "pos": ["p"]})
    first = _write(tmp_path / "a.jsonl", [json.dumps(GOOD), DEFECTIVE_LINES[1], DEFECTIVE_LINES[4], bare])
    second = _write(tmp_path / "b.jsonl", [DEFECTIVE_LINES[3], json.dumps({**GOOD, "query": "other"}),
                                           DEFECTIVE_LINES[1]])
    code = main(["ingest", "--input", str(first), "--input", str(second), "--output", str(tmp_path / "out"),
                 "--min-negatives", "1"])
    err = capsys.readouterr().err
    listed = re.findall(r"^  \S*/([ab])\.jsonl:(\d+)", err, re.MULTILINE)
    assert code == 2 and listed == [("a", "2"), ("a", "3"), ("a", "4"), ("b", "1"), ("b", "3")], err
    assert "; first: " + str(first) + ":2" in err


def _array(path: Path, elements: list) -> Path:
    """``elements`` as one pretty-printed JSON array (a ``\\udcff`` in a text is written as the raw byte ff)."""
    path.write_bytes(json.dumps(elements, indent=2, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    return path


def _element_lines(path: Path) -> list[int]:
    """Where each element of ``_array``'s file starts: the lines indented by exactly its two spaces that
    do not close an object."""
    return [n for n, line in enumerate(path.read_bytes().splitlines(), 1) if re.match(rb"  [^\s}]", line)]


def test_cli_reads_a_json_array_beside_jsonl(tmp_path: Path) -> None:
    """A user's `ingest --input dir/` (a.jsonl, b.json = [{...}, ...]) was refused: `b.json:1: ... got list`."""
    data = tmp_path / "dir"
    data.mkdir()
    _write(data / "a.jsonl", [json.dumps({**GOOD, "query": f"jsonl {i}"}) for i in range(2)])
    _array(data / "b.json", [{**GOOD, "query": f"array {i}", "pos": [f"a\npositive {i}"]} for i in range(3)])
    assert main(["ingest", "--input", str(data), "--output", str(tmp_path / "out"), "--eval-fraction", "0"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    # One line per element: its continuation lines are no blank lines.
    assert {k: report["counts"][k] for k in ("lines", "blank_lines", "records")} == {
        "lines": 5, "blank_lines": 0, "records": 5}
    written = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert sorted(r["query"] for r in written) == ["array 0", "array 1", "array 2", "jsonl 0", "jsonl 1"]
    assert {r["query"]: r["pos"] for r in written}["array 1"] == ["a\npositive 1"]


# Each element and the rule ingest reports for it, as it does for the same record on a JSONL line.
ARRAY_DEFECTS = [
    (GOOD, None),
    ({**GOOD, "query": ""}, "empty_query"),
    (42, "not_object"),
    ({**GOOD, "query": "no positives", "pos": []}, "empty_pos"),
    ({**GOOD, "query": 7}, "wrong_type"),
    ({**GOOD, "query": "a stray byte \udcff"}, "not_utf8"),
]


def test_array_elements_fail_at_their_first_line_as_jsonl_lines_do(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    elements = [element for element, _ in ARRAY_DEFECTS]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_bytes(b"".join(json.dumps(e, ensure_ascii=False).encode("utf-8", "surrogateescape") + b"\n"
                               for e in elements))
    array = _array(tmp_path / "b.json", elements)
    code = main(["ingest", "--input", str(jsonl), "--input", str(array), "--output", str(tmp_path / "out")])
    assert code == 2, capsys.readouterr().err
    found = {}
    for rule, info in json.loads((tmp_path / "out" / "report.json").read_text())["failures"].items():
        for example in info["examples"]:
            found.setdefault(rule, []).append(example["where"])
    starts = _element_lines(array)
    assert len(starts) == len(elements)
    assert found == {rule: [f"{jsonl}:{i + 1}", f"{array}:{starts[i]}"]
                     for i, (_, rule) in enumerate(ARRAY_DEFECTS) if rule}


def test_a_malformed_array_fails_ingest_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    array = tmp_path / "b.json"
    array.write_text('[\n  {"query": "q", "pos": ["p"]}\n  {"query": "r", "pos": ["p"]}\n]\n')
    assert main(["ingest", "--input", str(array), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"bgeflow ingest: error: {array}:3: invalid JSON array: expected ',' or ']' after an element, found '{{' "
        "at column 3")


def test_progress_counts_lines_in_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """A user read `ingest: 10 lineses in 0.0s`."""
    from bgeflow.core import log as bgeflow_log

    monkeypatch.setattr(bgeflow_log, "interactive", lambda: False)
    data = _write(tmp_path / "d.jsonl", [json.dumps({**GOOD, "query": f"q{i}"}) for i in range(10)])
    with caplog.at_level("INFO", logger="bgeflow.steps.ingest.run"):
        ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), eval_fraction=0))
    assert any(r.getMessage().startswith("ingest: 10 lines in ") for r in caplog.records), caplog.text


def test_skip_writes_the_clean_rows_and_counts(tmp_path: Path) -> None:
    data = _write(tmp_path / "bad.jsonl", DEFECTIVE_LINES)
    result = ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out"), on_error="skip", eval_fraction=0))
    rows = [json.loads(line) for line in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert [r["query"] for r in rows] == ["what is a cat", "fine", "also fine"]
    counts = result.report["counts"]
    assert (counts["lines"], counts["invalid_lines"], counts["records"]) == (8, 5, 3)
    assert result.report["status"] == "ok_with_skipped_lines"
    assert _problems(result.report) == EXPECTED
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["failures"]["empty_pos"]["count"] == 1
    assert "## Failures by rule" in (tmp_path / "out" / "report.md").read_text()


def test_non_utf8_line_is_reported(tmp_path: Path) -> None:
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"query": "caf\xe9", "pos": ["x"]}'.encode("latin-1") + b"\n")
    with pytest.raises(IngestFailed) as failed:
        ingest(IngestSpec.of(inputs=[str(data)], output=str(tmp_path / "out")))
    assert _problems(failed.value.report) == {2: "not_utf8"}


def test_duplicates_merged_and_negatives_equal_to_positives_removed(tmp_path: Path) -> None:
    lines = [
        json.dumps({"query": "q", "pos": ["p1"], "neg": ["n1", "p2"]}),
        json.dumps({"query": "q", "pos": ["p2"], "neg": ["n1", "n2"]}),
        json.dumps({"query": "other", "pos": ["x"], "neg": ["y"]}),
    ]
    result = ingest(IngestSpec.of(inputs=[str(_write(tmp_path / "d.jsonl", lines))], output=str(tmp_path / "o"),
                                 eval_fraction=0))
    rows = {r["query"]: r for r in map(json.loads, (tmp_path / "o" / "train.jsonl").read_text().splitlines())}
    assert rows["q"] == {"query": "q", "pos": ["p1", "p2"], "neg": ["n1", "n2"]}
    assert result.report["counts"]["duplicate_queries_merged"] == 1
    assert result.report["counts"]["negatives_equal_to_positive_removed"] == 1


def test_min_negatives_is_a_rule_under_the_policy(tmp_path: Path) -> None:
    lines = [json.dumps(GOOD), json.dumps({"query": "bare", "pos": ["p"]})]
    data = str(_write(tmp_path / "d.jsonl", lines))
    with pytest.raises(IngestFailed, match="too_few_negatives"):
        ingest(IngestSpec.of(inputs=[data], output=str(tmp_path / "o"), min_negatives=1))
    result = ingest(IngestSpec.of(inputs=[data], output=str(tmp_path / "o"), min_negatives=1, on_error="skip",
                                 eval_fraction=0))
    assert result.report["counts"]["train_records"] == 1


def test_chinese_round_trips_unescaped(tmp_path: Path) -> None:
    record = {"query": "长城有多长？", "pos": ["历代长城总长约两万一千多公里。"], "neg": ["熊猫主要吃竹子。"]}
    ingest(IngestSpec.of(inputs=[str(_write(tmp_path / "zh.jsonl", [json.dumps(record)]))],
                        output=str(tmp_path / "o"), eval_fraction=0))
    text = (tmp_path / "o" / "train.jsonl").read_text(encoding="utf-8")
    assert "长城有多长" in text and "\\u" not in text
    assert json.loads(text) == record


def test_split_is_deterministic_and_by_query() -> None:
    queries = [f"query {i}" for i in range(1000)]
    held_out = split_eval(queries, 0.05, seed=7)
    assert len(held_out) == 50
    assert held_out == split_eval(list(reversed(queries)), 0.05, seed=7)
    assert held_out != split_eval(queries, 0.05, seed=8)


def test_eval_set_has_qrels_pointing_into_the_corpus(tmp_path: Path) -> None:
    lines = [json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]}) for i in range(40)]
    result = ingest(IngestSpec.of(inputs=[str(_write(tmp_path / "d.jsonl", lines))], output=str(tmp_path / "o"),
                                 eval_fraction=0.1, seed=1))
    corpus = {r["id"]: r["text"] for r in map(json.loads, (tmp_path / "o/eval/corpus.jsonl").read_text().splitlines())}
    queries = [json.loads(line) for line in (tmp_path / "o/eval/queries.jsonl").read_text().splitlines()]
    assert len(queries) == 4 and result.report["counts"]["train_records"] == 36
    for q in queries:
        (doc_id,) = q["relevant"]
        assert corpus[doc_id] == "p" + q["text"][1:]
    train_queries = {json.loads(line)["query"] for line in (tmp_path / "o/train.jsonl").read_text().splitlines()}
    assert not train_queries & {q["text"] for q in queries}


def test_toy_data_ingests_unchanged_and_loads_in_flagembedding(toy_data: Path, tmp_path: Path,
                                                                minilm_path: str) -> None:
    ingest(IngestSpec.of(inputs=[str(toy_data)], output=str(tmp_path / "o"), eval_fraction=0))
    original = [json.loads(line) for line in toy_data.read_text(encoding="utf-8").splitlines() if line.strip()]
    written = [json.loads(line) for line in (tmp_path / "o/train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert written == original

    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderDataArguments, AbsEmbedderTrainDataset
    from transformers import AutoTokenizer

    args = AbsEmbedderDataArguments(train_data=[str(tmp_path / "o/train.jsonl")], train_group_size=4,
                                    cache_path=str(tmp_path / "hf-cache"))
    dataset = AbsEmbedderTrainDataset(args, AutoTokenizer.from_pretrained(minilm_path))
    assert len(dataset) == len(original)
    query, passages, _ = dataset[0]
    assert query == original[0]["query"] and passages[0] in original[0]["pos"] and len(passages) == 4


def _objects_for_s3_and_local(tmp_path: Path) -> dict[str, bytes]:
    records = [{"query": f"question {i}", "pos": [f"answer {i}"], "neg": [f"other {i}", f"more {i}"]}
               for i in range(50_000)]
    big = "".join(json.dumps(r) + "\n" for r in records).encode()
    small = [json.dumps({"query": f"small {i}", "pos": [f"p {i}"], "neg": ["n"]}) for i in range(200)]
    return {
        "data/big.jsonl": big,
        "data/part-a.jsonl": "\n".join(small[:100]).encode() + b"\n",
        "data/part-b.jsonl.gz": gzip.compress(("\n".join(small[100:]) + "\n").encode()),
        "data/dupes.jsonl": (json.dumps({"query": "question 7", "pos": ["answer 7b"], "neg": ["n"]}) + "\n").encode(),
    }


def test_s3_prefix_and_local_directory_give_the_same_result(tmp_path: Path, s3_bucket: str) -> None:
    objects = _objects_for_s3_and_local(tmp_path)
    local_in, s3_in = open_store(str(tmp_path / "in")), open_store(f"s3://{s3_bucket}/in")
    for key, data in objects.items():
        local_in.write_bytes(key, data)
        s3_in.write_bytes(key, data)
    results = {}
    for name, src, dst in (("local", local_in.url("data"), str(tmp_path / "out")),
                           ("s3", s3_in.url("data"), f"s3://{s3_bucket}/out")):
        result = ingest(IngestSpec.of(inputs=[src], output=dst, seed=3))
        out = open_store(dst)
        results[name] = (result.report["counts"], out.read_bytes("train.jsonl"), out.read_bytes("eval/queries.jsonl"),
                         out.read_bytes("eval/corpus.jsonl"))
    assert results["local"] == results["s3"]
    counts = results["s3"][0]
    assert counts["lines"] == 50_201 and counts["duplicate_queries_merged"] == 1 and counts["records"] == 50_200
    assert open_store(f"s3://{s3_bucket}/out").exists("report.json")


def test_json_logs_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BGEFLOW_LOG_FORMAT", "json")
    data = _write(tmp_path / "d.jsonl", [json.dumps(GOOD)])
    assert main(["ingest", "--input", str(data), "--output", str(tmp_path / "o")]) == 0
    log_lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert log_lines and all({"time", "level", "logger", "message"} <= set(line) for line in log_lines)


def test_bad_flag_values_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _write(tmp_path / "d.jsonl", [json.dumps(GOOD)])
    assert main(["ingest", "--input", str(data), "--output", str(tmp_path / "o"), "--eval-fraction", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["bgeflow ingest: error: eval_fraction (--eval-fraction): Input should be less than 1 (got 1.5)"]
    assert main(["ingest", "--input", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "o")]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_truncation_share_uses_the_model_tokenizer_when_given(tmp_path: Path, minilm_path: str) -> None:
    long_passage = " ".join(["tokenization"] * 40)  # 40 words, but each word is several word pieces
    lines = [json.dumps({"query": "q", "pos": [long_passage], "neg": ["short"]})]
    data = str(_write(tmp_path / "d.jsonl", lines))
    estimate = ingest(IngestSpec.of(inputs=[data], output=str(tmp_path / "a"), passage_max_len=64, eval_fraction=0))
    exact = ingest(IngestSpec.of(inputs=[data], output=str(tmp_path / "b"), passage_max_len=64, eval_fraction=0,
                                tokenizer=minilm_path))
    assert estimate.report["lengths"]["passage"]["truncated_share"] == 0.0  # 52 estimated tokens
    assert exact.report["lengths"]["passage"]["truncated_share"] == 0.5  # > 64 real word pieces
    assert exact.report["lengths"]["method"] == f"tokenizer {minilm_path}"


@pytest.mark.parametrize(("reference", "code", "said"), [
    ("bundled:minilm", 0, "tokenizer bundled:minilm"),
    ("{minilm}", 0, "tokenizer {minilm}"),
    ("{tmp}/trained", 0, "tokenizer {tmp}/trained"),  # a training output: its model is in model/
    ("nosuch-org/nosuch-model", 2, "model nosuch-org/nosuch-model: no such directory, and not in the Hugging Face "
                                   "cache (HF_HUB_OFFLINE is set)"),
    ("bundled:nosuch", 2, "unknown bundled model 'bundled:nosuch'"),
    ("{tmp}/no-tokenizer", 2, "tokenizer {tmp}/no-tokenizer: cannot load a tokenizer from"),
    ("{tmp}/nowhere/a/b", 2, "model {tmp}/nowhere/a/b: no such directory"),
])
def test_ingest_tokenizer_takes_every_model_reference_other_verbs_take(
        tmp_path: Path, minilm_path: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        reference: str, code: int, said: str) -> None:
    import shutil

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    shutil.copytree(minilm_path, tmp_path / "trained" / "model")
    (tmp_path / "no-tokenizer").mkdir()
    (tmp_path / "no-tokenizer" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    fill = {"minilm": minilm_path, "tmp": str(tmp_path)}
    reference, said = reference.format(**fill), said.format(**fill)
    data = _write(tmp_path / "d.jsonl", [json.dumps(GOOD)] * 3)
    assert main(["ingest", "--input", str(data), "--output", str(tmp_path / "out"), "--tokenizer", reference,
                 "--eval-fraction", "0"]) == code
    err = capsys.readouterr().err
    if code:
        assert len(err.strip().splitlines()) == 1 and said in err and "internal error" not in err, err
        assert not (tmp_path / "out").exists()  # refused before reading the data
    else:
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["lengths"]["method"] == said


def test_cli_reads_and_writes_s3_through_the_endpoint_flag(tmp_path: Path, s3_bucket: str, s3_endpoint: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    from bgeflow.core.storage import s3_client

    s3_client.cache_clear()
    open_store(f"s3://{s3_bucket}/raw", endpoint_url=s3_endpoint).write_text("a.jsonl", json.dumps(GOOD) + "\n")
    s3_client.cache_clear()
    code = main(["--s3-endpoint-url", s3_endpoint, "ingest", "--input", f"s3://{s3_bucket}/raw",
                 "--output", f"s3://{s3_bucket}/out"])
    assert code == 0
    assert json.loads(open_store(f"s3://{s3_bucket}/out").read_text("train.jsonl")) == GOOD
    s3_client.cache_clear()


def test_a_failed_ingest_leaves_no_earlier_data_beside_its_report(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """A folder an earlier run filled: after a failed run only the failed report is there, no stale data."""
    out = tmp_path / "out"
    good = _write(tmp_path / "good.jsonl", [json.dumps({"query": f"q{i}", "pos": [f"p{i}"]}) for i in range(20)])
    ingest(IngestSpec.of(inputs=[str(good)], output=str(out), eval_fraction=0.2))
    assert (out / "train.jsonl").exists() and (out / "eval" / "queries.jsonl").exists()
    (out / "notes.txt").write_text("the user's own")  # not ingest's: left alone
    data = _write(tmp_path / "bad.jsonl", DEFECTIVE_LINES)
    capsys.readouterr()
    code = main(["ingest", "--input", str(data), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["status"] == "failed"
    assert "removed train.jsonl, eval/corpus.jsonl, eval/queries.jsonl of an earlier run" in err
