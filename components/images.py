"""The images the components run in: one per kind, tagged with the bgeflow package version.

- ops (no torch): ingest, the training launcher, publish;
- gpu (CUDA torch, faiss, FlagEmbedding): mine, evaluate and the training pods.

Chosen when the pipeline is compiled: ``BGEFLOW_IMAGE_REGISTRY`` (default ``ghcr.io/bgeflow``)
and ``BGEFLOW_IMAGE_TAG`` (default: the installed bgeflow version), matching the Helm chart's
``image.registry`` and ``image.tag``.
"""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

DEFAULT_REGISTRY = "ghcr.io/bgeflow"
OPS_REPOSITORY = "bgeflow-ops"
GPU_REPOSITORY = "bgeflow-gpu"


def package_version() -> str:
    try:
        return version("bgeflow")
    except PackageNotFoundError as exc:
        raise RuntimeError("bgeflow is not installed: the image tag is its version (pip install -e .)") from exc


def image(repository: str) -> str:
    registry = os.environ.get("BGEFLOW_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    tag = os.environ.get("BGEFLOW_IMAGE_TAG") or package_version()
    return f"{registry}/{repository}:{tag}"


OPS_IMAGE = image(OPS_REPOSITORY)
GPU_IMAGE = image(GPU_REPOSITORY)
