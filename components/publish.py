"""Publish a trained model as a new registry version, atomically (``bgeflow.steps.publish``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.images import OPS_IMAGE


@dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)
def publish(
    model: Input[Model],
    evaluation: Input[Artifact],
    dataset: Input[Dataset],
    name: str,
    registry: str,  # "": <work_uri>/registry
    published: Output[Model],
    champion: str = "if-gate-passed",
    work_uri: str = "",
) -> str:
    """Publish ``model`` as ``<registry>/<name>/<version>`` with its metrics and lineage; returns the
    version ("" when the model was not trained in this run, so there is nothing new to publish)."""
    import time

    from bgeflow.platform.kfp_io import artifact_uri, record, registry_uri
    from bgeflow.steps.publish import PublishConfig
    from bgeflow.steps.publish import publish as run_publish

    started = time.monotonic()
    if not model.metadata.get("trained", True):
        record(published, "", started, skipped="not trained in this run")
        return ""
    result = run_publish(PublishConfig(
        model=model.metadata.get("output") or artifact_uri(model), name=name, registry=registry_uri(registry, work_uri),
        metrics=evaluation.metadata.get("metrics"), lineage_inputs=[dataset.metadata.get("train") or ""],
        champion=champion, kind=model.metadata.get("kind", "auto"), base_model=model.metadata.get("base_model"),
    ))
    record(published, result.uri, started, version=result.version, champion=result.champion, created=result.created)
    return result.version
