"""The images the components run in, chosen when the pipeline is compiled (``bgeflow.platform.images``:
``BGEFLOW_IMAGE_REGISTRY``, ``BGEFLOW_IMAGE_TAG``, matching the Helm chart's ``image.registry`` and
``image.tag``).

- ops (no torch): ingest, the training launcher, publish;
- gpu (CUDA torch, faiss, FlagEmbedding): mine, evaluate and the training pods.
"""

from __future__ import annotations

from bgeflow.platform.images import DEFAULT_REGISTRY, GPU_REPOSITORY, OPS_REPOSITORY, image, package_version

__all__ = ["DEFAULT_REGISTRY", "GPU_IMAGE", "GPU_REPOSITORY", "OPS_IMAGE", "OPS_REPOSITORY", "image", "package_version"]

OPS_IMAGE = image(OPS_REPOSITORY)
GPU_IMAGE = image(GPU_REPOSITORY)
