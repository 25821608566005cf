"""The container backend with a fake ``TrainerClient``: staging, env, loopback refusal, failures, cancel.

The real SDK and Docker run in tests/containers/test_container_backend.py; here every check is on
what the backend hands the SDK and does with the workdir, so it runs anywhere in milliseconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.core.errors import ConfigError, NotFoundError, StepFailed
from bgeflow.platform.launcher import PodSettings, launch
from bgeflow.platform.launcher import container as ctr
from bgeflow.platform.launcher.train_job import build_launch_spec
from bgeflow.steps.training.pod import SPEC_FILE, SUMMARY_FILE, read_spec, write_spec
from bgeflow.steps.training.spec import TrainSpec

JOB = "bgeflow-retriever-test-0123abcd"


def make_model(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 512}))
    return root


def train_spec(tmp_path: Path, **overrides: Any) -> TrainSpec:
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text('{"query": "q", "pos": ["p"], "neg": ["n"]}\n')
    document = {"kind": "retriever", "model": "bundled:minilm", "train_data": [str(data)],
                "output": str(tmp_path / "out"), **overrides}
    return TrainSpec.build(document, where="test")


class FakeClient:
    """The part of ``TrainerClient`` the backend uses; ``outcome`` decides how the job ends."""

    def __init__(self, runtime_file: Path, outcome: str = "complete", leftover: bool = False) -> None:
        self.runtime_file = runtime_file
        self.outcome = outcome
        self.alive = leftover  # containers of the job exist
        self.trained: dict[str, Any] = {}
        self.deleted: list[str] = []
        self.workdir = runtime_file.parent.parent

    def delete_job(self, name: str) -> None:
        if not self.alive:
            raise ValueError(f"No TrainJob with name {name}")
        self.alive = False
        self.deleted.append(name)

    def train(self, runtime: str, trainer: Any, options: list[Any]) -> str:
        from kubeflow.trainer.backends.container.runtime_loader import get_training_runtime_from_sources

        self.alive = True
        loaded = get_training_runtime_from_sources(runtime, [f"file://{self.runtime_file}"])
        self.trained = {"runtime": loaded, "trainer": trainer, "name": options[0].name}
        return options[0].name

    def get_job_logs(self, name: str, follow: bool = False) -> Iterator[str]:
        yield "node 0/2 started\nhalf a "
        yield "line\n"

    def wait_for_job_status(self, name: str, status: set[str], timeout: int, polling_interval: int) -> Any:
        out, codes = self.workdir / ctr.OUTPUT_DIR, self.workdir / ctr.STATUS_DIR
        (out / "checkpoints" / "checkpoint-2").mkdir(parents=True)
        (out / "checkpoints" / "checkpoint-2" / "weights").write_text("w")
        if self.outcome == "complete":
            (out / "model").mkdir()
            (out / "model" / "config.json").write_text("{}")
            (out / SUMMARY_FILE).write_text(json.dumps({"model_uri": "/workspace/output/model", "world_size": 2}))
            (out / "train_config.yaml").write_text(yaml.safe_dump({"train_data": ["/workspace/inputs/train_data/0/train.jsonl"]}))
            os.symlink("/etc/hostname", out / "planted")  # never followed on the way out
            return None
        if self.outcome in ("failed", "refused"):
            (codes / "node-0.json").write_text(json.dumps({"node": 0, "exit_code": 1}))
            (codes / "node-1.json").write_text(json.dumps({"node": 1, "exit_code": 2 if self.outcome == "refused" else 1}))
            raise RuntimeError(f"TrainJob {name} is Failed\n  node-0: status=exited, exit_code=1\n"
                               "  node-1: status=exited, exit_code=1\n  Last logs:\n    boom at step 1")
        if self.outcome == "timeout":
            raise TimeoutError("Timeout waiting")
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, as LaunchCancelled) while waiting


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "kubeflow" / JOB


def backend_for(workdir: Path, clients: list[FakeClient], outcome: str = "complete", leftover: bool = False,
                environ: dict[str, str] | None = None) -> ctr.ContainerBackend:
    def factory(runtime_file: Path) -> FakeClient:
        clients.append(FakeClient(runtime_file, outcome, leftover))
        return clients[-1]

    lines: list[str] = []
    backend = ctr.ContainerBackend(client_factory=factory, workdir_of=lambda name: workdir, environ=environ or {},
                                   log_sink=lines.append, image="local/bgeflow-gpu:test")
    backend.lines = lines  # type: ignore[attr-defined]
    return backend


def launch_spec(spec: TrainSpec, nnodes: int = 2) -> Any:
    write_spec(spec)
    launched = build_launch_spec(spec, owner="cli/test", nnodes=nnodes, nproc_per_node=1, pod=PodSettings(),
                                 namespace="default", environ={})
    return launched.__class__(**{**launched.__dict__, "name": JOB})


# --------------------------------------------------------------------------- staging


@pytest.mark.parametrize(("case", "expect"), [
    ("local file data, bundled model", {"train_data": ["/workspace/inputs/train_data/0/train.jsonl"],
                                        "model": "bundled:minilm"}),
    ("local folder data", {"train_data": ["/workspace/inputs/train_data/0/data"]}),
    ("s3 data and output stay", {"train_data": ["s3://b/train.jsonl"], "output": "s3://b/out"}),
    ("local model", {"model": "/workspace/inputs/model"}),
    ("hub model stays", {"model": "BAAI/bge-small-en-v1.5"}),
    ("local validation set", {"validation": "/workspace/inputs/validation"}),
])
def test_stage_copies_local_inputs_and_rewrites_the_spec(tmp_path: Path, workdir: Path, case: str,
                                                         expect: dict[str, Any]) -> None:
    overrides: dict[str, Any] = {"work_dir": str(tmp_path / "scratch")}
    if case == "local folder data":
        overrides["train_data"] = [str(tmp_path / "data")]
    if case.startswith("s3"):
        overrides.update(train_data=["s3://b/train.jsonl"], output="s3://b/out")
    if case == "local model":
        overrides["model"] = str(make_model(tmp_path / "base"))
    if case == "hub model stays":
        overrides["model"] = "BAAI/bge-small-en-v1.5"
    if case == "local validation set":
        (tmp_path / "eval").mkdir()
        (tmp_path / "eval" / "queries.jsonl").write_text("{}\n")
        overrides["validation"] = {"eval_data": str(tmp_path / "eval"), "steps": 2}
    spec = train_spec(tmp_path, **overrides)
    staged = ctr.stage(spec, workdir)

    written = read_spec(str(workdir / SPEC_FILE))
    assert written == staged.spec and written.work_dir is None  # the host's scratch means nothing in a container
    assert written.output == expect.get("output", "/workspace/output")
    for key in ("train_data", "model"):
        if key in expect:
            assert getattr(written, key) == expect[key]
    if "validation" in expect:
        assert written.validation.eval_data == expect["validation"]
        assert (workdir / "inputs" / "validation" / "queries.jsonl").is_file()
    for uri in [written.model, *written.train_data]:  # every staged path is there, readable by any user
        if uri.startswith("/workspace/"):
            path = workdir / uri.removeprefix("/workspace/")
            assert path.exists() and os.stat(path).st_mode & 0o004
    assert os.stat(workdir / "output").st_mode & 0o777 == 0o777
    assert staged.host_output == (None if case.startswith("s3") else tmp_path / "out")
    assert staged.command == ["bgeflow", "train", "--config", "/workspace/train_spec.yaml"]


def test_stage_brings_the_outputs_checkpoints_for_a_resume(tmp_path: Path, workdir: Path) -> None:
    spec = train_spec(tmp_path)
    (tmp_path / "out" / "checkpoints" / "checkpoint-4").mkdir(parents=True)
    (tmp_path / "out" / "checkpoints" / "checkpoint-4" / "done").write_text("x")
    (workdir / "stale").mkdir(parents=True)  # an earlier attempt's leftovers are gone
    ctr.stage(spec, workdir)
    assert (workdir / "output" / "checkpoints" / "checkpoint-4" / "done").is_file()
    assert not (workdir / "stale").exists()


def test_stage_names_a_missing_local_input(tmp_path: Path, workdir: Path) -> None:
    spec = train_spec(tmp_path)
    (tmp_path / "data" / "train.jsonl").unlink()
    with pytest.raises(NotFoundError, match=r"train_data .*train.jsonl: no such local file or folder"):
        ctr.stage(spec, workdir)


# --------------------------------------------------------------------------- env


S3_KEYS = {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}


@pytest.mark.parametrize(("s3", "environ", "refused"), [
    (True, {"AWS_ENDPOINT_URL": "http://minio.example:9000", **S3_KEYS}, None),
    (True, {"AWS_ENDPOINT_URL": "http://192.168.10.5:9000", **S3_KEYS}, None),
    (True, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", **S3_KEYS}, "AWS_ENDPOINT_URL"),
    (True, {"AWS_ENDPOINT_URL": "http://localhost:9000"}, "AWS_ENDPOINT_URL"),
    (True, {"AWS_ENDPOINT_URL": "http://[::1]:9000"}, "AWS_ENDPOINT_URL"),
    (True, {"AWS_ENDPOINT_URL_S3": "http://0.0.0.0:9000"}, "AWS_ENDPOINT_URL_S3"),
    (False, {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", **S3_KEYS}, None),  # no s3:// in the job: unused
])
def test_container_env(tmp_path: Path, s3: bool, environ: dict[str, str], refused: str | None) -> None:
    spec = train_spec(tmp_path, **({"output": "s3://b/out"} if s3 else {}))
    launched = build_launch_spec(spec, owner="o/t", nnodes=2, nproc_per_node=1, pod=PodSettings(), namespace="d",
                                 environ=environ)
    if refused:
        with pytest.raises(ConfigError, match=rf"{refused}=.*loopback.*containers cannot reach"):
            ctr.container_env(launched, spec, environ)
        return
    env = ctr.container_env(launched, spec, environ)
    # Credentials only for a job that uses S3; the endpoint (plain text) as the launcher passes it anyway.
    assert ({k: env.get(k) for k in S3_KEYS} == S3_KEYS) is s3
    assert env.get("AWS_ENDPOINT_URL") == environ.get("AWS_ENDPOINT_URL")
    assert "OMP_NUM_THREADS" in env


def test_the_loopback_refusal_comes_before_anything_starts(tmp_path: Path, workdir: Path) -> None:
    clients: list[FakeClient] = []
    spec = launch_spec(train_spec(tmp_path, output=str(tmp_path / "out")))
    spec.env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9000"
    train = train_spec(tmp_path, train_data=["s3://b/train.jsonl"])
    write_spec(train)
    with pytest.raises(ConfigError, match="loopback"):
        backend_for(workdir, clients).submit(spec)
    assert not clients and not workdir.exists()


# --------------------------------------------------------------------------- the node function


NODE = """
import json, os, sys
keep = ["PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE", "PET_MASTER_ADDR", "PET_MASTER_PORT", "MASTER_PORT",
        "WORLD_SIZE", "RANK", "GROUP_RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "KEEP"]
json.dump({k: os.environ.get(k) for k in keep}, open(sys.argv[1], "w"))
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 2])
def test_run_node_runs_the_command_with_a_pods_env(tmp_path: Path, code: int) -> None:
    """As the SDK runs it: its source alone, called with the func_args, under a torchrun's env."""
    import inspect

    dump, status = tmp_path / "env.json", tmp_path / "status"
    args = {"command": [sys.executable, "-c", NODE, str(dump), str(code)], "nnodes": 2, "nproc_per_node": 3,
            "master_addr": "job-node-0", "master_port": ctr.NODE_MASTER_PORT, "status_dir": str(status)}
    script = inspect.getsource(ctr.run_node) + f"\nrun_node(**{args})\n"  # what the SDK's train.py holds
    outer = {"GROUP_RANK": "1", "RANK": "1", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "29500",
             "TORCHELASTIC_RUN_ID": "none", "KEEP": "yes"}
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, **outer}, capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    env = json.loads(dump.read_text())
    assert (env["PET_NNODES"], env["PET_NODE_RANK"], env["PET_NPROC_PER_NODE"]) == ("2", "1", "3")
    assert (env["PET_MASTER_ADDR"], env["PET_MASTER_PORT"], env["MASTER_PORT"]) == ("job-node-0", "29501", "29501")
    assert env["WORLD_SIZE"] == "6" and env["RANK"] == "1"  # the job's, as the operator's; not the SDK torchrun's
    assert env["GROUP_RANK"] is None and env["LOCAL_RANK"] is None and env["TORCHELASTIC_RUN_ID"] is None
    assert env["KEEP"] == "yes"
    assert json.loads((status / "node-1.json").read_text()) == {"node": 1, "exit_code": code}


def test_run_node_without_a_rank_refuses_to_guess(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GROUP_RANK", "RANK")}
    script = (f"import sys; sys.path.insert(0, {str(Path(ctr.__file__).parents[3])!r})\n"
              "from bgeflow.platform.launcher.container import run_node\n"
              f"run_node(['true'], 2, 1, 'm', 1, {str(tmp_path)!r})")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "rank is unknown" in proc.stderr


def test_runtime_document_is_what_the_sdk_loads(tmp_path: Path) -> None:
    from kubeflow.trainer.backends.container.runtime_loader import get_training_runtime_from_sources
    from kubeflow.trainer.constants.constants import WORKSPACE_PATH

    path = tmp_path / "runtime.yaml"
    path.write_text(yaml.safe_dump(ctr.runtime_document("local/gpu:1")))
    runtime = get_training_runtime_from_sources("bgeflow-torch", [f"file://{path}"])
    assert (runtime.trainer.image, runtime.trainer.framework, runtime.trainer.num_nodes) == ("local/gpu:1", "torch", 1)
    assert ctr.WORKSPACE == WORKSPACE_PATH  # where the SDK mounts the workdir


# --------------------------------------------------------------------------- the job


def test_a_job_runs_streams_and_copies_its_output_back(tmp_path: Path, workdir: Path) -> None:
    clients: list[FakeClient] = []
    spec = train_spec(tmp_path)
    launched = launch_spec(spec)
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "stale.bin").write_text("old")  # an earlier model's file goes
    backend = backend_for(workdir, clients)
    result = launch(launched, backend, timeout=60)

    assert result.backend == "container" and result.adopted is False
    (client,) = clients
    trainer = client.trained["trainer"]
    assert client.trained["name"] == JOB and client.trained["runtime"].trainer.image == "local/bgeflow-gpu:test"
    assert trainer.func is ctr.run_node and trainer.num_nodes == 2
    assert trainer.func_args == {"command": ["bgeflow", "train", "--config", "/workspace/train_spec.yaml"],
                                 "nnodes": 2, "nproc_per_node": 1, "master_addr": f"{JOB}-node-0",
                                 "master_port": 29501, "status_dir": "/workspace/.bgeflow"}
    assert client.deleted == [JOB] and not workdir.exists()
    assert backend.lines == [f"[{JOB}] node 0/2 started", f"[{JOB}] half a line"]  # type: ignore[attr-defined]
    out = tmp_path / "out"
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary == {"model_uri": str(out / "model"), "world_size": 2}  # the host's paths again
    assert yaml.safe_load((out / "train_config.yaml").read_text())["train_data"] == [str(tmp_path / "data" / "train.jsonl")]
    assert (out / "model" / "config.json").is_file() and not (out / "model" / "stale.bin").exists()
    assert not (out / "planted").exists()
    assert read_spec(str(out / SPEC_FILE)).output == str(out)  # the host's spec stays the host's


@pytest.mark.parametrize(("outcome", "error", "message"), [
    ("failed", StepFailed, r"(?s)node 0 exited with code 1; node 1 exited with code 1\n.*boom at step 1\nRerun"),
    ("refused", ConfigError, r"(?s)node 1 exited with code 2\n.*refused the training input"),
    ("timeout", TimeoutError, r"did not finish within 60s; deleted it"),
    ("cancelled", StepFailed, r"cancelled; the job was deleted"),
])
def test_a_job_that_does_not_complete(tmp_path: Path, workdir: Path, outcome: str, error: type[Exception],
                                      message: str) -> None:
    clients: list[FakeClient] = []
    spec = train_spec(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / SUMMARY_FILE).write_text('{"earlier": true}')
    with pytest.raises(error, match=message):
        launch(launch_spec(spec), backend_for(workdir, clients, outcome), timeout=60)
    (client,) = clients
    assert client.deleted == [JOB] and not workdir.exists()  # containers, network and workdir gone
    out = tmp_path / "out"
    assert (out / "checkpoints" / "checkpoint-2" / "weights").is_file()  # a rerun resumes from there
    assert json.loads((out / SUMMARY_FILE).read_text()) == {"earlier": True}  # the earlier output stays whole


def test_a_job_left_by_an_earlier_attempt_is_deleted_first(tmp_path: Path, workdir: Path) -> None:
    clients: list[FakeClient] = []
    launch(launch_spec(train_spec(tmp_path)), backend_for(workdir, clients, leftover=True), timeout=60)
    assert clients[0].deleted == [JOB, JOB]


def test_without_docker_the_error_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import kubeflow.trainer as sdk

    def no_engine(backend_config: Any) -> Any:
        raise RuntimeError("Could not connect to Docker or Podman (tried: docker at default).\nEnsure ...")

    monkeypatch.setattr(sdk, "TrainerClient", no_engine)
    with pytest.raises(ConfigError, match=r"needs a Docker Engine \(or Podman\).*Could not connect to Docker or Podman"):
        ctr.sdk_client(tmp_path / "runtime.yaml")


def test_make_backend_and_the_cli_know_the_backend(tmp_path: Path) -> None:
    from bgeflow.cli import parse_args
    from bgeflow.platform.launcher import make_backend
    from bgeflow.platform.run_spec import TrainingSettings

    assert isinstance(make_backend("container"), ctr.ContainerBackend)
    assert TrainingSettings.build({"backend": "container"}, where="t").backend == "container"
    args = parse_args(["launch", "retriever", "--backend", "container", "--model", "bundled:minilm",
                       "--train-data", "d.jsonl", "--output", str(tmp_path)])
    assert args.backend == "container"
