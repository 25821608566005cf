"""No credential values in values.yaml, any rendered scenario, manifests/ or compiled pipelines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helm.render import CHART, REPO, SCENARIOS, render_text

PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key with a literal": re.compile(
        r"aws_secret_access_key[\"']?\s*[:=]\s*[\"']?(?![\"'{$\s])[A-Za-z0-9/+=]{8,}", re.IGNORECASE),
    "PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "password with a literal": re.compile(r"password[\"']?\s*:\s*[\"']?(?![\"'{$\s])[^\s\"']+", re.IGNORECASE),
}


def find_secrets(text: str) -> list[str]:
    return [f"{name}: {m.group(0)[:40]}" for name, rx in PATTERNS.items() for m in rx.finditer(text)]


def _files() -> list[Path]:
    files = [CHART / "values.yaml", *sorted((CHART / "ci").glob("*.yaml"))]
    files += sorted((REPO / "manifests").rglob("*.yaml")) + sorted((REPO / "pipelines").glob("*.yaml"))
    return files


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(REPO)))
def test_file_has_no_secret(path: Path) -> None:
    assert not find_secrets(path.read_text(encoding="utf-8")), path


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_render_has_no_secret(scenario: str) -> None:
    text = render_text(scenario)
    assert not find_secrets(text)
    assert "kind: Secret\n" not in text  # the chart references Secrets, never creates one


@pytest.mark.parametrize("leak", [
    "AWS_ACCESS_KEY_ID: AKIAABCDEFGHIJKLMNOP",
    "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "-----BEGIN RSA PRIVATE KEY-----",
    "password: hunter22",
])
def test_patterns_catch_leaks(leak: str) -> None:
    assert find_secrets(leak)


@pytest.mark.parametrize("fine", [
    "password: ''", 'password: "{{ .Values.x }}"', "- name: AWS_SECRET_ACCESS_KEY\n  valueFrom:",
    "aws_secret_access_key: $AWS_SECRET_ACCESS_KEY",
])
def test_patterns_allow_references(fine: str) -> None:
    assert not find_secrets(fine)
