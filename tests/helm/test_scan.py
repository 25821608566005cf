"""checkov over every rendered scenario: no finding beyond the justified skips in the chart."""

from __future__ import annotations

import subprocess

import pytest

from helm.render import CHART, REPO


@pytest.mark.slow
def test_checkov_reports_nothing() -> None:
    proc = subprocess.run(["bash", str(REPO / "scripts" / "scan.sh")], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert "Failed checks: 0" in proc.stdout and "Passed checks: " in proc.stdout
    # The pods inside custom resources (bgeflow's launcher's PyTorchJobs, the chart's TrainingRuntime)
    # were judged too.
    assert "launcher-pytorchjob.yaml: 3 pod template(s) recast as Pods" in proc.stderr
    assert "trainjob-values.yaml: 1 pod template(s) recast as Pods" in proc.stderr


def test_every_checkov_skip_is_justified() -> None:
    import yaml

    text = (CHART / "checkov.yaml").read_text()
    skips = yaml.safe_load(text)["skip-check"]
    lines = text.splitlines()
    for check in skips:
        i = next(n for n, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[i - 1].strip().startswith("#"), f"{check} has no reason above it"
