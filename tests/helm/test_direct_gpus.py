"""Direct mode requests the training GPUs only when training starts, never while ingest and mining run.

Each stage's pods wait (init container ``wait-for-input``) for the previous stage's output. A pod
that waits with GPUs requested holds them idle for as long as ingest and mining take (up to
``direct.waitTimeoutSeconds``): the training stage is therefore a light launcher Job that waits,
then creates the training job (PyTorchJob or TrainJob) with its GPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from helm.render import pod_specs, render
from helm.steps import run_init

GPU = "nvidia.com/gpu"


def _gpus(pod: dict[str, Any]) -> int:
    return sum(int((c.get("resources") or {}).get(key, {}).get(GPU) or 0)
               for c in pod.get("initContainers", []) + pod["containers"] for key in ("requests", "limits"))


def _waits_for(pod: dict[str, Any]) -> str | None:
    for c in pod.get("initContainers", []):
        if c["name"] == "wait-for-input":
            return c["args"][c["args"].index("--uri") + 1]
    return None


@pytest.mark.parametrize("backend", ["pytorchjob", "trainjob"])
@pytest.mark.parametrize("scenario", ["direct-values", "gpu-tolerations-values"])
def test_no_training_gpu_waits_for_ingest_or_mining(scenario: str, backend: str) -> None:
    objs = render(scenario, "--set", f"retrain.training.backend={backend}")
    waiting = [(where, _waits_for(pod), _gpus(pod)) for obj in objs for where, pod in pod_specs(obj) if _waits_for(pod)]
    train_stage = [(where, gpus) for where, uri, gpus in waiting if uri.endswith("/mine/mine_report.json")]
    assert len(train_stage) == 2, waiting  # the retriever's and the reranker's training stages
    assert all(gpus == 0 for _, gpus in train_stage), train_stage
    # Nothing the chart renders for training holds GPUs at install time: no PyTorchJob, no TrainJob.
    assert not [o for o in objs if o["kind"] in ("PyTorchJob", "TrainJob")]


def _launcher_job(objs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """The training launcher Job of ``model`` (not the one that publishes it)."""
    (job,) = [o for o in objs if o["kind"] == "Job" and o["spec"]["template"]["spec"]["containers"][0]["args"][:2]
              == ["launch", model]]
    return job


def _launcher(objs: list[dict[str, Any]], model: str) -> dict[str, Any]:
    return _launcher_job(objs, model)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(("backend", "crd", "version"), [
    ("pytorchjob", "kubeflow.org_pytorchjobs.yaml", "v1"),
    ("trainjob", "trainer.kubeflow.org_trainjobs.yaml", "v1alpha1"),
])
def test_the_launcher_creates_a_valid_job_with_the_gpus(backend: str, crd: str, version: str, s3_bucket: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """What the launcher Job runs, as it runs it (its step-spec init container, then its args and its pod
    settings env) with --dry-run: the training job it would create validates against the real CRD and
    carries the GPUs, the GPU scheduling, the retrain spec's nodes and the release's label."""
    import importlib.util

    import jsonschema
    import yaml

    from bgeflow.cli import main
    from conftest import CRDS

    if backend == "trainjob" and importlib.util.find_spec("kubeflow_trainer_api") is None:
        pytest.skip("the TrainJob builder needs the Kubeflow SDK (pip install 'bgeflow[kfp]')")
    if not (CRDS / crd).exists():
        pytest.skip(f"the CRD is not at {CRDS / crd} (shared/ is laid beside the checkout)")
    objs = render("gpu-tolerations-values", "--set", f"retrain.training.backend={backend}",
                  "--set", f"s3.bucket={s3_bucket}", "--set", "retrain.training.nnodes=2")
    container = _launcher(objs, "retriever")
    assert container["command"] == ["bgeflow"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    monkeypatch.setenv("BGEFLOW_TRAIN_POD_SETTINGS", env["BGEFLOW_TRAIN_POD_SETTINGS"])
    args = run_init(objs, _launcher_job(objs, "retriever"), tmp_path)
    capsys.readouterr()
    assert main([*args, "--dry-run", "--namespace", "ml"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    schema = next(v for v in yaml.safe_load((CRDS / crd).read_text())["spec"]["versions"] if v["name"] == version)
    jsonschema.validate(job, schema["schema"]["openAPIV3Schema"])
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == "bgeflow"
    if backend == "pytorchjob":
        pod = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"][GPU] == "1"
        # The chart's requests are what the scheduler places by, its limits the caps (values.yaml).
        assert pod["containers"][0]["resources"]["requests"] == {"cpu": "8", "memory": "64Gi"}
        assert pod["containers"][0]["resources"]["limits"] == {"cpu": "16", "memory": "96Gi", GPU: "1"}
        assert {"key": GPU, "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "nvidia.com/gpu.present": "true"}
        assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in pod["volumes"]
        assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1  # retrain.training.nnodes 2
    else:  # the runtime owns the pod (and its GPU scheduling); the TrainJob asks for the GPUs
        assert job["spec"]["trainer"]["resourcesPerNode"]["limits"][GPU] == "1"
        assert job["spec"]["trainer"]["resourcesPerNode"]["requests"] == {"cpu": "8", "memory": "64Gi"}
        assert job["spec"]["trainer"]["numNodes"] == 2
