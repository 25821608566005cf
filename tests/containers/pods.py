"""Kubernetes pod specs as Docker container runs: the one mapping every container test goes through.

The container tests never hand-write a ``docker run``: they render the real objects (the
launcher's PyTorchJob from ``bgeflow launch --dry-run``, the chart's Jobs and PyTorchJobs from
``helm template``) and translate each pod here, mechanically, with what the kubelet and the
Kubeflow Training Operator (v1) would add:

==========================================  ==================================================
pod spec                                    container run
==========================================  ==================================================
``command`` / ``args``                      entrypoint / cmd (``command`` replaces the image's
                                            ENTRYPOINT, ``args`` its CMD); ``$(VAR)`` expanded
``env`` (in order, the last of a name wins)  environment; ``secretKeyRef`` from ``secrets``
emptyDir (``medium: Memory`` or not)        a tmpfs volume of the pod (``sizeLimit`` → size),
                                            mode 0777 like the kubelet's, shared by the pod's
                                            init and app containers, empty at start
configMap (``name``)                        a tmpfs volume holding the ConfigMap's keys as
                                            files (from ``configmaps``), mounted read-only
``runAsUser`` / ``runAsGroup``              ``--user uid:gid``
``runAsNonRoot``                            refused when the user would be root (kubelet's check)
``fsGroup`` / ``supplementalGroups``        ``--group-add``
``readOnlyRootFilesystem``                  ``--read-only``
``capabilities``                            ``--cap-drop`` / ``--cap-add``
``allowPrivilegeEscalation: false``         ``--security-opt no-new-privileges``
``seccompProfile: RuntimeDefault``          the engine's default profile (no flag)
``initContainers``                          run one by one, each to success, before the app
PyTorchJob replica ``i``                    pod ``<job>-<replica>-<i>`` with the operator's env
                                            (``operator_env``), reachable under that name
==========================================  ==================================================

Scheduling and sizing (``resources``, node selectors, tolerations, pull policy, service
account, restart policy) have no container equivalent on one machine and are ignored on
purpose; any *other* field raises ``Unsupported``, so a spec that grows a field this mapping
does not know fails the tests instead of running differently than it would on a cluster.
Nothing here imports docker: ``tests/containers/engine.py`` runs what this module describes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bgeflow.steps.training.distributed import operator_env

#: The training operator's default for the master's ``pytorchjob-port`` (its defaulting webhook
#: adds the port to the ``pytorch`` container when the template names none).
PYTORCHJOB_PORT_NAME = "pytorchjob-port"
PYTORCHJOB_DEFAULT_PORT = 23456
PYTORCHJOB_CONTAINER = "pytorch"

# Fields that schedule or size a pod on a cluster and mean nothing for one container here.
_IGNORED_POD = {
    "serviceAccountName", "automountServiceAccountToken", "nodeSelector", "tolerations", "affinity",
    "imagePullSecrets", "restartPolicy", "priorityClassName", "schedulerName", "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
}
_HANDLED_POD = {"containers", "initContainers", "volumes", "securityContext"}
_IGNORED_CONTAINER = {"resources", "imagePullPolicy", "ports", "terminationMessagePolicy", "terminationMessagePath"}
_HANDLED_CONTAINER = {"name", "image", "command", "args", "env", "volumeMounts", "securityContext", "workingDir"}
_POD_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile"}
_CONTAINER_SECURITY = {"runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
                       "capabilities", "seccompProfile", "privileged"}
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]i?|[numk])?$")
_FACTORS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}


class Unsupported(ValueError):
    """The spec uses something this mapping cannot reproduce with a container."""


def quantity_bytes(value: str | int) -> int:
    """A Kubernetes quantity (``16Gi``, ``500M``, ``1024``) in bytes."""
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) in ("n", "u", "m"):
        raise Unsupported(f"{value!r} is not a byte quantity")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


@dataclass(frozen=True)
class Tmpfs:
    """An emptyDir volume: in memory either way here (a scratch disk and a RAM disk behave alike).

    ``files`` (name, text): a configMap volume's content, there before the pod's first container starts.
    """

    name: str
    size_bytes: int | None = None
    memory: bool = False
    files: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Mount:
    volume: str
    target: str
    read_only: bool = False


@dataclass
class ContainerRun:
    """One container of a pod, as ``docker run`` options."""

    name: str
    image: str
    entrypoint: list[str] | None  # None: the image's ENTRYPOINT
    command: list[str] | None  # None: the image's CMD (only when entrypoint is None too)
    env: dict[str, str]
    user: str | None = None
    group_add: list[str] = field(default_factory=list)
    read_only: bool = False
    cap_drop: list[str] = field(default_factory=list)
    cap_add: list[str] = field(default_factory=list)
    security_opt: list[str] = field(default_factory=list)
    mounts: list[Mount] = field(default_factory=list)
    working_dir: str | None = None

    def docker_args(self) -> list[str]:
        """The equivalent ``docker run`` flags (for logs and for people reproducing a run)."""
        args = [f"--user={self.user}"] if self.user else []
        args += [f"--group-add={g}" for g in self.group_add]
        args += ["--read-only"] if self.read_only else []
        args += [f"--cap-drop={c}" for c in self.cap_drop] + [f"--cap-add={c}" for c in self.cap_add]
        args += [f"--security-opt={o}" for o in self.security_opt]
        args += [f"--mount=type=volume,src=<{m.volume}>,dst={m.target}{',readonly' if m.read_only else ''}"
                 for m in self.mounts]
        args += [f"--workdir={self.working_dir}"] if self.working_dir else []
        args += [f"--env={k}" for k in self.env]  # names only: values may be credentials
        if self.entrypoint is not None:
            args += [f"--entrypoint={self.entrypoint[0] if self.entrypoint else ''}"]
        args.append(self.image)
        args += (self.entrypoint or [])[1:] + (self.command or [])
        return args


@dataclass
class PodRun:
    """A pod as containers: init containers one by one, then the app containers."""

    name: str  # hostname, and the DNS name other pods reach it by
    init_containers: list[ContainerRun]
    containers: list[ContainerRun]
    volumes: dict[str, Tmpfs]


def _unknown(what: str, spec: Mapping[str, Any], known: set[str]) -> None:
    extra = sorted(set(spec) - known)
    if extra:
        raise Unsupported(f"{what}: {extra} cannot be reproduced with a container (known: {sorted(known)})")


def _expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes, others stay."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, text)


def _env(container: Mapping[str, Any], secrets: Mapping[str, Mapping[str, str]], where: str) -> dict[str, str]:
    if "envFrom" in container:
        raise Unsupported(f"{where}: envFrom")
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            env[name] = _expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        ref = source.get("secretKeyRef")
        if ref is None or set(source) != {"secretKeyRef"}:
            raise Unsupported(f"{where}: env {name} from {sorted(source)} (only secretKeyRef is mapped)")
        value = secrets.get(ref["name"], {}).get(ref["key"])
        if value is None:
            if ref.get("optional"):
                continue  # the kubelet leaves an optional reference to a missing Secret unset
            raise ValueError(f"{where}: env {name} needs Secret {ref['name']} key {ref['key']}, which the test "
                             "did not provide (the kubelet would refuse to start the container)")
        env[name] = value
    return env


def _security(pod: Mapping[str, Any], container: Mapping[str, Any], image_user: Callable[[str], str],
              where: str) -> dict[str, Any]:
    pod_sc = pod.get("securityContext") or {}
    sc = container.get("securityContext") or {}
    _unknown(f"{where} pod securityContext", pod_sc, _POD_SECURITY)
    _unknown(f"{where} securityContext", sc, _CONTAINER_SECURITY)
    if sc.get("privileged"):
        raise Unsupported(f"{where}: privileged")

    def pick(key: str) -> Any:
        return sc[key] if key in sc else pod_sc.get(key)

    out: dict[str, Any] = {"group_add": [], "cap_drop": [], "cap_add": [], "security_opt": []}
    uid, gid = pick("runAsUser"), pick("runAsGroup")
    if uid is not None:
        out["user"] = f"{uid}:{gid}" if gid is not None else str(uid)
    elif gid is not None:
        raise Unsupported(f"{where}: runAsGroup without runAsUser")
    if pick("runAsNonRoot"):
        effective = str(uid) if uid is not None else image_user(container["image"]).split(":")[0]
        if not effective.isdigit() or int(effective) == 0:
            # The kubelet cannot verify a user name, and refuses root.
            raise ValueError(f"{where}: runAsNonRoot, but the container would run as {effective or 'root'!r}")
    groups = [pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []
    out["group_add"] = [str(g) for g in groups + list(pod_sc.get("supplementalGroups") or [])]
    out["read_only"] = bool(sc.get("readOnlyRootFilesystem"))
    caps = sc.get("capabilities") or {}
    _unknown(f"{where} capabilities", caps, {"drop", "add"})
    out["cap_drop"], out["cap_add"] = list(caps.get("drop") or []), list(caps.get("add") or [])
    if sc.get("allowPrivilegeEscalation") is False:
        out["security_opt"].append("no-new-privileges")
    seccomp = (pick("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        out["security_opt"].append("seccomp=unconfined")
    elif seccomp != "RuntimeDefault":
        raise Unsupported(f"{where}: seccompProfile {seccomp}")
    return out


def _volumes(pod: Mapping[str, Any], where: str, configmaps: Mapping[str, Mapping[str, str]]) -> dict[str, Tmpfs]:
    volumes = {}
    for volume in pod.get("volumes") or []:
        name = volume["name"]
        if set(volume) == {"name", "configMap"}:
            _unknown(f"{where} volume {name}", volume["configMap"], {"name"})
            data = configmaps.get(volume["configMap"]["name"])
            if data is None:
                raise ValueError(f"{where}: volume {name} needs ConfigMap {volume['configMap']['name']}, which the "
                                 "test did not provide (the kubelet would not start the pod)")
            volumes[name] = Tmpfs(name=name, files=tuple(sorted(data.items())))
            continue
        if set(volume) != {"name", "emptyDir"}:
            raise Unsupported(f"{where}: volume {name} is {sorted(set(volume) - {'name'})} (only emptyDir and "
                              "configMap are mapped)")
        empty = volume["emptyDir"] or {}
        _unknown(f"{where} volume {name}", empty, {"medium", "sizeLimit"})
        if empty.get("medium") not in (None, "", "Memory"):
            raise Unsupported(f"{where}: volume {name} medium {empty['medium']}")
        size = empty.get("sizeLimit")
        volumes[name] = Tmpfs(name=name, size_bytes=quantity_bytes(size) if size else None,
                              memory=empty.get("medium") == "Memory")
    return volumes


def _container(pod: Mapping[str, Any], container: Mapping[str, Any], *, volumes: Mapping[str, Tmpfs],
               extra_env: Mapping[str, str], secrets: Mapping[str, Mapping[str, str]],
               image_user: Callable[[str], str], where: str) -> ContainerRun:
    where = f"{where}/{container['name']}"
    _unknown(where, container, _HANDLED_CONTAINER | _IGNORED_CONTAINER)
    env = _env(container, secrets, where)
    env.update(extra_env)  # the operator appends its variables after the template's: they win
    command = [_expand(str(c), env) for c in container["command"]] if "command" in container else None
    args = [_expand(str(a), env) for a in container["args"]] if "args" in container else None
    mounts = []
    for mount in container.get("volumeMounts") or []:
        _unknown(f"{where} volumeMount {mount.get('name')}", mount, {"name", "mountPath", "readOnly"})
        if mount["name"] not in volumes:
            raise ValueError(f"{where}: volumeMount {mount['name']} names no volume of the pod")
        # The kubelet mounts a configMap volume read-only whatever the mount says.
        read_only = bool(mount.get("readOnly")) or bool(volumes[mount["name"]].files)
        mounts.append(Mount(volume=mount["name"], target=mount["mountPath"], read_only=read_only))
    return ContainerRun(
        name=container["name"], image=container["image"],
        # Kubernetes: command replaces ENTRYPOINT (and drops CMD); args alone replace only CMD.
        entrypoint=command, command=args if args is not None else ([] if command is not None else None),
        env=env, mounts=mounts, working_dir=container.get("workingDir"),
        **_security(pod, container, image_user, where),
    )


def _no_image_user(image: str) -> str:
    raise ValueError(f"runAsNonRoot without runAsUser: pass image_user to read {image}'s USER")


def pod_run(pod: Mapping[str, Any], *, name: str, extra_env: Mapping[str, str] | None = None,
            extra_env_for: Callable[[str], bool] = lambda _name: True,
            secrets: Mapping[str, Mapping[str, str]] | None = None,
            configmaps: Mapping[str, Mapping[str, str]] | None = None,
            image_user: Callable[[str], str] = _no_image_user) -> PodRun:
    """``pod`` (a PodSpec as rendered: camelCase dict) as containers; ``extra_env`` is appended to
    the env of the app containers ``extra_env_for`` accepts (what a controller injects);
    ``configmaps``: each ConfigMap's data by name, for the configMap volumes."""
    _unknown(f"pod {name}", pod, _HANDLED_POD | _IGNORED_POD)
    volumes = _volumes(pod, name, configmaps or {})
    secrets = secrets or {}

    def build(container: Mapping[str, Any], env: Mapping[str, str]) -> ContainerRun:
        return _container(pod, container, volumes=volumes, extra_env=env, secrets=secrets,
                          image_user=image_user, where=name)

    return PodRun(
        name=name,
        init_containers=[build(c, {}) for c in pod.get("initContainers") or []],
        containers=[build(c, extra_env if extra_env and extra_env_for(c["name"]) else {}) for c in pod["containers"]],
        volumes=volumes,
    )


def _master_port(job: Mapping[str, Any]) -> int:
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    for container in master["containers"]:
        if container["name"] == PYTORCHJOB_CONTAINER:
            for port in container.get("ports") or []:
                if port.get("name") == PYTORCHJOB_PORT_NAME:
                    return int(port["containerPort"])
    return PYTORCHJOB_DEFAULT_PORT


def pytorchjob_pods(job: Mapping[str, Any], **kwargs: Any) -> list[PodRun]:
    """Every pod of a ``kubeflow.org/v1`` PyTorchJob with a Master, as the operator makes them.

    Pod ``<job>-master-0`` is node 0, ``<job>-worker-<i>`` node ``i + 1``; every app container
    gets ``operator_env`` (the operator's ``setPodEnv`` appends it to each one, init containers
    aside) with the master's service as MASTER_ADDR. Returned master first: the operator appends
    to Worker pods an init container that waits until the master's name resolves, which starting
    the master first stands in for. ``kwargs`` go to ``pod_run``.
    """
    if job.get("apiVersion") != "kubeflow.org/v1" or job.get("kind") != "PyTorchJob":
        raise Unsupported(f"not a kubeflow.org/v1 PyTorchJob: {job.get('apiVersion')} {job.get('kind')}")
    spec = job["spec"]
    if spec.get("elasticPolicy"):
        raise Unsupported("elastic PyTorchJobs (rendezvous instead of a master)")
    replicas = spec["pytorchReplicaSpecs"]
    if set(replicas) - {"Master", "Worker"} or "Master" not in replicas:
        raise Unsupported(f"replica types {sorted(replicas)}: need Master (+ Worker)")
    nproc_raw = str(spec.get("nprocPerNode", "1"))
    if not nproc_raw.isdigit():
        raise Unsupported(f"nprocPerNode {nproc_raw!r}: only a number is mapped")
    counts = {kind: int(r.get("replicas", 1)) for kind, r in replicas.items()}
    if counts["Master"] != 1:
        raise Unsupported(f"{counts['Master']} Master replicas (the operator requires 1)")
    nnodes = sum(counts.values())
    name = job["metadata"]["name"]
    master_addr = f"{name}-master-0"
    pods = []
    for kind in ("Master", "Worker"):
        for index in range(counts.get(kind, 0)):
            rank = index if kind == "Master" else index + 1
            pod_name = f"{name}-{kind.lower()}-{index}"
            if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", pod_name):
                # The operator's Service of this replica carries the same name; the API server
                # refuses it, so on a cluster the master's address would never resolve.
                raise ValueError(f"PyTorchJob {name}: replica Service {pod_name!r} is not a DNS-1035 label "
                                 f"({len(pod_name)} > 63 characters)")
            env = operator_env(node_rank=rank, nnodes=nnodes, nproc_per_node=int(nproc_raw),
                               master_addr=master_addr, master_port=_master_port(job))
            pods.append(pod_run(replicas[kind]["template"]["spec"], name=pod_name,
                                extra_env=env, **kwargs))
    return pods


def job_pod(job: Mapping[str, Any], **kwargs: Any) -> PodRun:
    """The pod of a ``batch/v1`` Job (one completion), named like the Job."""
    if job.get("kind") != "Job":
        raise Unsupported(f"not a Job: {job.get('kind')}")
    spec = job["spec"]
    if int(spec.get("completions", 1)) != 1 or int(spec.get("parallelism", 1)) != 1:
        raise Unsupported("Jobs with several completions or parallel pods")
    return pod_run(spec["template"]["spec"], name=job["metadata"]["name"], **kwargs)
