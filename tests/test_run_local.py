"""``bgeflow run``: config and preflight errors (one line, before anything runs), and the pipeline end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.cli import main
from bgeflow.cli.run import build_spec
from bgeflow.core.errors import EXIT_INTERRUPTED
from bgeflow.platform.local_run import find_pipeline, local_variant
from bgeflow.platform.run_spec import LocalRunSpec
from conftest import EXAMPLE_DATA


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["run", *args])
    out, err = capsys.readouterr()
    return code, out, err


def spec_of(*argv: str) -> LocalRunSpec:
    from bgeflow.cli import build_parser

    return build_spec(build_parser().parse_args(["run", *argv]))  # type: ignore[return-value]


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("data: x.jsonl\nretriever_modle: bundled:minilm\n")
    code, _, err = run_cli(["--config", str(config), "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"bgeflow run: error: --config {config}: unknown setting 'retriever_modle' for LocalRunSpec; "
        "did you mean retriever.model, retriever.name, retriever.device?"]
    assert not (tmp_path / "out").exists()


def test_missing_data_names_the_uri(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nothing-here.jsonl"
    code, _, err = run_cli(["--data", str(missing), "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(missing) in err and "no such file" in err
    assert not (tmp_path / "out").exists()


def test_unreachable_s3_endpoint_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")  # what --s3-endpoint-url sets
    started = time.monotonic()
    code, _, err = run_cli(["--data", "s3://bucket/train.jsonl", "--output", str(tmp_path / "out")], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and f"http://127.0.0.1:{port}" in err
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_bad_values_are_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for args, fragment in (
        (["--training-nproc-per-node", "0"], "training.nproc_per_node (--training-nproc-per-node): Input should be "
                                             "greater than 0"),
        (["--evaluate-gate", "ndcg@10>>base"], "evaluate.gate"),
        (["--set", "retriever.learning_rat=1"], "learning_rat is not an option of FlagEmbedding's encoder-base runner"),
        (["--reranker-model", str(tmp_path / "no-model")], "no-model"),
        # ingest's tokenizer goes through the model resolver too: checked here, not after the run starts.
        (["--ingest-tokenizer", "nosuch-org/nosuch-model"], "ingest.tokenizer: model nosuch-org/nosuch-model: not "
                                                           "in the Hugging Face cache"),
        (["--ingest-tokenizer", str(tmp_path / "no-tokenizer")], f"ingest.tokenizer: model {tmp_path}/no-tokenizer"),
        (["--output", "s3://bucket/out"], "must be a local folder"),
        # A group needs more negatives than mining gives: refused before minutes of mining and training.
        (["--set", "reranker.train_group_size=20"], "reranker: train_group_size 20 needs 19 negatives per record, "
                                                    "but mining gives mine.negative_number 15"),
        (["--eval-data", str(tmp_path / "no-eval")], "no-eval"),
        (["--corpus", str(tmp_path / "no-corpus.jsonl")], "no-corpus.jsonl"),
        (["--ingest-eval-fraction", "0"], "nothing to evaluate on: ingest held out no query (ingest.eval_fraction 0)"),
    ):
        code, _, err = run_cli([*args, "--check"] + (["--output", str(tmp_path / "o")] if "--output" not in args else []),
                               capsys)
        assert code == 2, (args, err)
        assert fragment in err and len(err.strip().splitlines()) == 1, (args, err)


def _records(path: Path, count: int) -> str:
    path.write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]}) + "\n"
                            for i in range(count)))
    return str(path)


@pytest.mark.parametrize(("records", "args", "refused"), [
    # The toy data: 10 records, 2 held out (eval_fraction 0.15), 8 fill no batch of 16 × 2 processes.
    (10, [], "retriever.hyperparameters.per_device_train_batch_size 16 × 2 process(es) (training.nproc_per_node × "
             "training.nnodes) needs 32 training records with dataloader_drop_last, but the data gives at most 8 "
             "(10 records, 2 held out by ingest.eval_fraction 0.15): lower "
             "retriever.hyperparameters.per_device_train_batch_size to 4, or add data"),
    (10, ["--set", "retriever.per_device_train_batch_size=4"], None),  # 4 × 2 = 8: one batch
    (10, ["--set", "retriever.per_device_train_batch_size=2", "--training-nproc-per-node", "3"],
     "reranker.hyperparameters.per_device_train_batch_size 4 × 3"),
    (40, [], None),
    (40, ["--max-records", "20"], "but the data gives at most 17 (20 records of max_records 20, 3 held out"),
    (10, ["--set", "retriever.dataloader_drop_last=false", "--set", "reranker.dataloader_drop_last=false"], None),
    (4, ["--set", "retriever.per_device_train_batch_size=1", "--set", "reranker.per_device_train_batch_size=1",
         "--training-nproc-per-node", "4"], "lower training.nproc_per_node"),
])
def test_a_batch_no_training_split_can_fill_is_refused_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], records: int, args: list[str], refused: str | None) -> None:
    data = _records(tmp_path / "toy.jsonl", records)
    code, out, err = run_cli(["--data", data, "--output", str(tmp_path / "out"), "--check", *args], capsys)
    if refused is None:
        assert code == 0, err
        # Piped, stdout is one JSON document, as after a run: a script can tell a passed check from output.
        checked = json.loads(out)
        assert checked["status"] == "ok" and checked["checked"] is True and checked["output"] == str(tmp_path / "out")
    else:
        assert out == ""
        assert code == 2 and refused in err and len(err.strip().splitlines()) == 1, err


def _bad_data(path: Path, bad: list[int], count: int = 10) -> str:
    lines = [json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]}) for i in range(count)]
    for i in bad:
        lines[i] = ["{not json", json.dumps({"query": f"q{i}", "pos": []}), json.dumps([1])][i % 3]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_check_validates_every_line_as_ingest_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """3 malformed lines of 10: ``--check`` refuses them with exit 2 naming file:line, as ingest would."""
    data = _bad_data(tmp_path / "bad.jsonl", [2, 5, 7])
    code, _, err = run_cli(["--data", data, "--output", str(tmp_path / "out"), "--check",
                            "--set", "retriever.per_device_train_batch_size=1"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "3 of 10 records failed validation" in err
    assert all(f"{data}:{n}" in err for n in (3, 6, 8)), err
    # Skipped by ingest under on_error skip: nothing to refuse.
    code, _, err = run_cli(["--data", data, "--output", str(tmp_path / "out"), "--check",
                            "--set", "retriever.per_device_train_batch_size=1", "--set", "ingest.on_error=skip"],
                           capsys)
    assert code == 0, err


def test_the_check_reads_a_json_array_as_ingest_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .json holding one array is data (FlagEmbedding reads it): a bad element is refused at its first line."""
    rows: list[Any] = [{"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}"]} for i in range(10)]
    path = tmp_path / "b.json"
    args = ["--data", str(path), "--output", str(tmp_path / "out"), "--check",
            "--set", "retriever.per_device_train_batch_size=1"]
    path.write_text(json.dumps(rows, indent=2))
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    rows[4] = {"query": "q4", "pos": []}
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")  # element i on line i + 2
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "1 of 10 records failed validation" in err and f"{path}:6 [pos]" in err, err


def test_the_check_judges_only_the_lines_max_records_keeps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.platform.local_run import _sampled

    kept = set(_sampled(40, 20, 42) or [])
    outside = next(i for i in range(40) if i not in kept)
    inside = next(i for i in range(40) if i in kept)
    args = ["--output", str(tmp_path / "out"), "--check", "--max-records", "20",
            "--set", "retriever.per_device_train_batch_size=1", "--set", "reranker.per_device_train_batch_size=1"]
    code, _, err = run_cli(["--data", _bad_data(tmp_path / "a.jsonl", [outside], 40), *args], capsys)
    assert code == 0, err  # the sample never holds it: ingest would not see it
    data = _bad_data(tmp_path / "b.jsonl", [inside], 40)
    code, _, err = run_cli(["--data", data, *args], capsys)
    assert code == 2 and f"{data}:{inside + 1}" in err, err


def test_config_file_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"training": {"nproc_per_node": 1}, "evaluate": {"gate": "mrr@10>base"},
                                      "retriever": {"num_train_epochs": 2}}))
    code, _, err = run_cli(["--config", str(config), "--evaluate-gate", "ndcg@10>=base", "--set",
                            "reranker.max_len=128", "--output", str(tmp_path / "out"), "--check"], capsys)
    assert code == 0, err
    spec = spec_of("--config", str(config), "--evaluate-gate", "ndcg@10>=base")
    assert spec.training.nproc_per_node == 1 and spec.evaluate.gate == "ndcg@10>=base"
    assert spec.retriever.hyperparameters["num_train_epochs"] == 2


def test_a_partial_block_merges_over_the_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2-key retriever block changes those two keys: every other CPU default stays (group size 2, 12 steps;
    epochs lift the steps: test_the_demo_size_gives_way_to_the_users_own_data_and_epochs)."""
    config = tmp_path / "run.yaml"
    config.write_text("retriever:\n  learning_rate: 2.0e-5\n  warmup_ratio: 0.1\n")
    spec = spec_of("--config", str(config))
    defaults = spec_of()
    assert spec.retriever.hyperparameters == {**defaults.retriever.hyperparameters, "learning_rate": 2e-5,
                                              "warmup_ratio": 0.1}
    assert spec.retriever.hyperparameters["max_steps"] == 12 and spec.retriever.model == "bundled:minilm"
    assert spec.reranker == defaults.reranker and spec.mine == defaults.mine
    code, _, err = run_cli(["--config", str(config), "--output", str(tmp_path / "out"), "--check"], capsys)
    assert code == 0, err


def test_arguments_are_parameters_of_the_compiled_pipeline() -> None:
    spec = next(yaml.safe_load_all(find_pipeline().read_text()))
    declared = spec["root"]["inputDefinitions"]["parameters"]
    arguments = spec_of().pipeline_arguments()
    assert set(arguments) == set(declared)
    assert arguments["training"]["backend"] == "local" and arguments["work_uri"] == ""
    assert arguments["retriever"]["model"] == arguments["reranker"]["model"] == "bundled:minilm"
    # "2 local training processes"
    assert arguments["training"]["nnodes"] * arguments["training"]["nproc_per_node"] == 2


def test_a_pip_installed_bgeflow_finds_its_compiled_pipeline(tmp_path: Path) -> None:
    """Outside a checkout and the image, the wheel's data-files copy is the one ``bgeflow run`` uses."""
    root = Path(__file__).resolve().parents[1]
    tree = tmp_path / "tree"  # built from a copy: setuptools writes build/ into the tree it builds
    for part in ("pyproject.toml", "README.md", "src", "pipelines/bge_finetune.yaml"):
        copy = shutil.copytree if (root / part).is_dir() else shutil.copy2
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        copy(root / part, tree / part)
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps",
                    "--no-build-isolation", "-w", str(tmp_path / "wheel"), str(tree)], check=True, capture_output=True)
    wheel = next((tmp_path / "wheel").glob("bgeflow-*.whl"))
    # Unpacked the way an installer lays a wheel out (pip install --prefix would first uninstall
    # the bgeflow these tests run on): code into site-packages, .data/data/ into the prefix.
    prefix, site = tmp_path / "prefix", tmp_path / "prefix" / "site-packages"
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            head, _, rest = name.partition(".data/data/")
            target = prefix / rest if rest and "/" not in head else site / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    found = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.prefix = {str(tmp_path / 'prefix')!r}; "
         "import bgeflow.platform.local_run as lp; print(lp.__file__); print(lp.find_pipeline())"],
        check=True, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
    ).stdout.split()
    assert Path(found[0]).is_relative_to(site)  # the installed copy, not this checkout
    assert Path(found[1]) == tmp_path / "prefix" / "share" / "bgeflow" / "pipelines" / "bge_finetune.yaml"
    assert Path(found[1]).read_bytes() == (root / "pipelines" / "bge_finetune.yaml").read_bytes()


def test_local_variant_only_drops_retries() -> None:
    original = find_pipeline().read_text()
    spec = yaml.safe_load(local_variant(original))
    full = next(yaml.safe_load_all(original))
    assert "retryPolicy" in json.dumps(full) and "retryPolicy" not in json.dumps(spec)
    for dag in (spec["root"]["dag"], full["root"]["dag"]):
        for task in dag["tasks"].values():
            task.pop("retryPolicy", None)
    assert spec["root"] == full["root"] and spec["deploymentSpec"] == full["deploymentSpec"]


def _run_inputs(tmp_path: Path) -> tuple[Path, Path]:
    """A corpus (JSONL, 'text') and a BEIR-layout eval set, both cut from the example data."""
    import gzip

    with gzip.open(EXAMPLE_DATA, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    corpus = tmp_path / "corpus" / "passages.jsonl"
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for r in rows[:400] for t in (*r["pos"], *r["neg"])))
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    held = rows[-15:]
    (beir / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": r["pos"][0]}) + "\n" for i, r in enumerate(held))
        + "".join(json.dumps({"_id": f"x{i}", "title": "", "text": r["pos"][0]}) + "\n" for i, r in enumerate(rows[:40])))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": r["query"]}) + "\n"
                                                for i, r in enumerate(held)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"q{i}\td{i}\t1\n" for i in range(len(held))))
    return corpus, beir


def _mini_config(tmp_path: Path) -> Path:
    """A sample of the example data, 2 training steps, short lengths: the whole pipeline in CI time."""
    corpus, beir = _run_inputs(tmp_path)
    config = tmp_path / "mini.yaml"
    config.write_text(yaml.safe_dump({
        "output": str(tmp_path / "out"), "max_records": 120, "ingest": {"eval_distractors": 30},
        "corpus": str(corpus), "eval_data": str(beir),
        "mine": {"range_for_sampling": "2-20", "negative_number": 3},
        # The reranker is the demo's: MiniLM with a fresh scoring head, 2 steps; reordering the top 10 it
        # ranks worse than the retriever alone, and the gate's reranker rule must hold it back.
        "evaluate": {"rerank_top_k": 10, "gate": "ndcg@10>=0, rerank.ndcg@10>=retriever"},
        "training": {"nproc_per_node": 2},
        "retriever": {"query_max_len": 24, "passage_max_len": 64,
                      "hyperparameters": {"max_steps": 2, "per_device_train_batch_size": 4}},
        "reranker": {"max_len": 96, "hyperparameters": {"max_steps": 2, "per_device_train_batch_size": 2,
                                                        "train_group_size": 4}},
    }))
    return config


def test_bgeflow_run_end_to_end_mini(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every step through kfp.local with the run's own corpus and eval set; each model published on its own rules."""
    code, out, err = run_cli(["--config", str(_mini_config(tmp_path))], capsys)
    assert code == 0, err[-3000:]
    # Piped: stdout is the summary as one JSON document; stderr a line per step and the human summary.
    assert json.loads(out) == json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert len((out + err).splitlines()) < 60 and "\x1b[" not in out + err, err
    assert next((tmp_path / "out" / "runs").glob("*/logs/train-launcher.log")).stat().st_size > 0
    out = err  # the human summary
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    assert set(summary["steps"]) == {"ingest", "mine", "train retriever", "train reranker", "evaluate",
                                     "publish retriever", "publish reranker"}
    for kind in ("retriever", "reranker"):
        model = summary["models"][kind]
        assert model["trained"] is True and Path(model["uri"], "config.json").is_file()
        assert model["global_step"] == 2
    assert Path(summary["published"]["retriever"]["uri"], "manifest.json").is_file()
    # The reranker ranks worse than the retriever's own order: not published, and the summary says why.
    reranked, plain = summary["metrics"]["finetuned"]["rerank.ndcg@10"], summary["metrics"]["retriever"]["rerank.ndcg@10"]
    assert reranked < plain
    assert "reranker" not in summary["published"]
    assert not list((tmp_path / "out" / "registry").glob("bge-reranker/*/manifest.json"))
    reason = summary["skipped"]["reranker"]
    assert reason == f"its gate rules failed: rerank.ndcg@10 {reranked:.4f} is not >= retriever {plain:.4f}"
    assert f"NOT published: {reason}" in out and "reranker: FAILED, not published" in out
    assert summary["gate"]["models"]["retriever"]["passed"] is True
    # The gate judged the run's own eval set (BEIR layout); ingest's split was scored beside it.
    assert summary["eval_set"] == str(tmp_path / "beir")
    metrics = json.loads(next((tmp_path / "out" / "runs").rglob("evaluate/evaluation/metrics.json")).read_text())
    assert metrics["eval_set"]["queries"] == 15 and metrics["eval_set"]["uris"]["qrels"].endswith("qrels/test.tsv")
    assert "ingest's held-out split (not gated)" in out and summary["split_metrics"]["finetuned"]["ndcg@10"] > 0
    # Mining drew every negative from the run's corpus.
    mined = next((tmp_path / "out" / "runs").rglob("mine/mined/mine_report.json"))
    assert json.loads(mined.read_text())["pool_source"] == [str(tmp_path / "corpus" / "passages.jsonl")]
    corpus = {json.loads(line)["text"] for line in (tmp_path / "corpus" / "passages.jsonl").read_text().splitlines()}
    negatives = [n for line in (mined.parent / "mined.jsonl").read_text().splitlines() for n in json.loads(line)["neg"]]
    assert negatives and set(negatives) <= corpus
    assert summary["data"]["records"] == 120 and summary["data"]["of"] > 120
    assert "gate ndcg@10>=0, rerank.ndcg@10>=retriever: FAILED" in out and "time per step (wall)" in out
    # Each step's time is the one its progress line showed while it ran.
    for step, seconds in summary["steps"].items():
        assert f"bgeflow run: {step} done in {int(seconds // 60)}m{seconds % 60:04.1f}s" in err, (step, err)


@pytest.mark.slow
def test_bgeflow_run_defaults_beat_the_base_within_ten_minutes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main command, as shipped: ≤ 10 minutes here and a better retriever than the base."""
    started = time.monotonic()
    code, out, err = run_cli(["--output", str(tmp_path / "out")], capsys)
    wall = time.monotonic() - started
    sys.stderr.write(out)
    assert code == 0, err[-3000:]
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    base, tuned = summary["metrics"]["base"], summary["metrics"]["finetuned"]
    assert tuned["ndcg@10"] > base["ndcg@10"], (base, tuned)
    assert summary["gate"]["models"]["retriever"]["passed"] is True and "retriever" in summary["published"]
    # The demo's reranker (MiniLM with a fresh head, a few steps) is published only if it reranks no worse.
    reranked, plain = tuned["rerank.ndcg@10"], summary["metrics"]["retriever"]["rerank.ndcg@10"]
    assert ("reranker" in summary["published"]) == (reranked >= plain - 1e-9), (reranked, plain)
    # The main command does not warn about its own settings (an eval set too small for its gate's margin).
    assert summary["warnings"] == [] and summary["eval_queries"] >= 100, summary["warnings"]
    assert wall <= 600, f"took {wall:.0f}s"


@pytest.mark.parametrize(("argv", "config", "expected"), [
    # (max_records, retriever max_steps, reranker max_steps, retriever epochs) after the user's settings
    ([], None, (700, 12, 8, None)),
    # The user's case: the README's config trained 12 steps (12 epochs of 8 records) for num_train_epochs 1.
    ([], {"retriever": {"hyperparameters": {"num_train_epochs": 1}}}, (700, None, 8, 1)),
    (["--set", "reranker.num_train_epochs=2"], None, (700, 12, None, None)),
    (["--set", "retriever.max_steps=30"], None, (700, 30, 8, None)),
    (["--data", "{data}"], None, (0, 12, 8, None)),  # the user's data whole
    (["--data", "{data}", "--max-records", "50"], None, (50, 12, 8, None)),
    ([], {"data": "{data}", "retriever": {"num_train_epochs": 2}}, (0, None, 8, 2)),
])
def test_the_demo_size_gives_way_to_the_users_own_data_and_epochs(
        tmp_path: Path, argv: list[str], config: dict[str, Any] | None,
        expected: tuple[int, int | None, int | None, int | None]) -> None:
    data = _records(tmp_path / "mine.jsonl", 40)
    argv = [a.replace("{data}", data) for a in argv]
    if config is not None:
        text = json.dumps(config).replace("{data}", data)
        (tmp_path / "run.yaml").write_text(text)
        argv += ["--config", str(tmp_path / "run.yaml")]
    spec = spec_of(*argv)
    retriever, reranker = spec.retriever.hyperparameters, spec.reranker.hyperparameters
    assert (spec.max_records, retriever.get("max_steps"), reranker.get("max_steps"),
            retriever.get("num_train_epochs")) == expected


def test_the_check_names_the_demo_limits_still_in_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--output", str(tmp_path / "out"), "--check", "--set", "retriever.num_train_epochs=1"],
                           capsys)
    assert code == 0, err
    assert ("bgeflow run: demo limits in force (the CPU profile): max_records 700, reranker.max_steps 8; your own "
            "data lifts max_records, a model's num_train_epochs (or max_steps) its max_steps") in err.splitlines()
    code, _, err = run_cli(["--output", str(tmp_path / "out"), "--check", "--data", _records(tmp_path / "d.jsonl", 40),
                            "--set", "retriever.num_train_epochs=1", "--set", "reranker.num_train_epochs=1"], capsys)
    assert code == 0 and "demo limits" not in err, err


def test_a_partial_block_keeps_the_runs_own_defaults() -> None:
    """The CPU profile's ``evaluate: {rerank_top_k: 5}`` must not drop the run's gate (the demo would then
    publish a reranker that ranks worse than the retriever), nor the mining filter or champion policy."""
    from bgeflow.steps.evaluation.spec import DEFAULT_GATE

    spec = spec_of()
    assert spec.evaluate.gate == DEFAULT_GATE and spec.evaluate.rerank_top_k == 5
    assert spec.pipeline_arguments()["evaluate"]["gate"] == DEFAULT_GATE
    assert spec.mine.max_score_ratio == 0.95 and spec.publish.champion == "if-gate-passed"
    assert spec_of("--set", "evaluate.gate=''").evaluate.gate == ""  # an explicit value still wins


# --------------------------------------------------------------------------- parameters reach the steps unchanged

#: A parameter a user gives ``bgeflow run``: a model inside a virtualenv's site-packages.
VENV_PATH = "/opt/venv/lib/python3.11/site-packages/some_pkg/model"


def test_the_launcher_rewrite_leaves_parameters_alone() -> None:
    """kfp.local's rewrite on the compiled mine component's own command, with such a path in its input."""
    from bgeflow.platform.local_run import launcher_python

    root = Path(__file__).resolve().parents[1]
    container = yaml.safe_load((root / "components" / "mine.yaml").read_text())["deploymentSpec"]["executors"][
        "exec-mine"]["container"]
    executor_input = json.dumps({"inputs": {"parameterValues": {"retriever": {"model": VENV_PATH}}}})
    command = [*container["command"], *[executor_input if a == "{{$}}" else a for a in container["args"]]]
    rewritten = launcher_python(command, "/x/bin/python")
    assert rewritten[rewritten.index("--executor_input") + 1] == executor_input
    assert rewritten[-1] == command[-1] and rewritten[-3] == command[-3]  # function name, user code
    launcher = next(e for e in rewritten if "kfp.dsl.executor_main" in e)
    assert "/x/bin/python -m kfp.dsl.executor_main" in launcher and "python3 -m" not in launcher


def test_a_parameter_containing_python3_reaches_the_step_unchanged(tmp_path: Path) -> None:
    """Through kfp.local's SubprocessRunner as ``bgeflow run`` drives it: the value comes back as given."""
    from kfp import dsl, local

    from bgeflow.platform.local_run import faithful_arguments

    def echo(value: str) -> str:
        return value

    echo.__annotations__ = {"value": str, "return": str}  # kfp reads types, not this module's postponed strings
    echo = dsl.component(echo, base_image="python:3.11", install_kfp_package=False)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    with faithful_arguments():
        task = echo(value=VENV_PATH)
    assert task.output == VENV_PATH
    second = "C:/Python311/python3.exe --flag python3"  # a second value of the kind: python3 as words
    with faithful_arguments():
        assert echo(value=second).output == second


@pytest.mark.parametrize(("argv", "expected"), [
    # The default <output>/registry and a given local registry: absolute, against the folder run ran in.
    (["--output", "demo-output"], "{cwd}/demo-output/registry"),
    (["--output", "demo-output", "--registry", "reg"], "{cwd}/reg"),
    (["--registry", "file://reg"], "file://{cwd}/reg"),
    (["--registry", "s3://bucket/reg"], "s3://bucket/reg"),
])
def test_the_runs_registry_is_absolute(argv: list[str], expected: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # It reached the run summary and the model card relative ("demo-output/registry/..."), while every
    # other path was absolute, and `bgeflow models download` from the card worked only from that folder.
    monkeypatch.chdir(tmp_path)
    assert spec_of(*argv).pipeline_arguments()["registry"] == expected.format(cwd=tmp_path)


def test_ctrl_c_says_what_a_rerun_does_and_where_the_run_is(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's case: Ctrl-C during `bgeflow run`, then a rerun silently started over from ingest."""
    import kfp.components

    def interrupted_pipeline(_text: str) -> object:
        def component(**_arguments: object) -> None:
            raise KeyboardInterrupt

        return component

    monkeypatch.setattr(kfp.components, "load_component_from_text", interrupted_pipeline)
    code, out, err = run_cli(["--data", _records(tmp_path / "toy.jsonl", 40), "--output", str(tmp_path / "out")],
                             capsys)
    root = next((tmp_path / "out" / "runs").iterdir())
    assert code == EXIT_INTERRUPTED and out == ""
    assert err.strip().splitlines()[-1] == (
        "bgeflow run: interrupted; a rerun starts a new run from ingest (kfp.local keeps no step cache); this run's "
        f"logs and finished steps' outputs: {root}")
