"""GitOps retrain trigger: content-addressed run names, one submission across syncs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from bgeflow.platform.gitops import RetrainSpec, check_parameters, run_name, schedule, schedule_name, trigger
from test_kfp_client import FakeKfp

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "bge_finetune.yaml"

BASE = {
    "revision": "",
    "data": {"train": "s3://bucket/raw/"},
    "retriever": {"enabled": True, "baseModel": "BAAI/bge-base-en-v1.5"},
    "reranker": {"enabled": True, "baseModel": "BAAI/bge-reranker-base"},
    "hyperparameters": {"retriever_hyperparameters": {"num_train_epochs": 2}},
    "output": "s3://bucket/bgeflow",
}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    params = ["train_data", "work_uri", "retriever_model", "reranker_model", "train_retriever",
              "train_reranker", "retriever_hyperparameters", "seed"]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {p: {} for p in params}}}}))
    return path


def _spec(values: dict | None = None, **overrides: object) -> RetrainSpec:
    return RetrainSpec.from_values(values if values is not None else BASE, pipeline_version="0.1.0", **overrides)


def test_run_name_is_stable_and_well_formed() -> None:
    name = run_name(_spec())
    assert name == run_name(_spec(json.loads(json.dumps(BASE))))
    assert name.startswith("bge-finetune-") and len(name) == len("bge-finetune-") + 12
    # Key order in the values file does not matter: the hash is over canonical JSON.
    reordered = dict(reversed(list(BASE.items())))
    assert run_name(_spec(reordered)) == name


@pytest.mark.parametrize(("path", "value"), [
    (("revision",), "ticket-42"),
    (("data", "train"), "s3://bucket/raw-v2/"),
    (("retriever", "enabled"), False),
    (("retriever", "baseModel"), "BAAI/bge-large-en-v1.5"),
    (("reranker", "enabled"), False),
    (("reranker", "baseModel"), "BAAI/bge-reranker-large"),
    (("hyperparameters", "retriever_hyperparameters"), {"num_train_epochs": 3}),
    (("hyperparameters", "seed"), 7),
    (("output",), "s3://bucket/other"),
])
def test_run_name_changes_with_every_field(path: tuple[str, ...], value: object) -> None:
    changed = json.loads(json.dumps(BASE))
    node = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert run_name(_spec(changed)) != run_name(_spec())


def test_run_name_changes_with_pipeline_version_and_schedule_id() -> None:
    base = _spec()
    assert run_name(dataclasses.replace(base, pipeline_version="0.2.0")) != run_name(base)
    assert run_name(dataclasses.replace(base, schedule_id="2025-W23")) != run_name(base)


def test_spec_validation() -> None:
    with pytest.raises(ValueError, match=r"data\.train"):
        _spec({**BASE, "data": {"train": ""}})
    with pytest.raises(ValueError, match="both false"):
        _spec({**BASE, "retriever": {"enabled": False}, "reranker": {"enabled": False}})
    with pytest.raises(ValueError, match="unknown keys"):
        _spec({**BASE, "epochs": 3})
    with pytest.raises(ValueError, match="repeat structured fields"):
        _spec({**BASE, "hyperparameters": {"train_data": "s3://x"}})


def test_parameters_map_to_pipeline_inputs(package: Path) -> None:
    params = _spec().parameters()
    assert params == {
        "train_data": "s3://bucket/raw/", "retriever_model": "BAAI/bge-base-en-v1.5",
        "reranker_model": "BAAI/bge-reranker-base", "train_retriever": True, "train_reranker": True,
        "work_uri": "s3://bucket/bgeflow", "retriever_hyperparameters": {"num_train_epochs": 2},
    }
    check_parameters(_spec(), package)
    with pytest.raises(ValueError, match="does not declare"):
        check_parameters(_spec({**BASE, "hyperparameters": {"epochs": 1}}), package)


def test_trigger_submits_once_across_two_syncs(package: Path) -> None:
    kfp = FakeKfp()
    first = trigger(kfp, _spec(), package_path=package, experiment="bgeflow", service_account="bgeflow")
    second = trigger(kfp, _spec(), package_path=package, experiment="bgeflow", service_account="bgeflow")
    assert first.submitted and not second.submitted and first.run_id == second.run_id
    runs = [w for w in kfp.writes if w.startswith("run ")]
    assert runs == [f"run {first.run_name}"]
    # A commit that changes the spec: exactly one more run.
    third = trigger(kfp, _spec({**BASE, "revision": "r2"}), package_path=package, experiment="bgeflow")
    assert third.submitted and len([w for w in kfp.writes if w.startswith("run ")]) == 2
    (submitted,) = [r for r in kfp.runs.values() if r["id"] == first.run_id]
    assert submitted["params"] == _spec().parameters() and submitted["service_account"] == "bgeflow"


def test_trigger_rejects_unknown_parameters_before_any_kfp_write(package: Path) -> None:
    kfp = FakeKfp()
    with pytest.raises(ValueError, match="does not declare"):
        trigger(kfp, _spec({**BASE, "hyperparameters": {"nope": 1}}), package_path=package, experiment="e")
    assert kfp.writes == []


def test_schedule_keeps_one_recurring_run(package: Path) -> None:
    kfp = FakeKfp()
    a = schedule(kfp, _spec(), cron="0 0 3 * * 1", package_path=package, experiment="e")
    b = schedule(kfp, _spec(), cron="0 0 3 * * 1", package_path=package, experiment="e")
    assert a.submitted and not b.submitted and len(kfp.recurring) == 1
    c = schedule(kfp, _spec(), cron="0 0 4 * * 1", package_path=package, experiment="e")
    assert c.submitted and [r["name"] for r in kfp.recurring.values()] == [c.run_name]
    assert schedule_name(_spec(), "0 0 4 * * 1") == c.run_name != a.run_name


def test_cli_dry_run_prints_the_run_name(tmp_path: Path, package: Path, capsys: pytest.CaptureFixture) -> None:
    from bgeflow.cli import main

    spec_file = tmp_path / "retrain.yaml"
    spec_file.write_text(yaml.safe_dump({**BASE, "enabled": True}))
    rc = main(["pipeline", "trigger", "--dry-run", "--spec", str(spec_file), "--experiment", "e",
               "--package", str(package), "--version", "0.1.0"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["run_name"] == run_name(_spec())


def test_cli_wait_times_out_naming_the_missing_uri(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from bgeflow.cli import main

    (tmp_path / "done.json").write_text("{}")
    assert main(["pipeline", "wait", "--uri", str(tmp_path / "done.json"), "--timeout", "1"]) == 0
    rc = main(["pipeline", "wait", "--uri", str(tmp_path / "missing.json"), "--timeout", "0.2", "--interval", "0.1"])
    assert rc == 1 and "missing.json" in capsys.readouterr().err


def test_chart_spec_matches_the_compiled_pipeline() -> None:
    """The ConfigMap the chart renders resolves to parameters the real pipeline declares."""
    if not COMPILED.exists():
        pytest.skip(f"{COMPILED} is not compiled in this tree")
    from helm.render import render

    for scenario in ("irsa-values", "minio-values", "recurring-values"):
        cm = next(o for o in render(scenario) if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-retrain"))
        spec = RetrainSpec.load_text(cm["data"]["retrain.yaml"], pipeline_version="0.1.0")
        check_parameters(spec, COMPILED)
