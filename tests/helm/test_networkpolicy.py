"""The chart's NetworkPolicy selects every training pod: the ones it renders and the ones the launcher creates."""

from __future__ import annotations

from typing import Any

import pytest

from bgeflow.platform.launcher import LaunchSpec, PodSettings, job_name
from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest
from helm.render import RELEASE, pod_specs, render


def _policy(objs: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = [o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == RELEASE]
    return policy


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"]["matchLabels"]
    return all(labels.get(k) == v for k, v in wanted.items())


def _peers(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether pods with ``labels`` may connect to the pods the policy selects."""
    return any(all(labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
               for rule in policy["spec"]["ingress"] for peer in rule["from"])


def test_launcher_created_pods_are_the_releases() -> None:
    """A PyTorchJob launched with the release as its instance: its pods are selected by the release's
    policy and may talk to each other through it (Master and Workers rendezvous, NCCL)."""
    policy = _policy(render())
    owner = "run-1/train-retriever"
    spec = LaunchSpec(name=job_name(owner), command=["bgeflow", "train"], owner=owner, nnodes=2,
                      pod=PodSettings(image="img:1", instance=RELEASE))
    manifest = to_manifest(build_pytorchjob(spec))
    for replica in manifest["spec"]["pytorchReplicaSpecs"].values():
        labels = replica["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert _selects(policy, labels) and _peers(policy, labels), labels


@pytest.mark.parametrize("instance", ["", "other-release"])
def test_pods_of_no_or_another_release_are_not_the_releases(instance: str) -> None:
    policy = _policy(render())
    owner = "run-1/train-retriever"
    spec = LaunchSpec(name=job_name(owner), command=["x"], owner=owner, pod=PodSettings(image="img:1", instance=instance))
    labels = to_manifest(build_pytorchjob(spec))["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"]
    assert not _selects(policy, labels)
    assert ("app.kubernetes.io/instance" in labels) == bool(instance)


def test_training_runtime_pods_are_the_releases() -> None:
    objs = render("trainjob-values")
    policy = _policy(objs)
    (runtime,) = [o for o in objs if o["kind"] == "TrainingRuntime"]
    for rjob in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        labels = rjob["template"]["spec"]["template"]["metadata"]["labels"]
        assert _selects(policy, labels) and _peers(policy, labels), labels
    assert [w for w, _ in pod_specs(runtime)] == ["TrainingRuntime/bgeflow-torch/node"]
