"""The training launcher: run ``bgeflow train`` as a Kubeflow PyTorchJob, or as local processes.

- ``spec``: ``LaunchSpec`` (what to run) and ``PodSettings`` (Kubernetes-only, compile-time);
- ``pytorchjob``: the PyTorchJob built from the kubeflow-training SDK models;
- ``backends``/``k8s``: the ``JobBackend`` interface, the local and the Kubernetes backends;
- ``launch``: submit-or-adopt, wait, delete on SIGTERM.

The kubernetes and kubeflow-training packages are imported only where a job is built or sent,
so the local path needs neither.
"""

from bgeflow.platform.launcher.backends import JobBackend, LocalBackend
from bgeflow.platform.launcher.spec import (
    POD_SETTINGS_ENV,
    ElasticSettings,
    GangSettings,
    LaunchSpec,
    PodSettings,
    job_name,
)
from bgeflow.platform.launcher.submit import LaunchResult, launch, make_backend

__all__ = [
    "POD_SETTINGS_ENV",
    "ElasticSettings",
    "GangSettings",
    "JobBackend",
    "LaunchResult",
    "LaunchSpec",
    "LocalBackend",
    "PodSettings",
    "job_name",
    "launch",
    "make_backend",
]
