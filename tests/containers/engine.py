"""Run ``pods.PodRun``s on a Docker Engine (docker SDK), the way the kubelet would run the pods.

Each pod gets its emptyDirs as tmpfs volumes (shared by its containers, empty at start, mode
0777; a configMap volume holds its files), kept mounted by a holder container for the pod's life
(the kubelet's pause container, here for the volumes: a tmpfs volume is emptied whenever no
container mounts it, and an init container's output must reach the app containers), runs its
init containers one after the other to success, then its app containers, on one
user-defined network where each pod answers to its name (its service's name on a cluster). The
pods of one call run together and fail together: the first container that exits non-zero stops
the others, as a PyTorchJob's default run policy would. Logs go to ``log_dir`` (one file per
container) and stay in the result. Everything created is labelled and removed afterwards.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import requests
from docker.types import Mount as DockerMount

from containers.pods import ContainerRun, PodRun, Tmpfs

LABEL = "dev.bgeflow.test"
#: Kubernetes creates emptyDir directories world-writable; a pod's non-root user relies on it.
EMPTYDIR_MODE = "0777"


def image_user(client: docker.DockerClient, image: str) -> str:
    """The image's USER (what the kubelet checks runAsNonRoot against)."""
    return client.images.get(image).attrs["Config"].get("User") or "root"


def tmpfs_options(volume: Tmpfs) -> str:
    size = f"size={volume.size_bytes}," if volume.size_bytes else ""
    return f"{size}mode={EMPTYDIR_MODE}"


def create_kwargs(run: ContainerRun, mounts: list[DockerMount]) -> dict[str, Any]:
    """``containers.create`` keyword arguments for ``run`` (everything but name and network)."""
    return {
        "image": run.image, "entrypoint": run.entrypoint, "command": run.command, "environment": dict(run.env),
        "user": run.user, "group_add": list(run.group_add) or None, "read_only": run.read_only,
        "cap_drop": list(run.cap_drop) or None, "cap_add": list(run.cap_add) or None,
        "security_opt": list(run.security_opt) or None, "working_dir": run.working_dir, "mounts": mounts,
    }


def tar_of(files: Sequence[tuple[str, str]]) -> bytes:
    """``files`` (name, text) as a tar archive of world-readable files (a configMap volume's content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in files:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def tmpfs_mounts(run: ContainerRun, volumes: dict[str, Tmpfs]) -> list[DockerMount]:
    """``run``'s emptyDirs as per-container tmpfs mounts (for runners that take one container,
    such as kfp.local's DockerRunner: fine where no two containers share a volume)."""
    return [DockerMount(target=m.target, source=None, type="tmpfs", read_only=m.read_only,
                        tmpfs_size=volumes[m.volume].size_bytes, tmpfs_mode=int(EMPTYDIR_MODE, 8))
            for m in run.mounts]


@dataclass
class ContainerResult:
    pod: str
    name: str
    exit_code: int | None  # None: never started, or stopped because another container failed
    logs: str = ""  # stdout and stderr
    stdout: str = ""


@dataclass
class PodsResult:
    containers: list[ContainerResult] = field(default_factory=list)
    seconds: float = 0.0
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)  # what kept a container from being run at all

    @property
    def ok(self) -> bool:
        return (bool(self.containers) and all(c.exit_code == 0 for c in self.containers)
                and not self.timed_out and not self.errors)

    def logs(self, pod: str | None = None, container: str | None = None) -> str:
        return "\n".join(c.logs for c in self.containers
                         if (pod is None or c.pod == pod) and (container is None or c.name == container))

    def failure(self, tail: int = 6000) -> str:
        """What failed, with the end of its log: an assertion message."""
        lines = [f"{c.pod}/{c.name}: exit {c.exit_code}" for c in self.containers] + self.errors
        lines += [f"timed out after {self.seconds:.0f} s"] if self.timed_out else []
        bad = [c for c in self.containers if c.exit_code not in (0, None)] or self.containers
        return "\n".join(lines) + "\n" + "\n".join(f"--- {c.pod}/{c.name} ---\n{c.logs[-tail:]}" for c in bad)


class Network:
    """A user-defined bridge network; ``internal``: no route out of this machine at all."""

    def __init__(self, client: docker.DockerClient, prefix: str, *, internal: bool = True, session: str = "") -> None:
        self.client = client
        self.name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.network = client.networks.create(self.name, driver="bridge", internal=internal,
                                              labels={LABEL: session or self.name})

    def remove(self) -> None:
        self.network.reload()
        for container in self.network.containers:
            self.network.disconnect(container, force=True)
        self.network.remove()


class PodRunner:
    """Runs pods on ``network``; see the module docstring."""

    def __init__(self, client: docker.DockerClient, network: Network, log_dir: Path, *, session: str = "") -> None:
        self.client = client
        self.network = network
        self.log_dir = log_dir
        self.labels = {LABEL: session or network.name}
        log_dir.mkdir(parents=True, exist_ok=True)

    def run(self, pods: Iterable[PodRun], *, timeout: float = 1800) -> PodsResult:
        pods = list(pods)
        started = time.monotonic()
        suffix = uuid.uuid4().hex[:6]
        stop = threading.Event()
        result = PodsResult()
        lock = threading.Lock()
        created: list[Any] = []
        volumes: list[Any] = []

        def record(pod: PodRun, run: ContainerRun, code: int | None, container: Any) -> None:
            try:
                logs = container.logs().decode("utf-8", errors="replace")
                stdout = container.logs(stderr=False).decode("utf-8", errors="replace")
            except docker.errors.APIError as exc:  # removed meanwhile (another pod failed, or a timeout)
                logs, stdout = f"<no logs: {exc}>", ""
            with lock:
                result.containers.append(ContainerResult(pod.name, run.name, code, logs, stdout))

        def follow(pod: PodRun, run: ContainerRun, container: Any) -> None:
            """The log as it is written, so that a hung or killed run leaves its story behind."""
            with (self.log_dir / f"{pod.name}.{run.name}.log").open("wb") as out:
                try:
                    for chunk in container.logs(stream=True, follow=True):
                        out.write(chunk)
                        out.flush()
                except docker.errors.APIError:
                    pass

        def start(pod: PodRun, run: ContainerRun, volume_names: dict[str, str], app: bool) -> Any:
            mounts = [DockerMount(target=m.target, source=volume_names[m.volume], type="volume",
                                  read_only=m.read_only, no_copy=True) for m in run.mounts]
            endpoint = self.client.api.create_endpoint_config(aliases=[pod.name]) if app else None
            container = self.client.containers.create(
                name=f"{pod.name}-{run.name}-{suffix}"[-63:].lstrip("-"), hostname=pod.name[:63] if app else None,
                network=self.network.name, networking_config={self.network.name: endpoint} if endpoint else None,
                labels=self.labels, **create_kwargs(run, mounts))
            with lock:
                created.append(container)
            container.start()
            threading.Thread(target=follow, args=(pod, run, container), daemon=True).start()
            return container

        def finish(pod: PodRun, run: ContainerRun, container: Any, deadline: float) -> int | None:
            code: int | None = None
            while not stop.is_set():
                try:
                    code = int(container.wait(timeout=5)["StatusCode"])
                    break
                except requests.exceptions.RequestException:  # still running: the clock, the others
                    if time.monotonic() > deadline:
                        result.timed_out = True
                        stop.set()
                        break
            if code is None:
                container.stop(timeout=10)
            record(pod, run, code, container)
            if code not in (0, None):
                stop.set()
            return code

        def run_pod(pod: PodRun, volume_names: dict[str, str], app_started: threading.Event) -> None:
            deadline = started + timeout
            try:
                for run in pod.init_containers:
                    if stop.is_set() or finish(pod, run, start(pod, run, volume_names, app=False), deadline) != 0:
                        return
                running = [(run, start(pod, run, volume_names, app=True)) for run in pod.containers
                           if not stop.is_set()]
                app_started.set()
                for run, container in running:
                    finish(pod, run, container, deadline)
            except Exception as exc:  # e.g. the engine refused a container: the run fails, saying why
                with lock:
                    result.errors.append(f"{pod.name}: {type(exc).__name__}: {exc}")
                stop.set()
            finally:
                app_started.set()

        def hold(pod: PodRun, volume_names: dict[str, str]) -> None:
            """Keep the pod's volumes mounted until the run ends, and write its configMap volumes' files."""
            if not volume_names:
                return
            holder = self.client.containers.create(
                (pod.init_containers or pod.containers)[0].image, entrypoint=["sleep"], command=["infinity"],
                name=f"{pod.name}-volumes-{suffix}"[-63:].lstrip("-"), network_mode="none", labels=self.labels,
                mounts=[DockerMount(target=f"/volumes/{name}", source=source, type="volume", no_copy=True)
                        for name, source in volume_names.items()])
            with lock:
                created.append(holder)
            holder.start()
            for volume in pod.volumes.values():
                if volume.files:
                    holder.put_archive(f"/volumes/{volume.name}", tar_of(volume.files))

        threads = []
        try:
            for pod in pods:
                names = {}
                for volume in pod.volumes.values():
                    vol = self.client.volumes.create(
                        name=f"{pod.name}-{volume.name}-{suffix}"[-63:].lstrip("-"), driver="local",
                        driver_opts={"type": "tmpfs", "device": "tmpfs", "o": tmpfs_options(volume)},
                        labels=self.labels)
                    volumes.append(vol)
                    names[volume.name] = vol.name
                hold(pod, names)
                app_started = threading.Event()
                thread = threading.Thread(target=run_pod, args=(pod, names, app_started), name=f"pod-{pod.name}",
                                          daemon=True)
                thread.start()
                threads.append(thread)
                # The next pod (a worker) starts once this one's app containers run: see pytorchjob_pods.
                app_started.wait()
            for thread in threads:
                thread.join()
        finally:
            stop.set()
            for thing in [*created, *volumes]:
                with contextlib.suppress(docker.errors.NotFound):
                    thing.remove(force=True)
        result.seconds = time.monotonic() - started
        return result
