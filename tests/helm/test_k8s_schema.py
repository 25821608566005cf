"""Rendered objects against the API's schemas: core kinds via kubernetes-validate (offline,
strict: unknown fields fail), the TrainingRuntime's Jobs as batch/v1 Jobs and the whole runtime
through the Kubeflow SDK's models. The chart renders no PyTorchJob: its direct mode launches one
(tests/helm/test_direct_gpus.py checks the job its launcher builds against the real CRD)."""

from __future__ import annotations

import copy
import importlib.util
from typing import Any

import pytest

from helm.render import SCENARIOS, render

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
K8S_VERSIONS = ("1.27.0", "1.33.0")


CUSTOM_KINDS = ("TrainingRuntime",)


def _objects(kind: str | None = None, exclude: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    return [(s, o) for s in SCENARIOS for o in render(s)
            if (kind is None or o["kind"] == kind) and o["kind"] not in exclude]


CORE = _objects(exclude=CUSTOM_KINDS)
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
                    reason="needs the Kubeflow SDK's models (pip install 'bgeflow[kfp]')")
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
