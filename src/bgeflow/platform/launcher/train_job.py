"""Launch ``bgeflow train <kind>`` as a job: what the pipeline's train-launcher step runs.

The training config is built and validated here, before anything is submitted; the pod command
is exactly ``["bgeflow", "train", kind, *config.to_cli_args()]`` with the distributed shape left
to the pod's environment (the operator's PET_* variables, or the local backend's copy of them).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bgeflow.core.storage import join_uri, open_store
from bgeflow.platform.launcher.spec import LaunchSpec, PodSettings, job_name
from bgeflow.platform.launcher.submit import LaunchResult, launch, make_backend

log = logging.getLogger(__name__)

#: Variables of the launcher's own environment the training pods need too (no credentials:
#: those reach the pods as Secret references, see ``PodSettings.s3_secret``).
PASS_THROUGH_ENV = (
    "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "HF_ENDPOINT", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "BGEFLOW_LOG_FORMAT", "BGEFLOW_LOG_LEVEL", "BGEFLOW_S3_MAX_WORKERS",
)
SUMMARY_FILE = "train_summary.json"
MODEL_DIR = "model"


@dataclass
class TrainLaunch:
    output_uri: str
    model_uri: str
    summary: dict[str, Any]
    launch: LaunchResult


def _integral_ints(options: dict[str, Any]) -> dict[str, Any]:
    """KFP carries a dict parameter as a protobuf Struct, whose numbers are all floats: give the
    integer fields of TrainConfig their ints back (``8.0`` → ``8``), so flags read ``--… 8``."""
    import typing

    from bgeflow.steps.training.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for key, value in options.items():
        name = str(key).replace("-", "_")
        allowed = typing.get_args(hints.get(name)) or (hints.get(name),)
        if isinstance(value, float) and value.is_integer() and int in allowed and float not in allowed:
            value = int(value)
        out[key] = value
    return out


def build_train_spec(
    *, kind: str, model: str, train_data: str, output: str, hyperparameters: Mapping[str, Any],
    owner: str, nnodes: int, nproc_per_node: int, pod: PodSettings, namespace: str,
    environ: Mapping[str, str] | None = None,
) -> LaunchSpec:
    """The job that trains ``kind`` from ``model`` on ``train_data`` into ``output``."""
    from bgeflow.steps.training.config import TrainConfig

    overrides = dict(hyperparameters)
    clash = {"kind", "model", "train_data", "output", "nnodes", "node_rank", "nproc_per_node", "master_addr",
             "master_port", "local_nodes"} & set(overrides)
    if clash:
        raise ValueError(f"train {kind}: {sorted(clash)} are set by the launcher, not by hyperparameters")
    config = TrainConfig.from_yaml(_integral_ints(overrides), kind=kind, model=model, train_data=train_data,
                                   output=output)
    if pod.elastic is not None:
        raise ValueError("bgeflow train needs a fixed node count; drop the elastic pod setting")
    env = environ if environ is not None else os.environ
    return LaunchSpec(
        name=job_name(owner, prefix=f"bgeflow-{kind}"),
        command=["bgeflow", "train", kind, *config.to_cli_args()],
        owner=owner, namespace=namespace, nnodes=nnodes, nproc_per_node=nproc_per_node,
        env={k: env[k] for k in PASS_THROUGH_ENV if env.get(k)}, pod=pod,
    )


def launch_training(
    *, kind: str, model: str, train_data: str, output: str, hyperparameters: Mapping[str, Any] | None = None,
    backend: str = "kubernetes", run_id: str, task_name: str, nnodes: int = 1, nproc_per_node: int = 1,
    timeout: float | None = None, pod: PodSettings | None = None, log_sink: Callable[[str], None] = print,
) -> TrainLaunch:
    """Build, launch and wait for one training job; the trained model is at ``<output>/model``."""
    pod = pod if pod is not None else PodSettings.from_env()
    namespace = pod.namespace
    if not namespace:
        from bgeflow.platform.launcher.k8s import current_namespace

        namespace = current_namespace()
    if backend == "kubernetes" and "://" not in output:
        raise ValueError(f"train {kind}: output {output!r} is a local path, which training pods cannot write to; "
                         "give the pipeline a work_uri (s3://bucket/prefix)")
    spec = build_train_spec(
        kind=kind, model=model, train_data=train_data, output=output, hyperparameters=hyperparameters or {},
        owner=f"{run_id}/{task_name}", nnodes=nnodes, nproc_per_node=nproc_per_node, pod=pod, namespace=namespace,
    )
    log.info("launching %s on %s: %s", spec.ref, backend, " ".join(spec.command))
    kwargs = {"log_sink": log_sink} if backend == "kubernetes" else {}
    result = launch(spec, make_backend(backend, **kwargs), timeout=timeout)
    store = open_store(output)
    summary = json.loads(store.read_text(SUMMARY_FILE)) if store.exists(SUMMARY_FILE) else {}
    if not store.child(MODEL_DIR).list():
        raise RuntimeError(f"training job {spec.ref} succeeded but wrote no model under {join_uri(output, MODEL_DIR)}")
    return TrainLaunch(output, join_uri(output, MODEL_DIR), summary, result)
