"""What a training launch is, independent of where it runs: ``LaunchSpec`` and its pod settings.

A ``LaunchSpec`` names one distributed training job (``nnodes`` × ``nproc_per_node`` processes
running ``command``). The Kubernetes backend renders it as a PyTorchJob; the local backend runs
the same command as local processes with the same environment the training operator injects.

``PodSettings`` holds everything only Kubernetes cares about (image, resources, scheduling,
secrets by name). It is chosen when the pipeline is compiled and reaches the launcher through the
``BGEFLOW_TRAIN_POD_SETTINGS`` environment variable, never through run parameters, so a run can't
point training pods at another Secret and no value of a Secret ever passes through KFP.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bgeflow.core.errors import ConfigError

POD_SETTINGS_ENV = "BGEFLOW_TRAIN_POD_SETTINGS"
#: The container name the training operator requires in PyTorchJob pod templates.
CONTAINER_NAME = "pytorch"
OWNER_ANNOTATION = "bgeflow.dev/owner"
OWNER_HASH_LABEL = "bgeflow.dev/owner-hash"
_DNS_1035_MAX = 63
#: The replicated job a Trainer v2 runtime runs the training in (its pods are ``<job>-node-0-<i>-<random>``).
TRAINJOB_REPLICATED_JOB = "node"
#: Job names leave room for the longest suffix a controller appends to them (up to 10,000 nodes), since
#: what it names must be a DNS-1035 label too (``generated_names``): the Training Operator's per-replica
#: pods and Services ``<job>-worker-<i>`` (else the master's Service is never created and its name never
#: resolves), and JobSet's pods ``<job>-node-<job index>-<pod index>-<5 random chars>`` (else JobSet's
#: webhook refuses the TrainJob's JobSet: found on the real cluster with a 51-character name).
REPLICA_SUFFIX_ROOM = max(len("-worker-9999"), len(f"-{TRAINJOB_REPLICATED_JOB}-0-9999-abcde"))
_QUANTITY = re.compile(r"^(\d+(\.\d+)?|\.\d+)([KMGTPE]i|[numkMGTPE])?$")
_CLEAN_POD_POLICIES = ("None", "Running", "All")
_RESTART_POLICIES = ("Never", "OnFailure", "ExitCode", "Always")
#: The kinds a TrainJob's ``runtimeRef`` may name (Kubeflow Trainer v2).
RUNTIME_KINDS = ("TrainingRuntime", "ClusterTrainingRuntime")
#: The training runtime the chart ships (helm/bgeflow/templates/trainingruntime.yaml).
DEFAULT_RUNTIME = "bgeflow-torch"
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def owner_hash(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:10]


def job_name(owner: str, prefix: str = "bgeflow-train") -> str:
    """A DNS-1035 label (≤ 45 chars) that is a pure function of ``owner`` (KFP run id + task);
    the names controllers derive from it are labels too (``REPLICA_SUFFIX_ROOM``, ``generated_names``).

    A retried KFP task computes the same name and so finds the job its first attempt created.
    The readable part is truncated; the hash keeps distinct owners distinct.
    """
    if not owner:
        raise ValueError("job_name needs a non-empty owner (the KFP run id and task name)")
    digest = owner_hash(owner)[:8]
    readable = re.sub(r"[^a-z0-9]+", "-", f"{prefix}-{owner}".lower()).strip("-")
    if not readable or not readable[0].isalpha():
        readable = "j-" + readable
    room = _DNS_1035_MAX - REPLICA_SUFFIX_ROOM - len(digest) - 1
    return f"{readable[:room].rstrip('-')}-{digest}"


def generated_names(name: str, nnodes: int) -> list[str]:
    """The longest names the controllers derive from job ``name`` with ``nnodes`` nodes; each must be a
    DNS-1035 label (≤ 63 chars).

    - Kubeflow Training Operator v1: the last Worker's pod and Service, ``<job>-worker-<nnodes - 2>``
      (``pkg/controller.v1/common``: ``GenGeneralName``);
    - Kubeflow Trainer v2 through JobSet: the last node's pod,
      ``<job>-node-0-<nnodes - 1>-<5 random chars>``, which JobSet's webhook checks before any pod exists
      (``pkg/webhooks/jobset_webhook.go``: "pod names generated for this JobSet will exceed 63 characters").
    """
    return [f"{name}-worker-{max(nnodes - 2, 0)}", f"{name}-{TRAINJOB_REPLICATED_JOB}-0-{max(nnodes - 1, 0)}-abcde"]


def _check_quantity(name: str, value: str | None) -> None:
    if value is not None and not _QUANTITY.match(str(value)):
        raise ConfigError(f"pod setting {name}={value!r} is not a Kubernetes quantity (e.g. 4, 500m, 16Gi)")


@dataclass
class ElasticSettings:
    """torchrun elastic rendezvous: the job runs with anywhere from min to max nodes."""

    min_replicas: int
    max_replicas: int
    max_restarts: int = 3
    rdzv_backend: str = "c10d"

    def __post_init__(self) -> None:
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(f"elastic needs 1 <= min_replicas <= max_replicas, got {self.min_replicas}..{self.max_replicas}")


@dataclass
class GangSettings:
    """Gang scheduling (Volcano / scheduler-plugins): start all pods together or none."""

    min_available: int | None = None  # default: every replica
    queue: str | None = None
    priority_class: str | None = None
    schedule_timeout_seconds: int | None = None


@dataclass
class PodSettings:
    """Kubernetes-only settings of the training pods; compile-time pipeline options."""

    image: str = ""
    namespace: str = ""  # "": the namespace the launcher pod runs in
    gpus_per_node: int = 0
    gpu_resource: str = "nvidia.com/gpu"
    # Requests of each training container; the limits default to them (Guaranteed QoS). A chart's
    # resources block with limits above its requests keeps both (cpu_limit, memory_limit).
    cpu: str | None = None
    memory: str | None = None
    cpu_limit: str | None = None
    memory_limit: str | None = None
    shm_size: str = "2Gi"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    image_pull_secrets: list[str] = field(default_factory=list)
    service_account: str | None = None
    # Name of an existing Secret; its keys become the env vars named here (names only, no values).
    s3_secret: str | None = None
    s3_secret_keys: dict[str, str] = field(
        default_factory=lambda: {"AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"}
    )
    # The images' numeric USER; above 10000 so it never maps to a host account (checkov CKV_K8S_40).
    run_as_user: int = 10001
    restart_policy: str = "OnFailure"
    clean_pod_policy: str = "Running"
    backoff_limit: int = 2
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = 86_400
    elastic: ElasticSettings | None = None
    gang: GangSettings | None = None
    # The Helm release the pods belong to: their ``app.kubernetes.io/instance`` label, which the
    # chart's NetworkPolicy selects. "": the label is left off.
    instance: str = ""
    # TrainJob only: the (Cluster)TrainingRuntime that owns the pod template (image, security
    # context, /dev/shm, scratch, S3 env); the TrainJob sets nodes, processes, resources, command.
    runtime: str = DEFAULT_RUNTIME
    runtime_kind: str = "TrainingRuntime"

    def __post_init__(self) -> None:
        if isinstance(self.elastic, dict):
            self.elastic = ElasticSettings(**self.elastic)
        if isinstance(self.gang, dict):
            self.gang = GangSettings(**self.gang)
        if self.gpus_per_node < 0 or self.backoff_limit < 0:
            raise ConfigError("pod settings gpus_per_node and backoff_limit must be >= 0")
        if isinstance(self.run_as_user, bool) or not isinstance(self.run_as_user, int) or self.run_as_user <= 0:
            # 0 is root: with runAsNonRoot the kubelet refuses the pod, without it the pod runs as root.
            raise ConfigError(f"pod setting run_as_user must be a non-zero user id (the images' USER is 10001), "
                              f"got {self.run_as_user!r}")
        for name in ("cpu", "memory", "cpu_limit", "memory_limit", "shm_size"):
            _check_quantity(name, getattr(self, name))
        if self.clean_pod_policy not in _CLEAN_POD_POLICIES:
            raise ConfigError(f"clean_pod_policy must be one of {_CLEAN_POD_POLICIES}, got {self.clean_pod_policy!r}")
        if self.restart_policy not in _RESTART_POLICIES:
            raise ConfigError(f"restart_policy must be one of {_RESTART_POLICIES}, got {self.restart_policy!r}")
        if self.runtime_kind not in RUNTIME_KINDS:
            raise ConfigError(f"pod setting runtime_kind must be one of {RUNTIME_KINDS}, got {self.runtime_kind!r}")
        if not self.runtime or not re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", self.runtime):
            raise ConfigError(f"pod setting runtime={self.runtime!r} is not the name of a Kubernetes object")
        if len(self.instance) > _DNS_1035_MAX or not _LABEL_VALUE.match(self.instance):
            raise ConfigError(f"pod setting instance={self.instance!r} is not a label value (the Helm release name)")
        for toleration in self.tolerations:
            unknown = set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
            if unknown:
                raise ConfigError(f"toleration {toleration} has unknown field(s) {sorted(unknown)}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PodSettings:
        data = json.loads(text) if text else {}
        if not isinstance(data, dict):
            raise ConfigError(f"{POD_SETTINGS_ENV} must hold a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ConfigError(f"{POD_SETTINGS_ENV} has unknown key(s) {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def from_env(cls) -> PodSettings:
        return cls.from_json(os.environ.get(POD_SETTINGS_ENV, ""))


@dataclass
class LaunchSpec:
    """One distributed training job: ``nnodes`` × ``nproc_per_node`` processes of ``command``."""

    name: str
    command: list[str]
    owner: str  # "<run id>/<task name>": recorded on the job and checked before adopting it
    namespace: str = "default"
    nnodes: int = 1
    nproc_per_node: int = 1
    env: dict[str, str] = field(default_factory=dict)
    pod: PodSettings = field(default_factory=PodSettings)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.name):
            raise ValueError(f"job name {self.name!r} is not a DNS-1035 label (use launcher.job_name)")
        # Checked for both kinds: ``auto`` picks one later, and a retry must find the job by the same name.
        longest = max(generated_names(self.name, self.nnodes), key=len)
        if len(longest) > _DNS_1035_MAX:
            raise ValueError(f"job name {self.name!r} is too long: a controller would name a pod or Service "
                             f"{longest!r}, over {_DNS_1035_MAX} characters (use launcher.job_name)")
        if not self.command:
            raise ValueError(f"job {self.namespace}/{self.name} has an empty command")
        # Kubernetes wants strings: a number here would print unquoted in --dry-run YAML (`- 2e-05`) and
        # be refused by the API server (or by kubectl apply) as the wrong type.
        wrong = [part for part in self.command if not isinstance(part, str)]
        if wrong:
            raise ConfigError(f"job {self.namespace}/{self.name}: command parts must be strings, got {wrong!r}")
        wrong_env = {k: v for k, v in self.env.items() if not isinstance(v, str)}
        if wrong_env:
            raise ConfigError(f"job {self.namespace}/{self.name}: env values must be strings, got {wrong_env!r}")
        if self.nnodes < 1 or self.nproc_per_node < 1:
            raise ValueError(f"job {self.namespace}/{self.name}: nnodes and nproc_per_node must be >= 1")
        if not self.owner:
            raise ValueError(f"job {self.namespace}/{self.name} needs an owner (run id/task)")

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"
