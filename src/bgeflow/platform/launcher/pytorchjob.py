"""Render a ``LaunchSpec`` as a Kubeflow Training Operator PyTorchJob (``kubeflow.org/v1``).

Built from the ``kubeflow-training`` SDK models and the Kubernetes client's V1 models, so the
object is typed end to end and serialises exactly as the SDK would submit it.

Layout: one Master plus ``nnodes - 1`` Workers, ``nprocPerNode`` processes in each pod; the
operator injects MASTER_ADDR/PORT, WORLD_SIZE, RANK and PET_* so ``bgeflow train`` (torchrun)
finds its peers. With an elastic policy the job is Workers only, as the operator's elastic
examples are: rendezvous replaces the fixed master.
"""

from __future__ import annotations

from typing import Any

from bgeflow.core.errors import ConfigError
from bgeflow.platform.launcher.spec import (
    CONTAINER_NAME,
    OWNER_ANNOTATION,
    OWNER_HASH_LABEL,
    LaunchSpec,
    owner_hash,
)

API_VERSION = "kubeflow.org/v1"
KIND = "PyTorchJob"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "pytorchjobs"
SHM_VOLUME = "dshm"
#: Writable scratch under a read-only root filesystem: /tmp (training scratch, HOME) and the model cache.
SCRATCH_VOLUMES = {"tmp": "/tmp", "cache": "/cache"}
SCRATCH_ENV = {"HOME": "/tmp", "HF_HOME": "/cache/huggingface"}


def labels(spec: LaunchSpec) -> dict[str, str]:
    """The job's and its pods' labels; with the release as ``instance``, the chart's NetworkPolicy
    (``app.kubernetes.io/name`` + ``instance``) selects the pods and lets them reach each other."""
    found = {
        "app.kubernetes.io/name": "bgeflow",
        "app.kubernetes.io/component": "train",
        "app.kubernetes.io/managed-by": "bgeflow",
        OWNER_HASH_LABEL: owner_hash(spec.owner),
    }
    if spec.pod.instance:
        found["app.kubernetes.io/instance"] = spec.pod.instance
    return found


def _env(spec: LaunchSpec) -> list[Any]:
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    env = [V1EnvVar(name=k, value=str(v)) for k, v in sorted({**SCRATCH_ENV, **spec.env}.items())]
    env.append(V1EnvVar(name="PYTHONUNBUFFERED", value="1"))
    if spec.pod.s3_secret:
        # A reference to the Secret, resolved by the kubelet: the value never leaves the cluster.
        # Optional: without the Secret, boto3 falls back to IRSA / Pod Identity / the node role.
        env += [
            V1EnvVar(name=env_name, value_from=V1EnvVarSource(
                secret_key_ref=V1SecretKeySelector(name=spec.pod.s3_secret, key=key, optional=True)))
            for key, env_name in sorted(spec.pod.s3_secret_keys.items())
        ]
    return env


def _pod_template(spec: LaunchSpec) -> Any:
    from kubernetes.client import (
        V1Capabilities,
        V1Container,
        V1EmptyDirVolumeSource,
        V1LocalObjectReference,
        V1ObjectMeta,
        V1PodSecurityContext,
        V1PodSpec,
        V1PodTemplateSpec,
        V1ResourceRequirements,
        V1SeccompProfile,
        V1SecurityContext,
        V1Toleration,
        V1Volume,
        V1VolumeMount,
    )

    pod = spec.pod
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    for name, request, limit in (("cpu", pod.cpu, pod.cpu_limit), ("memory", pod.memory, pod.memory_limit)):
        if request:
            requests[name] = request
        if limit or request:
            limits[name] = limit or request
    if pod.gpus_per_node:
        limits[pod.gpu_resource] = str(pod.gpus_per_node)
    container = V1Container(
        name=CONTAINER_NAME,
        image=pod.image,
        command=list(spec.command),
        env=_env(spec),
        resources=V1ResourceRequirements(requests=requests or None, limits=limits or None),
        # NCCL and the DataLoader workers share tensors through /dev/shm; the container default is 64 MiB.
        volume_mounts=[V1VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm"),
                       *(V1VolumeMount(name=name, mount_path=path) for name, path in SCRATCH_VOLUMES.items())],
        # The restricted Pod Security Standard, as the chart's pods: the root filesystem read-only
        # (scratch, HOME and the caches are the emptyDirs above).
        security_context=V1SecurityContext(
            allow_privilege_escalation=False,
            capabilities=V1Capabilities(drop=["ALL"]),
            run_as_non_root=True, run_as_user=pod.run_as_user, run_as_group=pod.run_as_user,
            read_only_root_filesystem=True, seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
        ),
    )
    return V1PodTemplateSpec(
        metadata=V1ObjectMeta(labels=labels(spec), annotations={OWNER_ANNOTATION: spec.owner}),
        spec=V1PodSpec(
            containers=[container],
            volumes=[V1Volume(name=SHM_VOLUME, empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=pod.shm_size)),
                     *(V1Volume(name=name, empty_dir=V1EmptyDirVolumeSource()) for name in SCRATCH_VOLUMES)],
            # Training pods never call the Kubernetes API (IRSA / Pod Identity mount their own token).
            automount_service_account_token=False,
            # Pod Security Standards "restricted": non-root, RuntimeDefault seccomp, no privilege escalation.
            security_context=V1PodSecurityContext(
                run_as_non_root=True, run_as_user=pod.run_as_user, run_as_group=pod.run_as_user,
                fs_group=pod.run_as_user, seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
            ),
            node_selector=dict(pod.node_selector) or None,
            tolerations=[V1Toleration(**{_snake(k): v for k, v in t.items()}) for t in pod.tolerations] or None,
            image_pull_secrets=[V1LocalObjectReference(name=n) for n in pod.image_pull_secrets] or None,
            service_account_name=pod.service_account,
        ),
    )


def _snake(name: str) -> str:
    return "toleration_seconds" if name == "tolerationSeconds" else name


def build_pytorchjob(spec: LaunchSpec) -> Any:
    """The ``KubeflowOrgV1PyTorchJob`` for ``spec``."""
    from kubeflow.training.models import (
        KubeflowOrgV1ElasticPolicy,
        KubeflowOrgV1PyTorchJob,
        KubeflowOrgV1PyTorchJobSpec,
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
        KubeflowOrgV1SchedulingPolicy,
    )
    from kubernetes.client import V1ObjectMeta

    pod = spec.pod
    if not pod.image:
        raise ConfigError(f"PyTorchJob {spec.ref}: no image in the pod settings")

    def replica(count: int) -> Any:
        return KubeflowOrgV1ReplicaSpec(replicas=count, restart_policy=pod.restart_policy, template=_pod_template(spec))

    elastic = None
    if pod.elastic:
        replicas = {"Worker": replica(spec.nnodes)}
        elastic = KubeflowOrgV1ElasticPolicy(
            min_replicas=pod.elastic.min_replicas, max_replicas=pod.elastic.max_replicas,
            max_restarts=pod.elastic.max_restarts, rdzv_backend=pod.elastic.rdzv_backend,
        )  # processes per pod come from spec.nprocPerNode; elasticPolicy.nProcPerNode is deprecated
    else:
        replicas = {"Master": replica(1)}
        if spec.nnodes > 1:
            replicas["Worker"] = replica(spec.nnodes - 1)

    scheduling = None
    if pod.gang:
        scheduling = KubeflowOrgV1SchedulingPolicy(
            min_available=pod.gang.min_available or spec.nnodes, queue=pod.gang.queue,
            priority_class=pod.gang.priority_class, schedule_timeout_seconds=pod.gang.schedule_timeout_seconds,
        )
    return KubeflowOrgV1PyTorchJob(
        api_version=API_VERSION,
        kind=KIND,
        metadata=V1ObjectMeta(
            name=spec.name, namespace=spec.namespace, labels=labels(spec), annotations={OWNER_ANNOTATION: spec.owner},
        ),
        spec=KubeflowOrgV1PyTorchJobSpec(
            pytorch_replica_specs=replicas,
            nproc_per_node=str(spec.nproc_per_node),
            elastic_policy=elastic,
            run_policy=KubeflowOrgV1RunPolicy(
                clean_pod_policy=pod.clean_pod_policy,
                backoff_limit=pod.backoff_limit,
                active_deadline_seconds=pod.active_deadline_seconds,
                ttl_seconds_after_finished=pod.ttl_seconds_after_finished,
                scheduling_policy=scheduling,
            ),
        ),
    )


def to_manifest(job: Any) -> dict[str, Any]:
    """The JSON-ready dict the API server receives (camelCase, no None fields)."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(job)


def from_manifest(manifest: dict[str, Any]) -> Any:
    """A ``KubeflowOrgV1PyTorchJob`` from a dict (as the API returns it)."""
    from kubeflow.training import ApiClient
    from kubeflow.training.utils.utils import FakeResponse

    return ApiClient().deserialize(FakeResponse(manifest), "KubeflowOrgV1PyTorchJob")
