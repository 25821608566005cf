"""Render the chart with the real helm binary (installed into .tools/bin on first use)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "bgeflow"
TOOLS = REPO / ".tools" / "bin"
# Every scenario the chart promises to render: the defaults plus each ci/*.yaml.
SCENARIOS = ["default", *sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))]
RELEASE, NAMESPACE = "bgeflow", "ml"


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "install-tools.sh")], check=True, capture_output=True)
    return str(path)


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("helm"), *args], capture_output=True, text=True, check=False)


def scenario_args(scenario: str) -> list[str]:
    return [] if scenario == "default" else ["-f", str(CHART / "ci" / f"{scenario}.yaml")]


@cache
def render_text(scenario: str, *extra: str) -> str:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *scenario_args(scenario), *extra)
    if proc.returncode != 0:
        raise AssertionError(f"helm template {scenario} {extra} failed:\n{proc.stderr}")
    return proc.stdout


def render(scenario: str = "default", *extra: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render_text(scenario, *extra)) if d]


def is_test_hook(obj: dict[str, Any]) -> bool:
    """An object of `helm test` (``templates/tests/``): rendered by ``helm template``, never installed."""
    return (obj.get("metadata") or {}).get("annotations", {}).get("helm.sh/hook") == "test"


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) for every pod an object makes: Jobs, CronJobs, PyTorchJob replicas and the
    replicated jobs of a TrainingRuntime."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    if kind == "Job":
        yield f"Job/{name}", spec["template"]["spec"]
    elif kind == "CronJob":
        yield f"CronJob/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
    elif kind == "PyTorchJob":
        for replica, rspec in spec["pytorchReplicaSpecs"].items():
            yield f"PyTorchJob/{name}/{replica}", rspec["template"]["spec"]
    elif kind in ("TrainingRuntime", "ClusterTrainingRuntime"):
        for rjob in spec["template"]["spec"]["replicatedJobs"]:
            yield f"{kind}/{name}/{rjob['name']}", rjob["template"]["spec"]["template"]["spec"]
    elif kind in ("Pod", "Deployment", "StatefulSet", "DaemonSet"):
        yield f"{kind}/{name}", spec if kind == "Pod" else spec["template"]["spec"]


def all_pod_specs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for scenario in SCENARIOS:
        for obj in render(scenario):
            for where, pod in pod_specs(obj):
                yield scenario, where, pod
