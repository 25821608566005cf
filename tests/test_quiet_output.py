"""Quiet by default: a run shows one line per step (logs in files), libraries' dumps only at DEBUG.

The pipeline here is a two-task kfp.local pipeline of its own (seconds, not the real one's minutes);
``test_run_local.py::test_bgeflow_run_end_to_end_mini`` checks the real run's output the same way.
"""

# No `from __future__ import annotations`: kfp reads the components' annotations as types.

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from bgeflow.core.log import DEBUG_ONLY, setup_logging
from bgeflow.platform.run_progress import StepReporter, last_lines, quiet_tasks, task_name


def _pipeline(fail: bool):  # type: ignore[no-untyped-def]
    from kfp import dsl

    @dsl.component(base_image="python:3.11")
    def chatty(lines: int) -> str:
        for i in range(lines):
            print(f"\x1b[92mline {i}\x1b[0m of a noisy library")
        return "ok"

    @dsl.component(base_image="python:3.11")
    def failing(previous: str) -> str:
        import sys

        for i in range(100):
            print(f"progress {i}")
        print("the real cause: no such file /data/x.jsonl", file=sys.stderr)
        sys.exit(3)

    @dsl.component(base_image="python:3.11")
    def fine(previous: str) -> str:
        return previous

    @dsl.pipeline(name="quiet-test")
    def pipeline() -> None:
        first = chatty(lines=400)
        (failing if fail else fine)(previous=first.output)

    return pipeline


@pytest.mark.parametrize("fail", [False, True])
def test_a_pipeline_shows_one_line_per_step_and_logs_to_files(tmp_path: Path, fail: bool,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    shown = io.StringIO()
    reporter = StepReporter(out=shown, names={"chatty": "chat"}, interactive=False)
    pipeline = _pipeline(fail)
    with quiet_tasks(tmp_path, reporter) as logs:
        if fail:
            with pytest.raises(RuntimeError, match="failing"):
                pipeline()
        else:
            pipeline()
    out, err = capsys.readouterr()
    lines = shown.getvalue().splitlines()
    assert out == "" and "line 1" not in err  # kfp.local's own output and the tasks' are in files
    assert lines[:2] == ["bgeflow run: chat ...", lines[1]] and lines[1].startswith("bgeflow run: chat done in ")
    assert "\x1b[" not in (logs / "kfp.log").read_text()  # kfp.local's colours are for terminals only
    assert "line 399\x1b[0m of a noisy library" in (logs / "chatty.log").read_text()  # as the task wrote it
    if not fail:
        assert len(lines) == 4 and lines[3].startswith("bgeflow run: fine done in ")
        return
    assert lines[3].startswith("bgeflow run: failing FAILED after ") and str(logs / "failing.log") in lines[3]
    assert lines[-1] == "    the real cause: no such file /data/x.jsonl"
    assert len(lines) == 4 + 25 and reporter.failed == [("failing", logs / "failing.log")]
    assert "progress 0" in (logs / "failing.log").read_text()  # the whole log stays in the file


def test_bgeflow_run_failure_names_the_steps_log(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that fails in a real ``bgeflow run``: its last lines, then one error line naming its log."""
    from bgeflow.cli import main

    data = tmp_path / "data.jsonl"
    # Every line valid for the preflight (min_negatives is checked after duplicates merge, by ingest
    # alone); ingest then refuses every record of it.
    data.write_text("".join(json.dumps({"query": f"q{i}", "pos": ["p"], "neg": ["n"]}) + "\n" for i in range(60)))
    monkeypatch.setenv("BGEFLOW_LOG_LEVEL", "INFO")
    code = main(["run", "--data", str(data), "--output", str(tmp_path / "out"), "--max-records", "0",
                 "--set", "ingest.min_negatives=2"])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""  # bad input, as `bgeflow ingest` says of the same data
    assert "bgeflow run: ingest FAILED after" in err and "\x1b[" not in err and "Warning" not in err
    log = next((tmp_path / "out" / "runs").glob("*/logs/ingest.log"))
    assert f"full log: {log}" in err.strip().splitlines()[-1]
    # The step as the summary names it, and its own error, not KFP's traceback of the step's exit.
    assert err.strip().splitlines()[-1].startswith("bgeflow run: error: ingest failed: 60 of 60 lines failed")
    assert "IngestFailed" not in err  # the step's message, not the Python class that carried it
    assert len(err.splitlines()) < 60, err
    assert "Cleaned up workspace" not in err and "Cleaned up workspace" in (log.parent / "kfp.log").read_text()


_KFP_TAIL = ["Traceback (most recent call last):", '  File "executor.py", line 453, in execute'] + [
    f"    frame {i}" for i in range(30)]


@pytest.mark.parametrize(("log", "shown", "cause"), [
    # The case: a pod's error one line above 25 lines of the KFP wrapper's traceback.
    (["[pod-0] loading", "[pod-0] bgeflow train: error: 8 records fill no batch of 16 × 2 processes",
      *_KFP_TAIL, "bgeflow.core.errors.StepFailed: train: a pod exited with code 2",
      "RuntimeError: Inner task failed: 'train-launcher'"],
     ["[pod-0] bgeflow train: error: 8 records fill no batch of 16 × 2 processes"],
     "8 records fill no batch of 16 × 2 processes"),
    # Every pod's line, each once.
    (["[pod-1] bgeflow train: error: no data", "[pod-0] bgeflow train: error: no data",
      "[pod-0] bgeflow train: error: no data", *_KFP_TAIL],
     ["[pod-1] bgeflow train: error: no data", "[pod-0] bgeflow train: error: no data"], "no data"),
    # A step run in the component's own process: its typed error's message, without the class path.
    ([*_KFP_TAIL, "bgeflow.steps.ingest.report.IngestFailed: 3 of 3 lines failed validation"],
     ["3 of 3 lines failed validation"], "3 of 3 lines failed validation"),
    # Nothing of bgeflow's: the log's tail, as before.
    ([f"line {i}" for i in range(40)], [f"line {i}" for i in range(15, 40)], None),
])
def test_a_failed_step_shows_its_own_error_not_the_wrappers_traceback(
        tmp_path: Path, log: list[str], shown: list[str], cause: str | None) -> None:
    path = tmp_path / "train-launcher.log"
    path.write_text("\n".join(log) + "\n")
    out = io.StringIO()
    reporter = StepReporter(out=out, names={"train-launcher": "train retriever"}, interactive=False)
    reporter.finished("train-launcher", path, 1, 7.0)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("bgeflow run: train retriever FAILED after 0m07.0s (exit code 1)")
    assert lines[1:] == [f"    {line}" for line in shown]
    assert reporter.causes["train retriever"][:1] == ([cause] if cause else [])


@pytest.mark.parametrize(("line", "refused"), [
    ("[pod-0] bgeflow train: error: 8 records fill no batch", "BgeflowError"),  # a verb's exit-2 line
    ("bgeflow.steps.ingest.report.IngestFailed: 3 of 10 lines failed validation", "DataError"),
    ("[pod-1] bgeflow.core.errors.ConfigError: retriever.x: unknown", "ConfigError"),
    ("bgeflow.core.errors.StepFailed: train: a pod exited with code 1", None),  # failed, not refused
    ("bgeflow.storage.nothing.Here: gone", None),  # no such class here: no claim about it
])
def test_a_step_refusing_its_input_is_known_as_bad_input(line: str, refused: str | None) -> None:
    from bgeflow.platform.run_progress import refusal

    found = refusal(line)
    assert (found.__name__ if found else None) == refused


def test_task_name_and_last_lines(tmp_path: Path) -> None:
    executor_input = {"outputs": {"outputFile": "/r/bge-finetune-2026/train-launcher-2/executor_output.json"}}
    assert task_name(["sh", "-c", "x", "--executor_input", json.dumps(executor_input), "--function_to_execute",
                      "f"]) == "train-launcher-2"
    assert task_name(["sh"]) == "task"
    log = tmp_path / "x.log"
    log.write_text("a\n\nb\r 10%|#   |\r 50%|#####  |\nc\n")
    assert last_lines(log, 2) == [" 50%|#####  |", "c"]  # a tqdm bar as a terminal shows it
    assert last_lines(tmp_path / "missing.log", 3) == []


def test_a_piped_running_step_says_it_is_alive_at_most_every_heartbeat(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("mine: 300/600 queries (12 queries/s)\n")
    shown = io.StringIO()
    reporter = StepReporter(out=shown, interactive=False)
    reporter.running("mine", log, 10.0, beat=False)
    reporter.running("mine", log, 310.0, beat=True)
    assert shown.getvalue() == "  mine 5m10.0s: mine: 300/600 queries (12 queries/s)\n"


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_third_party_dumps_only_at_debug(level: str, shown: bool, capsys: pytest.CaptureFixture[str]) -> None:
    saved = {name: logging.getLogger(name).level for name in ("", *DEBUG_ONLY)}
    try:
        setup_logging(level)
        logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
        logging.getLogger("FlagEmbedding.abc.finetune.embedder.AbsRunner").info("Training/evaluation parameters")
        logging.getLogger("bgeflow.steps.mining").info("mined 10 queries")
        logging.getLogger("faiss.loader").warning("a real problem")
        err = capsys.readouterr().err
    finally:
        for name, value in saved.items():
            logging.getLogger(name or None).setLevel(value)
    assert ("Could not load library" in err) is shown and ("Training/evaluation parameters" in err) is shown
    assert "mined 10 queries" in err and "a real problem" in err


def test_the_worker_module_runs_without_a_runpy_warning() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "bgeflow.steps.training.worker",
                           "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "found in sys.modules" not in done.stderr


def test_on_a_terminal_a_running_step_is_one_status_line_rewritten(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    log.write_text("train: step 3/10\n")
    shown = io.StringIO()
    reporter = StepReporter(out=shown, interactive=True)
    reporter.started("train-launcher", log)  # nothing yet: the status line says it
    reporter.running("train-launcher", log, 5.0, beat=False)
    log.write_text("train: step 3/10\ntrain: step 4/10\n")
    reporter.running("train-launcher", log, 6.0, beat=False)
    reporter.finished("train-launcher", log, 0, 7.0)
    text = shown.getvalue()
    assert text.count("\r") >= 3 and "train-launcher 0m05.0s  train: step 3/10" in text
    assert "train: step 4/10" in text
    # The end line starts on a cleared line, and stands alone.
    assert text.endswith("\rbgeflow run: train-launcher done in 0m07.0s\n")


# What the training workers' libraries print at the default level, each made to happen as they make it.
_WORKER_NOISE = '''
import json, logging, sys, warnings
from bgeflow.core.log import route_transformers_logging, setup_logging
from bgeflow.core.models import BUNDLED_MINILM, resolve_model

setup_logging()  # as the worker does, from BGEFLOW_LOG_LEVEL
route_transformers_logging()
logging.getLogger("FlagEmbedding.abc.finetune.embedder.AbsRunner").warning(
    "Process rank: %s, device: %s, n_gpu: %s, distributed training: %s, 16-bits training: %s", 0, "cpu:0", 0, True, False)
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path = resolve_model(BUNDLED_MINILM)
AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)  # "newly initialized" classifier
AutoTokenizer.from_pretrained(path).pad({"input_ids": [[101, 7, 102], [101, 102]]}, padding=True, max_length=8)
warnings.warn("OMP_NUM_THREADS/MKL_NUM_THREADS unset, we set it at 2 to improve oob performance.")  # accelerate's
import datasets
datasets.load_dataset("json", data_files=sys.argv[1], cache_dir=sys.argv[2])  # FlagEmbedding reads the data so
logging.getLogger("transformers.modeling_utils").warning("Some weights of X were not initialized from the model "
                                                         "checkpoint at m and are newly initialized because the shapes did not match")
logging.getLogger("FlagEmbedding.abc.finetune").warning("a real problem")
'''
_NOISE = ["Process rank: 0", "Some weights of BertForSequenceClassification", "You're using a BertTokenizerFast",
          "`max_length` is ignored", "OMP_NUM_THREADS/MKL_NUM_THREADS unset", "Generating train split"]


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_the_training_workers_library_noise_shows_only_at_debug(level: str, shown: bool, tmp_path: Path) -> None:
    """The README's promise for what training prints: libraries' warnings that are no news to a user only at DEBUG."""
    import os
    import subprocess

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"query": "q", "pos": ["p"], "neg": ["n"]}) + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    done = subprocess.run([sys.executable, "-c", _WORKER_NOISE, str(data), str(tmp_path / "cache")],
                          env={**env, "BGEFLOW_LOG_LEVEL": level}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert {noise: noise in done.stderr for noise in _NOISE} == dict.fromkeys(_NOISE, shown), done.stderr
    # Warnings that may matter still show, through bgeflow's handler (its format).
    assert "WARNING transformers.modeling_utils: Some weights of X" in done.stderr and "a real problem" in done.stderr


@pytest.mark.slow
def test_bgeflow_train_at_the_default_level_shows_bgeflows_lines_and_the_trainers_progress(tmp_path: Path) -> None:
    """`bgeflow train` on tiny data, two processes on CPU: what the README says a user sees, nothing more."""
    import os
    import re
    import subprocess

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"query": f"what is topic {i}?", "pos": [f"topic {i} is thing {i}."],
                                        "neg": [f"unrelated {j} {i}" for j in range(3)]}) + "\n" for i in range(16)))
    env = {k: v for k, v in os.environ.items() if k not in ("BGEFLOW_LOG_LEVEL", "OMP_NUM_THREADS",
                                                             "TRANSFORMERS_NO_ADVISORY_WARNINGS",
                                                             "HF_DATASETS_DISABLE_PROGRESS_BARS")}
    done = subprocess.run([sys.executable, "-m", "bgeflow", "train", "retriever", "--model", "bundled:minilm",
                           "--train-data", str(data), "--output", str(tmp_path / "out"), "--work-dir",
                           str(tmp_path / "work"), "--nproc-per-node", "2", "--per-device-train-batch-size", "2",
                           "--max-steps", "1", "--save-steps", "1", "--train-group-size", "3", "--query-max-len",
                           "16", "--passage-max-len", "16"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    ours = re.compile(r"^\d\d:\d\d:\d\d (INFO|WARNING) bgeflow\.")
    # The Trainer's progress bar (tqdm, redrawn with \r) and its metrics dict: training's own progress.
    trainer = re.compile(r"^\s*(\d+%\|.*|\{'train_runtime': .*\})$")
    other = [piece for line in done.stderr.splitlines() for piece in line.split("\r")
             if piece.strip() and not ours.match(piece) and not trainer.match(piece)]
    assert other == [], done.stderr


def test_every_progress_unit_is_singular() -> None:
    """``progress`` makes the plural, tqdm writes ``unit/s``: a caller's "lines" read "10 lineses" (ingest)."""
    import ast

    src = Path(__file__).resolve().parents[1] / "src" / "bgeflow"
    plural = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "progress":
                for keyword in node.keywords:
                    unit = keyword.value.value if isinstance(keyword.value, ast.Constant) else ""
                    if keyword.arg == "unit" and unit.endswith("s") and not unit.endswith("ss"):
                        plural.append(f"{path.relative_to(src)}:{node.lineno}: unit={unit!r}")
    assert not plural, plural


@pytest.mark.parametrize(("unit", "items", "line"), [
    ("chunk", 4, "encode: 4 chunks in"),
    ("batch", 26, "encode: 26 batches in"),
    ("batch", 1, "encode: 1 batch in"),
    ("shard", 0, "encode: 0 shards in"),
    ("line", 10, "encode: 10 lines in"),
    ("lines", 10, "encode: 10 lines in"),  # a plural unit: once "10 lineses"
    ("tokens", 3, "encode: 3 tokens in"),
    ("pass", 2, "encode: 2 passes in"),
    ("box", 2, "encode: 2 boxes in"),
])
def test_progress_lines_count_in_words(unit: str, items: int, line: str, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """A user read "4 chunk" and "26 batch" in the logs."""
    from bgeflow.core import log as bgeflow_log

    monkeypatch.setattr(bgeflow_log, "interactive", lambda: False)
    with caplog.at_level("INFO", logger="bgeflow.progress"):
        assert list(bgeflow_log.progress(range(items), desc="encode", unit=unit)) == list(range(items))
    assert caplog.records[-1].getMessage().startswith(line)
