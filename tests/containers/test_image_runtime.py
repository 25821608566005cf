"""The built images as their pods run them: entrypoint, user, dependencies, writable paths."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from containers.conftest import POD_TIMEOUT, Images, run_ok
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
    code = ("import faiss, torch, FlagEmbedding, sentence_transformers, kfp, json; "
            "print(json.dumps([torch.__version__, hasattr(faiss, 'StandardGpuResources')]))")
    out = run_image(docker_client, images.gpu, "-c", code, entrypoint=["python"], read_only=True,
                    tmpfs={"/tmp": "mode=1777"}, cap_drop=["ALL"])
    version, gpu_faiss = json.loads(out.strip().splitlines()[-1])
    assert version.startswith("2.") and gpu_faiss


def test_ops_image_is_light_and_ships_the_pipeline(docker_client: Any, images: Images) -> None:
    from bgeflow.cli.pipeline import DEFAULT_PACKAGE

    code = (f"import importlib.util, pathlib; print(importlib.util.find_spec('torch') is None, "
            f"pathlib.Path('{DEFAULT_PACKAGE}').is_file())")
    out = run_image(docker_client, images.ops, "-c", code, entrypoint=["python"])
    assert out.split() == ["True", "True"]


def test_hf_cache_is_writable_where_no_volume_is_mounted(runner: PodRunner, images: Images, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str], user_of: Any) -> None:
    """The launcher's training pods (and KFP's steps) mount nothing at HF_HOME (/cache/huggingface,
    set by the gpu image): a hub model's download must still find a writable cache there."""
    from bgeflow.cli import main

    assert main(["launch", "retriever", "--dry-run", "--model", "BAAI/bge-small-en-v1.5", "--train-data",
                 "s3://b/d.jsonl", "--output", "s3://b/out", "--image", images.gpu, "--namespace", "ml"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    (pod,) = pytorchjob_pods(job, image_user=user_of)
    assert "/cache" not in {m.target for m in pod.containers[0].mounts}
    probe = copy.deepcopy(pod)
    probe.containers[0].entrypoint, probe.containers[0].command = ["python", "-c", HF_CACHE_PROBE], []
    result = run_ok(runner, [probe], timeout=POD_TIMEOUT)
    assert result.containers[0].stdout.strip() == "/cache/huggingface/hub"
    # ... and where the chart mounts its emptyDir over /cache, on a read-only root
    chart_like = pod_run({"securityContext": {"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True},
                          "volumes": [{"name": "cache", "emptyDir": {}}],
                          "containers": [{"name": "c", "image": images.gpu, "command": ["python", "-c", HF_CACHE_PROBE],
                                          "securityContext": {"readOnlyRootFilesystem": True},
                                          "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}]},
                         name="hf-cache")
    run_ok(runner, [chart_like], timeout=POD_TIMEOUT)


def test_the_runner_fails_on_what_did_not_run(runner: PodRunner, images: Images) -> None:
    """The harness itself: a container the engine refuses, and one past its deadline, are failures."""
    missing = pod_run({"containers": [{"name": "c", "image": "localhost/bgeflow-no-such-image:0"}]}, name="missing")
    result = runner.run([missing], timeout=60)
    assert not result.ok and "ImageNotFound" in result.errors[0], result.failure()
    slow = pod_run({"containers": [{"name": "c", "image": images.ops, "command": ["sleep", "60"]}]}, name="slow")
    result = runner.run([slow], timeout=3)
    assert not result.ok and result.timed_out and result.seconds < 40, result.failure()
