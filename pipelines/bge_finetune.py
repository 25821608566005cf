"""The ``bge-finetune`` pipeline: ingest → mine → train retriever ∥ train reranker → evaluate → gate → publish.

Each model is published only when its own gate rules pass (the publish task reads the verdict and
skips, saying why in its output's metadata).

Run parameters are the keys of ``bgeflow.platform.run_spec.RunSpec`` (one per top-level key: the
data, the work prefix, the registry and one mapping per block), with the seed recipe's defaults;
the signature and the parameter docs are generated from that spec, so the pipeline, ``bgeflow run``
and the chart's retrain values take the same document.
Everything Kubernetes (Secrets, node selectors, tolerations, GPUs, pull secrets, timeouts, the
training pods' shape) is a compile-time ``PipelineOptions`` applied through kfp-kubernetes, so no
run can change it and no credential reaches the IR: the S3 keys come from the Secret named by
``s3_secret`` (names only; optional, so IRSA / Pod Identity work without it) and the endpoint
from the ConfigMap named by ``s3_config_map``.

Data flow (see ``bgeflow.platform.kfp_io``): artifacts carry ``metadata["uri"]``; on a cluster set
``work_uri`` (s3://bucket/prefix) and each step writes under ``<work_uri>/<run id>/<step>/``, where
the PyTorchJob's pods can read and write; ``bgeflow run`` leaves it empty and steps write into
their local artifact directories.

Caching is off for every step: ingest reads mutable S3 URIs, mining and training start from
models named by mutable hub or S3 references, evaluation and publish read and move the
registry's champion. I/O steps retry with exponential backoff; the train launcher retries too,
and a retry adopts the training job (PyTorchJob or TrainJob) its first attempt created (the name
is a function of the run id and the task). A job that failed is never run again by a retry: the
retry ends with the job's reason, so only launcher-side errors (its pod lost, an API error) are
retried.

``python -m pipelines.bge_finetune`` (``make pipelines``) compiles every component and this
pipeline to the YAML files beside them.
"""

# No `from __future__ import annotations`: kfp reads the pipeline's real annotation objects.
import inspect
import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from components.evaluate import evaluate as evaluate_component
from components.images import GPU_IMAGE
from components.ingest import ingest as ingest_component
from components.mine import mine as mine_component
from components.publish import publish as publish_component
from components.train import train_launcher
from kfp import compiler, dsl, kubernetes

from bgeflow.core.spec import Spec
from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import RunSpec

PIPELINE_NAME = "bge-finetune"
HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "bge_finetune.yaml"
POD_SETTINGS_ENV = "BGEFLOW_TRAIN_POD_SETTINGS"  # read by bgeflow.platform.launcher.spec.PodSettings.from_env

_GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def _env_json(name: str, default: Any) -> Any:
    raw = os.environ.get(name)
    return json.loads(raw) if raw else default


@dataclass
class PipelineOptions:
    """Compile-time Kubernetes settings (env ``BGEFLOW_*`` or arguments); never run parameters."""

    s3_secret: str = field(default_factory=lambda: os.environ.get("BGEFLOW_S3_SECRET", "bgeflow-s3"))
    s3_secret_keys: dict[str, str] = field(default_factory=lambda: {
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
    s3_config_map: str = field(default_factory=lambda: os.environ.get("BGEFLOW_S3_CONFIG_MAP", "bgeflow-s3"))
    s3_config_keys: dict[str, str] = field(default_factory=lambda: {
        "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION": "AWS_DEFAULT_REGION"})
    gpu_resource: str = "nvidia.com/gpu"
    gpus_mine: int = field(default_factory=lambda: int(os.environ.get("BGEFLOW_GPUS_MINE", "1")))
    gpus_evaluate: int = field(default_factory=lambda: int(os.environ.get("BGEFLOW_GPUS_EVALUATE", "1")))
    gpus_per_training_node: int = field(default_factory=lambda: int(os.environ.get("BGEFLOW_GPUS_TRAIN", "1")))
    gpu_memory: str = "32Gi"
    # CPU of each training pod (requests = limits): a limit keeps one job from starving a shared node.
    train_cpu: str = "8"
    gpu_node_selector: dict[str, str] = field(default_factory=lambda: _env_json("BGEFLOW_GPU_NODE_SELECTOR", {}))
    gpu_tolerations: list[dict[str, Any]] = field(
        default_factory=lambda: _env_json("BGEFLOW_GPU_TOLERATIONS", [_GPU_TOLERATION]))
    image_pull_secrets: list[str] = field(default_factory=lambda: [
        s for s in os.environ.get("BGEFLOW_IMAGE_PULL_SECRETS", "").split(",") if s])
    timeout_ingest_s: int = 2 * 3600
    timeout_mine_s: int = 12 * 3600
    # The launcher waits for its job up to the run's train_timeout_s; its pod may live a little longer.
    timeout_train_launcher_s: int = 7 * 24 * 3600
    timeout_evaluate_s: int = 12 * 3600
    timeout_publish_s: int = 2 * 3600
    # Extra PodSettings fields for the training pods (cpu, memory, shm_size, gang, service_account, ...).
    train_pods: dict[str, Any] = field(default_factory=lambda: _env_json(POD_SETTINGS_ENV, {}))
    # The images' numeric USER: every step pod and training pod runs as it, never as root.
    run_as_user: int = 10001
    # The Helm release the training pods belong to (their app.kubernetes.io/instance label, which the
    # chart's NetworkPolicy selects); "": unlabelled, covered by the chart's launched-training policy.
    instance: str = field(default_factory=lambda: os.environ.get("BGEFLOW_INSTANCE", ""))

    def __post_init__(self) -> None:
        if isinstance(self.run_as_user, bool) or not isinstance(self.run_as_user, int) or self.run_as_user <= 0:
            raise ValueError(f"run_as_user must be a non-zero user id, got {self.run_as_user!r}")

    def train_pod_settings(self) -> str:
        """JSON of ``bgeflow.platform.launcher.PodSettings`` (validated there, at launch)."""
        settings = {
            "image": GPU_IMAGE, "gpus_per_node": self.gpus_per_training_node, "gpu_resource": self.gpu_resource,
            "node_selector": self.gpu_node_selector, "tolerations": self.gpu_tolerations,
            "image_pull_secrets": self.image_pull_secrets, "s3_secret": self.s3_secret or None,
            "s3_secret_keys": self.s3_secret_keys, "memory": self.gpu_memory, "cpu": self.train_cpu,
            "run_as_user": self.run_as_user, "instance": self.instance,
        }
        settings.update(self.train_pods)
        return json.dumps(settings, sort_keys=True)


def _common(task: dsl.PipelineTask, options: PipelineOptions, timeout_s: int) -> dsl.PipelineTask:
    task.set_caching_options(False)
    # What kfp-kubernetes can say of a step's securityContext: its user, group and runAsNonRoot (the
    # KFP backend adds allowPrivilegeEscalation false, drop ALL and RuntimeDefault seccomp itself;
    # readOnlyRootFilesystem, fsGroup and automountServiceAccountToken it cannot express).
    kubernetes.set_security_context(task, run_as_user=options.run_as_user, run_as_group=options.run_as_user,
                                    run_as_non_root=True)
    if options.s3_secret:
        kubernetes.use_secret_as_env(task, secret_name=options.s3_secret,
                                     secret_key_to_env=options.s3_secret_keys, optional=True)
    if options.s3_config_map:
        kubernetes.use_config_map_as_env(task, config_map_name=options.s3_config_map,
                                         config_map_key_to_env=options.s3_config_keys, optional=True)
    if options.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, options.image_pull_secrets)
    kubernetes.set_timeout(task, timeout_s)
    return task


def _io_retry(task: dsl.PipelineTask) -> dsl.PipelineTask:
    return task.set_retry(num_retries=3, backoff_duration="30s", backoff_factor=2.0, backoff_max_duration="1800s")


def _on_gpu(task: dsl.PipelineTask, options: PipelineOptions, gpus: int) -> dsl.PipelineTask:
    if gpus:
        task.set_accelerator_type(options.gpu_resource).set_accelerator_limit(gpus)
    task.set_memory_request(options.gpu_memory)
    for key, value in options.gpu_node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in options.gpu_tolerations:
        kubernetes.add_toleration(task, key=toleration.get("key"), operator=toleration.get("operator"),
                                  value=toleration.get("value"), effect=toleration.get("effect"),
                                  toleration_seconds=toleration.get("tolerationSeconds"))
    return task


def run_parameters() -> inspect.Signature:
    """The pipeline's parameters: one per ``RunSpec`` key (a block is a dict with its defaults)."""
    params = []
    for name, info in RunSpec.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Spec):
            default: Any = info.get_default(call_default_factory=True).model_dump(mode="json", exclude_none=True)
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=dict, default=default))
        elif info.is_required():
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str))
        else:
            default = info.get_default(call_default_factory=True)
            params.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str,
                                            # A list of URIs travels as one comma-separated string.
                                            default=",".join(default) if isinstance(default, list) else default))
    return inspect.Signature(params)


def _parameter_docs() -> str:
    about: dict[str, Any] = {}
    defaults = {}
    for name, info in RunSpec.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, Spec):
            about[name] = (f"{info.description}; a mapping, merged over the defaults; keys:", annotation)
            defaults[name] = info.get_default(call_default_factory=True).model_dump(mode="json", exclude_none=True)
        else:
            about[name] = info.description or name
    return docstring(__doc__.splitlines()[0], about, defaults=defaults)


def build_pipeline(options: PipelineOptions | None = None) -> Any:
    """The ``bge-finetune`` pipeline with ``options`` applied."""
    options = options or PipelineOptions()

    def bge_finetune(data: str, corpus: str, eval_data: str, work_uri: str, registry: str, retriever: dict,
                     reranker: dict, ingest: dict, mine: dict, training: dict, evaluate: dict, publish: dict) -> None:
        ingest_task = ingest_component(
            data=data, settings=ingest, retriever=retriever, work_uri=work_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("ingest")
        _io_retry(_common(ingest_task, options, options.timeout_ingest_s))

        mine_task = mine_component(
            dataset=ingest_task.outputs["dataset"], settings=mine, retriever=retriever, corpus=corpus,
            reranker=reranker, work_uri=work_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("mine hard negatives")
        _io_retry(_on_gpu(_common(mine_task, options, options.timeout_mine_s), options, options.gpus_mine))

        trained = {}
        for kind, block in (("retriever", retriever), ("reranker", reranker)):
            task = train_launcher(
                kind=kind, train_data=mine_task.outputs["mined"], dataset=ingest_task.outputs["dataset"],
                model_settings=block, settings=training,
                work_uri=work_uri, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            ).set_display_name(f"train {kind}")
            _common(task, options, options.timeout_train_launcher_s)
            task.set_env_variable(POD_SETTINGS_ENV, options.train_pod_settings())
            # A retry finds the job by its deterministic name: adopts it while it runs, reports its
            # reason when it failed (never re-runs it).
            task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0)
            trained[kind] = task

        eval_task = evaluate_component(
            dataset=ingest_task.outputs["dataset"], retriever_model=trained["retriever"].outputs["model"],
            reranker_model=trained["reranker"].outputs["model"], settings=evaluate, retriever=retriever,
            reranker=reranker, eval_data=eval_data, registry=registry, work_uri=work_uri,
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        ).set_display_name("evaluate")
        _io_retry(_on_gpu(_common(eval_task, options, options.timeout_evaluate_s), options, options.gpus_evaluate))

        # Each publish task reads its own model's gate verdict and skips (saying why) when those rules failed:
        # one dsl.If on the whole gate would hold back a good retriever for a reranker's failed rule.
        for kind, block in (("retriever", retriever), ("reranker", reranker)):
            task = publish_component(
                kind=kind, model=trained[kind].outputs["model"], evaluation=eval_task.outputs["evaluation"],
                dataset=ingest_task.outputs["dataset"], model_settings=block, settings=publish,
                registry=registry, work_uri=work_uri,
            ).set_display_name(f"publish {kind}")
            _io_retry(_common(task, options, options.timeout_publish_s))

    bge_finetune.__signature__ = run_parameters()  # type: ignore[attr-defined]
    bge_finetune.__doc__ = _parameter_docs()
    return dsl.pipeline(name=PIPELINE_NAME, description=__doc__.splitlines()[0])(bge_finetune)


#: A line of kfp's header naming an input with a dict default: ``#    training: dict [Default: {...}]``.
_DICT_DEFAULT = re.compile(r"^(?P<head>#    (?P<name>[^:\s]+): dict \[Default: ).*\]$")


def _compile(component: Any, path: Path) -> None:
    """Compile ``component`` (a component or the pipeline) to ``path``, byte for byte the same every time.

    kfp writes a comment header above the IR that prints each input's default with ``str()``. A dict
    default comes out of a protobuf Struct whose key order follows upb's hash seed, new in every process
    (PYTHONHASHSEED does not fix it): every ``make pipelines`` reordered the header, while the IR below
    it, dumped with sorted keys, stayed the same. Such a line is printed again from the IR's own value,
    whose keys are sorted.
    """
    compiler.Compiler().compile(component, str(path))
    text = path.read_text(encoding="utf-8")
    ir = next(yaml.safe_load_all(text))
    parameters = ((ir.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break  # the header ends where the IR begins
        match = _DICT_DEFAULT.match(line.rstrip("\n"))
        if match and "defaultValue" in parameters.get(match["name"], {}):
            lines[i] = f"{match['head']}{parameters[match['name']]['defaultValue']}]\n"
    path.write_text("".join(lines), encoding="utf-8")


def compile_all(options: PipelineOptions | None = None, out_dir: Path | None = None) -> list[Path]:
    """Compile each component next to its module and the pipeline to ``bge_finetune.yaml``."""
    from components import evaluate as evaluate_module
    from components import ingest as ingest_module
    from components import mine as mine_module
    from components import publish as publish_module
    from components import train as train_module

    written = []
    for module, component in ((ingest_module, ingest_component), (mine_module, mine_component),
                              (train_module, train_launcher), (evaluate_module, evaluate_component),
                              (publish_module, publish_component)):
        path = Path(module.__file__).with_suffix(".yaml")
        if out_dir is not None:
            path = out_dir / "components" / path.name
        path.parent.mkdir(parents=True, exist_ok=True)
        _compile(component, path)
        written.append(path)
    package = PACKAGE if out_dir is None else out_dir / "pipelines" / PACKAGE.name
    package.parent.mkdir(parents=True, exist_ok=True)
    _compile(build_pipeline(options), package)
    written.append(package)
    return written


if __name__ == "__main__":
    for path in compile_all():
        print(path)
    print("options:", json.dumps(asdict(PipelineOptions()), sort_keys=True))
