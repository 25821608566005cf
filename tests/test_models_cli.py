"""``bgeflow models list|show|download|promote|verify|gc`` on a local and an S3 (moto) registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import main
from bgeflow.core.storage import open_store
from bgeflow.steps.publish import PublishSpec, publish, registry
from test_publish import gate_metrics, make_training_output, write_metrics


def _registry(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "local":
        return str(tmp_path / "registry")
    return f"s3://{request.getfixturevalue('s3_bucket')}/models"


def _json(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = 0) -> Any:
    assert main(argv) == code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)  # piped (captured): one JSON document


@pytest.fixture(params=["local", "s3"])
def two_versions(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, str]:
    """``(registry, champion v1 (gate passed), latest v2 (gate failed))`` of the model ``m``."""
    reg = _registry(request.param, tmp_path, request)
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1",
                           metrics=str(write_metrics(tmp_path / "ok.json", True)), champion="if-gate-passed"))
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=1)), name="m", registry=reg,
                           version="v2", metrics=str(write_metrics(tmp_path / "bad.json", False)),
                           champion="if-gate-passed", publish_if_gate_failed=True))
    return reg, "v1", "v2"


def test_list_and_show(two_versions: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    reg, champion, latest = two_versions
    listed = _json(capsys, ["models", "list", reg])
    assert [m["name"] for m in listed["models"]] == ["m"]
    model = listed["models"][0]
    assert (model["champion"], model["latest"]) == (champion, latest)
    assert [(v["version"], v["pointers"], v["gate_passed"]) for v in model["versions"]] == [
        (champion, ["champion"], True), (latest, ["latest"], False)]
    assert all(v["kind"] == "retriever" and v["files"] == 10 for v in model["versions"])
    assert _json(capsys, ["models", "list", "--registry", reg, "--name", "m"]) == listed

    shown = _json(capsys, ["models", "show", f"{reg}/m"])  # a bare name: its champion
    assert shown["version"] == champion and shown["metrics"] == {"ndcg@10": 0.5}
    assert shown["base_model"] == "BAAI/bge-small-en-v1.5" and shown["card"].endswith(f"{champion}/model/README.md")
    assert _json(capsys, ["models", "show", f"{reg}/m@latest"])["version"] == latest
    assert _json(capsys, ["models", "show", "--registry", reg, "--name", "m", "--version", latest])["version"] == latest


def test_a_retriever_whose_reranker_failed_is_listed_and_shown_as_passed(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """The demo run's registry: the retriever passed its own rule, the reranker failed its own."""
    reg = str(tmp_path / "registry")
    metrics = str(gate_metrics(tmp_path / "metrics.json", reranker_ndcg=0.48))
    done = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="bge-retriever", registry=reg,
                                  metrics=metrics, champion="if-gate-passed"))
    listed = _json(capsys, ["models", "list", reg])["models"][0]["versions"]
    assert [(v["version"], v["gate_passed"], v["pointers"]) for v in listed] == [
        (done.version, True, ["latest", "champion"])]
    shown = _json(capsys, ["models", "show", f"{reg}/bge-retriever"])
    assert (shown["gate"], shown["gate_passed"], shown["metrics"]) == ("ndcg@10>=base+0.01", True, {"ndcg@10": 0.68})


def test_download_promote_verify(two_versions: tuple[str, str, str], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    reg, champion, latest = two_versions
    got = _json(capsys, ["models", "download", f"{reg}/m@{latest}", str(tmp_path / "dl")])
    assert got == {"name": "m", "version": latest, "path": str(tmp_path / "dl"), "files": 6}
    assert (tmp_path / "dl" / "README.md").is_file()  # the card comes with the model
    assert (tmp_path / "dl" / "model.safetensors").read_bytes() == \
        (tmp_path / "b" / "model" / "model.safetensors").read_bytes()

    promoted = _json(capsys, ["models", "promote", f"{reg}/m@{latest}"])
    assert promoted["champion"] == latest and promoted["previous"] == champion and promoted["changed"]
    assert registry.get_version(reg, "m", "champion").version == latest
    assert not _json(capsys, ["models", "promote", f"{reg}/m/{latest}"])["changed"]  # the path form, again

    assert _json(capsys, ["models", "verify", f"{reg}/m"]) == {"status": "ok", "ok": True,
                                                              "versions": {champion: [], latest: []}}
    open_store(f"{reg}/m").write_text(f"{champion}/model/vocab.txt", "tampered")
    assert main(["models", "verify", f"{reg}/m"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["versions"][latest] == [] and "differ from their manifest" in err
    assert json.loads(out)["status"] == "failed" and json.loads(out)["ok"] is False
    # A version whose files changed size is never made the champion.
    assert main(["models", "promote", f"{reg}/m@{champion}"]) == 1
    assert "cannot be promoted" in capsys.readouterr().err
    assert registry.get_version(reg, "m", "champion").version == latest


@pytest.mark.parametrize(("argv", "message"), [
    (["models", "promote", "REG/m"], "name the version"),
    (["models", "show", "REG/m@nope"], "no complete version for 'nope'"),
    (["models", "show"], "name the model"),
    (["models", "show", "REG/m", "--registry", "REG"], "not both"),
    (["models", "list"], "name the registry"),
    (["models", "show", "REG/m@v1", "--version", "v2"], "keep one"),
])
def test_bad_references_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                           message: str) -> None:
    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1"))
    capsys.readouterr()  # the publish's own log lines
    assert main([a.replace("REG", reg) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_model_folder_is_not_a_registry_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = make_training_output(tmp_path / "train")
    assert main(["models", "show", str(out)]) == 2
    assert "not a registry reference" in capsys.readouterr().err


def test_terminal_output_is_a_table(two_versions: tuple[str, str, str], capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    reg, champion, _ = two_versions
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["models", "list", reg]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["name", "version", "kind"]
    assert lines[1].split()[:2] == ["m", champion] and lines[1].endswith("champion")
    assert main(["models", "list", reg, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["name"] == "m"


def test_registry_is_the_same_verb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1"))
    assert _json(capsys, ["registry", "verify", "--registry", reg, "--name", "m"])["versions"] == {"v1": []}
    assert _json(capsys, ["registry", "gc", "--registry", reg])["orphans"] == []
    assert _json(capsys, ["models", "gc", reg])["orphans"] == []


class FakeMlflow:
    """The MlflowClient calls mlflow_registry makes, kept in memory (mlflow is not installed here)."""

    def __init__(self, fail: bool = False) -> None:
        self.models: dict[str, list[Any]] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.fail = fail

    def search_registered_models(self, filter_string: str) -> list[str]:
        if self.fail:
            raise ConnectionError("mlflow is down")
        name = filter_string.split("'")[1]
        return [name] if name in self.models else []

    def create_registered_model(self, name: str, description: str = "") -> None:
        self.models[name] = []

    def search_model_versions(self, filter_string: str) -> list[Any]:
        return list(self.models[filter_string.split("'")[1]])

    def create_model_version(self, name: str, source: str, tags: dict[str, str], description: str = "") -> Any:
        from types import SimpleNamespace

        version = SimpleNamespace(version=str(len(self.models[name]) + 1), source=source, tags=tags)
        self.models[name].append(version)
        return version

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[(name, alias)] = version


def test_mlflow_registration_follows_publish_and_promote(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    from bgeflow.steps.publish import mlflow_registry

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert mlflow_registry.client_from_environment() is None  # off unless configured
    fake = FakeMlflow()
    monkeypatch.setattr(mlflow_registry, "client_from_environment", lambda: fake)
    reg = str(tmp_path / "registry")
    first = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg,
                                   version="v1", champion="always"))
    assert first.mlflow == {"name": "m", "version": "1", "champion": True}
    assert fake.models["m"][0].source == f"{reg}/m/v1/model" and fake.models["m"][0].tags["bgeflow.version"] == "v1"
    again = publish(PublishSpec.of(model=str(tmp_path / "a"), name="m", registry=reg, champion="always"))
    assert not again.created and again.mlflow["version"] == "1" and len(fake.models["m"]) == 1  # a rerun: no-op
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=1)), name="m", registry=reg,
                           version="v2"))
    assert len(fake.models["m"]) == 2 and fake.aliases[("m", "champion")] == "1"
    capsys.readouterr()
    promoted = _json(capsys, ["models", "promote", f"{reg}/m@v2"])
    assert promoted["mlflow"] == {"name": "m", "version": "2", "champion": True}
    assert fake.aliases[("m", "champion")] == "2"

    fake.fail = True  # MLflow down: the bgeflow registry still publishes, and says nothing was registered
    # main() above set up bgeflow's logging (root handlers replaced): listen on the module's logger itself.
    monkeypatch.setattr(mlflow_registry.log, "handlers", [caplog.handler])
    third = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "c", seed=2)), name="m", registry=reg,
                                   version="v3"))
    assert third.created and third.mlflow is None
    assert "MLflow registration of" in caplog.text and "mlflow is down" in caplog.text


def test_promoting_a_version_that_failed_its_gate_is_allowed_and_said(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A user promoted a gate-FAILED version and nothing said so; a passed one promotes quietly."""
    from bgeflow.steps.publish import pointers

    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1",
                           metrics=str(write_metrics(tmp_path / "ok.json", True)), champion="never"))
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=1)), name="m", registry=reg,
                           version="v2", metrics=str(write_metrics(tmp_path / "bad.json", False)),
                           champion="never", publish_if_gate_failed=True))
    caplog.clear()
    said = lambda: [r.getMessage() for r in caplog.records if r.name == pointers.log.name]  # noqa: E731
    with caplog.at_level("WARNING", logger=pointers.log.name):
        pointers.promote(reg, "m", "v1")
        assert not said()
        assert pointers.promote(reg, "m", "v2").to_dict()["champion"] == "v2"
    assert said() == [f"{reg}/m/v2 failed its own gate rules (ndcg@10>=base) when it was published; promoting it all the same"]


@pytest.mark.parametrize(("argv", "message"), [
    # A local registry root that is not there is a typo to name, not an empty registry.
    (["models", "list", "{tmp}/noreg", "--json"], "registry {tmp}/noreg: no such folder"),
    (["models", "list", "--registry", "{tmp}/noreg", "--name", "m", "--json"], "registry {tmp}/noreg: no such folder"),
    (["models", "gc", "{tmp}/noreg"], "registry {tmp}/noreg: no such folder"),
    (["models", "list", "{tmp}/notes.txt", "--json"], "registry {tmp}/notes.txt: a file, not a registry folder"),
])
def test_a_local_registry_that_is_not_there_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str], message: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp_path) in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_empty_registry_lists_no_models(kind: str, tmp_path: Path, request: pytest.FixtureRequest,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    reg = _registry(kind, tmp_path, request)
    if kind == "local":
        Path(reg).mkdir()  # an existing empty folder; an S3 prefix without objects is the same
    assert _json(capsys, ["models", "list", reg, "--json"])["models"] == []


@pytest.mark.parametrize(("ref", "message"), [
    # A registry root is named as one, with what verify takes (it was called "a model folder").
    ("{reg}", "{reg}: a registry root (models: m), not a model reference; models verify takes "
              "<registry>/<name>[@version], e.g. {reg}/m"),
    ("{rel}", "{rel}: a registry root (models: m), not a model reference; models verify takes "
              "<registry>/<name>[@version], e.g. {rel}/m"),
    ("{tmp}/a", "{tmp}/a: a model folder, not a registry reference"),
])
def test_verify_names_what_a_non_reference_is(ref: str, message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    reg = tmp_path / "reg"
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=str(reg), version="v1"))
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)  # "reg": a registry root without a "/", which parses as no reference at all
    fill = {"reg": str(reg), "rel": "reg", "tmp": str(tmp_path)}
    assert main(["models", "verify", ref.format(**fill)]) == 2
    err = capsys.readouterr().err
    assert message.format(**fill) in err and len(err.strip().splitlines()) == 1, err


def test_promote_refuses_a_version_of_another_kind_than_the_names_champion(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A name mixed before publish refused it: its reranker is not made the champion of its retrievers."""
    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "ret")), name="toy-ret", registry=reg,
                           version="v1", champion="always"))
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "rr", seed=1, reranker=True)), name="toy-rr",
                           registry=reg, version="r1"))
    (Path(reg) / "toy-rr" / "r1").rename(Path(reg) / "toy-ret" / "r1")
    assert main(["models", "promote", f"{reg}/toy-ret@r1"]) == 2
    err = capsys.readouterr().err
    assert f"{reg}/toy-ret is a retriever name (its champion v1 is a retriever), and version r1 is a reranker" in err
    assert registry.get_version(reg, "toy-ret", "champion").version == "v1"
    assert _json(capsys, ["models", "promote", f"{reg}/toy-ret@v1"])["changed"] is False  # its own kind: fine


@pytest.mark.parametrize("dest_before", ["absent", "empty", "another model's files"])
def test_a_download_that_fails_its_check_leaves_nothing(dest_before: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: a tampered file made the download exit 1 and left a complete, loadable folder."""
    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1",
                           champion="always"))
    dest = tmp_path / "dl"
    if dest_before != "absent":
        dest.mkdir()
    if dest_before == "another model's files":
        (dest / "config.json").write_text("{}")
        (dest / "notes.txt").write_text("mine")
    before = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
              and "registry" not in p.parts}
    replace = ["--replace"] if dest_before == "another model's files" else []
    weights = Path(reg) / "m" / "v1" / "model" / "model.safetensors"
    weights.write_bytes(bytes([weights.read_bytes()[0] ^ 0xFF]) + weights.read_bytes()[1:])  # same size
    assert main(["models", "download", f"{reg}/m@champion", str(dest), *replace]) == 1
    assert "sha256 differs from the manifest; nothing was written to" in capsys.readouterr().err
    after = {p.relative_to(tmp_path).as_posix(): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
             and "registry" not in p.parts}
    assert after == before  # no half folder, no staging sibling, an existing folder untouched
    assert dest.exists() is (dest_before != "absent") and not list(tmp_path.glob(".dl*"))

    weights.write_bytes(bytes([weights.read_bytes()[0] ^ 0xFF]) + weights.read_bytes()[1:])  # restored
    assert _json(capsys, ["models", "download", f"{reg}/m@champion", str(dest), *replace])["files"] == 6
    assert (dest / "model.safetensors").read_bytes() == weights.read_bytes()
    assert not (dest / "notes.txt").exists()  # --replace: the folder holds the version's files only
    assert not list(tmp_path.glob(".dl*"))  # neither the staging folder nor the replaced one is left
    (tmp_path / "fresh").mkdir()
    assert dest.stat().st_mode == (tmp_path / "fresh").stat().st_mode  # any new folder's mode, not a temp dir's


@pytest.mark.parametrize("stray", ["adapter_config.json", "2_Dense/config.json", "pytorch_model.bin"])
def test_download_into_another_models_folder_is_refused_not_merged(stray: str, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A user's case: downloading over an older model's folder kept that model's files beside the new ones, and
    ``from_pretrained`` read them (an adapter config makes a PEFT model, a Dense module config another embedding)."""
    reg = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg, version="v1",
                           champion="always"))
    dest = tmp_path / "dl"
    (dest / stray).parent.mkdir(parents=True)
    (dest / stray).write_text("{}")
    (dest / "config.json").write_text('{"old": true}')
    assert main(["models", "download", f"{reg}/m@v1", str(dest)]) == 2
    err = capsys.readouterr().err
    assert f"{dest} holds 1 file(s) that m@v1 does not have (first: {stray})" in err and "--replace" in err
    assert (dest / "config.json").read_text() == '{"old": true}'  # untouched

    assert _json(capsys, ["models", "download", f"{reg}/m@v1", str(dest), "--replace"])["files"] == 6
    assert not (dest / stray).exists() and (dest / "config.json").read_text() != '{"old": true}'
    # An earlier download of the same version is no stray: downloading again needs no --replace.
    assert _json(capsys, ["models", "download", f"{reg}/m@v1", str(dest)])["files"] == 6
