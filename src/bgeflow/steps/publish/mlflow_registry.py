"""Optional: each published version also registered in the MLflow Model Registry (alias ``champion``).

On when ``MLFLOW_TRACKING_URI`` is set and ``mlflow`` is installed (the trackers' rule of
``steps.training.tracking``). The registered model is named as in bgeflow's registry; each version's
source is the published ``model/`` folder (no copy: MLflow points at it) and its tags name the
bgeflow version and content hash, which make a rerun a no-op. The champion alias follows
``champion.json``. bgeflow's registry stays the source of truth: an MLflow failure is logged and
the publish (or promotion) stands.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

from bgeflow.core.storage import join_uri

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
VERSION_TAG = "bgeflow.version"
HASH_TAG = "bgeflow.content_hash"


def client_from_environment() -> Any | None:
    """An ``MlflowClient`` when MLflow is configured here and installed; else None (registration is off)."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    if importlib.util.find_spec("mlflow") is None:
        log.info("MLFLOW_TRACKING_URI is set but mlflow is not installed: no MLflow registration")
        return None
    from mlflow import MlflowClient

    return MlflowClient()


def _existing(client: Any, name: str, version: str) -> Any | None:
    for found in client.search_model_versions(f"name='{name}'"):
        if (getattr(found, "tags", None) or {}).get(VERSION_TAG) == version:
            return found
    return None


def register(info: Any, *, champion: bool, client: Any | None = None) -> dict[str, Any] | None:
    """Register ``info`` (a ``registry.VersionInfo``) and, when ``champion``, point the alias at it.

    Returns what was registered (``{"name", "version", "champion"}``), None when registration is off
    or failed (the reason logged).
    """
    client = client if client is not None else client_from_environment()
    if client is None:
        return None
    try:
        if not client.search_registered_models(f"name='{info.name}'"):
            client.create_registered_model(info.name, description="Published by bgeflow")
        found = _existing(client, info.name, info.version)
        if found is None:
            found = client.create_model_version(
                name=info.name, source=join_uri(info.uri, "model"),
                tags={VERSION_TAG: info.version, HASH_TAG: info.content_hash, "bgeflow.kind": info.kind},
                description=f"bgeflow version {info.version} ({info.uri})")
        if champion:
            client.set_registered_model_alias(info.name, CHAMPION_ALIAS, found.version)
    except Exception as exc:  # the bgeflow registry holds the version whatever MLflow answers
        log.warning("MLflow registration of %s failed (the bgeflow registry holds it): %s", info.uri, exc)
        return None
    log.info("MLflow: %s version %s%s", info.name, found.version, " (alias champion)" if champion else "")
    return {"name": info.name, "version": str(found.version), "champion": champion}
