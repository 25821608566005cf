"""A component's Python process is the container's process: SIGTERM from KFP reaches it, not a shell.

KFP's lightweight components run ``sh -ec '<script>' <source> <args>``. Under the images' ``/bin/sh``
(Debian's dash) the script's last command runs as a child of ``sh`` unless it is ``exec``'d, so a
SIGTERM that reaches only ``sh`` would leave the train launcher polling and its job running (no
delete). Each compiled command is run here with a stand-in ``python3`` that prints its PID.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO

COMPONENTS = sorted((REPO / "components").glob("*.yaml"))
PIPELINE = REPO / "pipelines" / "bge_finetune.yaml"


def _commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in COMPONENTS:
        for name, executor in yaml.safe_load(path.read_text())["deploymentSpec"]["executors"].items():
            found.append((f"{path.name}:{name}", executor["container"]["command"]))
    pipeline = yaml.safe_load_all(PIPELINE.read_text())
    for name, executor in next(pipeline)["deploymentSpec"]["executors"].items():
        found.append((f"{PIPELINE.name}:{name}", executor["container"]["command"]))
    return found


COMMANDS = _commands()


def test_every_component_and_pipeline_step_is_checked() -> None:
    assert len(COMPONENTS) == 5 and len(COMMANDS) >= 10


@pytest.mark.skipif(shutil.which("dash") is None, reason="needs dash, the images' /bin/sh")
@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_python_replaces_the_shell(where: str, command: list[str], tmp_path: Path) -> None:
    shell, flags, script = command[:3]
    assert (shell, flags) == ("sh", "-ec"), where
    fake = tmp_path / "bin" / "python3"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$$"\n')
    fake.chmod(0o755)
    env: dict[str, Any] = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
                           "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(["dash", flags, script, "print('component source')"], stdout=subprocess.PIPE,
                            env=env, text=True)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.strip() == str(proc.pid), f"{where}: python3 ran as a child of sh (pid {out.strip()} != {proc.pid})"
