"""The PyTorchJob the launcher builds: SDK round trip, the real CRD's schema, naming, pod settings."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from bgeflow.platform.launcher import ElasticSettings, GangSettings, LaunchSpec, PodSettings, job_name
from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, from_manifest, to_manifest
from conftest import CRDS

CRD_FILE = CRDS / "kubeflow.org_pytorchjobs.yaml"
COMMAND = ["bgeflow", "train", "retriever", "--model", "BAAI/bge-base-en-v1.5", "--train-data", "s3://b/train.jsonl"]


@pytest.fixture(scope="module")
def crd_schema() -> dict:
    if not CRD_FILE.exists():
        pytest.skip(f"the PyTorchJob CRD is not at {CRD_FILE} (shared/ is laid beside the checkout)")
    crd = yaml.safe_load(CRD_FILE.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def make_spec(**pod: object) -> LaunchSpec:
    settings = PodSettings(
        image="ghcr.io/bgeflow/bgeflow-gpu:0.1.0", gpus_per_node=2, cpu="8", memory="64Gi", shm_size="8Gi",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred"], s3_secret="bgeflow-s3", service_account="bgeflow-train",
        active_deadline_seconds=7200, **pod,
    )
    owner = "3f2a9c1e-7d7b-4c1e-9a55-0f7c7c1b2d3e/train-retriever"
    return LaunchSpec(name=job_name(owner), command=COMMAND, owner=owner, namespace="ml", nnodes=3,
                      nproc_per_node=2, env={"AWS_ENDPOINT_URL": "http://minio.ml:9000"}, pod=settings)


def validate(instance: dict, schema: dict) -> None:
    import jsonschema

    jsonschema.validate(instance, schema, cls=jsonschema.Draft7Validator)


def test_master_workers_resources_and_security(crd_schema: dict) -> None:
    spec = make_spec()
    manifest = to_manifest(build_pytorchjob(spec))
    validate(manifest, crd_schema)
    assert manifest["apiVersion"] == "kubeflow.org/v1" and manifest["kind"] == "PyTorchJob"
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    assert manifest["spec"]["nprocPerNode"] == "2"
    pod = replicas["Worker"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["name"] == "pytorch" and container["command"] == COMMAND
    assert container["resources"] == {"requests": {"cpu": "8", "memory": "64Gi"},
                                      "limits": {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "2"}}
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                            "runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                            "readOnlyRootFilesystem": True,
                                            "seccompProfile": {"type": "RuntimeDefault"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # writable under the read-only root
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert pod["serviceAccountName"] == "bgeflow-train"
    run_policy = manifest["spec"]["runPolicy"]
    assert run_policy == {"cleanPodPolicy": "Running", "backoffLimit": 2, "activeDeadlineSeconds": 7200,
                          "ttlSecondsAfterFinished": 86400}
    assert "elasticPolicy" not in manifest["spec"]


def test_s3_credentials_are_secret_references_only() -> None:
    manifest = to_manifest(build_pytorchjob(make_spec()))
    env = manifest["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["AWS_SECRET_ACCESS_KEY"] == {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {
        "secretKeyRef": {"name": "bgeflow-s3", "key": "AWS_SECRET_ACCESS_KEY", "optional": True}}}
    assert "value" not in by_name["AWS_ACCESS_KEY_ID"]
    assert by_name["AWS_ENDPOINT_URL"]["value"] == "http://minio.ml:9000"


def test_round_trips_through_the_sdk_models(crd_schema: dict) -> None:
    from kubeflow.training.models import KubeflowOrgV1PyTorchJob

    manifest = to_manifest(build_pytorchjob(make_spec(gang=GangSettings(queue="gpu", priority_class="high"))))
    job = from_manifest(json.loads(json.dumps(manifest)))  # as it comes back from the API server
    assert isinstance(job, KubeflowOrgV1PyTorchJob)
    assert job.spec.pytorch_replica_specs["Worker"].template.spec.containers[0].command == COMMAND
    assert job.spec.run_policy.scheduling_policy.queue == "gpu"
    assert to_manifest(job) == manifest


def test_single_node_is_master_only(crd_schema: dict) -> None:
    spec = make_spec()
    spec.nnodes = 1
    manifest = to_manifest(build_pytorchjob(spec))
    validate(manifest, crd_schema)
    assert list(manifest["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_elastic_and_gang(crd_schema: dict) -> None:
    spec = make_spec(elastic=ElasticSettings(min_replicas=2, max_replicas=4), gang=GangSettings(schedule_timeout_seconds=600))
    manifest = to_manifest(build_pytorchjob(spec))
    validate(manifest, crd_schema)
    assert manifest["spec"]["elasticPolicy"] == {"minReplicas": 2, "maxReplicas": 4, "maxRestarts": 3, "rdzvBackend": "c10d"}
    assert list(manifest["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
    assert manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert manifest["spec"]["runPolicy"]["schedulingPolicy"] == {"minAvailable": 3, "scheduleTimeoutSeconds": 600}


def test_schema_rejects_a_broken_job(crd_schema: dict) -> None:
    """The schema check is real: a wrong type in the rendered object fails it."""
    import jsonschema

    manifest = to_manifest(build_pytorchjob(make_spec()))
    manifest["spec"]["runPolicy"]["backoffLimit"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        validate(manifest, crd_schema)


def test_job_name_is_deterministic_dns1035_and_distinct() -> None:
    run = "3f2a9c1e-7d7b-4c1e-9a55-0f7c7c1b2d3e"
    names = {job_name(f"{run}/{task}") for task in ("train-retriever", "train-reranker")}
    assert len(names) == 2
    assert job_name(f"{run}/train-retriever") == job_name(f"{run}/train-retriever")
    for owner in (f"{run}/train-retriever", "9" * 200 + "/Task_Name", "/"):
        name = job_name(owner)
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        # The operator's per-replica Services (<job>-worker-<i>) and JobSet's pods
        # (<job>-node-0-<i>-<random>; JobSet's webhook refused a 51-char name on the real cluster) are labels too.
        assert len(f"{name}-worker-9999") <= 63, name
        assert len(f"{name}-node-0-9999-abcde") <= 63, name
    assert job_name("a" * 100 + "/x") != job_name("a" * 100 + "/y")  # truncation keeps them apart
    with pytest.raises(ValueError, match="owner"):
        job_name("")


@pytest.mark.parametrize(("nnodes", "longest_name"), [
    (1, 48),   # JobSet's pod <name>-node-0-0-abcde binds first (15 characters of suffix)
    (2, 48),   # ... before the Training Operator's <name>-worker-0 (9)
    (11, 47),  # <name>-node-0-10-abcde
])
def test_a_name_whose_derived_names_would_be_too_long_is_refused(nnodes: int, longest_name: int) -> None:
    name = "j" + "x" * (longest_name - 1)
    assert LaunchSpec(name=name, command=["x"], owner="r/t", nnodes=nnodes).name
    with pytest.raises(ValueError, match="pod or Service"):
        LaunchSpec(name=name + "x", command=["x"], owner="r/t", nnodes=nnodes)


@pytest.mark.parametrize(("change", "message"), [
    ({"cpu": "four"}, "quantity"),
    ({"clean_pod_policy": "Sometimes"}, "clean_pod_policy"),
    ({"tolerations": [{"key": "k", "colour": "red"}]}, "unknown field"),
    ({"elastic": {"min_replicas": 3, "max_replicas": 2}}, "min_replicas"),
])
def test_pod_settings_are_validated(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PodSettings(**change)


def test_pod_settings_json_round_trip_and_unknown_keys() -> None:
    settings = PodSettings(image="img:1", gpus_per_node=1, elastic=ElasticSettings(1, 2), gang=GangSettings(queue="q"))
    assert PodSettings.from_json(settings.to_json()) == settings
    with pytest.raises(ValueError, match="unknown key"):
        PodSettings.from_json('{"imagee": "x"}')


def test_spec_without_image_or_with_bad_name_is_refused() -> None:
    with pytest.raises(ValueError, match="image"):
        build_pytorchjob(LaunchSpec(name="job", command=["x"], owner="r/t"))
    with pytest.raises(ValueError, match="DNS-1035"):
        LaunchSpec(name="Job_1", command=["x"], owner="r/t")


def test_cli_launch_dry_run_prints_a_valid_job(crd_schema: dict, s3_bucket: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import main
    from bgeflow.core.storage import open_store

    code = main(["launch", "retriever", "--model", "BAAI/bge-base-en-v1.5", "--train-data", f"s3://{s3_bucket}/m.jsonl",
                 "--output", f"s3://{s3_bucket}/out", "--image", "ghcr.io/bgeflow/bgeflow-gpu:0.1.0", "--namespace",
                 "ml", "--nnodes", "2", "--nproc-per-node", "4", "--gpus-per-node", "4", "--learning_rate", "2e-5",
                 "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    manifest = yaml.safe_load(out)
    validate(manifest, crd_schema)
    container = manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["bgeflow", "train", "--config", f"s3://{s3_bucket}/out/train_spec.yaml"]
    # Every value of the command is a string: the YAML applies as it is (no float where Kubernetes wants a string).
    assert all(isinstance(part, str) for part in container["command"])
    written = yaml.safe_load(open_store(f"s3://{s3_bucket}/out").read_text("train_spec.yaml"))
    assert written["kind"] == "retriever" and written["hyperparameters"] == {"learning_rate": 2e-5}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert manifest["metadata"]["namespace"] == "ml" and manifest["spec"]["nprocPerNode"] == "4"


def test_cli_launch_bad_option_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.cli import main

    code = main(["launch", "reranker", "--model", "m", "--train-data", "d", "--output", "s3://b/o", "--image", "i",
                 "--temperature", "0.1", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "temperature" in err
    code = main(["launch", "reranker", "--model", "m", "--train-data", "d", "--output", "local/dir", "--image", "i",
                 "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "training pods cannot write" in err


@pytest.mark.parametrize(("field", "value", "message"), [
    ("command", ["bgeflow", "train", "--learning-rate", 2e-5], r"command parts must be strings, got \[2e-05\]"),
    ("env", {"BGEFLOW_S3_MAX_WORKERS": 8}, r"env values must be strings, got \{'BGEFLOW_S3_MAX_WORKERS': 8\}"),
])
def test_non_string_command_or_env_is_refused(field: str, value: object, message: str) -> None:
    """What made `--dry-run` print `- 2e-05` unquoted: a number where Kubernetes wants a string."""
    owner = "r/t"
    kwargs = {"command": ["bgeflow"], field: value}
    with pytest.raises(ValueError, match=message):
        LaunchSpec(name=job_name(owner), owner=owner, **kwargs)


def test_dry_run_yaml_keeps_number_like_strings_strings(crd_schema: dict) -> None:
    """Strings that read as numbers in YAML stay quoted in the printed job, so `kubectl apply -f -` gets strings."""
    owner = "r/t"
    spec = LaunchSpec(name=job_name(owner), owner=owner, command=["bgeflow", "--lr", "2e-05", "8", "true", "null"],
                      env={"N": "1"}, pod=PodSettings(image="img:1"))
    text = yaml.safe_dump(to_manifest(build_pytorchjob(spec)), sort_keys=False)
    back = yaml.safe_load(text)
    validate(back, crd_schema)
    container = back["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["bgeflow", "--lr", "2e-05", "8", "true", "null"]
    assert {"name": "N", "value": "1"} in container["env"]
