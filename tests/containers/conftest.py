"""Fixtures of the container tests: the Docker Engine, the built images, an S3 endpoint on a
network with no way out, and the seeded bucket every step reads from.

``make test-containers`` builds the images first and sets ``BGEFLOW_REQUIRE_CONTAINERS=1``, so
a missing engine or image fails there; elsewhere (``pytest -m containers`` by hand) it skips.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import EXAMPLE_DATA, REPO
from containers.engine import LABEL, Network, PodRunner, PodsResult, image_user
from containers.pods import PodRun, job_pod, pytorchjob_pods

sys.path.insert(0, str(REPO))  # components/ (the image names the pipeline is compiled with)

S3_ALIAS = "s3"  # the S3 endpoint's name on the job network: http://s3:5000, like http://minio.minio:9000
S3_PORT = 5000
BUCKET = "bgeflow"
#: What ``s3.existingSecret`` names in the chart and ``PodSettings.s3_secret`` in the launcher.
S3_SECRET = "bgeflow-s3"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
#: Records of the shipped example data the container runs use: enough to mine and train a few steps.
RECORDS = 240
#: Seconds a pod run may take before the runner stops it, and a test before pytest-timeout does. A
#: step takes well under a minute here on an idle 2-core machine, but the CI machine is shared:
#: under a load average of 50 a 3-step, 2-node training took over 10 minutes.
POD_TIMEOUT = 1500
TEST_TIMEOUT = 2700


def unavailable(reason: str) -> None:
    if os.environ.get("BGEFLOW_REQUIRE_CONTAINERS") == "1":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client() -> Any:
    try:
        import docker

        client = docker.from_env(timeout=300)
        client.ping()
    except Exception as exc:
        unavailable(f"no Docker Engine ({exc}); `make test-containers` starts one")
    return client


@dataclass(frozen=True)
class Images:
    ops: str
    gpu: str


@pytest.fixture(scope="session")
def images(docker_client: Any) -> Images:
    """The tags `make images` gives (and the compiled pipeline and the chart name)."""
    from components.images import GPU_REPOSITORY, OPS_REPOSITORY, image

    found = Images(ops=image(OPS_REPOSITORY), gpu=image(GPU_REPOSITORY))
    for tag in (found.ops, found.gpu):
        try:
            docker_client.images.get(tag)
        except Exception:
            unavailable(f"image {tag} is not built; `make test-containers` (or `make images`) builds it")
    return found


@pytest.fixture(scope="session")
def session_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def network(docker_client: Any, session_id: str) -> Iterator[Network]:
    """Internal: the containers reach each other and the S3 endpoint, and nothing else (no hub)."""
    net = Network(docker_client, "bgeflow-test", internal=True, session=session_id)
    yield net
    net.remove()


@dataclass(frozen=True)
class S3Service:
    internal_url: str  # as the containers reach it
    host_url: str  # as this process reaches it (a loopback port)


def _s3_image(client: Any) -> str:
    moto = version("moto")
    tag = f"localhost/bgeflow-test-s3:moto-{moto}"
    try:
        client.images.get(tag)
        return tag
    except Exception:
        pass
    base = os.environ.get("BGEFLOW_PYTHON_IMAGE") or "python:3.11.13-slim-bookworm"
    dockerfile = (Path(__file__).parent / "s3.Dockerfile").read_bytes()
    client.images.build(fileobj=io.BytesIO(dockerfile), tag=tag, rm=True, pull=False,
                        buildargs={"BASE": base, "MOTO_VERSION": moto}, labels={LABEL: "s3-image"})
    return tag


@pytest.fixture(scope="session")
def s3(docker_client: Any, network: Network, session_id: str) -> Iterator[S3Service]:
    """moto's server in a container: on the job network as ``s3`` and on 127.0.0.1 for this process."""
    from bgeflow.core.storage import s3_client

    container = docker_client.containers.run(
        _s3_image(docker_client), detach=True, name=f"bgeflow-test-s3-{session_id}", labels={LABEL: session_id},
        ports={f"{S3_PORT}/tcp": ("127.0.0.1", None)}, read_only=True, cap_drop=["ALL"],
        security_opt=["no-new-privileges"], tmpfs={"/tmp": "mode=1777"})
    try:
        network.network.connect(container, aliases=[S3_ALIAS])
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"][f"{S3_PORT}/tcp"][0]["HostPort"]
        host_url = f"http://127.0.0.1:{port}"
        saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", *CREDENTIALS, "AWS_DEFAULT_REGION")}
        os.environ.update(AWS_ENDPOINT_URL=host_url, AWS_DEFAULT_REGION="us-east-1", **CREDENTIALS)
        s3_client.cache_clear()
        deadline = time.monotonic() + 60
        while True:
            try:
                s3_client().list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError("moto's S3 container did not answer:\n"
                                       + container.logs().decode()[-2000:]) from None
                time.sleep(0.5)
        yield S3Service(internal_url=f"http://{S3_ALIAS}:{S3_PORT}", host_url=host_url)
    finally:
        container.remove(force=True)
        for key, value in locals().get("saved", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3_client.cache_clear()


@pytest.fixture(scope="session")
def secrets() -> dict[str, dict[str, str]]:
    """The Secrets the rendered pods reference (the kubelet would resolve these)."""
    return {S3_SECRET: dict(CREDENTIALS)}


@dataclass(frozen=True)
class Seed:
    bucket: str
    train: str  # raw training JSONL
    model: str  # all-MiniLM-L6-v2 as a model directory
    reranker: str  # MiniLM with a one-logit head


@pytest.fixture(scope="session")
def seed(s3: S3Service, minilm_path: str, tiny_reranker: str) -> Seed:
    """The inputs a user would have in S3: raw data and the base models (no hub in the containers)."""
    from bgeflow.core.storage import open_store, s3_client

    s3_client().create_bucket(Bucket=BUCKET)
    lines = gzip.decompress(EXAMPLE_DATA.read_bytes()).decode("utf-8").splitlines()
    sample = [lines[i] for i in sorted(random.Random(7).sample(range(len(lines)), RECORDS))]
    root = open_store(f"s3://{BUCKET}/inputs")
    root.write_text("raw/train.jsonl", "\n".join(sample) + "\n")
    root.upload_dir(minilm_path, "models/minilm")
    root.upload_dir(tiny_reranker, "models/tiny-reranker")
    return Seed(bucket=BUCKET, train=f"s3://{BUCKET}/inputs/raw/train.jsonl",
                model=f"s3://{BUCKET}/inputs/models/minilm", reranker=f"s3://{BUCKET}/inputs/models/tiny-reranker")


@pytest.fixture(scope="session")
def runner(docker_client: Any, network: Network, session_id: str, tmp_path_factory: pytest.TempPathFactory) -> PodRunner:
    return PodRunner(docker_client, network, tmp_path_factory.mktemp("container-logs"), session=session_id)


@pytest.fixture(scope="session")
def user_of(docker_client: Any) -> Any:
    return lambda image: image_user(docker_client, image)


def helm_template(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart rendered with ``values`` by the real helm binary (values as JSON: no YAML 1.1/1.2
    disagreement about what `5e-5` is). Without the chart's ``helm test`` hooks: they are not installed."""
    from helm.render import CHART, NAMESPACE, RELEASE, tool

    proc = subprocess.run([tool("helm"), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--skip-tests",
                           "-f", "-"],
                          input=json.dumps(values), capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def with_args(pod: dict[str, Any], container: str, args: list[str]) -> dict[str, Any]:
    """A copy of a rendered pod spec whose ``container`` runs other bgeflow args: for the steps the
    chart has no pod of (evaluate, publish), the pod of the step that runs in the same image. Without
    the init containers, and the volumes only they mounted (the retrain spec's ConfigMap)."""
    pod = copy.deepcopy(pod)
    pod.pop("initContainers", None)
    (target,) = [c for c in pod["containers"] if c["name"] == container]
    target["args"] = list(args)
    mounted = {m["name"] for c in pod["containers"] for m in c.get("volumeMounts") or []}
    pod["volumes"] = [v for v in pod.get("volumes") or [] if v["name"] in mounted]
    return pod


# ------------------------------------------------------------------ the chart's direct mode

#: CPU-sized settings for the bundled MiniLM (short sequences, a few steps): the sequence lengths of
#: mine and evaluate, as their flags.
LENGTHS = ["--query-max-len", "24", "--passage-max-len", "96"]
#: FlagEmbedding/TrainingArguments options of the training runs, by their own names.
TRAIN_OPTIONS: dict[str, Any] = {
    "max_steps": 2, "per_device_train_batch_size": 8, "logging_steps": 1, "save_steps": 100000,
    "learning_rate": 5e-5, "query_max_len": 24, "passage_max_len": 96,
}
#: The retrain block's own settings among them (a run's retriever block declares the lengths: they drive
#: mining and evaluation too).
BLOCK_OPTIONS = ("query_max_len", "passage_max_len")


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def command(run: Any) -> list[str]:
    return [*(run.entrypoint or []), *(run.command or [])]


@pytest.fixture(scope="session")
def chart_objects(s3: S3Service, seed: Seed, images: Images) -> list[dict[str, Any]]:
    """The direct-mode objects, rendered for this S3 endpoint and these inputs: every setting in
    `retrain`, as a KFP run's, from which each Job derives its step's spec."""
    registry, _, tag = images.ops.rpartition(":")
    retriever = {"model": seed.model, "pooling": "mean", **{k: TRAIN_OPTIONS[k] for k in BLOCK_OPTIONS},
                 "hyperparameters": {k: v for k, v in TRAIN_OPTIONS.items() if k not in BLOCK_OPTIONS}}
    values = {
        "image": {"registry": registry.rsplit("/", 1)[0], "tag": tag},
        "kfp": {"enabled": False},
        "s3": {"bucket": BUCKET, "prefix": "chart", "endpoint": s3.internal_url, "existingSecret": S3_SECRET},
        # This machine has no GPU: mine.use_gpu stays false (the default).
        "retrain": {"data": seed.train, "retriever": retriever, "reranker": {"train": False},
                    "ingest": {"eval_fraction": 0.15, "eval_distractors": 100},
                    "mine": {"negative_number": 3, "range_for_sampling": "2-50"},
                    "training": {"nnodes": 2, "nproc_per_node": 1}},
        "direct": {"enabled": True, "shmSize": "1Gi", "waitTimeoutSeconds": 300},
    }
    return helm_template(values)


@pytest.fixture(scope="session")
def chart(chart_objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The direct-mode Jobs by step."""
    objects = {o["metadata"]["name"].split("-")[1]: o for o in chart_objects if o["kind"] == "Job"}
    assert set(objects) == {"ingest", "mine", "retriever", "evaluate", "publish"}  # publish: the retriever's
    return objects


def configmaps(objects: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The rendered ConfigMaps' data by name (what the kubelet mounts as configMap volumes)."""
    return {o["metadata"]["name"]: o.get("data") or {} for o in objects if o["kind"] == "ConfigMap"}


@pytest.fixture(scope="session")
def layout(chart: dict[str, dict[str, Any]]) -> Any:
    """Where the direct-mode stages read and write: the root the Jobs' step-spec init containers get."""
    from bgeflow.platform.direct import DirectLayout

    (init,) = [c for c in chart["ingest"]["spec"]["template"]["spec"]["initContainers"] if c["name"] == "step-spec"]
    return DirectLayout(arg(init["args"], "--root"))


@pytest.fixture(scope="session")
def pods(chart_objects: list[dict[str, Any]], chart: dict[str, dict[str, Any]], secrets: dict[str, dict[str, str]],
         user_of: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    def job(name: str) -> PodRun:
        return job_pod(chart[name], secrets=secrets, configmaps=configmaps(chart_objects), image_user=user_of)

    launched = launched_pytorchjob(chart_objects, chart["retriever"], tmp_path_factory.mktemp("launcher"))
    return {"ingest": job("ingest"), "mine": job("mine"),
            "retriever": pytorchjob_pods(launched, secrets=secrets, image_user=user_of)}


def launched_pytorchjob(objects: list[dict[str, Any]], launcher_job: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """The PyTorchJob the chart's training launcher Job creates once mining is done: its init
    container (the step's spec from the retrain spec) and its own command (``bgeflow launch``) with its
    pod settings, run here, the latter with ``--dry-run``. The spec it writes goes through this
    process's S3 endpoint; the job's pods get the launcher pod's (the job network's)."""
    import contextlib
    from unittest import mock

    from bgeflow.cli import main
    from helm.steps import run_init

    (container,) = launcher_job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    args = run_init(objects, launcher_job, tmp)
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"BGEFLOW_TRAIN_POD_SETTINGS": env["BGEFLOW_TRAIN_POD_SETTINGS"]}), \
            contextlib.redirect_stdout(out):
        assert main([*args, "--dry-run", "--namespace", launcher_job["metadata"]["namespace"]]) == 0
    job = yaml.safe_load(out.getvalue())
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        for c in replica["template"]["spec"]["containers"]:
            for variable in c["env"]:
                if variable["name"] in env and "value" in variable:
                    variable["value"] = env[variable["name"]]
    return job


def run_ok(runner: PodRunner, pods: list[PodRun], timeout: float = POD_TIMEOUT) -> PodsResult:
    result = runner.run(pods, timeout=timeout)
    assert result.ok, result.failure()
    return result


@pytest.fixture(scope="session")
def ingested(runner: PodRunner, pods: dict[str, Any], layout: Any) -> str:
    run_ok(runner, [pods["ingest"]])
    return layout.ingest


@pytest.fixture(scope="session")
def mined(runner: PodRunner, pods: dict[str, Any], ingested: str, layout: Any) -> str:
    run_ok(runner, [pods["mine"]])
    return layout.mined


# ------------------------------------------------------------------ reading results


def store(uri: str) -> Any:
    from bgeflow.core.storage import open_store

    return open_store(uri)


def load_with_sentence_transformers(model: str, tmp_path: Path, *, download: bool = True) -> None:
    from sentence_transformers import SentenceTransformer

    path = model
    if download:
        path = str(tmp_path / "model")
        store(model).download_dir(path)
    encoder = SentenceTransformer(path, device="cpu")
    vectors = encoder.encode(["how do I read a file", "open() returns a file object"], normalize_embeddings=True)
    assert vectors.shape == (2, 384)
