"""Experiment tracking: report_to passes through; unset, installed and configured trackers are used."""

from __future__ import annotations

import importlib.util

import pytest

from bgeflow.core.errors import ConfigError
from bgeflow.steps.training import tracking


def _only(*packages: str):  # type: ignore[no-untyped-def]
    return lambda package: package in packages


def test_default_is_every_installed_and_configured_tracker() -> None:
    assert tracking.default_report_to({}, _only("tensorboard")) == ["tensorboard"]
    assert tracking.default_report_to({}, _only("tensorboardX")) == ["tensorboard"]
    assert tracking.default_report_to({}, _only("mlflow")) == ["none"]  # installed, but no tracking URI
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "WANDB_MODE": "offline"}
    assert tracking.default_report_to(env, _only("tensorboard", "mlflow", "wandb")) == ["tensorboard", "mlflow",
                                                                                        "wandb"]
    assert tracking.default_report_to(env, _only()) == ["none"]  # configured, but not installed


def test_a_users_report_to_passes_through_and_tensorboard_gets_the_events_dir() -> None:
    assert tracking.runner_settings({"report_to": "none"}, "/s/events") == {"report_to": ["none"]}
    assert tracking.runner_settings({"report_to": "mlflow,tensorboard"}, "/s/events") == {
        "report_to": ["mlflow", "tensorboard"], "logging_dir": "/s/events"}
    assert tracking.runner_settings({"report_to": ["tensorboard"], "logging_dir": "/mine"}, "/s/events") == {
        "report_to": ["tensorboard"]}  # the user's logging_dir stays


def test_a_tracker_asked_for_must_be_installed() -> None:
    tracking.check_report_to(["tensorboard", "none", "all"], _only("tensorboardX"))
    tracking.check_report_to(None, _only())
    with pytest.raises(ConfigError, match=r"report_to wandb: the wandb package is not installed.*pip install wandb"):
        tracking.check_report_to("tensorboard,wandb", _only("tensorboard"))


def test_the_runner_gets_the_trackers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from bgeflow.steps.training.distributed import Distributed
    from bgeflow.steps.training.pod import runner_arguments
    from bgeflow.steps.training.spec import TrainSpec

    spec = TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=["x"], output=str(tmp_path / "o"))
    dist = Distributed(nnodes=1, node_rank=0, nproc_per_node=1, master_addr="127.0.0.1", master_port=1)
    common = {"model_path": "m", "data": tmp_path / "d.jsonl", "run_dir": tmp_path / "w" / "run", "use_cpu": True,
              "dist": dist, "pooling": "cls", "resume": None, "deepspeed": None}
    args = runner_arguments(spec, {"report_to": "none"}, **common)
    assert args["report_to"] == ["none"] and "logging_dir" not in args
    args = runner_arguments(spec, {}, **common)
    has_tensorboard = any(importlib.util.find_spec(p) for p in ("tensorboard", "tensorboardX"))
    assert ("tensorboard" in args["report_to"]) is has_tensorboard
    if has_tensorboard:
        assert args["logging_dir"] == str(tmp_path / "w" / "events")
