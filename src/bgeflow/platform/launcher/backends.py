"""Where a ``LaunchSpec`` runs: the interface, and the local backend.

``LocalBackend`` runs the exact pod command as ``nnodes × nproc_per_node`` local processes via
``bgeflow.steps.training.local.run_local_pods``, with the environment the training operator would
inject, so ``bgeflow run`` exercises the same launch path the cluster does.
"""

from __future__ import annotations

import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from bgeflow.core.errors import StepFailed
from bgeflow.platform.launcher.spec import LaunchSpec


def log_to_stderr(line: str) -> None:
    """Where a backend's job log goes by default: stderr, so a verb's stdout stays its one JSON result
    (``bgeflow launch ... | jq`` works; local pods' output goes to stderr for the same reason)."""
    print(line, file=sys.stderr, flush=True)


class JobBackend(ABC):
    """Submits, waits for and cancels one training job."""

    name: str

    @abstractmethod
    def submit(self, spec: LaunchSpec) -> bool:
        """Start the job, or adopt the one an earlier attempt started; True when adopted."""

    @abstractmethod
    def wait(self, spec: LaunchSpec, timeout: float | None) -> None:
        """Block until the job succeeds; raise StepFailed (failed) or TimeoutError."""

    @abstractmethod
    def cancel(self, spec: LaunchSpec) -> None:
        """Stop the job and release what it holds; a job that is already gone is fine."""


class LocalBackend(JobBackend):
    """Runs the pod command as local processes ("pods"), blocking in ``wait``."""

    name = "local"

    def __init__(self, run_pods: Callable[..., int] | None = None) -> None:
        self._run_pods = run_pods

    def submit(self, spec: LaunchSpec) -> bool:
        return False  # nothing outlives this process, so there is never a job to adopt

    def wait(self, spec: LaunchSpec, timeout: float | None) -> None:
        run_pods = self._run_pods
        if run_pods is None:
            from bgeflow.steps.training.local import run_local_pods as run_pods
        env = dict(spec.env)
        # The pod command starts with the ``bgeflow`` console script, as in the image; put this
        # interpreter's scripts first on PATH so a non-activated virtualenv resolves it too.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        code = run_pods(
            list(spec.command), nnodes=spec.nnodes, nproc_per_node=spec.nproc_per_node, env=env, timeout=timeout
        )
        if code != 0:
            raise StepFailed(f"local training job {spec.ref} failed: a pod exited with code {code}")

    def cancel(self, spec: LaunchSpec) -> None:
        # run_local_pods owns its child processes and stops them when interrupted.
        return None
