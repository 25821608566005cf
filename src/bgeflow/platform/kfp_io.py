"""How KFP component bodies find their inputs and place their outputs (no kfp import here).

One scheme for both runners:

- every output artifact carries ``metadata["uri"]``: where the step really wrote its data;
- with a work prefix (``work_uri``, e.g. ``s3://bucket/bgeflow``) a step writes under
  ``<work_uri>/<run id>/<step>/``: data that training pods, other steps and the registry read
  directly, whatever KFP's pipeline root is; a cluster run needs one, because the training pods
  of a PyTorchJob cannot see the launcher pod's artifact directory;
- without one (``bgeflow run``, kfp.local) a step writes into its artifact's own local path;
- a consumer reads ``metadata["uri"]``, falling back to the artifact's path.

Artifacts are duck-typed (``.path``, ``.metadata``) so this module stays free of kfp.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from bgeflow.core.errors import ConfigError
from bgeflow.core.storage import join_uri, safe_name

URI_KEY = "uri"
SECONDS_KEY = "seconds"


class ArtifactLike(Protocol):
    path: str
    metadata: dict[str, Any]


def step_output(artifact: ArtifactLike, work_uri: str, run_id: str, step: str) -> str:
    """The directory URI a step writes to (see the module docstring).

    Raises:
        ConfigError: a work prefix without a run id, or a run id that is not one safe path
            segment (it names the run's folder under the work prefix).
    """
    if work_uri:
        if not run_id:
            raise ConfigError(f"step {step}: a work prefix needs the run id to keep runs apart")
        return join_uri(work_uri, f"{safe_name(run_id, 'run id')}/{step}")
    return artifact.path


def artifact_uri(artifact: ArtifactLike) -> str:
    """Where an input artifact's data is."""
    return str(artifact.metadata.get(URI_KEY) or artifact.path)


def record(artifact: ArtifactLike, uri: str, started: float | None = None, **facts: Any) -> None:
    """Note where the data went (and how long the step took) on the output artifact."""
    artifact.metadata[URI_KEY] = uri
    if started is not None:
        artifact.metadata[SECONDS_KEY] = round(time.monotonic() - started, 1)
    for key, value in facts.items():
        if value is not None:
            artifact.metadata[key] = value


def registry_uri(registry: str, work_uri: str) -> str:
    """The model registry: as given, else ``<work_uri>/registry``, else "" (none)."""
    if registry:
        return registry
    return join_uri(work_uri, "registry") if work_uri else ""
