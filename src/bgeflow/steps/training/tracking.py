"""Experiment tracking: which transformers integrations a run reports to, and where its events go.

``report_to`` is transformers' own ``TrainingArguments`` option and passes through as the user set
it (``--report_to mlflow``, ``hyperparameters: {report_to: [tensorboard, wandb]}``). Unset, a run
reports to every tracker that is both installed and configured here:

- TensorBoard, whenever ``tensorboard`` (or ``tensorboardX``) is installed: its event files are
  written to the node's scratch and uploaded with the model to ``<output>/logs/``
  (``tensorboard --logdir <output>/logs``; TensorBoard reads ``s3://`` too);
- MLflow, when ``mlflow`` is installed and ``MLFLOW_TRACKING_URI`` is set (transformers'
  ``MLflowCallback`` reads the ``MLFLOW_*`` variables);
- Weights & Biases, when ``wandb`` is installed and ``WANDB_API_KEY`` or ``WANDB_MODE`` is set.

Only rank 0 writes (transformers' callbacks report from the main process).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import ConfigError

log = logging.getLogger(__name__)

#: ``<output>/logs/``: the run's TensorBoard event files.
EVENTS_PREFIX = "logs"


@dataclass(frozen=True)
class Tracker:
    """A transformers reporting integration: the packages that provide it and the env that configures it."""

    name: str
    packages: tuple[str, ...]  # any one of them
    env: tuple[str, ...] = ()  # any one of them set turns it on by default; empty: on when installed


TRACKERS = (
    Tracker("tensorboard", ("tensorboard", "tensorboardX")),
    Tracker("mlflow", ("mlflow",), ("MLFLOW_TRACKING_URI",)),
    Tracker("wandb", ("wandb",), ("WANDB_API_KEY", "WANDB_MODE")),
)


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def default_report_to(env: Mapping[str, str] | None = None,
                      installed: Callable[[str], bool] = _installed) -> list[str]:
    """The trackers a run reports to when ``report_to`` is not set: installed and configured (module doc)."""
    env = os.environ if env is None else env
    chosen = [t.name for t in TRACKERS
              if any(installed(p) for p in t.packages) and (not t.env or any(env.get(k) for k in t.env))]
    if "tensorboard" not in chosen:
        log.info("no TensorBoard event files: the tensorboard package is not installed here")
    return chosen or ["none"]


def requested(value: Any) -> list[str]:
    """``report_to`` as a list of names (transformers takes one name, a comma list or a list)."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


def check_report_to(value: Any, installed: Callable[[str], bool] = _installed) -> None:
    """Refuse a tracker asked for by name whose package is missing, before any process starts.

    Raises:
        ConfigError: naming the tracker and the package to install.
    """
    known = {t.name: t for t in TRACKERS}
    for name in requested(value):
        tracker = known.get(name)
        if tracker is not None and not any(installed(p) for p in tracker.packages):
            raise ConfigError(f"report_to {name}: the {tracker.packages[0]} package is not installed in this "
                              f"image (pip install {tracker.packages[0]}), or drop {name} from report_to")


def runner_settings(options: Mapping[str, Any], events_dir: str) -> dict[str, Any]:
    """``report_to`` (the user's, else the default) and, for TensorBoard, ``logging_dir`` = ``events_dir``."""
    report = options.get("report_to")
    chosen = requested(report) if report is not None else default_report_to()
    settings: dict[str, Any] = {"report_to": chosen}
    if ("tensorboard" in chosen or "all" in chosen) and not options.get("logging_dir"):
        settings["logging_dir"] = events_dir
    return settings
