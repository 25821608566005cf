"""The ``container`` backend: a training job as Docker containers, through the Kubeflow SDK.

``TrainerClient(backend_config=ContainerBackendConfig(...))`` (Kubeflow SDK 0.5) runs a TrainJob
as one container per node on a per-job Docker network, the job's workdir
(``~/.kubeflow/trainer/containers/<job>``) bind-mounted at ``/workspace`` in each. Its runtime is the
chart's ``bgeflow-torch`` TrainingRuntime (``runtime_document``: the fields the SDK reads of it),
so the containers run the gpu image.

The SDK runs only a ``CustomTrainer``: a Python function it ships into every container and starts
under its own ``torchrun --nnodes N --node-rank r --rdzv-backend=static
--rdzv-endpoint=<job>-node-0:29500`` (one process per container). That function is ``run_node``: it
runs the pod command, ``bgeflow train --config /workspace/train_spec.yaml``, with the env Trainer's
torch policy gives a pod on a cluster (``PET_NNODES``, ``PET_NODE_RANK`` from the SDK's torchrun,
``PET_NPROC_PER_NODE``, ``PET_MASTER_ADDR=<job>-node-0``, ``PET_MASTER_PORT``), so each container
runs exactly what a pod runs.

Before the job starts, ``stage`` copies what the containers need into the workdir: local training
data, a local base model, a local validation set and DeepSpeed config under ``inputs/``, the
output's checkpoints (a rerun resumes from them) under ``output/``, and the spec with those paths.
``s3://`` URIs pass through with the S3 env (an endpoint on this machine's loopback is refused:
inside a container it is the container itself). After the job, ``output/`` is copied back to the
spec's local output (after a failure, only its checkpoints); an ``s3://`` output was written by
the nodes themselves.

What the SDK does not do, written here: the nodes' real exit codes (its containers exit with its
torchrun's), and a node log per node (``get_job_logs`` follows node 0, then the other nodes).
Docker gives the containers no GPU through the SDK: the job trains on CPU (gloo).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bgeflow.core.errors import EXIT_BAD_INPUT, ConfigError, NotFoundError, StepFailed
from bgeflow.core.storage import is_remote, is_s3, join_uri, redact
from bgeflow.platform.launcher.backends import JobBackend, log_to_stderr
from bgeflow.platform.launcher.spec import DEFAULT_RUNTIME, LaunchSpec
from bgeflow.platform.launcher.trainjob import API_VERSION, CONTAINER_NAME, FRAMEWORK_LABEL, REPLICATED_JOB
from bgeflow.steps.training.checkpoints import CHECKPOINTS_PREFIX
from bgeflow.steps.training.pod import (
    CONFIG_FILE,
    MODEL_DIR,
    SPEC_FILE,
    SUMMARY_FILE,
    pod_command,
    pod_command_spec,
    read_spec,
    spec_document,
)
from bgeflow.steps.training.spec import TrainSpec

log = logging.getLogger(__name__)

#: Where the SDK mounts the job's workdir in every container (its ``constants.WORKSPACE_PATH``).
WORKSPACE = "/workspace"
INPUTS_DIR = "inputs"
OUTPUT_DIR = "output"
#: The nodes' exit codes (``run_node``) and the runtime document, under the workdir.
STATUS_DIR = ".bgeflow"
RUNTIME_FILE = "runtime.yaml"
#: The port of the pod command's own torchrun on node 0: the SDK's torchrun holds 29500 there.
NODE_MASTER_PORT = 29501
#: What the SDK's container status becomes once the job has succeeded.
COMPLETE = "Complete"
#: Without a timeout the SDK still needs one: far beyond any training job.
NO_TIMEOUT_S = 10**9
#: S3 settings of this process the containers get when the job reads or writes ``s3://`` (beyond
#: the launcher's plain-text ``PASS_THROUGH_ENV``). Unlike a cluster's pods, which get credentials
#: from a Secret, these containers run on this machine, as this user: they get this user's keys.
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3")
ENDPOINT_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SDK_HINT = "pip install 'bgeflow[kfp]' (the Kubeflow SDK and the Docker client it drives)"


def run_node(command: list[str], nnodes: int, nproc_per_node: int, master_addr: str, master_port: int,
             status_dir: str) -> None:
    """One node of the job, inside its container: the pod command with the env a pod gets on a cluster.

    The SDK ships this function's source (``inspect.getsource``) into each container and calls it
    with these arguments under its own torchrun, one process per container: it imports inside and
    uses nothing else of this module. The node's rank is that torchrun's ``GROUP_RANK``. The pod
    command's exit code is left in ``<status_dir>/node-<rank>.json`` (the container exits with the
    SDK's torchrun's code, which is 1 for any failure) and becomes this process's.

    Args:
        command: the pod command (``bgeflow train --config <spec>``).
        nnodes: nodes (containers) in the job.
        nproc_per_node: training processes per node.
        master_addr: node 0's name on the job's network.
        master_port: the pod command's rendezvous port on node 0 (not the SDK's 29500).
        status_dir: where the exit code is written (in the shared workdir).
    """
    import json
    import os
    import subprocess
    import sys

    from bgeflow.steps.training.distributed import operator_env

    rank = os.environ.get("GROUP_RANK") or os.environ.get("RANK")
    if rank is None and nnodes > 1:
        sys.exit("bgeflow: this node was started without torchrun (no GROUP_RANK or RANK): its rank is unknown")
    node_rank = int(rank or 0)
    # The SDK's torchrun describes its own job (one process per container); the pod command starts a
    # torchrun of its own, which must see the training job's shape only.
    outer = {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
             "ROLE_NAME", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    env = {k: v for k, v in os.environ.items() if k not in outer and not k.startswith("TORCHELASTIC_")}
    env.update(operator_env(node_rank=node_rank, nnodes=nnodes, nproc_per_node=nproc_per_node,
                            master_addr=master_addr, master_port=master_port))
    # What the nodes write in the workdir is copied and removed by the host's user afterwards, whatever
    # user the image runs as.
    os.umask(0)
    code = subprocess.call(command, env=env)
    os.makedirs(status_dir, exist_ok=True)
    with open(os.path.join(status_dir, f"node-{node_rank}.json"), "w") as fh:
        json.dump({"node": node_rank, "exit_code": code}, fh)
    if code != 0:
        sys.exit(code)


def runtime_document(image: str, name: str = DEFAULT_RUNTIME) -> dict[str, Any]:
    """The chart's ``bgeflow-torch`` TrainingRuntime as far as the SDK's container backend reads one.

    Its name, the framework label, the ``node`` replicated job and that container's image: the SDK
    reads nothing else (security context, volumes and the S3 env are the cluster's; Docker runs the
    image as its own user).
    """
    container = {"name": CONTAINER_NAME, "image": image}
    return {
        "apiVersion": API_VERSION, "kind": "TrainingRuntime",
        "metadata": {"name": name, "labels": {FRAMEWORK_LABEL: "torch"}},
        "spec": {
            "mlPolicy": {"numNodes": 1, "torch": {}},
            "template": {"spec": {"replicatedJobs": [{
                "name": REPLICATED_JOB,
                "template": {"spec": {"template": {"spec": {"containers": [container]}}}},
            }]}},
        },
    }


# --------------------------------------------------------------------------- staging


@dataclass
class Staged:
    """What ``stage`` put in a job's workdir."""

    workdir: Path
    spec: TrainSpec  # as the containers read it (/workspace paths)
    #: The spec's output when it is local (copied back after the job); None for an object store.
    host_output: Path | None
    #: Container path → the URI it stands for, to write the host's paths back into what is copied back.
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        return pod_command(f"{WORKSPACE}/{SPEC_FILE}")


def _local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://")).expanduser()


def _copy_in(uri: str, dest: Path, what: str) -> None:
    """Copy the local file or folder ``uri`` to ``dest``.

    Raises:
        NotFoundError: ``uri`` is neither.
    """
    source = _local_path(uri)
    if source.is_dir():
        shutil.copytree(source, dest)
    elif source.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    else:
        raise NotFoundError(f"{what} {uri}: no such local file or folder to copy into the training containers")


def stage(spec: TrainSpec, workdir: Path) -> Staged:
    """Fill ``workdir`` (emptied first) with what the job's containers read, and the spec they run.

    Local inputs are copied under ``inputs/`` and the spec names their ``/workspace`` paths; remote
    ones (``s3://``, other object stores, hub names, ``bundled:`` models) stay as they are. A local
    output becomes ``/workspace/output``, with the output's checkpoints copied in so a rerun resumes.
    The workdir is made writable for the image's user, whichever it is.

    Raises:
        NotFoundError: a local input that does not exist.
    """
    from bgeflow.core.models import locate_model

    if workdir.exists():
        shutil.rmtree(workdir)
    inputs = workdir / INPUTS_DIR
    for folder in (inputs, workdir / OUTPUT_DIR, workdir / STATUS_DIR):
        folder.mkdir(parents=True)
    staged = Staged(workdir, spec, None)

    def place(uri: str, key: str, what: str) -> str:
        if is_remote(uri):
            return uri
        _copy_in(uri, inputs / key, what)
        inside = f"{WORKSPACE}/{INPUTS_DIR}/{key}"
        staged.paths[inside] = uri
        return inside

    update: dict[str, Any] = {"work_dir": None}  # a path of this machine: the containers use their own /tmp
    if locate_model(spec.model).kind == "local":
        update["model"] = place(spec.model, "model", "model")
    update["train_data"] = [place(uri, f"train_data/{i}/{_local_path(uri).name or 'data'}", "train_data")
                            if not is_remote(uri) else uri for i, uri in enumerate(spec.train_data)]
    if spec.validation.eval_data:
        eval_data = place(spec.validation.eval_data, "validation", "validation.eval_data")
        update["validation"] = spec.validation.model_copy(update={"eval_data": eval_data})
    deepspeed = spec.hyperparameters.get("deepspeed")
    if isinstance(deepspeed, str) and deepspeed:
        update["hyperparameters"] = {**spec.hyperparameters, "deepspeed": place(deepspeed, "deepspeed.json",
                                                                              "hyperparameters.deepspeed")}
    if not is_remote(spec.output):
        staged.host_output = _local_path(spec.output)
        checkpoints = staged.host_output / CHECKPOINTS_PREFIX
        if checkpoints.is_dir():
            shutil.copytree(checkpoints, workdir / OUTPUT_DIR / CHECKPOINTS_PREFIX)
        update["output"] = f"{WORKSPACE}/{OUTPUT_DIR}"
        staged.paths[update["output"]] = spec.output
    staged.spec = spec.model_copy(update=update)
    (workdir / SPEC_FILE).write_text(spec_document(staged.spec), encoding="utf-8")
    _open_to_all(workdir)
    return staged


def _open_to_all(root: Path) -> None:
    """Folders writable and files readable by any user: the image runs as its own (10001), not as this one."""
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o644)


def uses_s3(spec: TrainSpec) -> bool:
    deepspeed = spec.hyperparameters.get("deepspeed")
    uris = [spec.model, spec.output, *spec.train_data, spec.validation.eval_data or "",
            deepspeed if isinstance(deepspeed, str) else ""]
    return any(is_s3(uri) for uri in uris)


def check_endpoints(env: Mapping[str, str]) -> None:
    """Refuse an S3 endpoint on this machine's loopback: inside a container it is the container itself.

    Raises:
        ConfigError: naming the variable and the endpoint.
    """
    for name in ENDPOINT_ENV:
        url = env.get(name)
        host = urlsplit(url).hostname if url else None
        if not host:
            continue
        try:
            loopback = ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_unspecified
        except ValueError:
            loopback = host == "localhost" or host.endswith(".localhost")
        if loopback:
            raise ConfigError(f"{name}={redact(url or '')} is this machine's loopback, which the training containers "
                              "cannot reach (in a container it is the container itself): give an address of the S3 "
                              "endpoint that containers reach (this machine's network address, or the endpoint's "
                              "container on a shared Docker network)")


def container_env(spec: LaunchSpec, train: TrainSpec, environ: Mapping[str, str]) -> dict[str, str]:
    """The env of every container: the launcher's plain-text env, this machine's S3 settings when the job
    uses ``s3://``, and each node's share of this machine's cores.

    Raises:
        ConfigError: the job uses ``s3://`` through an endpoint on the loopback (``check_endpoints``).
    """
    from bgeflow.steps.training.local import shared_cores_env

    env = dict(spec.env)
    if uses_s3(train):
        env.update({name: environ[name] for name in S3_ENV if environ.get(name)})
        check_endpoints(env)
    env.update(shared_cores_env(spec.nnodes * spec.nproc_per_node, environ))
    return env


# --------------------------------------------------------------------------- copying back


def _host_paths(value: Any, paths: Mapping[str, str]) -> Any:
    """``value`` with every string naming a staged container path rewritten to the host URI it stands for."""
    if isinstance(value, dict):
        return {k: _host_paths(v, paths) for k, v in value.items()}
    if isinstance(value, list):
        return [_host_paths(v, paths) for v in value]
    if isinstance(value, str):
        for inside, outside in paths.items():
            if value == inside or value.startswith(inside + "/"):
                return join_uri(outside, value[len(inside) + 1:]) if value != inside else outside
    return value


def _copy_out(here: Path, there: Path) -> None:
    """Copy a file or folder the containers wrote, as files of this user: contents only (the nodes
    write with umask 0), and no symlink followed (one could point at any file of this machine)."""
    if here.is_symlink():
        return
    if here.is_dir():
        there.mkdir(parents=True, exist_ok=True)
        for child in here.iterdir():
            _copy_out(child, there / child.name)
    elif here.is_file():
        shutil.copyfile(here, there)


def copy_back(staged: Staged, *, succeeded: bool) -> None:
    """Copy the job's ``/workspace/output`` to the spec's local output, as the pods would have left it.

    After success: ``model/`` and ``checkpoints/`` replace the output's (stale files go, as a pod's
    upload removes them), other files and folders are merged in, and ``train_summary.json``, the
    output's completion marker, is removed first and written last. Paths in the summary and the
    resolved spec are the host's again. After a failure only ``checkpoints/`` is copied, so a rerun
    resumes and an earlier complete output stays whole. Nothing for an object-store output.
    """
    source = staged.workdir / OUTPUT_DIR
    dest = staged.host_output
    if dest is None or not source.is_dir():
        return
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in source.iterdir()) if succeeded else [CHECKPOINTS_PREFIX]
    if succeeded:
        (dest / SUMMARY_FILE).unlink(missing_ok=True)
    for name in names:
        here, there = source / name, dest / name
        if name == SUMMARY_FILE or not here.exists() or here.is_symlink():
            continue
        if here.is_dir() and name in (MODEL_DIR, CHECKPOINTS_PREFIX) and there.is_dir():
            shutil.rmtree(there)
        if name == CONFIG_FILE and here.is_file():
            document = _host_paths(yaml.safe_load(here.read_text(encoding="utf-8")), staged.paths)
            there.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), encoding="utf-8")
        else:
            _copy_out(here, there)
    summary = source / SUMMARY_FILE
    if succeeded and summary.is_file():
        document = _host_paths(json.loads(summary.read_text(encoding="utf-8")), staged.paths)
        (dest / SUMMARY_FILE).write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------- the backend


@dataclass
class _Job:
    staged: Staged
    client: Any
    logs_done: threading.Event = field(default_factory=threading.Event)
    follower: threading.Thread | None = None
    finished: bool = False
    succeeded: bool = False


def sdk_client(runtime_file: Path) -> Any:
    """A ``TrainerClient`` on the SDK's container backend, reading runtimes from ``runtime_file`` only.

    Images already on this machine are used as they are (``IfNotPresent``). The client keeps the
    workdir when a job is deleted (``auto_remove=False``): its output is copied back first.

    Raises:
        ConfigError: the SDK or the Docker client is not installed, or no Docker Engine (or Podman) answers.
    """
    try:
        from kubeflow.trainer import ContainerBackendConfig, TrainerClient, TrainingRuntimeSource
    except ImportError as exc:
        raise ConfigError(f"the container training backend needs the Kubeflow SDK: {SDK_HINT}") from exc
    config = ContainerBackendConfig(pull_policy="IfNotPresent", auto_remove=False,
                                    runtime_source=TrainingRuntimeSource(sources=[f"file://{runtime_file}"]))
    try:
        return TrainerClient(backend_config=config)
    except ImportError as exc:  # the SDK imports the Docker client only when it connects
        raise ConfigError(f"the container training backend needs the Docker client: {SDK_HINT}") from exc
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"the container training backend needs a Docker Engine (or Podman) this process can "
                          f"reach: {first}") from exc


def sdk_workdir(job: str) -> Path:
    """The job's workdir as the SDK creates and mounts it (``~/.kubeflow/trainer/containers/<job>``)."""
    from kubeflow.trainer.backends.container.utils import create_workdir

    return Path(create_workdir(job))


class ContainerBackend(JobBackend):
    """Runs a ``LaunchSpec`` as one container per node of the gpu image, through ``TrainerClient``.

    ``submit`` stages the job and creates it, ``wait`` streams the nodes' logs, waits and copies the
    output back, ``cancel`` deletes the job (containers and network). Each job's workdir is removed
    when it ends.
    """

    name = "container"

    def __init__(self, *, image: str | None = None, log_sink: Callable[[str], None] = log_to_stderr,
                 client_factory: Callable[[Path], Any] = sdk_client,
                 workdir_of: Callable[[str], Path] = sdk_workdir,
                 environ: Mapping[str, str] | None = None, poll_interval: int = 2) -> None:
        """
        Args:
            image: the nodes' image; default: the pod settings' image, else the gpu image of this
                bgeflow version (``bgeflow.platform.images``).
            log_sink: where the nodes' log lines go (default: stderr).
            client_factory: a ``TrainerClient`` for a runtime file (tests give a fake).
            workdir_of: the host folder the SDK mounts at ``/workspace`` for a job name.
            environ: this process's env (the S3 settings the containers get); default ``os.environ``.
            poll_interval: seconds between the SDK's status polls.
        """
        self.image = image
        self.log_sink = log_sink
        self.client_factory = client_factory
        self.workdir_of = workdir_of
        self.environ = os.environ if environ is None else environ
        self.poll_interval = poll_interval
        self._jobs: dict[str, _Job] = {}

    def _image(self, spec: LaunchSpec) -> str:
        if self.image or spec.pod.image:
            return self.image or spec.pod.image
        from bgeflow.platform.images import GPU_REPOSITORY, image

        return image(GPU_REPOSITORY)

    def submit(self, spec: LaunchSpec) -> bool:
        """Stage the job's inputs and spec in its workdir and start its containers.

        A job of the same name left by an earlier attempt (this process killed before it cleaned up)
        is deleted first: its containers cannot be told apart from a stuck run.

        Raises:
            ConfigError: no SDK, Docker or image; an S3 endpoint the containers cannot reach.
            NotFoundError: a local input that does not exist.
            StepFailed: the SDK could not create the job.
        """
        train = read_spec(pod_command_spec(list(spec.command)))
        env = container_env(spec, train, self.environ)  # refuses a loopback endpoint before anything starts
        workdir = self.workdir_of(spec.name)
        runtime = workdir / STATUS_DIR / RUNTIME_FILE
        client = self.client_factory(runtime)  # the file is read when the job is created, written below
        with contextlib.suppress(ValueError):  # the SDK's "no TrainJob with name ...": nothing left over
            client.delete_job(spec.name)
            log.warning("deleted container job %s left by an earlier attempt", spec.name)
        staged = stage(train, workdir)
        runtime.write_text(yaml.safe_dump(runtime_document(self._image(spec))), encoding="utf-8")
        self._jobs[spec.name] = _Job(staged, client)
        from kubeflow.trainer import CustomTrainer
        from kubeflow.trainer.options import Name

        trainer = CustomTrainer(
            func=run_node, num_nodes=spec.nnodes, env=env,
            func_args={"command": staged.command, "nnodes": spec.nnodes, "nproc_per_node": spec.nproc_per_node,
                       "master_addr": f"{spec.name}-node-0", "master_port": NODE_MASTER_PORT,
                       "status_dir": f"{WORKSPACE}/{STATUS_DIR}"})
        try:
            client.train(runtime=DEFAULT_RUNTIME, trainer=trainer, options=[Name(name=spec.name)])
        except RuntimeError as exc:  # the SDK: the image could not be found or pulled, Docker refused
            self._finish(spec)
            hint = " (build it with `make images`)" if "image" in str(exc).lower() else ""
            raise ConfigError(f"container training job {spec.name}: {exc}{hint}") from exc
        log.info("started container job %s: %d node(s) of %s running %s", spec.name, spec.nnodes,
                 self._image(spec), " ".join(staged.command))
        return False

    def wait(self, spec: LaunchSpec, timeout: float | None) -> None:
        """Follow the nodes' logs until the job completes, then copy its output back and delete it.

        Raises:
            ConfigError: a node refused its input (exit code 2: a rerun would refuse it again).
            StepFailed: a node failed (its exit code and last log lines), or the job vanished.
            TimeoutError: past ``timeout`` seconds (the job is deleted).
        """
        job = self._jobs[spec.name]
        job.follower = threading.Thread(target=self._follow, args=(spec.name, job), daemon=True,
                                        name=f"log-{spec.name}")
        job.follower.start()
        try:
            job.client.wait_for_job_status(spec.name, status={COMPLETE}, polling_interval=self.poll_interval,
                                           timeout=int(timeout) if timeout else NO_TIMEOUT_S)
            job.follower.join(timeout=10)  # the last lines of node 0
            job.succeeded = True
        except RuntimeError as exc:  # the SDK: a node's container exited non-zero
            raise self._failure(spec, job, str(exc)) from None
        except ValueError as exc:  # the SDK: no containers of that name any more
            raise StepFailed(f"container training job {spec.name} was deleted before it finished ({exc})") from None
        except TimeoutError:
            raise TimeoutError(f"container training job {spec.name} did not finish within {timeout:.0f}s; "
                               "deleted it") from None
        finally:
            self._finish(spec)

    def cancel(self, spec: LaunchSpec) -> None:
        self._finish(spec)

    def _follow(self, name: str, job: _Job) -> None:
        """Forward the nodes' log lines (the SDK follows node 0, then the others) until the job ends."""
        pending = ""
        try:
            for chunk in job.client.get_job_logs(name, follow=True):
                if job.logs_done.is_set():
                    return
                pending += chunk
                *lines, pending = pending.split("\n")
                for line in lines:
                    self.log_sink(f"[{name}] {line}")
            if pending and not job.logs_done.is_set():
                self.log_sink(f"[{name}] {pending}")
        except Exception as exc:  # the log is a courtesy; never fail the job over it
            log.debug("log stream of container job %s ended: %s", name, exc)

    def _failure(self, spec: LaunchSpec, job: _Job, sdk_message: str) -> Exception:
        """The error of a failed job: each failed node's exit code of the pod command, then the SDK's
        report (each node's container status and its last log lines)."""
        codes = node_exit_codes(job.staged.workdir / STATUS_DIR)
        failed = {rank: code for rank, code in codes.items() if code != 0}
        said = "; ".join(f"node {rank} exited with code {code}" for rank, code in sorted(failed.items())) or \
            "a node's container failed before `bgeflow train` ended"
        details = "\n".join(line for line in sdk_message.splitlines()[1:] if line.strip())
        where = f"container training job {spec.name} failed: {said}" + (f"\n{details}" if details else "")
        if EXIT_BAD_INPUT in failed.values():
            return ConfigError(f"{where}\nA node refused the training input: fix it, then rerun")
        output = join_uri(job.staged.paths.get(f"{WORKSPACE}/{OUTPUT_DIR}", job.staged.spec.output), CHECKPOINTS_PREFIX)
        return StepFailed(f"{where}\nRerun the same command to resume from the newest complete checkpoint in {output}")

    def _finish(self, spec: LaunchSpec) -> None:
        """Delete the job's containers and network, copy its output back, remove its workdir (once)."""
        job = self._jobs.get(spec.name)
        if job is None or job.finished:
            return
        job.finished = True
        job.logs_done.set()
        with contextlib.suppress(ValueError):  # no containers left
            job.client.delete_job(spec.name)
            log.info("deleted container job %s", spec.name)
        try:
            copy_back(job.staged, succeeded=job.succeeded)
        finally:
            shutil.rmtree(job.staged.workdir, ignore_errors=True)


def node_exit_codes(status_dir: Path) -> dict[int, int]:
    """Node rank → the pod command's exit code, as ``run_node`` left them."""
    codes: dict[int, int] = {}
    for path in sorted(status_dir.glob("node-*.json")):
        with contextlib.suppress(ValueError, KeyError, OSError):
            record = json.loads(path.read_text(encoding="utf-8"))
            codes[int(record["node"])] = int(record["exit_code"])
    return codes
