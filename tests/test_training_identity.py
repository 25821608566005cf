"""No silent wrong model: a run resumes only its own checkpoints, in its own scratch, alone on its output.

The run identity (data digest, base model, resolved settings, job shape) is stamped in every
checkpoint marker and checked on resume; the scratch is keyed by it and removed after success; a
lock keeps two jobs off one output; a rerun that fails leaves a good output's summary in place.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bgeflow.core.errors import EXIT_INTERRUPTED, BgeflowError, ConflictError, Interrupted, StepFailed
from bgeflow.core.storage import open_store
from bgeflow.steps.training import checkpoints, pod
from bgeflow.steps.training.spec import TrainSpec
from test_training_run import summary_of, write_data


def _spec(tmp_path: Path, data: Path, output: str, **kw: Any) -> TrainSpec:
    return TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=[str(data)], output=output,
                        work_dir=str(tmp_path / "work"), **kw)


def test_identity_follows_data_model_and_settings_not_the_pod(tmp_path: Path, minilm_path: str) -> None:
    from bgeflow.steps.training.distributed import Distributed

    spec = _spec(tmp_path, tmp_path / "d.jsonl", str(tmp_path / "out"))
    options = pod.resolved_options(spec)
    node0 = Distributed(nnodes=2, node_rank=0, nproc_per_node=1, master_addr="a", master_port=1)
    node1 = Distributed(nnodes=2, node_rank=1, nproc_per_node=1, master_addr="b", master_port=2)

    def identity(**change: Any) -> str:
        args = {"data_sha256": "d1", "model_path": minilm_path, "pooling": "cls", "dist": node0, **change}
        opts = change.pop("options", options)
        return pod.run_identity(spec, opts, **{k: v for k, v in args.items() if k != "options"})

    base = identity()
    assert identity(dist=node1) == base  # every pod of one job agrees
    assert identity(data_sha256="d2") != base
    assert identity(model_path=str(tmp_path)) != base
    assert identity(options={**options, "learning_rate": 1.0}) != base
    one_node = Distributed(nnodes=1, node_rank=0, nproc_per_node=1, master_addr="a", master_port=1)
    assert identity(dist=one_node) != base
    # Scratch: per identity and per output, never shared.
    assert pod.work_dir(spec, 0, base) != pod.work_dir(spec, 0, identity(data_sha256="d2"))
    other_output = spec.model_copy(update={"output": str(tmp_path / "out2")})
    assert pod.work_dir(spec, 0, base) != pod.work_dir(other_output, 0, base)


def _fake_checkpoint(root: Path, step: int) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"w" * step)
    return ckpt


def test_resume_refuses_checkpoints_of_another_run(tmp_path: Path) -> None:
    out = open_store(str(tmp_path / "out")).child(checkpoints.CHECKPOINTS_PREFIX)
    checkpoints.publish(_fake_checkpoint(tmp_path / "a", 2), 2, out, run="run-A")
    with pytest.raises(ConflictError, match=r"holds checkpoints of another run \(checkpoint-2: run run-A; this run "
                                            r"is run-B.*write to another output, or delete"):
        checkpoints.plan_resume(tmp_path / "node", out, use_local=True, run="run-B")
    assert checkpoints.plan_resume(tmp_path / "node", out, use_local=True, run="run-A").step == 2
    # Local leftovers of another run in this scratch are dropped, not resumed.
    local = tmp_path / "node2"
    checkpoints.mark_complete(_fake_checkpoint(local, 7), 7, run="run-A")
    plan = checkpoints.plan_resume(local, open_store(str(tmp_path / "empty")), use_local=True, run="run-B")
    assert plan.local_dir is None and not (local / "checkpoint-7").exists()
    # A marker without identity (an older bgeflow) is not trusted either.
    legacy = open_store(str(tmp_path / "legacy")).child(checkpoints.CHECKPOINTS_PREFIX)
    checkpoints.publish(_fake_checkpoint(tmp_path / "b", 3), 3, legacy)
    with pytest.raises(ConflictError, match="unknown"):
        checkpoints.plan_resume(tmp_path / "node3", legacy, use_local=True, run="run-B")


def _good_output(root: Path) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    (root / "train_summary.json").write_text(json.dumps({"global_step": 8}))
    return root


def test_a_failed_rerun_keeps_the_good_output_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _good_output(tmp_path / "out")
    data = write_data(tmp_path / "train.jsonl", 3)
    monkeypatch.setattr(pod, "_run_child", lambda cmd, env=None: 1)  # torchrun fails
    with pytest.raises(StepFailed, match="torchrun exited with 1"):
        pod.train(_spec(tmp_path, data, str(out), hyperparameters={"train_group_size": 2}))
    assert json.loads((out / "train_summary.json").read_text()) == {"global_step": 8}


def test_two_jobs_on_one_output_the_second_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_data(tmp_path / "train.jsonl", 3)
    output = str(tmp_path / "out")
    first_running, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def child(cmd: list[str], env: dict[str, str] | None = None) -> int:
        calls.append("run")
        if len(calls) == 1:  # the first job trains until told to stop
            first_running.set()
            release.wait(60)
        return 1

    monkeypatch.setattr(pod, "_run_child", child)
    spec = _spec(tmp_path, data, output, hyperparameters={"train_group_size": 2})
    errors: list[BaseException] = []

    def first() -> None:
        try:
            pod.train(spec)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert first_running.wait(60)
        with pytest.raises(ConflictError, match="being written by another run"):
            pod.train(_spec(tmp_path, write_data(tmp_path / "other.jsonl", 4), output,
                            hyperparameters={"train_group_size": 2}))
        assert calls == ["run"]  # the second never started training
    finally:
        release.set()
        thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], StepFailed)


def _torchrun_fails(after_checkpoint: bool):  # type: ignore[no-untyped-def]
    def child(cmd: list[str], env: dict[str, str] | None = None) -> int:
        if after_checkpoint:  # a complete checkpoint in the run's scratch, as the worker saves them
            run_dir = Path(json.loads(Path(cmd[cmd.index("--runner-args") + 1]).read_text())["output_dir"])
            checkpoints.mark_complete(_fake_checkpoint(run_dir, 2), 2, run=cmd[cmd.index("--run-identity") + 1])
        return 1
    return child


@pytest.mark.parametrize(("case", "error", "scratch_kept"), [
    ("missing data", "no such file", False),
    ("malformed line", "train.jsonl:2", False),
    ("group too large", "train_group_size 9 needs 8 negatives", False),
    ("batch too large", r"fill no batch of 64 × 1 processes .*lower per_device_train_batch_size \(in a bgeflow run "
                        r"spec: retriever.hyperparameters.per_device_train_batch_size\) to", False),
    ("checkpoints of another run", "holds checkpoints of another run", False),
    ("torchrun fails before a checkpoint", "torchrun exited with 1", False),
    ("torchrun fails after a checkpoint", "torchrun exited with 1", True),
])
def test_a_failed_or_refused_run_leaves_no_lock_no_empty_output_and_scratch_only_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, error: str, scratch_kept: bool) -> None:
    data = write_data(tmp_path / "train.jsonl", 3)
    hyper: dict[str, Any] = {"train_group_size": 2}
    out = tmp_path / "out"
    if case == "missing data":
        data = tmp_path / "nothing.jsonl"
    elif case == "malformed line":
        data.write_text(data.read_text().replace("\n", "\n{not json\n", 1))
    elif case == "group too large":
        hyper["train_group_size"] = 9
    elif case == "batch too large":
        hyper.update(per_device_train_batch_size=64, dataloader_drop_last=True)
    elif case == "checkpoints of another run":
        store = open_store(str(out)).child(checkpoints.CHECKPOINTS_PREFIX)
        checkpoints.publish(_fake_checkpoint(tmp_path / "a", 2), 2, store, run="another")
    monkeypatch.setattr(pod, "_run_child", _torchrun_fails("after a checkpoint" in case))
    with pytest.raises((BgeflowError, StepFailed), match=error):
        pod.train(_spec(tmp_path, data, str(out), hyperparameters=hyper))
    assert list(tmp_path.rglob(".bgeflow-lock.json")) == [], case
    if case == "checkpoints of another run":
        assert sorted(p.name for p in out.iterdir()) == [checkpoints.CHECKPOINTS_PREFIX]
    elif "torchrun" not in case:
        assert not out.exists(), list(out.rglob("*"))  # refused before writing: no output made for the lock
    left = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    if scratch_kept:  # what a rerun resumes from
        assert any("checkpoint-2" in p.parts for p in left), left
    else:
        assert left == [], left


@pytest.mark.slow
def test_same_output_string_from_two_folders_trains_two_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit's case: `--output out` from two folders with other data shared one scratch and the
    second run resumed the first's checkpoint, publishing a byte-identical model."""
    from bgeflow.cli import main

    work = tmp_path / "work"
    models = []
    for folder, negatives in (("a", 3), ("b", 2)):
        (tmp_path / folder).mkdir()
        monkeypatch.chdir(tmp_path / folder)
        data = write_data(tmp_path / folder / "train.jsonl", negatives)
        assert main(["train", "retriever", "--model", "bundled:minilm", "--train-data", str(data), "--output", "out",
                     "--per-device-train-batch-size", "4", "--max-steps", "2", "--save-steps", "2",
                     "--train-group-size", "3", "--query-max-len", "16", "--passage-max-len", "16",
                     "--work-dir", str(work)]) == 0
        summary = summary_of(str(tmp_path / folder / "out"))
        assert summary["resumed_from"] is None and summary["global_step"] == 2
        models.append((tmp_path / folder / "out" / "model" / "model.safetensors").read_bytes())
        assert not any(work.iterdir()), list(work.rglob("*"))[:5]  # scratch removed after success
    assert models[0] != models[1]


def test_a_rerun_of_a_finished_run_trains_nothing_and_keeps_its_record(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's case: the same `bgeflow train` twice resumed at the last step, trained nothing and
    wrote `train_loss 0.0, losses []` over the first run's summary."""
    data = write_data(tmp_path / "train.jsonl", 3)
    out = tmp_path / "out"
    spec = _spec(tmp_path, data, str(out), hyperparameters={"train_group_size": 2})
    seen: list[str] = []

    def learn_identity(cmd: list[str], env: dict[str, str] | None = None) -> int:
        seen.append(cmd[cmd.index("--run-identity") + 1])
        return 1

    monkeypatch.setattr(pod, "_run_child", learn_identity)
    with pytest.raises(StepFailed):
        pod.train(spec)
    # The finished first run's output, as _publish_outputs leaves it.
    record = {"run_identity": seen[0], "global_step": 3, "train_loss": 0.106, "losses": [{"step": 1, "loss": 0.2}],
              "train_runtime_s": 4.2, "resumed_from": None, "world_size": 1, "model_uri": str(out / "model")}
    (out / "model").mkdir(parents=True)
    (out / "model" / "model.safetensors").write_bytes(b"weights")
    (out / "train_summary.json").write_text(json.dumps(record))

    def never(cmd: list[str], env: dict[str, str] | None = None) -> int:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(pod, "_run_child", never)
    result = pod.train(spec)
    assert result.already_complete and result.train_loss == 0.106 and result.global_step == 3
    assert result.loss_history == [{"step": 1, "loss": 0.2}]
    assert json.loads((out / "train_summary.json").read_text()) == record
    assert (out / "model" / "model.safetensors").read_bytes() == b"weights"
    assert [p for p in (tmp_path / "work").rglob("*") if p.is_file()] == []  # no scratch left behind
    # Another run (other settings) into that output is not "complete": it goes on to train.
    monkeypatch.setattr(pod, "_run_child", learn_identity)
    with pytest.raises(StepFailed):
        pod.train(_spec(tmp_path, data, str(out), hyperparameters={"train_group_size": 2, "learning_rate": 1e-3}))
    assert seen[-1] != seen[0]


def _fake_torchrun(ready: Path, on_signal_exit: int) -> list[str]:
    """A child that behaves as torchrun on SIGINT/SIGTERM: it stops with ``on_signal_exit``."""
    script = ("import pathlib, signal, sys, time\n"
              f"signal.signal(signal.SIGINT, lambda *a: sys.exit({on_signal_exit}))\n"
              f"signal.signal(signal.SIGTERM, lambda *a: sys.exit({on_signal_exit}))\n"
              f"pathlib.Path({str(ready)!r}).write_text('up')\n"
              "time.sleep(60)\n")
    return [sys.executable, "-c", script]


def _signal_self_when(ready: Path, signum: int) -> threading.Thread:
    def send() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signum)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_bgeflow_is_an_interruption_not_a_failure_of_the_child(tmp_path: Path, signum: int) -> None:
    ready = tmp_path / "ready"
    sender = _signal_self_when(ready, signum)
    with pytest.raises(Interrupted, match=f"training stopped by {signal.Signals(signum).name}"):
        pod._run_child(_fake_torchrun(ready, 1))
    sender.join(10)
    # Without a signal to bgeflow, the child's status is its own: a failure stays one.
    assert pod._run_child([sys.executable, "-c", "raise SystemExit(3)"]) == 3
    # A child that finished anyway as the signal came: its result stands.
    ready.unlink()
    sender = _signal_self_when(ready, signum)
    assert pod._run_child(_fake_torchrun(ready, 0)) == 0
    sender.join(10)


def test_ctrl_c_during_train_says_interrupted_once_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: Ctrl-C ended with `bgeflow train: failed: ... torchrun exited with 1`, exit 1."""
    from bgeflow.cli import main

    data = write_data(tmp_path / "train.jsonl", 3)
    ready = tmp_path / "ready"
    monkeypatch.setattr(pod, "torchrun_command", lambda dist, module, args: _fake_torchrun(ready, 1))
    sender = _signal_self_when(ready, signal.SIGINT)
    code = main(["train", "retriever", "--model", "bundled:minilm", "--train-data", str(data),
                 "--output", str(tmp_path / "out"), "--train-group-size", "2", "--work-dir", str(tmp_path / "work")])
    sender.join(10)
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == EXIT_INTERRUPTED
    assert last.startswith("bgeflow train: interrupted; training stopped by SIGINT; rerun the same command to resume "
                           "from the newest complete checkpoint in "), err
    assert "failed" not in err
    assert list(tmp_path.rglob(".bgeflow-lock.json")) == []  # the output is free for the rerun


def test_ctrl_c_during_local_pods_says_how_to_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: Ctrl-C on `bgeflow train --local-nodes 2` said only `interrupted`, not what a rerun does
    (the pods run in their own sessions, so the interruption reaches bgeflow as a KeyboardInterrupt)."""
    from bgeflow.cli import main

    def interrupted(*_args: object, **_kw: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(pod, "run_local_pods", interrupted)
    data = write_data(tmp_path / "train.jsonl", 3)
    code = main(["train", "retriever", "--model", "bundled:minilm", "--train-data", str(data), "--local-nodes", "2",
                 "--output", str(tmp_path / "out"), "--train-group-size", "2", "--work-dir", str(tmp_path / "work")])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == EXIT_INTERRUPTED
    assert last == ("bgeflow train: interrupted; training stopped by SIGINT; rerun the same command to resume from "
                    f"the newest complete checkpoint in {tmp_path / 'out' / 'checkpoints'}"), last


def test_the_refusal_of_another_runs_checkpoints_names_what_differs(tmp_path: Path) -> None:
    """The user's case: `--max_steps 5` into an output of a `--max_steps 3` run was refused naming no setting."""
    out = open_store(str(tmp_path / "out")).child(checkpoints.CHECKPOINTS_PREFIX)
    theirs = {"kind": "retriever", "data_sha256": "aaa", "base_model": {"ref": "/m", "files": {"w": 1}},
              "options": {"max_steps": 3, "learning_rate": 1e-05, "fp16": False}, "nnodes": 1}
    checkpoints.publish(_fake_checkpoint(tmp_path / "a", 3), 3, out, run="run-A", inputs=theirs)
    ours = {**theirs, "options": {**theirs["options"], "max_steps": 5}}
    with pytest.raises(ConflictError, match=r"this run is run-B: they differ in max_steps 3 → 5\)\. Resuming"):
        checkpoints.plan_resume(tmp_path / "node", out, use_local=True, run="run-B", inputs=ours)
    # The data and the model's files by what they are, every difference once; the options first.
    ours = {**theirs, "data_sha256": "bbb", "base_model": {"ref": "/m", "files": {"w": 2, "x": 1}}, "nnodes": 2,
            "options": {**theirs["options"], "learning_rate": 2e-05}}
    with pytest.raises(ConflictError, match=r"they differ in learning_rate 1e-05 → 2e-05, base model files, "
                                            r"training data, nnodes 1 → 2\)"):
        checkpoints.plan_resume(tmp_path / "node", out, use_local=True, run="run-B", inputs=ours)
    # A marker of a bgeflow that kept only the hash: the groups it covers, and that it does not say which.
    legacy = open_store(str(tmp_path / "legacy")).child(checkpoints.CHECKPOINTS_PREFIX)
    checkpoints.publish(_fake_checkpoint(tmp_path / "b", 3), 3, legacy, run="run-A")
    with pytest.raises(ConflictError, match=r"other data, base model or settings \(its checkpoints do not record"):
        checkpoints.plan_resume(tmp_path / "node2", legacy, use_local=True, run="run-B", inputs=ours)


def test_a_run_with_other_max_steps_is_told_max_steps_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = write_data(tmp_path / "train.jsonl", 3)
    out = tmp_path / "out"
    # The first run's worker stamps its checkpoint with what the pod handed it, as worker._callback does.
    def first_run(cmd: list[str], env: dict[str, str] | None = None) -> int:
        inputs = json.loads(Path(cmd[cmd.index("--run-inputs") + 1]).read_text())
        checkpoints.publish(_fake_checkpoint(tmp_path / "a", 3), 3, open_store(str(out)).child("checkpoints"),
                            run=cmd[cmd.index("--run-identity") + 1], inputs=inputs)
        return 1

    monkeypatch.setattr(pod, "_run_child", first_run)
    with pytest.raises(StepFailed):
        pod.train(_spec(tmp_path, data, str(out), hyperparameters={"train_group_size": 2, "max_steps": 3}))
    with pytest.raises(ConflictError, match=r"they differ in max_steps 3 → 5\)"):
        pod.train(_spec(tmp_path, data, str(out), hyperparameters={"train_group_size": 2, "max_steps": 5}))


@pytest.mark.parametrize(("start_step", "train_loss"), [(0, 4.0), (2, 8.0), (4, None)])
def test_a_resumed_runs_summary_has_the_loss_of_the_steps_it_trained_and_every_logged_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_step: int, train_loss: float | None) -> None:
    """After a resume from step 2 of 4 transformers reports half the loss (the loss of steps 3-4 over
    all 4 steps), and 0.0 after a resume at the last step; the summary said so as the run's loss."""
    data = write_data(tmp_path / "train.jsonl", 3)
    logged = [{"step": step, "loss": 9.0} for step in (1, 2, 3, 4)]  # restored from the checkpoint, then new
    reported = 8.0 * (4 - start_step) / 4 if start_step else 4.0  # what transformers' Trainer computes

    def worker(cmd: list[str], env: dict[str, str] | None = None) -> int:
        run_dir = Path(json.loads(Path(cmd[cmd.index("--runner-args") + 1]).read_text())["output_dir"])
        (run_dir / "bgeflow-history.json").write_text(json.dumps({
            "global_step": 4, "start_step": start_step,
            "log_history": [*logged, {"step": 4, "train_loss": reported, "train_runtime": 1.0}]}))
        return 0

    published: list[dict[str, Any]] = []
    monkeypatch.setattr(pod, "_run_child", worker)
    monkeypatch.setattr(pod, "_publish_outputs", lambda *args: published.append(args[-2]))
    result = pod.train(_spec(tmp_path, data, str(tmp_path / "out"), hyperparameters={"train_group_size": 2}))
    assert published[0]["train_loss"] == result.train_loss == train_loss
    assert published[0]["losses"] == logged


def test_a_run_from_step_0_replaces_the_outputs_logs(tmp_path: Path) -> None:
    """The user's case: after deleting checkpoints/ to start an output over (as the refusal advises), the new
    run's TensorBoard events landed beside the old run's in <output>/logs, drawn as one series."""
    pytest.importorskip("tensorboard")
    from bgeflow.cli import main

    data = write_data(tmp_path / "train.jsonl", 3)
    out = tmp_path / "out"

    def train(learning_rate: str) -> list[str]:
        assert main(["train", "retriever", "--model", "bundled:minilm", "--train-data", str(data), "--output", str(out),
                     "--per-device-train-batch-size", "4", "--max-steps", "2", "--save-steps", "2",
                     "--train-group-size", "3", "--query-max-len", "16", "--passage-max-len", "16",
                     "--learning-rate", learning_rate, "--work-dir", str(tmp_path / "work")]) == 0
        return sorted(str(p.relative_to(out)) for p in (out / "logs").rglob("*") if p.is_file())

    first = train("5e-5")
    assert first and all("tfevents" in name for name in first)
    shutil.rmtree(out / "checkpoints")  # what the refusal of another run's checkpoints tells the user to do
    second = train("1e-4")
    assert second and not set(first) & set(second), (first, second)
    assert summary_of(str(out))["resumed_from"] is None
