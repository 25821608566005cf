"""Render a ``LaunchSpec`` as a Kubeflow Trainer v2 TrainJob (``trainer.kubeflow.org/v1alpha1``).

Built from the Kubeflow SDK's API models (``kubeflow_trainer_api``, a dependency of the ``kubeflow``
SDK), so the object is typed end to end and serialises as ``TrainerClient`` would submit it.

The TrainJob is small on purpose: the (Cluster)TrainingRuntime it names (the chart's
``bgeflow-torch``) owns the pod template — image, restricted security context, ``/dev/shm``,
scratch volumes, the S3 env from the Secret and ConfigMap, the NetworkPolicy labels. The TrainJob
sets only what differs per launch: nodes, processes per node, resources per node, the command
and the plain-text env the launcher passes through. Trainer v2 runs the runtime's torch policy:
it injects ``PET_NNODES``/``PET_NPROC_PER_NODE``/``PET_NODE_RANK``/``PET_MASTER_ADDR``/``PET_MASTER_PORT``
into every node, which is what ``bgeflow train`` (torchrun) reads.

Only fields both the SDK's models (Trainer 2.3) and the v1alpha1 CRDs since the first release know
are set, so the object means the same on every Trainer v2 release.
"""

from __future__ import annotations

from typing import Any

from bgeflow.core.errors import ConfigError
from bgeflow.platform.launcher.spec import OWNER_ANNOTATION, TRAINJOB_REPLICATED_JOB, LaunchSpec

API_VERSION = "trainer.kubeflow.org/v1alpha1"
KIND = "TrainJob"
GROUP, VERSION, PLURAL = "trainer.kubeflow.org", "v1alpha1", "trainjobs"
#: Trainer v2 applies the TrainJob's ``trainer`` fields to this container of the runtime's
#: ``node`` replicated job (and the SDK reads node logs from it).
CONTAINER_NAME = "node"
REPLICATED_JOB = TRAINJOB_REPLICATED_JOB
#: The label that tells Trainer and the Kubeflow SDK which runtime plugin a (Cluster)TrainingRuntime is for.
FRAMEWORK_LABEL = "trainer.kubeflow.org/framework"
SDK_HINT = "pip install 'bgeflow[kfp]' (the Kubeflow SDK: kubeflow, kubeflow-trainer-api)"


def _models() -> Any:
    """The SDK's TrainJob models.

    Raises:
        ConfigError: the Kubeflow SDK is not installed (only the TrainJob backend needs it).
    """
    try:
        from kubeflow_trainer_api import models
    except ImportError as exc:
        raise ConfigError(f"the TrainJob backend needs the Kubeflow SDK's models: {SDK_HINT}") from exc
    return models


def build_trainjob(spec: LaunchSpec) -> Any:
    """The ``TrainerV1alpha1TrainJob`` for ``spec`` on the runtime its pod settings name.

    Raises:
        ConfigError: the pod settings ask for what a TrainJob on a runtime cannot express (an
            elastic or gang-scheduled job: the runtime's ``mlPolicy``/``podGroupPolicy`` own those),
            or the SDK is missing.
    """
    from bgeflow.platform.launcher.pytorchjob import labels

    m = _models()
    pod = spec.pod
    if pod.elastic is not None or pod.gang is not None:
        raise ConfigError(f"TrainJob {spec.ref}: elastic and gang settings belong to the training runtime "
                          f"{pod.runtime_kind}/{pod.runtime} (mlPolicy, podGroupPolicy), not to the job")
    quantity = m.IoK8sApimachineryPkgApiResourceQuantity
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for name, request, limit in (("cpu", pod.cpu, pod.cpu_limit), ("memory", pod.memory, pod.memory_limit)):
        if request:
            requests[name] = quantity(str(request))
        if limit or request:
            limits[name] = quantity(str(limit or request))
    if pod.gpus_per_node:
        limits[pod.gpu_resource] = quantity(str(pod.gpus_per_node))
    env = [m.IoK8sApiCoreV1EnvVar(name=k, value=str(v)) for k, v in sorted(spec.env.items())]
    return m.TrainerV1alpha1TrainJob(
        apiVersion=API_VERSION,
        kind=KIND,
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=spec.name, namespace=spec.namespace, labels=labels(spec), annotations={OWNER_ANNOTATION: spec.owner},
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtimeRef=m.TrainerV1alpha1RuntimeRef(name=pod.runtime, kind=pod.runtime_kind, apiGroup=GROUP),
            trainer=m.TrainerV1alpha1Trainer(
                command=list(spec.command),
                numNodes=spec.nnodes,
                numProcPerNode=spec.nproc_per_node,
                resourcesPerNode=m.IoK8sApiCoreV1ResourceRequirements(requests=requests or None, limits=limits or None)
                if requests or limits else None,
                env=env or None,
            ),
        ),
    )


def to_manifest(job: Any) -> dict[str, Any]:
    """The JSON-ready dict the API server receives (camelCase, no None fields)."""
    return job.to_dict()


def from_manifest(manifest: dict[str, Any]) -> Any:
    """A ``TrainerV1alpha1TrainJob`` from a dict (as the API returns it)."""
    return _models().TrainerV1alpha1TrainJob.from_dict(manifest)
