"""Train-launcher: run one model's training spec as a PyTorchJob (or local processes) and wait.

Used twice in the pipeline, for the retriever and for the reranker. The launcher pod is light
(ops image); the training pods run the GPU image with the pod settings compiled into
``BGEFLOW_TRAIN_POD_SETTINGS`` (see ``bgeflow.platform.launcher.spec.PodSettings``).
"""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import TrainingSettings, run_defaults
from components import exec_executor
from components.images import OPS_IMAGE


def train_launcher(
    kind: str,
    train_data: Input[Dataset],
    dataset: Input[Dataset],
    model: Output[Model],
    model_settings: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None: the defaults
    settings: dict = None,  # noqa: RUF013
    work_uri: str = "",
    run_id: str = "",
    task_name: str = "",
):
    """Fine-tune one model as a training job (parameters: see the compiled component)."""
    from bgeflow.platform.kfp_steps import train_step

    train_step(kind=kind, train_data=train_data, model_settings=model_settings, settings=settings, model=model,
               work_uri=work_uri, run_id=run_id, task_name=task_name, dataset=dataset)


train_launcher.__doc__ = docstring("Fine-tune the base model of a run block on the mined data.", {
    "kind": "retriever or reranker",
    "train_data": "the mined JSONL",
    "dataset": "ingest's output: its held-out split is scored during training when the block sets validation_steps",
    "model": "the trained model folder (metadata: uri, kind, trained, base_model); with train false the "
             "base model passes through untrained",
    "model_settings": "the run's retriever or reranker block (the pipeline's retriever / reranker parameter: "
                      "base model, encoding or pair budget, hyperparameters over the seed recipe)",
    "settings": TrainingSettings,
    "work_uri": "s3://bucket/prefix the training pods write under (required on a cluster)",
    "run_id": "the pipeline run's id (with task_name: the job's name, so a retry adopts its job)",
    "task_name": "the pipeline task's name",
}, defaults={"settings": run_defaults("training")})
train_launcher = exec_executor(dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)(train_launcher))
