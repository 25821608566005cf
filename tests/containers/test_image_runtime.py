"""The built images as their pods run them: entrypoint, user, dependencies, writable paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from containers.conftest import POD_TIMEOUT, Images, Seed, run_ok
from containers.engine import PodRunner
from containers.pods import pod_run, pytorchjob_pods

pytestmark = pytest.mark.containers

#: Writes a file where huggingface_hub caches downloads (HF_HOME): a hub model has to land there.
HF_CACHE_PROBE = ("import pathlib, huggingface_hub.constants as c; p = pathlib.Path(c.HF_HUB_CACHE); "
                  "p.mkdir(parents=True, exist_ok=True); (p / 'probe').write_text('ok'); print(p)")


def run_image(client: Any, image: str, *args: str, **kwargs: Any) -> str:
    return client.containers.run(image, list(args), remove=True, **kwargs).decode()


@pytest.mark.parametrize("kind", ["ops", "gpu"])
def test_image_defaults(docker_client: Any, images: Images, kind: str) -> None:
    """No arguments: the CLI's help, as the numeric non-root user the chart's runAsUser names."""
    image = getattr(images, kind)
    assert docker_client.images.get(image).attrs["Config"]["User"] == "10001:10001"
    assert "usage: bgeflow" in run_image(docker_client, image)
    assert run_image(docker_client, image, "--version").strip()


def test_gpu_image_dependencies(docker_client: Any, images: Images) -> None:
    """torch, faiss with GPU support, FlagEmbedding, and the bundled MiniLM that `bgeflow run`'s defaults
    (bundled:minilm) train from: resolved offline, to a model folder inside the image."""
    code = ("import faiss, torch, FlagEmbedding, sentence_transformers, kfp, json, pathlib; "
            "from bgeflow.core.models import BUNDLED_MINILM, resolve_model; "
            "path = pathlib.Path(resolve_model(BUNDLED_MINILM)); "
            "print(json.dumps([torch.__version__, hasattr(faiss, 'StandardGpuResources'), "
            "(path / 'config.json').is_file()]))")
    out = run_image(docker_client, images.gpu, "-c", code, entrypoint=["python"], read_only=True,
                    tmpfs={"/tmp": "mode=1777"}, cap_drop=["ALL"], network_disabled=True)
    version, gpu_faiss, bundled = json.loads(out.strip().splitlines()[-1])
    assert version.startswith("2.") and gpu_faiss and bundled


def test_ops_image_is_light_and_ships_the_pipeline(docker_client: Any, images: Images) -> None:
    from bgeflow.cli.pipeline import DEFAULT_PACKAGE

    code = (f"import importlib.util, pathlib; print(importlib.util.find_spec('torch') is None, "
            f"pathlib.Path('{DEFAULT_PACKAGE}').is_file())")
    out = run_image(docker_client, images.ops, "-c", code, entrypoint=["python"])
    assert out.split() == ["True", "True"]


def test_hf_cache_is_writable_where_no_volume_is_mounted(runner: PodRunner, images: Images, seed: Seed,
                                                         capsys: pytest.CaptureFixture[str], user_of: Any) -> None:
    """A hub model is downloaded to HF_HOME (/cache/huggingface, set by the gpu image). KFP's steps
    mount nothing there and run as 10001 on the image's own root: the image's folder must be
    writable to that user. The launcher's training pods mount an emptyDir at /cache over a
    read-only root: the cache must be creatable in it."""
    from bgeflow.cli import main

    assert main(["launch", "retriever", "--dry-run", "--model", "BAAI/bge-small-en-v1.5", "--train-data",
                 f"s3://{seed.bucket}/probe/d.jsonl", "--output", f"s3://{seed.bucket}/probe/out", "--image", images.gpu,
                 "--namespace", "ml"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    (pod,) = pytorchjob_pods(job, image_user=user_of)
    (run,) = pod.containers
    assert run.read_only and "/cache" in {m.target for m in run.mounts}
    run.entrypoint, run.command = ["python", "-c", HF_CACHE_PROBE], []
    result = run_ok(runner, [pod], timeout=POD_TIMEOUT)
    assert result.containers[0].stdout.strip() == "/cache/huggingface/hub"
    # ... and as a KFP step runs: the pipeline's securityContext (runAsUser/runAsGroup), no volume at all
    step = pod_run({"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
                    "containers": [{"name": "c", "image": images.gpu, "command": ["python", "-c", HF_CACHE_PROBE]}]},
                   name="kfp-step")
    result = run_ok(runner, [step], timeout=POD_TIMEOUT)
    assert result.containers[0].stdout.strip() == "/cache/huggingface/hub"


def test_the_runner_fails_on_what_did_not_run(runner: PodRunner, images: Images) -> None:
    """The harness itself: a container the engine refuses, and one past its deadline, are failures."""
    missing = pod_run({"containers": [{"name": "c", "image": "localhost/bgeflow-no-such-image:0"}]}, name="missing")
    result = runner.run([missing], timeout=60)
    assert not result.ok and "ImageNotFound" in result.errors[0], result.failure()
    slow = pod_run({"containers": [{"name": "c", "image": images.ops, "command": ["sleep", "60"]}]}, name="slow")
    result = runner.run([slow], timeout=3)
    assert not result.ok and result.timed_out and result.seconds < 40, result.failure()
