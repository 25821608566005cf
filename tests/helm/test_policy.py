"""Restricted Pod Security profile, resources and scheduling on every pod of every scenario."""

from __future__ import annotations

from typing import Any

import pytest

from helm.render import SCENARIOS, all_pod_specs, is_test_hook, pod_specs, render

PODS = list(all_pod_specs())


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def test_every_scenario_renders_pods() -> None:
    # Guards the parametrisation below: a walker that finds nothing would pass vacuously.
    assert {s for s, _, _ in PODS} == set(SCENARIOS)
    assert any(where == "TrainingRuntime/bgeflow-torch/node" for _, where, _ in PODS), "no runtime pod was walked"


@pytest.mark.parametrize(("scenario", "where", "pod"), PODS, ids=[f"{s}:{w}" for s, w, _ in PODS])
def test_restricted_profile(scenario: str, where: str, pod: dict[str, Any]) -> None:
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for c in _containers(pod):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, f"{where}/{c['name']}"
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        assert sc.get("privileged") is not True
        assert sc["readOnlyRootFilesystem"] is True
        assert {"/tmp"} <= {m["mountPath"] for m in c.get("volumeMounts", [])}, f"{where}/{c['name']}: no writable /tmp"
        assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], f"{where}/{c['name']}"
        assert not c["image"].endswith(":latest") and ":" in c["image"].rsplit("/", 1)[-1]


@pytest.mark.parametrize(("scenario", "where", "pod"), PODS, ids=[f"{s}:{w}" for s, w, _ in PODS])
def test_gpu_pods_have_memory_backed_dev_shm(scenario: str, where: str, pod: dict[str, Any]) -> None:
    main = pod["containers"][0]
    if "nvidia.com/gpu" not in main["resources"].get("limits", {}):
        return
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    assert "/dev/shm" in mounts, f"{where}: training pod without /dev/shm"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["sizeLimit"]


def test_training_pods_are_gpu_pods() -> None:
    for obj in render("trainjob-values"):
        if obj["kind"] == "TrainingRuntime":
            for where, pod in pod_specs(obj):
                assert pod["containers"][0]["name"] == "node"  # the container Trainer fills from the TrainJob
                assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"], where
                assert pod["tolerations"][0]["key"] == "nvidia.com/gpu", where


def test_gpu_scheduling_only_on_gpu_pods() -> None:
    seen_gpu = seen_cpu = 0
    for obj in (o for o in render("gpu-tolerations-values") if not is_test_hook(o)):  # not `helm test`'s
        for where, pod in pod_specs(obj):
            gpu = "nvidia.com/gpu" in pod["containers"][0]["resources"].get("limits", {})
            keys = {t["key"] for t in pod.get("tolerations", [])}
            assert pod["nodeSelector"]["kubernetes.io/os"] == "linux", where
            assert "dedicated" in keys, where
            assert ("nvidia.com/gpu" in keys) == gpu, where
            assert (pod["nodeSelector"].get("nvidia.com/gpu.present") == "true") == gpu, where
            if gpu:
                seen_gpu += 1
                shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
                assert shm["emptyDir"]["sizeLimit"] == "32Gi"
            else:
                seen_cpu += 1
    # mine; ingest, the two training launchers (the GPUs are the launched jobs', see test_direct_gpus),
    # evaluate (on the CPU unless direct.evaluate.resources asks for a GPU) and the two publish Jobs
    assert seen_gpu == 1 and seen_cpu == 6


def test_image_pull_secrets_and_registry_reach_every_pod() -> None:
    pods = [pod for obj in render("minio-values") for _, pod in pod_specs(obj)]
    assert pods
    for pod in pods:
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        for c in _containers(pod):
            assert c["image"].startswith("registry.example.internal/ml/bgeflow-")


def test_s3_keys_only_by_secret_reference() -> None:
    for scenario in ("minio-values", "direct-values"):
        for obj in render(scenario):
            for where, pod in pod_specs(obj):
                for c in _containers(pod):
                    env = {e["name"]: e for e in c.get("env", [])}
                    if "AWS_ACCESS_KEY_ID" not in env:
                        assert "AWS_SECRET_ACCESS_KEY" not in env
                        continue
                    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                        assert "value" not in env[key], f"{where}: literal {key}"
                        assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key
