"""Every setting is declared once: the CLI, the run spec, the chart schema and the docs follow the specs.

The KFP side (pipeline parameters and component settings) is checked against the compiled YAML in
``test_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import build_parser
from bgeflow.cli._options import DEST
from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import Spec, deep_merge, options, value_kind
from bgeflow.platform.run_spec import LocalRunSpec, RunSpec
from bgeflow.steps.evaluation import EvaluateSpec
from bgeflow.steps.ingest import IngestSpec
from bgeflow.steps.mining import MineSpec
from bgeflow.steps.publish import PublishSpec
from bgeflow.steps.training import TrainSpec

REPO = Path(__file__).resolve().parents[1]

VERBS: list[tuple[str, type[Spec], set[str]]] = [
    ("ingest", IngestSpec, set()),
    ("mine", MineSpec, set()),
    ("train", TrainSpec, set()),
    ("evaluate", EvaluateSpec, set()),
    ("publish", PublishSpec, set()),
    ("run", LocalRunSpec, set()),
    # The job's shape is the launcher's own flags (--nnodes, --nproc-per-node), not the pods' settings.
    ("launch", TrainSpec, {f"distributed.{n}" for n in ("nnodes", "node_rank", "nproc_per_node", "master_addr",
                                                        "master_port", "local_nodes")}),
]


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


@pytest.mark.parametrize(("verb", "spec", "excluded"), VERBS, ids=[v[0] for v in VERBS])
def test_every_setting_has_its_flags_and_nothing_else(verb: str, spec: type[Spec], excluded: set[str]) -> None:
    parser = _verb_parser(verb)
    by_dest: dict[str, set[str]] = {}
    for action in parser._actions:
        if action.dest.startswith(DEST):
            by_dest.setdefault(action.dest[len(DEST):], set()).update(action.option_strings)
    expected = {opt.name: opt for opt in options(spec)
                if opt.name not in excluded and not opt.cli.hidden and value_kind(opt.annotation)[0] != "other"}
    assert set(by_dest) == set(expected)
    for name, opt in expected.items():
        assert set(opt.spellings) <= by_dest[name], name
        help_text = next(a.help for a in parser._actions if a.dest == DEST + name and a.help != argparse.SUPPRESS)
        assert opt.help.rstrip(".").replace("%", "%%") in help_text  # the declaration's sentence


@pytest.mark.parametrize(("verb", "spec", "excluded"), VERBS, ids=[v[0] for v in VERBS])
def test_flag_values_reach_the_spec(verb: str, spec: type[Spec], excluded: set[str]) -> None:
    """A flag sets the setting it is derived from, typed as declared."""
    from bgeflow.cli._options import given

    parser = _verb_parser(verb)
    for opt in options(spec):
        kind, detail = value_kind(opt.annotation)
        if opt.name in excluded or opt.cli.hidden or kind == "other":
            continue
        value = {"bool": "false", "choice": str(detail[-1]) if kind == "choice" else "", "list": "x"}.get(kind, "7")
        args = parser.parse_args([opt.flag, value])
        got: Any = given(args)
        for part in opt.path:
            got = got[part]
        expected = {"bool": False, "list": ["x"]}.get(kind, detail[-1] if kind == "choice" else detail("7"))
        assert got == expected, opt.name


def test_the_chart_schema_is_generated_from_the_retrain_spec() -> None:
    """`make schema` output and the committed values.schema.json agree: the chart accepts what the trigger does."""
    from bgeflow.platform.chart_schema import CHART_SCHEMA, retrain_schema

    committed = json.loads(CHART_SCHEMA.read_text())
    assert committed["properties"]["retrain"] == retrain_schema(), "stale: run `make schema` and commit"


def test_the_chart_schema_validates_what_the_spec_validates() -> None:
    import jsonschema

    from bgeflow.platform.chart_schema import retrain_schema
    from bgeflow.platform.gitops import RetrainSpec

    schema = retrain_schema()
    good = {"enabled": True, "data": "s3://b/raw/", "retriever": {"model": "m", "hyperparameters": {"lr": 1}},
            "mine": {"negative_number": 7}, "evaluate": {"gate": "ndcg@10>=base"}}
    jsonschema.validate(good, schema)
    RetrainSpec.build(good)
    for bad in ({"mine": {"negative_numbr": 7}}, {"enabled": True}, {"training": {"backend": "slurm"}},
                {"retriever": {"query_max_len": 0}}, {"enabled": True, "data": ""},
                {"enabled": True, "data": " , "}, {"enabled": True, "data": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ConfigError):
            RetrainSpec.build({"data": [] if bad == {"enabled": True} else "s3://b/raw/", **bad})


def test_run_blocks_are_the_step_settings_not_copies() -> None:
    """A run's block is the step's own settings class: a field added to a step appears in the run, the pipeline,
    the chart schema and `bgeflow run --<block>-<name>` with no other edit."""
    from bgeflow.steps.evaluation import EvaluateSettings
    from bgeflow.steps.ingest import IngestSettings
    from bgeflow.steps.mining import MineSettings
    from bgeflow.steps.publish import PublishSettings

    fields = RunSpec.model_fields
    assert fields["ingest"].annotation is IngestSettings and issubclass(IngestSpec, IngestSettings)
    assert fields["mine"].annotation is MineSettings and issubclass(MineSpec, MineSettings)
    assert fields["evaluate"].annotation is EvaluateSettings and issubclass(EvaluateSpec, EvaluateSettings)
    assert fields["publish"].annotation is PublishSettings and issubclass(PublishSpec, PublishSettings)


def test_layers_merge_deeply_and_unknown_keys_are_named() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}, "d": 1}
    spec = MineSpec.build({"model": "m", "input": "i.jsonl", "output": "o.jsonl"},
                          {"query-max-len": 32}, {"encoding": {"pooling": "mean"}})
    assert (spec.inputs, spec.encoding.query_max_len, spec.encoding.pooling) == (["i.jsonl"], 32, "mean")
    with pytest.raises(ConfigError, match=r"^x\.yaml: unknown setting 'negative_numbr' for MineSpec; did you mean "
                                          r"negative_number"):
        MineSpec.build({"negative_numbr": 1}, where="x.yaml")
    with pytest.raises(ConfigError, match=r"query_max_len \(--query-max-len\): Input should be greater than 0"):
        MineSpec.build({"model": "m", "inputs": "i", "output": "o.jsonl", "query_max_len": 0}, cli=True)


def test_mine_without_pooling_uses_the_models_own(minilm_path: str, tmp_path: Path) -> None:
    """No --pooling: MiniLM mines with mean pooling (its sentence-transformers config), as train and evaluate do."""
    from bgeflow.cli import main

    data = tmp_path / "in.jsonl"
    rows = [{"query": f"where is item {i}?", "pos": [f"item {i} is in box {i}."], "neg": [f"box {i + 1}."]}
            for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["mine", "--model", "bundled:minilm", "--input", str(data), "--output", str(tmp_path / "o.jsonl"),
                 "--negative-number", "1", "--range-for-sampling", "0-5", "--query-max-len", "16",
                 "--passage-max-len", "16"]) == 0
    report = json.loads((tmp_path / "o.mine_report.json").read_text())  # named after its output
    assert report["encoding"]["pooling"] == "mean"


# --------------------------------------------------------------------------- the command line's shared faults


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``bgeflow ARGV``'s exit code and stderr, whether argparse exits or the verb returns."""
    from bgeflow.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


UNKNOWN_FLAGS = [
    (["ingest", "--input", "i.jsonl", "--output", "o", "--eval-fracton", "0.1"],
     "bgeflow ingest: error: unrecognized argument --eval-fracton; did you mean --eval-fraction"),
    (["mine", "--input", "i.jsonl", "--negative_numbr", "3"],
     "bgeflow mine: error: unrecognized argument --negative_numbr; did you mean --negative-number?"),
    (["evaluate", "--gat=ndcg@10>=base"], "bgeflow evaluate: error: unrecognized argument --gat; did you mean --gate?"),
    (["run", "--chek"], "bgeflow run: error: unrecognized argument --chek; did you mean --check?"),
    (["models", "list", "reg", "--jsn"], "bgeflow models list: error: unrecognized argument --jsn; did you mean --json?"),
    (["ingest", "--zzz"], "bgeflow ingest: error: unrecognized argument --zzz (see `bgeflow ingest --help`)"),
    # Abbreviations are typos too, never a flag taken silently.
    (["ingest", "--input", "i.jsonl", "--eval-frac", "0.1"],
     "bgeflow ingest: error: unrecognized argument --eval-frac; did you mean --eval-fraction"),
    (["mine", "--negative", "3"], "bgeflow mine: error: unrecognized argument --negative; did you mean --negative-number"),
    # The flag nobody knows, not the setting it left out.
    (["train", "retriever", "--model", "bundled:minilm", "--train-dat", "mined.jsonl", "--output", "o"],
     "bgeflow train: error: unrecognized argument --train-dat; did you mean --train-data?"),
]


@pytest.mark.parametrize(("argv", "expected"), UNKNOWN_FLAGS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in UNKNOWN_FLAGS])
def test_an_unknown_flag_is_named_by_its_verb_with_the_closest_flag(argv: list[str], expected: str,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(argv, capsys)
    assert code == 2 and err.strip().startswith(expected), err
    assert len(err.strip().splitlines()) == 1, err


TOP_LEVEL_MISTAKES = [
    # A typo or abbreviation of bgeflow's own option: named as such, not its value read as the verb.
    (["--log-lev", "DEBUG", "ingest", "--help"], "bgeflow: error: unrecognized argument --log-lev; did you mean --log-level?"),
    (["--log-lev=DEBUG", "ingest", "--help"], "bgeflow: error: unrecognized argument --log-lev; did you mean --log-level?"),
    (["--s3-endpoint", "http://minio:9000", "ingest"],
     "bgeflow: error: unrecognized argument --s3-endpoint; did you mean --s3-endpoint-url?"),
    (["--versio"], "bgeflow: error: unrecognized argument --versio; did you mean --version?"),
    (["--zzz", "ingest"], "bgeflow: error: unrecognized argument --zzz (see `bgeflow --help`)"),
    # A verb's option before the verb, and bgeflow's after it: where each goes.
    (["--input", "raw.jsonl", "ingest"], "bgeflow: error: unrecognized argument --input: an option of ingest, mine, "
                                         "not of bgeflow itself: put it after the verb (`bgeflow ingest --input ...`)"),
    (["ingest", "--log-level", "DEBUG", "--input", "raw.jsonl"],
     "bgeflow ingest: error: unrecognized argument --log-level: an option of `bgeflow` itself: put it before the verb "
     "(`bgeflow --log-level ... ingest ...`)"),
    # A value the option does not take: the value named (it was a traceback from logging's setLevel).
    (["--log-level", "DEBG", "ingest"], "bgeflow: error: argument --log-level: 'DEBG' is not a level; did you mean DEBUG?"),
    (["--log-level", "ingest", "--input", "raw.jsonl"],
     "bgeflow: error: argument --log-level: 'ingest' is not a level (one of DEBUG, INFO, WARNING, ERROR, CRITICAL)"),
]


@pytest.mark.parametrize(("argv", "expected"), TOP_LEVEL_MISTAKES, ids=[" ".join(a) for a, _ in TOP_LEVEL_MISTAKES])
def test_a_mistake_in_bgeflows_own_options_is_named_as_one(argv: list[str], expected: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(argv, capsys)
    assert code == 2 and err.strip().splitlines()[-1] == expected, err


TOP_LEVEL_OK = [
    ["--log-level", "DEBUG", "ingest", "--help"],
    ["--log-level=debug", "ingest", "--help"],
    ["--s3-endpoint-url", "http://minio:9000", "--log-level", "warning", "models", "--help"],
    ["--s3-endpoint-url=http://minio:9000", "mine", "--help"],
    ["--help"],
    ["--version"],
]


@pytest.mark.parametrize("argv", TOP_LEVEL_OK, ids=" ".join)
def test_bgeflows_own_options_still_work_before_the_verb(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(argv, capsys)
    assert code == 0 and not err, err


def test_the_kinds_help_is_the_same_after_bgeflows_own_options(capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import main

    helps = []
    for argv in (["train", "retriever", "--help"], ["--log-level", "DEBUG", "train", "retriever", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        helps.append(capsys.readouterr().out)
    assert helps[0] == helps[1] and helps[0].startswith("usage: bgeflow train retriever"), helps


@pytest.mark.parametrize(("value", "expected"), [("debug", None), ("Warning", None),
                                                 ("debg", "BGEFLOW_LOG_LEVEL: 'debg' is not a level; did you mean DEBUG?")])
def test_the_log_level_variable_is_checked_like_the_option(value: str, expected: str | None,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import parse_args

    monkeypatch.setenv("BGEFLOW_LOG_LEVEL", value)
    if expected is None:
        assert parse_args(["ingest", "--input", "raw.jsonl"]).log_level == value.upper()
        return
    with pytest.raises(SystemExit) as exc:
        parse_args(["ingest", "--input", "raw.jsonl"])
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == f"bgeflow: error: {expected}"


def test_no_parser_matches_prefixes() -> None:
    from bgeflow.cli import parsers

    found = parsers(build_parser())
    assert len(found) > 15 and all(not p.allow_abbrev for p in found), [p.prog for p in found if p.allow_abbrev]


SET_VERBS = [("train", TrainSpec), *((v, s) for v, s, _ in VERBS if v != "train")]


@pytest.mark.parametrize(("verb", "spec"), SET_VERBS, ids=[v for v, _ in SET_VERBS])
def test_each_verbs_set_example_is_one_of_its_own_settings(verb: str, spec: type[Spec]) -> None:
    """The example in `bgeflow VERB --help` goes through that verb's own spec building (nothing runs)."""
    import re

    from bgeflow.cli import _options, run, train

    help_text = " ".join(_verb_parser(verb).format_help().split())
    example = re.search(r"\(e\.g\. --set (\S+)\)", help_text)
    assert example, help_text
    required = [x for opt in options(spec) if opt.required and opt.name != "kind"
                for x in (opt.flag, "bundled:minilm" if opt.name == "model" else "x.jsonl")]
    kind = ["retriever"] if verb in ("train", "launch") else []
    args, unknown = build_parser().parse_known_args([verb, *kind, *required, "--set", example.group(1)])
    args.runner_flags = unknown
    assert unknown == kind
    try:
        if verb in ("train", "launch"):
            train.build_spec(args)  # the runner's own parser checks hyperparameters.NAME
        elif verb == "run":
            run.build_spec(args)
        else:
            _options.spec_from_args(spec, args, where="")
    except ConfigError as exc:  # the dummy inputs may be refused; a fault of the --set value names --set
        assert "--set" not in str(exc)


CONFIG_FAULTS = [
    (["ingest"], "a: [1\nb: 2\n", r"--config {f}:2:2: not valid YAML: expected ',' or '\]', but got ':' "
     r"\(while parsing a flow sequence at line 1, column 4\)$"),
    (["mine"], "a: 1\n\tb: 2\n", r"--config {f}:2:1: not valid YAML: found character '\\t' that cannot start"),
    (["mine", "--model", "m", "--input", "i", "--output", "o.jsonl"], "negative_number: abc\n",
     r"--config {f}: negative_number \(--negative-number\): Input should be a valid integer"),
    (["train", "retriever"], "pooling: xyz\n", r"--config {f}: pooling \(--pooling\): Input should be"),
    (["train", "retriever", "--model", "bundled:minilm", "--train-data", "d.jsonl", "--output", "o"],
     "learnin_rate: 1\n", r"--config {f}: learnin_rate is not an option of .*; did you mean learning_rate\?$"),
    (["run"], "mine: {negative_number: abc}\n", r"--config {f}: mine\.negative_number .*valid integer"),
    (["launch"], "kind: regressor\n", r"--config {f}: kind \(--kind\): Input should be"),
]


@pytest.mark.parametrize(("argv", "text", "expected"), CONFIG_FAULTS, ids=[f"{a[0]}-{i}" for i, (a, _, _)
                                                                          in enumerate(CONFIG_FAULTS)])
def test_config_file_errors_name_the_file(argv: list[str], text: str, expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    import re

    path = tmp_path / "c.yaml"
    path.write_text(text)
    code, err = _cli([*argv, "--config", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert re.search(expected.format(f=re.escape(str(path))), err.strip()), err
    assert "<unicode string>" not in err


def test_a_retrain_specs_yaml_error_names_the_file_and_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "retrain.yaml"
    path.write_text("data: s3://b/raw/\nretriever: {model: m\n")
    code, err = _cli(["pipeline", "step-spec", "ingest", "--spec", str(path), "--root", str(tmp_path),
                      "--output", str(tmp_path / "o.yaml")], capsys)
    assert code == 2 and f"--spec {path}:3:1: not valid YAML: " in err, err


@pytest.mark.parametrize("verb", ["train", "launch"])
def test_the_kind_flags_help_says_what_the_usage_shows(verb: str) -> None:
    text = " ".join(_verb_parser(verb).format_help().split())
    assert text.startswith(f"usage: bgeflow {verb} {{retriever,reranker}}")
    assert f"--kind {{retriever,reranker}} retriever (bi-encoder) or reranker (cross-encoder): given as the word " \
           f"after `bgeflow {verb}` (see usage), this flag or the config's kind (required)" in text


CLOSED_STDOUT = [
    # argparse's own --help and --version ignore a failed write and exit 0 (quietly too).
    (["--version"], 0),
    (["ingest", "--help"], 0),
    (["train", "retriever", "--help"], 141),
    (["models", "list", "{tmp}", "--json"], 141),
    (["models", "show", "{tmp}/zh-ret"], 2),  # an error still says so, on stderr
    (["ingest", "--input", "{tmp}/raw.jsonl", "--output", "{tmp}/out"], 141),
]


@pytest.mark.parametrize(("argv", "expected"), CLOSED_STDOUT, ids=[" ".join(a[:2]) for a, _ in CLOSED_STDOUT])
def test_a_reader_that_goes_away_ends_the_verb_quietly(argv: list[str], expected: int, tmp_path: Path) -> None:
    """`bgeflow ... | head`: no traceback, no "internal error"; 141 as for any tool a closed pipe stops."""
    import os
    import subprocess
    import sys

    (tmp_path / "raw.jsonl").write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]})
                                                + "\n" for i in range(20)))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: every write fails, deterministically
    try:
        done = subprocess.run([sys.executable, "-m", "bgeflow", *(a.format(tmp=tmp_path) for a in argv)],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    finally:
        os.close(write)
    assert done.returncode == expected, done.stderr
    if "ingest" not in argv:  # ingest logs its progress on stderr
        assert len(done.stderr.splitlines()) == (1 if expected == 2 else 0), done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "Exception ignored" not in done.stderr and "BrokenPipe" not in done.stderr


def test_a_broken_pipe_that_is_not_stdouts_is_still_a_bug(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import models

    def broken(*_: Any, **__: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")  # a subprocess's or a socket's, say

    monkeypatch.setattr(models, "list_models", broken)
    code, err = _cli(["models", "list", "reg"], capsys)
    assert code == 1 and "bgeflow models: internal error" in err and "BrokenPipeError" in err


# Every verb whose output (or registry) is a folder: a path that is a file, or lies under one, is bad input
# named by its flag (it was a FileExistsError / NotADirectoryError traceback, "internal error (a bug)").
FOLDER_OUTPUTS = [
    (["ingest", "--input", "d.jsonl", "--output", "{f}"], "output (--output): {f} is a file, not a folder"),
    (["train", "retriever", "--model", "bundled:minilm", "--train_data", "d.jsonl", "--output_dir", "{f}"],
     "output (--output): {f} is a file, not a folder"),
    (["evaluate", "--eval-data", "e", "--retriever", "bundled:minilm", "--output", "{f}"],
     "output (--output): {f} is a file, not a folder"),
    (["publish", "--model", "m", "--name", "n", "--registry", "{f}"], "registry (--registry): {f} is a file, not a folder"),
    (["publish", "--model", "m", "--name", "n", "--registry", "{f}/reg"],
     "registry (--registry): {f} (in {f}/reg) is a file, not a folder"),
    (["run", "--output", "{f}"], "output (--output): {f} is a file, not a folder"),
    (["run", "--registry", "file://{f}"], "registry (--registry): file://{f} is a file, not a folder"),
    (["models", "download", "reg/m@v1", "{f}"], "destination (DIR): {f} is a file, not a folder"),
]


@pytest.mark.parametrize(("argv", "expected"), FOLDER_OUTPUTS, ids=[" ".join(a[:1] + a[-2:-1]) for a, _ in FOLDER_OUTPUTS])
def test_a_folder_output_that_is_a_file_is_bad_input(argv: list[str], expected: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    occupied = tmp_path / "notes.txt"
    occupied.write_text("x")
    code, err = _cli([a.format(f=occupied) for a in argv], capsys)
    assert code == 2 and expected.format(f=occupied) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("output", ["s3://bucket/notes.txt", "new/sub", "."])
def test_a_folder_output_not_there_yet_or_remote_is_accepted(output: str) -> None:
    assert IngestSpec.of(inputs=["d.jsonl"], output=output).output == output


# A mistyped verb (or a verb's action) is named with the closest one, as a mistyped flag is.
UNKNOWN_VERBS = [
    (["ingets"], "bgeflow: error: unknown verb 'ingets'; did you mean ingest"),
    (["--log-level", "DEBUG", "evalute", "--output", "o"], "bgeflow: error: unknown verb 'evalute'; did you mean evaluate?"),
    (["models", "lst", "reg"], "bgeflow models: error: unknown action 'lst'; did you mean list?"),
    (["zzz"], "bgeflow: error: unknown verb 'zzz' (one of ingest, mine, train,"),
    # train's kind is a word, not a sub-parser: it said "kind (--kind): Field required".
    (["train", "retreiver", "--model", "m", "--train-data", "d", "--output", "o"],
     "bgeflow train: error: unknown kind 'retreiver'; did you mean retriever?"),
]


@pytest.mark.parametrize(("argv", "expected"), UNKNOWN_VERBS, ids=[" ".join(a) for a, _ in UNKNOWN_VERBS])
def test_an_unknown_verb_is_named_with_the_closest_one(argv: list[str], expected: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _cli(argv, capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith(expected), err
