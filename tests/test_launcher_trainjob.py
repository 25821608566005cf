"""The TrainJob the launcher builds: the real v1alpha1 CRD's schema, the SDK's models, what it leaves to the runtime."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest
import yaml

from bgeflow.platform.launcher import ElasticSettings, GangSettings, LaunchSpec, PodSettings, job_name
from conftest import CRDS

CRD_FILE = CRDS / "trainer.kubeflow.org_trainjobs.yaml"
COMMAND = ["bgeflow", "train", "--config", "s3://b/run/train-retriever/train_spec.yaml"]
needs_sdk = pytest.mark.skipif(importlib.util.find_spec("kubeflow_trainer_api") is None,
                               reason="the TrainJob builder needs the Kubeflow SDK (pip install 'bgeflow[kfp]')")


def _strict(schema: dict) -> dict:
    """The schema with unknown fields refused: the API server prunes them silently, so a field this
    CRD does not know would be lost without a word; here it fails the check instead."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


@pytest.fixture(scope="module")
def crd_schema() -> dict:
    if not CRD_FILE.exists():
        pytest.skip(f"the TrainJob CRD is not at {CRD_FILE} (shared/ is laid beside the checkout)")
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return _strict(version["schema"]["openAPIV3Schema"])


def validate(instance: dict, schema: dict) -> None:
    import jsonschema

    jsonschema.validate(instance, schema, cls=jsonschema.Draft7Validator)


def make_spec(nnodes: int = 2, **pod: object) -> LaunchSpec:
    settings = PodSettings(image="ghcr.io/bgeflow/bgeflow-gpu:0.1.0", gpus_per_node=4, cpu="8", memory="64Gi",
                           s3_secret="bgeflow-s3", **pod)
    owner = "3f2a9c1e-7d7b-4c1e-9a55-0f7c7c1b2d3e/train-retriever"
    return LaunchSpec(name=job_name(owner), command=COMMAND, owner=owner, namespace="ml", nnodes=nnodes,
                      nproc_per_node=4, env={"AWS_ENDPOINT_URL": "http://minio.ml:9000"}, pod=settings)


def manifest_of(spec: LaunchSpec) -> dict:
    from bgeflow.platform.launcher.trainjob import build_trainjob, to_manifest

    return to_manifest(build_trainjob(spec))


@needs_sdk
@pytest.mark.parametrize(("nnodes", "pod", "runtime_ref"), [
    (2, {}, {"name": "bgeflow-torch", "kind": "TrainingRuntime", "apiGroup": "trainer.kubeflow.org"}),
    (1, {"runtime": "gpu-torch", "runtime_kind": "ClusterTrainingRuntime"},
     {"name": "gpu-torch", "kind": "ClusterTrainingRuntime", "apiGroup": "trainer.kubeflow.org"}),
])
def test_the_job_names_the_runtime_and_sets_only_the_shape(crd_schema: dict, nnodes: int, pod: dict,
                                                           runtime_ref: dict) -> None:
    spec = make_spec(nnodes, **pod)
    manifest = manifest_of(spec)
    validate(manifest, crd_schema)
    assert (manifest["apiVersion"], manifest["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert manifest["metadata"]["name"] == spec.name and manifest["metadata"]["namespace"] == "ml"
    assert manifest["metadata"]["annotations"] == {"bgeflow.dev/owner": spec.owner}
    assert manifest["spec"] == {
        "runtimeRef": runtime_ref,
        "trainer": {
            "command": COMMAND, "numNodes": nnodes, "numProcPerNode": 4,
            "resourcesPerNode": {"requests": {"cpu": "8", "memory": "64Gi"},
                                 "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"}},
            # Plain-text pass-through only; the S3 keys come from the runtime's Secret reference.
            "env": [{"name": "AWS_ENDPOINT_URL", "value": "http://minio.ml:9000"}],
        },
    }


@needs_sdk
def test_no_resources_no_env_leaves_them_out(crd_schema: dict) -> None:
    owner = "r/t"
    manifest = manifest_of(LaunchSpec(name=job_name(owner), command=["x"], owner=owner))
    validate(manifest, crd_schema)
    assert manifest["spec"]["trainer"] == {"command": ["x"], "numNodes": 1, "numProcPerNode": 1}


@needs_sdk
def test_round_trips_through_the_sdk_models(crd_schema: dict) -> None:
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    from bgeflow.platform.launcher.trainjob import from_manifest, to_manifest

    manifest = manifest_of(make_spec())
    returned = json.loads(json.dumps({**manifest, "status": {"conditions": [{
        "type": "Failed", "status": "True", "reason": "TrainingRuntimeFailed", "message": "node-0 exited 1",
        "lastTransitionTime": "2026-11-30T20:00:00Z"}]}}))  # as the API server returns it
    job = from_manifest(returned)
    assert isinstance(job, TrainerV1alpha1TrainJob)
    assert job.spec.trainer.command == COMMAND and job.spec.runtime_ref.name == "bgeflow-torch"
    assert job.status.conditions[0].reason == "TrainingRuntimeFailed"
    job.status = None
    assert to_manifest(job) == manifest


@needs_sdk
def test_schema_check_is_real(crd_schema: dict) -> None:
    """A wrong type fails it, and so does a field this CRD does not know (the API server would drop it)."""
    import jsonschema

    manifest = manifest_of(make_spec())
    wrong = copy.deepcopy(manifest)
    wrong["spec"]["trainer"]["numNodes"] = "two"
    with pytest.raises(jsonschema.ValidationError, match="'two' is not of type 'integer'"):
        validate(wrong, crd_schema)
    unknown = copy.deepcopy(manifest)
    unknown["spec"]["trainer"]["securityContext"] = {"runAsNonRoot": True}
    with pytest.raises(jsonschema.ValidationError, match="securityContext"):
        validate(unknown, crd_schema)


@needs_sdk
@pytest.mark.parametrize("pod", [
    {"elastic": ElasticSettings(min_replicas=1, max_replicas=2)},
    {"gang": GangSettings(queue="gpu")},
])
def test_what_belongs_to_the_runtime_is_refused(pod: dict) -> None:
    from bgeflow.platform.launcher.trainjob import build_trainjob

    with pytest.raises(ValueError, match="belong to the training runtime TrainingRuntime/bgeflow-torch"):
        build_trainjob(make_spec(**pod))


def test_without_the_sdk_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from bgeflow.platform.launcher.trainjob import build_trainjob

    monkeypatch.setitem(sys.modules, "kubeflow_trainer_api", None)  # import fails as if not installed
    with pytest.raises(ValueError, match=r"needs the Kubeflow SDK's models: pip install 'bgeflow\[kfp\]'"):
        build_trainjob(make_spec())


@pytest.mark.parametrize(("change", "message"), [
    ({"runtime_kind": "JobSet"}, "runtime_kind"),
    ({"runtime": "Bgeflow_Torch"}, "runtime="),
    ({"instance": "not a label!"}, "instance="),
])
def test_runtime_settings_are_validated(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PodSettings(**change)


@needs_sdk
def test_cli_launch_dry_run_prints_a_valid_trainjob(crd_schema: dict, s3_bucket: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import main

    code = main(["launch", "retriever", "--model", "BAAI/bge-base-en-v1.5", "--train-data", f"s3://{s3_bucket}/m.jsonl",
                 "--output", f"s3://{s3_bucket}/out", "--backend", "trainjob", "--namespace", "ml", "--nnodes", "2",
                 "--nproc-per-node", "4", "--gpus-per-node", "4", "--learning_rate", "2e-5", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    manifest = yaml.safe_load(out)
    validate(manifest, crd_schema)
    trainer = manifest["spec"]["trainer"]
    assert trainer["command"] == ["bgeflow", "train", "--config", f"s3://{s3_bucket}/out/train_spec.yaml"]
    assert (trainer["numNodes"], trainer["numProcPerNode"], trainer["resourcesPerNode"]["limits"]) == (
        2, 4, {"nvidia.com/gpu": "4"})
    assert manifest["spec"]["runtimeRef"]["name"] == "bgeflow-torch"


def test_cli_launch_dry_run_needs_one_kind(s3_bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import main
    from bgeflow.core.storage import open_store

    code = main(["launch", "retriever", "--model", "m", "--train-data", f"s3://{s3_bucket}/m.jsonl",
                 "--output", f"s3://{s3_bucket}/auto", "--backend", "auto", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--dry-run prints one kind of job: give --backend pytorchjob or trainjob, not auto" in err
    assert not open_store(f"s3://{s3_bucket}/auto").exists("train_spec.yaml")  # refused before writing
