"""bgeflow's images, one per kind, tagged with the bgeflow package version.

- ops (no torch): ingest, the training launcher, publish;
- gpu (CUDA torch, faiss, FlagEmbedding): mine, evaluate and the training pods (on a cluster, and as
  the containers of the ``container`` training backend).

``BGEFLOW_IMAGE_REGISTRY`` (default ``ghcr.io/bgeflow``) and ``BGEFLOW_IMAGE_TAG`` (default: the
installed bgeflow version) choose them, matching the Helm chart's ``image.registry`` and ``image.tag``
and ``make images``' tags.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

DEFAULT_REGISTRY = "ghcr.io/bgeflow"
OPS_REPOSITORY = "bgeflow-ops"
GPU_REPOSITORY = "bgeflow-gpu"


def package_version() -> str:
    """The installed bgeflow version: every image's tag.

    Raises:
        RuntimeError: bgeflow is not installed (a bare source tree).
    """
    try:
        return version("bgeflow")
    except PackageNotFoundError as exc:
        raise RuntimeError("bgeflow is not installed: the image tag is its version (pip install -e .)") from exc


def image(repository: str) -> str:
    """``<registry>/<repository>:<tag>`` as the environment chooses them (see the module docstring)."""
    registry = os.environ.get("BGEFLOW_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    tag = os.environ.get("BGEFLOW_IMAGE_TAG") or package_version()
    return f"{registry}/{repository}:{tag}"
