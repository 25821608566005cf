"""Restricted pods everywhere: the launcher's training pods, the compiled KFP step pods, and a scan
that sees inside PyTorchJobs (and Trainer runtimes) by recasting their pod templates as Pods."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from bgeflow.core.errors import ConfigError
from bgeflow.platform.launcher.spec import PodSettings
from helm.render import REPO

sys.path.insert(0, str(REPO / "scripts"))
from pod_templates import as_pods


@pytest.mark.parametrize("user", [0, -1, True])
def test_run_as_user_must_be_a_non_zero_id(user: object) -> None:
    with pytest.raises(ConfigError, match="run_as_user must be a non-zero user id"):
        PodSettings(image="img", run_as_user=user)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        PodSettings.from_json(json.dumps({"image": "img", "run_as_user": user}))


def test_launched_training_pods_are_restricted() -> None:
    from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest
    from bgeflow.platform.launcher.spec import LaunchSpec, job_name

    spec = LaunchSpec(name=job_name("run/train"), command=["bgeflow", "train"], owner="run/train", nnodes=2,
                      pod=PodSettings(image="img", cpu="4", memory="16Gi"))
    for replica in to_manifest(build_pytorchjob(spec))["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        (container,) = pod["containers"]
        context = container["securityContext"]
        assert pod["automountServiceAccountToken"] is False
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert container["resources"]["limits"]["cpu"] == "4" and container["resources"]["limits"]["memory"] == "16Gi"
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/tmp", "/cache", "/dev/shm"} <= mounts  # writable scratch under the read-only root
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HOME"] == "/tmp" and env["HF_HOME"].startswith("/cache")


def test_every_compiled_step_pod_runs_as_non_root() -> None:
    documents = list(yaml.safe_load_all((REPO / "pipelines" / "bge_finetune.yaml").read_text()))
    platform = next(d for d in documents if d and "platforms" in d)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    pipeline = next(d for d in documents if d and "deploymentSpec" in d)
    assert set(executors) == set(pipeline["deploymentSpec"]["executors"])  # every step, none left out
    for name, executor in executors.items():
        context = executor.get("securityContext")
        assert context and context["runAsNonRoot"] is True, name
        assert int(context["runAsUser"]) == int(context["runAsGroup"]) == 10001, name
    from pipelines.bge_finetune import PipelineOptions

    with pytest.raises(ValueError, match="non-zero"):
        PipelineOptions(run_as_user=0)
    settings = PodSettings.from_json(PipelineOptions().train_pod_settings())
    assert settings.run_as_user == 10001 and settings.cpu and settings.memory


def test_pod_templates_inside_training_jobs_are_recast_as_pods() -> None:
    pytorchjob = {"apiVersion": "kubeflow.org/v1", "kind": "PyTorchJob", "metadata": {"name": "j", "namespace": "n"},
                  "spec": {"pytorchReplicaSpecs": {
                      "Master": {"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}},
                                                             "spec": {"containers": [{"name": "pytorch"}]}}},
                      "Worker": {"replicas": 2, "template": {"spec": {"containers": [{"name": "pytorch"}]}}}}}}
    runtime = {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
               "metadata": {"name": "torch"},
               "spec": {"template": {"spec": {"replicatedJobs": [
                   {"name": "node", "template": {"spec": {"template": {"spec": {"containers": [{"name": "node"}]}}}}}]}}}}
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "plain"},
           "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}
    pods = as_pods([pytorchjob, runtime, job, None])
    assert [p["metadata"]["name"] for p in pods] == [
        "j-pytorchreplicaspecs-master-template", "j-pytorchreplicaspecs-worker-template",
        "torch-template-spec-replicatedjobs-0--template-spec-template"]
    assert all(p["kind"] == "Pod" and p["spec"]["containers"] for p in pods)
    assert pods[0]["metadata"]["labels"] == {"a": "b"} and pods[0]["metadata"]["namespace"] == "n"
    assert pods[0]["metadata"]["annotations"]["bgeflow.dev/recast-from"] == \
        "PyTorchJob/j:pytorchReplicaSpecs.Master.template"
