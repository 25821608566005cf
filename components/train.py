"""Train-launcher: run ``bgeflow train <kind>`` as a PyTorchJob (or local processes) and wait.

Used twice in the pipeline, for the retriever and for the reranker. The launcher pod is light
(ops image); the training pods run the GPU image with the pod settings compiled into
``BGEFLOW_TRAIN_POD_SETTINGS`` (see ``bgeflow.platform.launcher.spec.PodSettings``).
"""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from components.images import OPS_IMAGE


@dsl.component(base_image=OPS_IMAGE, install_kfp_package=False)
def train_launcher(
    kind: str,
    base_model: str,
    train_data: Input[Dataset],
    model: Output[Model],
    hyperparameters: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None means {}
    enabled: bool = True,
    backend: str = "kubernetes",
    work_uri: str = "",
    run_id: str = "",
    task_name: str = "",
    nnodes: int = 1,
    nproc_per_node: int = 1,
    timeout_s: int = 86400,
):
    """Fine-tune ``base_model`` as a ``kind`` (retriever | reranker) on ``train_data``.

    ``hyperparameters`` are TrainConfig fields. ``model`` (metadata uri) is the trained model
    directory; with ``enabled`` false the base model passes through untrained (metadata trained=false).
    """
    import time

    from bgeflow.platform.kfp_io import artifact_uri, record, step_output
    from bgeflow.platform.launcher.train_job import launch_training

    started = time.monotonic()
    if not enabled:
        record(model, base_model, started, kind=kind, trained=False, base_model=base_model)
        return
    trained = launch_training(
        kind=kind, model=base_model, train_data=artifact_uri(train_data),
        output=step_output(model, work_uri, run_id, f"train-{kind}"), hyperparameters=hyperparameters or {},
        backend=backend, run_id=run_id, task_name=task_name, nnodes=nnodes, nproc_per_node=nproc_per_node,
        timeout=timeout_s,
    )
    record(model, trained.model_uri, started, kind=kind, trained=True, base_model=base_model,
           output=trained.output_uri, job=trained.launch.name, adopted=trained.launch.adopted,
           global_step=trained.summary.get("global_step"))
