"""Idempotent KFP operations against an in-memory fake of the KfpClient protocol."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bgeflow.platform.kfp_client import (
    PipelineVersion,
    RecurringRun,
    ensure_pipeline_version,
    ensure_recurring_run,
    submit_run_once,
)


class FakeKfp:
    """Keeps pipelines, versions, experiments, runs and recurring runs; counts every write."""

    def __init__(self) -> None:
        self._ids = (f"id-{i}" for i in itertools.count())
        self.pipelines: dict[str, str] = {}
        self.versions: dict[tuple[str, str], str] = {}
        self.experiments: dict[str, str] = {}
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}
        self.recurring: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    def find_pipeline(self, name: str) -> str | None:
        return self.pipelines.get(name)

    def create_pipeline(self, package_path: str, name: str) -> str:
        assert name not in self.pipelines, "KFP refuses a second pipeline of one name"
        self.writes.append(f"pipeline {name}")
        self.pipelines[name] = next(self._ids)
        return self.pipelines[name]

    def find_pipeline_version(self, pipeline_id: str, version_name: str) -> str | None:
        return self.versions.get((pipeline_id, version_name))

    def create_pipeline_version(self, package_path: str, pipeline_id: str, version_name: str) -> str:
        assert (pipeline_id, version_name) not in self.versions
        self.writes.append(f"version {version_name}")
        self.versions[(pipeline_id, version_name)] = next(self._ids)
        return self.versions[(pipeline_id, version_name)]

    def ensure_experiment(self, name: str) -> str:
        return self.experiments.setdefault(name, next(self._ids))

    def find_run(self, experiment_id: str, run_name: str) -> str | None:
        run = self.runs.get((experiment_id, run_name))
        return run["id"] if run else None

    def create_run(self, experiment_id: str, run_name: str, version: PipelineVersion,
                   params: Mapping[str, Any], service_account: str) -> str:
        self.writes.append(f"run {run_name}")
        self.runs[(experiment_id, run_name)] = {"id": next(self._ids), "version": version, "params": dict(params),
                                                "service_account": service_account}
        return self.runs[(experiment_id, run_name)]["id"]

    def list_recurring_runs(self, experiment_id: str) -> list[RecurringRun]:
        return [RecurringRun(i, r["name"]) for i, r in self.recurring.items() if r["experiment"] == experiment_id]

    def create_recurring_run(self, experiment_id: str, name: str, version: PipelineVersion,
                             params: Mapping[str, Any], cron: str, service_account: str) -> str:
        self.writes.append(f"recurring {name}")
        rr_id = next(self._ids)
        self.recurring[rr_id] = {"experiment": experiment_id, "name": name, "cron": cron, "params": dict(params)}
        return rr_id

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self.writes.append(f"delete {recurring_run_id}")
        del self.recurring[recurring_run_id]


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("root:\n  inputDefinitions:\n    parameters:\n      train_data: {parameterType: STRING}\n")
    return path


def test_upload_is_idempotent(package: Path) -> None:
    kfp = FakeKfp()
    first = ensure_pipeline_version(kfp, package, "bge-finetune", "0.1.0")
    second = ensure_pipeline_version(kfp, package, "bge-finetune", "0.1.0")
    assert first == second and kfp.writes == ["pipeline bge-finetune", "version 0.1.0"]
    newer = ensure_pipeline_version(kfp, package, "bge-finetune", "0.2.0")
    assert newer.pipeline_id == first.pipeline_id and newer.version_id != first.version_id
    assert kfp.writes[-1] == "version 0.2.0"


def test_upload_needs_a_package_and_a_version(tmp_path: Path, package: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ensure_pipeline_version(FakeKfp(), tmp_path / "missing.yaml", "bge-finetune", "0.1.0")
    with pytest.raises(ValueError, match="empty version"):
        ensure_pipeline_version(FakeKfp(), package, "bge-finetune", "")


def test_submit_once(package: Path) -> None:
    kfp = FakeKfp()
    version = ensure_pipeline_version(kfp, package, "bge-finetune", "0.1.0")
    run_id, submitted = submit_run_once(kfp, experiment="e", run_name="r1", version=version,
                                        params={"train_data": "s3://b/x"}, service_account="sa")
    again_id, again = submit_run_once(kfp, experiment="e", run_name="r1", version=version,
                                      params={"train_data": "s3://b/x"}, service_account="sa")
    assert submitted and not again and run_id == again_id
    assert [w for w in kfp.writes if w.startswith("run")] == ["run r1"]
    (run,) = kfp.runs.values()
    assert run["service_account"] == "sa" and run["version"] == version


def test_recurring_run_kept_single_and_replaced_on_change(package: Path) -> None:
    kfp = FakeKfp()
    version = ensure_pipeline_version(kfp, package, "bge-finetune", "0.1.0")
    kw = {"experiment": "e", "prefix": "s-", "version": version, "params": {}, "cron": "0 0 3 * * 1"}
    first, created = ensure_recurring_run(kfp, name="s-aaa", **kw)
    same, created_again = ensure_recurring_run(kfp, name="s-aaa", **kw)
    assert created and not created_again and same == first
    _other, replaced = ensure_recurring_run(kfp, name="s-bbb", **kw)
    assert replaced and [r["name"] for r in kfp.recurring.values()] == ["s-bbb"]
    assert f"delete {first}" in kfp.writes
    with pytest.raises(ValueError, match="prefix"):
        ensure_recurring_run(kfp, name="x-ccc", **kw)


def test_real_client_is_constructed_lazily_and_needs_a_host() -> None:
    from bgeflow.platform.kfp_client import RealKfpClient

    with pytest.raises(ValueError, match="KFP host"):
        RealKfpClient("")
