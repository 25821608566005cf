"""Run one ``LaunchSpec`` on a backend: submit (or adopt), wait, and clean up when cancelled.

KFP terminates a run by sending SIGTERM to the task's pod; the launcher turns that into a
``LaunchCancelled`` in the main thread, deletes the job it launched and exits non-zero, so a
terminated run leaves no training pods behind.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from bgeflow.core.errors import ConfigError, StepFailed
from bgeflow.platform.launcher.backends import JobBackend
from bgeflow.platform.launcher.spec import LaunchSpec

log = logging.getLogger(__name__)


class LaunchCancelled(BaseException):
    """The process was asked to stop (SIGTERM) while a job ran."""


@dataclass
class LaunchResult:
    name: str
    namespace: str
    backend: str
    adopted: bool
    seconds: float


@contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        raise LaunchCancelled(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def launch(spec: LaunchSpec, backend: JobBackend, *, timeout: float | None = None) -> LaunchResult:
    """Submit ``spec`` (adopting a job an earlier attempt created) and wait for it to succeed.

    Raises RuntimeError when the job fails or is cancelled, TimeoutError after ``timeout``
    seconds; both name the job as namespace/name.
    """
    started = time.monotonic()
    adopted = False
    try:
        with _sigterm_raises():
            adopted = backend.submit(spec)
            backend.wait(spec, timeout)
    except (LaunchCancelled, KeyboardInterrupt) as exc:
        log.warning("launch of %s cancelled (%s); deleting the job", spec.ref, exc or type(exc).__name__)
        backend.cancel(spec)
        raise StepFailed(f"training job {spec.ref} cancelled; the job was deleted") from exc
    return LaunchResult(spec.name, spec.namespace, backend.name, adopted, time.monotonic() - started)


#: Where a training job runs: the one declaration of the backends ``make_backend`` knows (the run spec's
#: ``training.backend``, ``bgeflow launch --backend``, the chart's schema); "kubernetes" is the PyTorchJob's
#: older name.
LauncherBackend = Literal["pytorchjob", "trainjob", "auto", "local", "container", "kubernetes"]
BACKENDS: tuple[str, ...] = get_args(LauncherBackend)
#: The backends that run the job on this machine: processes (``local``) or Docker containers (``container``).
LOCAL_BACKENDS = frozenset({"local", "container"})
CLUSTER_BACKENDS = frozenset(BACKENDS) - LOCAL_BACKENDS


def make_backend(name: str, **kwargs: Any) -> JobBackend:
    """``pytorchjob`` (Training Operator), ``trainjob`` (Kubeflow Trainer v2), ``auto`` (whichever the
    cluster serves) through the API server; ``local`` (processes here) or ``container`` (Docker
    containers here, through the Kubeflow SDK's container backend).

    Raises:
        ConfigError: an unknown name, or ``auto`` on a cluster that serves neither kind.
    """
    if name in CLUSTER_BACKENDS:
        from bgeflow.platform.launcher.k8s import JOB_KINDS, KubernetesBackend

        kind = None if name == "auto" else JOB_KINDS["pytorchjob" if name == "kubernetes" else name]
        return KubernetesBackend.from_environment(kind, **kwargs)
    if name == "local":
        from bgeflow.platform.launcher.backends import LocalBackend

        return LocalBackend(**kwargs)
    if name == "container":
        from bgeflow.platform.launcher.container import ContainerBackend

        return ContainerBackend(**kwargs)
    raise ConfigError(f"unknown launcher backend {name!r}; use one of {', '.join(BACKENDS)}")
