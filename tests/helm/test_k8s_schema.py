"""Rendered objects against the API's schemas: core kinds via kubernetes-validate (offline,
strict: unknown fields fail), PyTorchJobs via the real CRD and the kubeflow-training models, the
TrainingRuntime's Jobs as batch/v1 Jobs and the whole runtime through the Kubeflow SDK's models."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest
import yaml

from helm.render import SCENARIOS, render

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
K8S_VERSIONS = ("1.27.0", "1.33.0")


CUSTOM_KINDS = ("PyTorchJob", "TrainingRuntime")


def _objects(kind: str | None = None, exclude: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    return [(s, o) for s in SCENARIOS for o in render(s)
            if (kind is None or o["kind"] == kind) and o["kind"] not in exclude]


CORE = _objects(exclude=CUSTOM_KINDS)
PYTORCHJOBS = _objects("PyTorchJob")
RUNTIMES = _objects("TrainingRuntime")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_core_objects_validate(version: str) -> None:
    import kubernetes_validate

    assert len(CORE) > 20
    for scenario, obj in CORE:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: {obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc.message}")


def test_validator_rejects_a_broken_job() -> None:
    # Control: the validator really checks fields (so the test above can fail).
    import kubernetes_validate

    job = copy.deepcopy(next(o for _, o in CORE if o["kind"] == "Job"))
    job["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsUsr"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, K8S_VERSIONS[-1], strict=True)


@pytest.fixture(scope="module")
def pytorchjob_schema() -> dict[str, Any]:
    from conftest import CRDS

    path = CRDS / "kubeflow.org_pytorchjobs.yaml"
    if not path.exists():
        pytest.skip(f"PyTorchJob CRD not found at {path} (shared/ is laid beside the checkout)")
    crd = yaml.safe_load(path.read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return version["schema"]["openAPIV3Schema"]


def test_scenarios_render_pytorchjobs() -> None:
    assert {s for s, _ in PYTORCHJOBS} == {"direct-values", "gpu-tolerations-values"}


@pytest.mark.parametrize(("scenario", "job"), PYTORCHJOBS, ids=[f"{s}:{o['metadata']['name']}" for s, o in PYTORCHJOBS])
def test_pytorchjob_matches_crd(scenario: str, job: dict[str, Any], pytorchjob_schema: dict[str, Any]) -> None:
    import jsonschema

    jsonschema.validate(job, pytorchjob_schema)
    broken = copy.deepcopy(job)
    broken["spec"]["nprocPerNode"] = 4  # the CRD types it as a string
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, pytorchjob_schema)


@pytest.mark.parametrize(("scenario", "job"), PYTORCHJOBS, ids=[f"{s}:{o['metadata']['name']}" for s, o in PYTORCHJOBS])
def test_pytorchjob_round_trips_through_kubeflow_training(scenario: str, job: dict[str, Any]) -> None:
    from kubeflow.training import ApiClient
    from kubeflow.training.utils.utils import FakeResponse

    model = ApiClient().deserialize(FakeResponse(job), "KubeflowOrgV1PyTorchJob")
    assert ApiClient().sanitize_for_serialization(model) == job


def test_direct_pytorchjob_has_the_launchers_shape() -> None:
    """Same layout as bgeflow.platform.launcher builds for the same settings (stricter security aside)."""
    from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest
    from bgeflow.platform.launcher.spec import LaunchSpec, PodSettings

    chart = next(o for s, o in PYTORCHJOBS if s == "direct-values" and "-retriever-" in o["metadata"]["name"])
    master = chart["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    launched = to_manifest(build_pytorchjob(LaunchSpec(
        name="x", owner="run/task", command=[*master["command"], *master["args"]], nnodes=2, nproc_per_node=4,
        pod=PodSettings(image=master["image"], gpus_per_node=4, shm_size="16Gi"),
    )))
    assert chart["apiVersion"] == launched["apiVersion"] and chart["kind"] == launched["kind"]
    assert chart["spec"]["nprocPerNode"] == launched["spec"]["nprocPerNode"]
    for name, replica in launched["spec"]["pytorchReplicaSpecs"].items():
        mine = chart["spec"]["pytorchReplicaSpecs"][name]
        assert (mine["replicas"], mine["restartPolicy"]) == (replica["replicas"], replica["restartPolicy"])
        theirs_pod, our_pod = replica["template"]["spec"], mine["template"]["spec"]
        theirs_c, our_c = theirs_pod["containers"][0], our_pod["containers"][0]
        assert our_c["name"] == theirs_c["name"]
        assert [*our_c["command"], *our_c["args"]] == theirs_c["command"]
        shm = {v["name"]: v for v in theirs_pod["volumes"]}
        ours = {v["name"]: v for v in our_pod["volumes"]}
        assert {m["mountPath"] for m in theirs_c["volumeMounts"]} <= {m["mountPath"] for m in our_c["volumeMounts"]}
        assert ours["dshm"]["emptyDir"]["medium"] == shm["dshm"]["emptyDir"]["medium"] == "Memory"
    assert set(chart["spec"]["pytorchReplicaSpecs"]) == set(launched["spec"]["pytorchReplicaSpecs"])
    assert chart["spec"]["runPolicy"]["cleanPodPolicy"] == launched["spec"]["runPolicy"]["cleanPodPolicy"]


def test_scenarios_render_the_training_runtime() -> None:
    assert {s for s, _ in RUNTIMES} == {"trainjob-values"}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize(("scenario", "runtime"), RUNTIMES, ids=[s for s, _ in RUNTIMES])
def test_training_runtime_jobs_are_valid_jobs(scenario: str, runtime: dict[str, Any], version: str) -> None:
    """Each replicated job's template is a batch/v1 Job spec as JobSet creates it: checked strictly."""
    import kubernetes_validate

    for rjob in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": f"x-{rjob['name']}-0"},
               "spec": rjob["template"]["spec"]}
        try:
            kubernetes_validate.validate(job, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{scenario}: TrainingRuntime replicated job {rjob['name']} invalid for {version}: {exc.message}")


@pytest.mark.skipif(importlib.util.find_spec("kubeflow_trainer_api") is None,
                    reason="needs the Kubeflow SDK's models (pip install 'bgeflow[trainer]')")
@pytest.mark.parametrize(("scenario", "runtime"), RUNTIMES, ids=[s for s, _ in RUNTIMES])
def test_training_runtime_round_trips_through_the_sdk(scenario: str, runtime: dict[str, Any]) -> None:
    """The SDK reads the runtime as TrainerClient.get_runtime does: a torch runtime of custom trainers."""
    from kubeflow.trainer.backends.kubernetes import utils
    from kubeflow.trainer.types import types
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainingRuntime

    model = TrainerV1alpha1TrainingRuntime.from_dict(runtime)
    assert model.to_dict() == runtime
    trainer = utils.get_runtime_trainer(model.metadata.labels["trainer.kubeflow.org/framework"],
                                        model.spec.template.spec.replicated_jobs, model.spec.ml_policy)
    assert trainer.trainer_type == types.TrainerType.CUSTOM_TRAINER and trainer.framework == "torch"
