"""Launch a ``TrainSpec`` as a job: what the pipeline's train-launcher step and ``bgeflow launch`` run.

The spec is validated before anything is submitted, then written to ``<output>/train_spec.yaml``;
every pod of the job runs ``bgeflow train --config <that URI>`` with the job's shape left to the
pod's environment (the operator's PET_* variables, or the local backend's copy of them). One
document, read by all pods: no setting travels as a command-line string.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import ConfigError, StepFailed
from bgeflow.core.storage import join_uri, open_store, redact
from bgeflow.platform.launcher.spec import LaunchSpec, PodSettings, job_name
from bgeflow.platform.launcher.submit import CLUSTER_BACKENDS, LaunchResult, launch, make_backend
from bgeflow.steps.training.pod import MODEL_DIR, SPEC_FILE, SUMMARY_FILE, pod_command, write_spec
from bgeflow.steps.training.spec import TrainSpec

log = logging.getLogger(__name__)

#: Variables of the launcher's own environment the training pods need too (no credentials:
#: those reach the pods as Secret references, see ``PodSettings.s3_secret``).
PASS_THROUGH_ENV = (
    "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION", "HF_ENDPOINT", "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE", "BGEFLOW_LOG_FORMAT", "BGEFLOW_LOG_LEVEL", "BGEFLOW_S3_MAX_WORKERS",
)


@dataclass
class TrainLaunch:
    output_uri: str
    model_uri: str
    summary: dict[str, Any]
    launch: LaunchResult


def build_launch_spec(spec: TrainSpec, *, owner: str, nnodes: int, nproc_per_node: int, pod: PodSettings,
                      namespace: str, environ: Mapping[str, str] | None = None) -> LaunchSpec:
    """The job that runs ``spec`` (its pods read ``<output>/train_spec.yaml``, see ``write_spec``).

    Raises:
        ConfigError: the spec fixes a pod's place in the job (the job's shape is the launcher's),
            or the pod settings ask for an elastic job.
    """
    placed = {name: value for name, value in spec.distributed.to_dict().items() if value is not None}
    if placed:
        raise ConfigError(f"train {spec.kind}: distributed {sorted(placed)} are set by the launcher "
                          "(nnodes, nproc_per_node of the job), not by the training spec")
    if pod.elastic is not None:
        raise ConfigError("bgeflow train needs a fixed node count; drop the elastic pod setting")
    return LaunchSpec(
        name=job_name(owner, prefix=f"bgeflow-{spec.kind}"),
        command=pod_command(join_uri(spec.output, SPEC_FILE)),
        owner=owner, namespace=namespace, nnodes=nnodes, nproc_per_node=nproc_per_node,
        env=pass_through_env(environ if environ is not None else os.environ), pod=pod,
    )


def pass_through_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``PASS_THROUGH_ENV`` variables set in ``environ``, as the job's pods get them in plain text.

    Raises:
        ConfigError: one holds credentials (an endpoint ``http://user:pass@host``). Copied, they would
            sit readable in the PyTorchJob object; credentials reach pods only through the Secret named
            by ``PodSettings.s3_secret``.
    """
    env = {name: environ[name] for name in PASS_THROUGH_ENV if environ.get(name)}
    for name, value in env.items():
        if redact(value) != value:
            raise ConfigError(f"{name}={redact(value)} holds credentials, which would be copied into the training "
                              "job's pod spec in plain text: drop them from the URL and give them to the pods "
                              "through a Secret (pod setting s3_secret)")
    return env


def launch_training(
    spec: TrainSpec, *, backend: str = "pytorchjob", run_id: str, task_name: str, nnodes: int = 1,
    nproc_per_node: int = 1, timeout: float | None = None, pod: PodSettings | None = None,
    log_sink: Callable[[str], None] | None = None,
) -> TrainLaunch:
    """Write the spec, launch the job, wait for it; the trained model is at ``<output>/model``.

    Raises:
        ConfigError: a local output for pods on a cluster, or a spec the launcher cannot run.
        StepFailed: the job failed, was cancelled or wrote no model.
    """
    pod = pod if pod is not None else PodSettings.from_env()
    namespace = pod.namespace
    if not namespace:
        from bgeflow.platform.launcher.k8s import current_namespace

        namespace = current_namespace()
    if backend in CLUSTER_BACKENDS and "://" not in spec.output:
        raise ConfigError(f"train {spec.kind}: output {spec.output!r} is a local path, which training pods cannot "
                          "write to; give the pipeline a work_uri (s3://bucket/prefix)")
    launch_spec = build_launch_spec(spec, owner=f"{run_id}/{task_name}", nnodes=nnodes,
                                    nproc_per_node=nproc_per_node, pod=pod, namespace=namespace)
    write_spec(spec)
    log.info("launching %s on %s: %s", launch_spec.ref, backend, " ".join(launch_spec.command))
    kwargs = {"log_sink": log_sink} if backend in CLUSTER_BACKENDS else {}
    result = launch(launch_spec, make_backend(backend, **kwargs), timeout=timeout)
    store = open_store(spec.output)
    summary = json.loads(store.read_text(SUMMARY_FILE)) if store.exists(SUMMARY_FILE) else {}
    if not store.child(MODEL_DIR).list():
        raise StepFailed(f"training job {launch_spec.ref} succeeded but wrote no model under "
                         f"{join_uri(spec.output, MODEL_DIR)}")
    return TrainLaunch(spec.output, join_uri(spec.output, MODEL_DIR), summary, result)
