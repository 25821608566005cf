"""Publish a trained model as a new registry version, atomically (``bgeflow.steps.publish``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import PublishSettings, run_defaults
from components import exec_executor
from components.images import OPS_IMAGE


def publish(
    kind: str,
    model: Input[Model],
    evaluation: Input[Artifact],
    dataset: Input[Dataset],
    published: Output[Model],
    model_settings: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None: the defaults
    settings: dict = None,  # noqa: RUF013
    registry: str = "",
    work_uri: str = "",
) -> str:
    """Publish one model as a registry version (parameters: see the compiled component)."""
    from bgeflow.platform.kfp_steps import publish_step

    return publish_step(model=model, evaluation=evaluation, dataset=dataset, kind=kind, model_settings=model_settings,
                        settings=settings, registry=registry, published=published, work_uri=work_uri)


publish.__doc__ = docstring("Publish a trained model as <registry>/<name>/<version> with its metrics and lineage.", {
    "kind": "retriever or reranker",
    "model": "the trained model (not trained in this run: nothing is published)",
    "evaluation": "the evaluation's output: its metrics.json holds this model's own gate verdict (failed: "
                  "nothing is published, the metadata's 'skipped' says why) and decides the champion",
    "dataset": "ingest's output (its train.jsonl is recorded as lineage)",
    "published": "the registry version (metadata: uri, version, champion, created)",
    "model_settings": "the run's retriever or reranker block (its name is the registry name)",
    "settings": PublishSettings,
    "registry": "registry root (empty: <work_uri>/registry)",
    "work_uri": "s3://bucket/prefix of the run",
}, defaults={"settings": run_defaults("publish")},
   returns="Output: the version published (empty when the model was not trained or its gate rules failed)")
publish = exec_executor(dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)(publish))
