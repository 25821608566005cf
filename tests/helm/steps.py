"""Run a rendered direct-mode Job's commands here: its step-spec init container, then its step's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The Job's container that runs the step (the others are init containers).
INIT = "step-spec"


def _pod(job: dict[str, Any]) -> dict[str, Any]:
    return job["spec"]["template"]["spec"]


def spec_configmap(objs: list[dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    """The ConfigMap whose retrain spec ``job`` mounts."""
    (volume,) = [v for v in _pod(job)["volumes"] if "configMap" in v and v["name"] == "retrain-spec"]
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]]
    return cm


def localised(objs: list[dict[str, Any]], job: dict[str, Any], tmp_path: Path) -> tuple[list[str], list[str]]:
    """(init container args, main container args) of ``job``, its mounts under ``tmp_path``: the
    ConfigMap's retrain spec in the retrain-spec mount, an empty folder for the step-spec volume."""
    pod = _pod(job)
    (init,) = [c for c in pod["initContainers"] if c["name"] == INIT]
    (main,) = pod["containers"]
    places = {"retrain-spec": tmp_path / "retrain-spec", "step-spec": tmp_path / "step-spec"}
    for place in places.values():
        place.mkdir(parents=True, exist_ok=True)
    cm = spec_configmap(objs, job)
    for key, text in cm["data"].items():
        (places["retrain-spec"] / key).write_text(text, encoding="utf-8")
    mounts = {m["mountPath"]: str(places[m["name"]]) for c in (init, main) for m in c["volumeMounts"]
              if m["name"] in places}

    def local(arg: str) -> str:
        for path, here in mounts.items():
            if arg.startswith(path + "/"):
                return here + arg[len(path):]
        return arg

    return [local(a) for a in init["args"]], [local(a) for a in main["args"]]


def run_init(objs: list[dict[str, Any]], job: dict[str, Any], tmp_path: Path) -> list[str]:
    """Run ``job``'s step-spec init container here; returns its main container's args, localised."""
    from bgeflow.cli import main

    init, args = localised(objs, job, tmp_path)
    assert main(init) == 0
    return args


def read_back(command: list[str]) -> Any:
    """The spec a step's command line (``ingest|mine|evaluate|publish|launch KIND ... --config FILE``) runs
    with, read by that step's own parser."""
    from bgeflow.cli import parse_args
    from bgeflow.cli._options import spec_from_args
    from bgeflow.cli.train import build_spec
    from bgeflow.steps.evaluation import EvaluateSpec
    from bgeflow.steps.ingest import IngestSpec
    from bgeflow.steps.mining import MineSpec
    from bgeflow.steps.publish import PublishSpec

    ns = parse_args(command)
    if command[0] == "launch":
        return build_spec(ns)
    specs = {"ingest": IngestSpec, "mine": MineSpec, "evaluate": EvaluateSpec, "publish": PublishSpec}
    return spec_from_args(specs[command[0]], ns, where="")


def step_spec_of(objs: list[dict[str, Any]], job: dict[str, Any], tmp_path: Path) -> Any:
    """The spec ``job``'s main container runs with: its init container run here, then the main
    container's command line read by the step's own parser."""
    return read_back(run_init(objs, job, tmp_path))
