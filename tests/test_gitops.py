"""GitOps retrain trigger: content-addressed run names, one submission across syncs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bgeflow.core.errors import ConfigError
from bgeflow.platform.gitops import RetrainSpec, check_parameters, run_name, schedule, schedule_name, trigger
from bgeflow.platform.run_spec import RunSpec
from test_kfp_client import FakeKfp

REPO = Path(__file__).resolve().parents[1]
COMPILED = REPO / "pipelines" / "bge_finetune.yaml"

BASE = {
    "revision": "",
    "data": "s3://bucket/raw/",
    "retriever": {"model": "BAAI/bge-base-en-v1.5", "hyperparameters": {"num_train_epochs": 2}},
    "reranker": {"model": "BAAI/bge-reranker-base"},
    "work_uri": "s3://bucket/bgeflow",
}


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A compiled pipeline declaring exactly the run spec's keys (as the real one does)."""
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {p: {} for p in RunSpec.model_fields}}}}))
    return path


def _spec(values: dict | None = None) -> RetrainSpec:
    return RetrainSpec.build(values if values is not None else BASE)


def test_run_name_is_stable_and_well_formed() -> None:
    name = run_name(_spec(), pipeline_version="0.1.0")
    assert name == run_name(_spec(json.loads(json.dumps(BASE))), pipeline_version="0.1.0")
    assert name.startswith("bge-finetune-") and len(name) == len("bge-finetune-") + 12
    # Key order in the values file does not matter: the hash is over canonical JSON.
    reordered = dict(reversed(list(BASE.items())))
    assert run_name(_spec(reordered), pipeline_version="0.1.0") == name
    # A default written out is the same spec as a default left out.
    explicit = {**BASE, "mine": {"negative_number": 15}, "publish": {"champion": "if-gate-passed"}}
    assert run_name(_spec(explicit), pipeline_version="0.1.0") == name


@pytest.mark.parametrize(("path", "value"), [
    (("revision",), "ticket-42"),
    (("data",), "s3://bucket/raw-v2/"),
    (("retriever", "train"), False),
    (("retriever", "model"), "BAAI/bge-large-en-v1.5"),
    (("reranker", "train"), False),
    (("reranker", "model"), "BAAI/bge-reranker-large"),
    (("retriever", "hyperparameters"), {"num_train_epochs": 3}),
    (("mine", "seed"), 7),
    (("work_uri",), "s3://bucket/other"),
])
def test_run_name_changes_with_every_field(path: tuple[str, ...], value: object) -> None:
    changed = json.loads(json.dumps(BASE))
    node = changed
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    assert run_name(_spec(changed)) != run_name(_spec())


def test_run_name_changes_with_pipeline_version_and_schedule_id() -> None:
    base = _spec()
    assert run_name(base, pipeline_version="0.2.0") != run_name(base, pipeline_version="0.1.0")
    assert run_name(base, schedule_id="2025-W23") != run_name(base)


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match=r"data: List should have at least 1 item"):
        _spec({**BASE, "data": ""})
    with pytest.raises(ConfigError, match="unknown setting 'epochs'"):
        _spec({**BASE, "epochs": 3})
    with pytest.raises(ConfigError, match=r"mine\.negative_number: Input should be greater than or equal to 1"):
        _spec({**BASE, "mine": {"negative_number": 0}})


def test_parameters_are_the_run_spec(package: Path) -> None:
    params = _spec().parameters()
    assert set(params) == set(RunSpec.model_fields)
    assert params["data"] == "s3://bucket/raw/" and params["work_uri"] == "s3://bucket/bgeflow"
    assert params["retriever"]["hyperparameters"] == {"num_train_epochs": 2}
    assert params["retriever"]["query_max_len"] == 64 and params["publish"]["champion"] == "if-gate-passed"
    check_parameters(_spec(), package)
    (package.parent / "old.yaml").write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {
        "train_data": {}}}}}))
    with pytest.raises(ConfigError, match="does not declare"):
        check_parameters(_spec(), package.parent / "old.yaml")


def test_trigger_submits_once_across_two_syncs(package: Path) -> None:
    kfp = FakeKfp()
    first = trigger(kfp, _spec(), package_path=package, experiment="bgeflow", pipeline_version="0.1.0",
                    service_account="bgeflow")
    second = trigger(kfp, _spec(), package_path=package, experiment="bgeflow", pipeline_version="0.1.0",
                     service_account="bgeflow")
    assert first.submitted and not second.submitted and first.run_id == second.run_id
    runs = [w for w in kfp.writes if w.startswith("run ")]
    assert runs == [f"run {first.run_name}"]
    # A commit that changes the spec: exactly one more run.
    third = trigger(kfp, _spec({**BASE, "revision": "r2"}), package_path=package, experiment="bgeflow",
                    pipeline_version="0.1.0")
    assert third.submitted and len([w for w in kfp.writes if w.startswith("run ")]) == 2
    (submitted,) = [r for r in kfp.runs.values() if r["id"] == first.run_id]
    assert submitted["params"] == _spec().parameters() and submitted["service_account"] == "bgeflow"


def test_trigger_rejects_a_pipeline_without_the_spec_parameters_before_any_kfp_write(tmp_path: Path) -> None:
    kfp = FakeKfp()
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"root": {"inputDefinitions": {"parameters": {"train_data": {}}}}}))
    with pytest.raises(ConfigError, match="does not declare"):
        trigger(kfp, _spec(), package_path=old, experiment="e", pipeline_version="0.1.0")
    assert kfp.writes == []


def test_schedule_keeps_one_recurring_run(package: Path) -> None:
    kfp = FakeKfp()
    a = schedule(kfp, _spec(), cron="0 0 3 * * 1", package_path=package, experiment="e", pipeline_version="0.1.0")
    b = schedule(kfp, _spec(), cron="0 0 3 * * 1", package_path=package, experiment="e", pipeline_version="0.1.0")
    assert a.submitted and not b.submitted and len(kfp.recurring) == 1
    c = schedule(kfp, _spec(), cron="0 0 4 * * 1", package_path=package, experiment="e", pipeline_version="0.1.0")
    assert c.submitted and [r["name"] for r in kfp.recurring.values()] == [c.run_name]
    assert schedule_name(_spec(), "0 0 4 * * 1", pipeline_version="0.1.0") == c.run_name != a.run_name


def test_cli_dry_run_prints_the_run_name(tmp_path: Path, package: Path, capsys: pytest.CaptureFixture) -> None:
    from bgeflow.cli import main

    spec_file = tmp_path / "retrain.yaml"
    spec_file.write_text(yaml.safe_dump({**BASE, "enabled": True}))
    rc = main(["pipeline", "trigger", "--dry-run", "--spec", str(spec_file), "--experiment", "e",
               "--package", str(package), "--version", "0.1.0"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["run_name"] == run_name(_spec(), pipeline_version="0.1.0")


def test_cli_dry_run_without_the_package_names_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Outside the ops image the default --package is absent: a traceback ("internal error") until then."""
    from bgeflow.cli import main

    spec_file = tmp_path / "retrain.yaml"
    spec_file.write_text(yaml.safe_dump({**BASE, "enabled": True}))
    rc = main(["pipeline", "trigger", "--dry-run", "--spec", str(spec_file), "--experiment", "e",
               "--package", str(tmp_path / "absent.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "absent.yaml not found: give --package" in err, err


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
        spec = RetrainSpec.build(yaml.safe_load(cm["data"]["retrain.yaml"]), where=scenario)
        check_parameters(spec, COMPILED)
