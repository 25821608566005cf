"""Publishing: the version layout, atomicity under injected failures, idempotency, pointers, CLI errors."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from bgeflow.cli import main
from bgeflow.core.storage import LocalStore, S3Store, open_store
from bgeflow.steps.publish import PublishSpec, publish, registry


def make_training_output(root: Path, seed: int = 0, *, reranker: bool = False) -> Path:
    """A small training output: model/ (config, weights, tokenizer) + train_config.yaml + summary."""
    model = root / "model"
    (model / "1_Pooling").mkdir(parents=True)
    arch = "BertForSequenceClassification" if reranker else "BertModel"
    (model / "config.json").write_text(json.dumps({"architectures": [arch], "hidden_size": 8}))
    (model / "model.safetensors").write_bytes(hashlib.sha256(str(seed).encode()).digest() * 64)
    (model / "tokenizer.json").write_text('{"version": "1.0"}')
    (model / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\nhello\n")
    (model / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    (model / ".cache").mkdir()
    (model / ".cache" / "junk").write_text("not part of the model")
    (root / "train_config.yaml").write_text(
        f"model_name_or_path: BAAI/bge-small-en-v1.5\nlearning_rate: 1.0e-5\nseed: {seed}\ntraining:\n  epochs: 1\n")
    (root / "train_summary.json").write_text(json.dumps({"steps": 10, "seed": seed}))
    return root


def write_metrics(path: Path, passed: bool) -> Path:
    path.write_text(json.dumps({
        "eval_set": {"queries": 3, "corpus": 5},
        "models": {"base": {"role": "retriever", "model": "BAAI/bge-small-en-v1.5"}},
        "metrics": {"base": {"ndcg@10": 0.4}, "finetuned": {"ndcg@10": 0.5}},
        "gate": {"passed": passed, "expression": "ndcg@10>=base", "rules": [
            {"rule": "ndcg@10>=base", "passed": passed, "value": 0.5, "reference": 0.4, "reason": "r"}]},
    }))
    return path


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "train.jsonl"
    path.parent.mkdir()
    path.write_text('{"query": "q1", "pos": ["a"]}\n\n{"query": "q2", "pos": ["b"]}\n')
    return path


def test_publish_layout_manifest_card_and_lineage(tmp_path: Path, data_file: Path) -> None:
    out = make_training_output(tmp_path / "train")
    reg = str(tmp_path / "registry")
    result = publish(PublishSpec.of(
        model=str(out), name="retriever", registry=reg, metrics=str(write_metrics(tmp_path / "m.json", True)),
        lineage_inputs=[str(data_file)], champion="if-gate-passed",
    ))
    assert result.created and result.latest and result.champion
    assert result.version.endswith("-" + result.content_hash[:8])

    version_dir = Path(reg) / "retriever" / result.version
    manifest = json.loads((version_dir / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["files"]}
    on_disk = {p.relative_to(version_dir).as_posix() for p in version_dir.rglob("*") if p.is_file()}
    assert on_disk - set(listed) == {"manifest.json"}
    assert {"model/config.json", "model/model.safetensors", "model/1_Pooling/config.json", "metrics.json",
            "configs/train_config.yaml", "configs/train_summary.json", "lineage.json", "model/README.md"} <= set(listed)
    assert not any(".cache" in p for p in listed)  # hidden files are not part of the model
    for path, entry in listed.items():
        data = (version_dir / path).read_bytes()
        assert entry["size"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["kind"] == "retriever" and manifest["gate_passed"] is True
    assert manifest["base_model"] == "BAAI/bge-small-en-v1.5"

    lineage = json.loads((version_dir / "lineage.json").read_text())
    assert lineage["inputs"] == [{"uri": str(data_file), "size": data_file.stat().st_size, "rows": 2,
                                  "sha256": hashlib.sha256(data_file.read_bytes()).hexdigest()}]
    card = (version_dir / "model" / "README.md").read_text()  # next to config.json: a Hugging Face repo
    for expected in ("# retriever", result.version, "| `ndcg@10` | 0.4000 | 0.5000 | +0.1000 |", "learning_rate",
                     "| `training.epochs` | `1` |", str(data_file), "SentenceTransformer", "FlagModel",
                     "bgeflow"):
        assert expected in card
    assert not (Path(reg) / "retriever" / ".staging").exists() or not any((Path(reg) / "retriever" / ".staging").rglob("*.*"))
    assert json.loads((Path(reg) / "retriever" / "latest.json").read_text())["version"] == result.version
    assert json.loads((Path(reg) / "retriever" / "champion.json").read_text())["version"] == result.version
    assert registry.verify(reg, "retriever", result.version) == []


def test_republish_is_idempotent_and_explicit_version_conflicts(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry")
    first = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg))
    again = publish(PublishSpec.of(model=str(tmp_path / "a"), name="m", registry=reg))
    assert not again.created and again.version == first.version
    assert [v.version for v in registry.list_versions(reg, "m")] == [first.version]

    named = publish(PublishSpec.of(model=str(tmp_path / "a" / "model"), name="m", registry=reg, version="v2"))
    assert named.created and named.version == "v2"  # a model dir alone: other content (no configs)
    assert not publish(PublishSpec.of(model=str(tmp_path / "a" / "model"), name="m", registry=reg, version="v2")).created
    with pytest.raises(FileExistsError, match="v2 is already published with different content"):
        publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=1)), name="m", registry=reg,
                              version="v2"))
    assert [v.version for v in registry.list_versions(reg, "m")] == [first.version, "v2"]


def test_champion_if_gate_passed_follows_the_models_own_verdict(tmp_path: Path) -> None:
    reg = str(tmp_path / "registry")
    good = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg,
                                 metrics=str(write_metrics(tmp_path / "ok.json", True)), champion="if-gate-passed"))
    bad = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=1)), name="m", registry=reg,
                                metrics=str(write_metrics(tmp_path / "bad.json", False)), champion="if-gate-passed",
                                publish_if_gate_failed=True))
    assert good.champion and not bad.champion and bad.latest
    assert bad.reasons == ["published although its gate rules failed: r (--publish-if-gate-failed)",
                           "not promoted: its own gate rules failed"]
    assert registry.get_version(reg, "m", "champion").version == good.version
    assert registry.get_version(reg, "m", "latest").version == bad.version
    with pytest.raises(ValueError, match="needs metrics"):
        PublishSpec.of(model="x", name="m", registry=reg, champion="if-gate-passed")


#: The default gate of a run; the retriever's rule passes at ndcg@10 0.61, the reranker's at rerank 0.66.
RUN_GATE = "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"


def gate_metrics(path: Path, *, retriever_ndcg: float = 0.68, reranker_ndcg: float = 0.70,
                 gate: str | None = RUN_GATE) -> Path:
    """An evaluation of both models as ``bgeflow evaluate`` writes it (``gate`` None: no verdict at all)."""
    from bgeflow.steps.evaluation.gate import check_gate, parse_gate

    columns = {"base": {"ndcg@10": 0.60, "rerank.ndcg@10": 0.50},
               "finetuned": {"ndcg@10": retriever_ndcg, "rerank.ndcg@10": reranker_ndcg},
               "retriever": {"rerank.ndcg@10": 0.66}}
    document: dict = {"eval_set": {"queries": 3, "corpus": 5}, "models": {}, "metrics": columns}
    if gate is not None:
        document["gate"] = check_gate(parse_gate(gate), columns, gate)
    path.write_text(json.dumps(document))
    return path


#: (metrics case, model published, --kind, --publish-if-gate-failed) → (published?, this model's verdict)
GATE_CASES = [
    ("all passed", "retriever", "auto", False, True, True),
    ("all passed", "reranker", "auto", False, True, True),
    ("reranker failed", "retriever", "auto", False, True, True),
    ("reranker failed", "retriever", "retriever", False, True, True),
    ("reranker failed", "reranker", "auto", False, False, False),
    ("reranker failed", "reranker", "reranker", False, False, False),
    ("retriever failed", "retriever", "auto", False, False, False),
    ("retriever failed", "reranker", "auto", False, True, True),
    ("no gate", "retriever", "auto", False, True, None),
    ("no gate", "reranker", "auto", False, True, None),
    ("retriever failed", "retriever", "auto", True, True, False),
    ("reranker failed", "reranker", "reranker", True, True, False),
]
METRICS_CASES = {"all passed": {}, "reranker failed": {"reranker_ndcg": 0.48},
                 "retriever failed": {"retriever_ndcg": 0.60}, "no gate": {"gate": None}}


@pytest.mark.parametrize(("case", "model", "kind", "opt_out", "published", "verdict"), GATE_CASES,
                         ids=[f"{c}:{m}:{k}{':publish-if-gate-failed' if o else ''}" for c, m, k, o, *_ in GATE_CASES])
def test_a_model_is_published_and_recorded_on_its_own_gate_rules(
        tmp_path: Path, case: str, model: str, kind: str, opt_out: bool, published: bool, verdict: bool | None) -> None:
    """A model whose own rules failed is not published (nothing written, latest stays) unless the
    opt-out; the registry and the card record the published model's own verdict and rules."""
    reg, name = str(tmp_path / "registry"), f"bge-{model}"
    before = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "v0", seed=7, reranker=model == "reranker")),
                                    name=name, registry=reg, version="v0"))
    result = publish(PublishSpec.of(
        model=str(make_training_output(tmp_path / "new", reranker=model == "reranker")), name=name, registry=reg,
        kind=kind, metrics=str(gate_metrics(tmp_path / "metrics.json", **METRICS_CASES[case])),
        champion="if-gate-passed", **({"publish_if_gate_failed": True} if opt_out else {})))  # else the default

    assert result.published is published
    if not published:
        assert result.reasons[0].startswith("its gate rules failed: ") and not result.version and not result.latest
        assert [v.version for v in registry.list_versions(reg, name)] == ["v0"]
        assert registry.get_version(reg, name, "latest").version == before.version
        assert registry.find_version(reg, name, "champion") is None
        return
    info = registry.get_version(reg, name, "latest")
    assert info.version == result.version and result.latest and info.kind == model
    own = {"retriever": ["ndcg@10>=base+0.01"], "reranker": ["rerank.ndcg@10>=retriever"]}[model]
    assert info.manifest["gate_passed"] is verdict  # this model's own verdict, not the whole gate's
    assert info.manifest["gate_rules"] == (own if verdict is not None else [])
    assert result.champion is (verdict is True)  # if-gate-passed: this model's own verdict
    assert any(r.startswith("published although") for r in result.reasons) is opt_out

    card = (Path(reg) / name / result.version / "model" / "README.md").read_text()
    gate_line = next((line for line in card.splitlines() if line.startswith(("Gate", "No gate"))), "")
    if verdict is None:
        assert gate_line == "No gate rules were given."
    else:
        shown = "passed" if verdict else "FAILED (published anyway, with --publish-if-gate-failed)"
        assert gate_line == f"Gate of this {model} `{own[0]}`: **{shown}**"
        other = {"retriever": "rerank.ndcg@10>=retriever", "reranker": "ndcg@10>=base+0.01"}[model]
        assert f"({'`' + other + '`'}); they do not judge this {model}." in card
        assert f"`{other}`:" not in card  # no verdict line of the other model's rule
    assert ("FAILED" in card) is (verdict is False)
    rows = [line.split("|")[1].strip() for line in card.splitlines() if line.startswith("| `")]
    metric_rows = [r for r in rows if r.strip("`") in ("ndcg@10", "rerank.ndcg@10")]
    assert metric_rows == [{"retriever": "`ndcg@10`", "reranker": "`rerank.ndcg@10`"}[model]]


def _registry_uri(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "local":
        return str(tmp_path / "registry")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/models"


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_interrupted_publish_leaves_nothing_and_rerun_completes(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = _registry_uri(kind, tmp_path, request)
    store_class = LocalStore if kind == "local" else S3Store
    v1 = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg,
                               champion="always"))
    pointers = {p: open_store(f"{reg}/m").read_text(f"{p}.json") for p in ("latest", "champion")}
    new_model = str(make_training_output(tmp_path / "b", seed=1))
    n_files = 9  # 5 model files + 2 configs + lineage.json + model/README.md

    real_put = store_class.put_file
    calls: list[str] = []

    def failing_put(self, local_path, key, *, if_absent=False):  # type: ignore[no-untyped-def]
        calls.append(key)
        if len(calls) > n_files // 2:
            raise OSError(f"injected failure writing {key}")
        return real_put(self, local_path, key, if_absent=if_absent)

    def assert_nothing_new() -> None:
        assert [v.version for v in registry.list_versions(reg, "m")] == [v1.version]
        assert registry.find_version(reg, "m", "v2") is None
        assert registry.get_version(reg, "m", "latest").version == v1.version
        assert {p: open_store(f"{reg}/m").read_text(f"{p}.json") for p in pointers} == pointers
        assert not open_store(f"{reg}/m").exists("v2/manifest.json")

    # 1) fails after half the files reached the staging prefix
    monkeypatch.setattr(store_class, "put_file", failing_put)
    with pytest.raises(OSError, match="injected failure"):
        publish(PublishSpec.of(model=new_model, name="m", registry=reg, version="v2", champion="always"))
    assert len(calls) == n_files // 2 + 1
    assert_nothing_new()

    # 2) fails writing the manifest, after every file is in place and verified
    monkeypatch.undo()
    real_write = store_class.write_bytes

    def failing_manifest(self, key, data, *, if_absent=False):  # type: ignore[no-untyped-def]
        if key.endswith("manifest.json"):
            raise OSError("injected failure writing the manifest")
        return real_write(self, key, data, if_absent=if_absent)

    monkeypatch.setattr(store_class, "write_bytes", failing_manifest)
    with pytest.raises(OSError, match="injected failure writing the manifest"):
        publish(PublishSpec.of(model=new_model, name="m", registry=reg, version="v2", champion="always"))
    assert open_store(f"{reg}/m").exists("v2/model/model.safetensors")  # files there, but no manifest
    assert_nothing_new()

    # 3) the rerun completes
    monkeypatch.undo()
    done = publish(PublishSpec.of(model=new_model, name="m", registry=reg, version="v2", champion="always"))
    assert done.created and done.champion and done.latest
    assert [v.version for v in registry.list_versions(reg, "m")] == [v1.version, "v2"]
    assert registry.verify(reg, "m", "v2") == []
    assert registry.get_version(reg, "m", "champion").version == "v2"
    assert open_store(f"{reg}/m").child(".staging").list() == []
    downloaded = registry.download_model(reg, "m", "latest", tmp_path / "dl")
    assert (downloaded / "model.safetensors").read_bytes() == (tmp_path / "b" / "model" / "model.safetensors").read_bytes()


def test_publish_from_s3_records_etags(tmp_path: Path, s3_bucket: str) -> None:
    src = open_store(f"s3://{s3_bucket}/runs/1")
    src.upload_dir(make_training_output(tmp_path / "a"))
    src.write_text("data/train.jsonl", '{"query": "q", "pos": ["p"]}\n')
    result = publish(PublishSpec.of(model=src.uri, name="m", registry=f"s3://{s3_bucket}/reg",
                                   lineage_inputs=[src.url("data")]))
    info = registry.get_version(f"s3://{s3_bucket}/reg", "m", "latest")
    assert info.version == result.version
    paths = {e["path"] for e in info.files}
    assert {"model/config.json", "configs/train_config.yaml"} <= paths
    lineage = json.loads(info.store().read_text("lineage.json"))["inputs"]
    assert lineage == [{"uri": src.url("data/train.jsonl"), "size": 29, "rows": 1,
                        "etag": hashlib.md5(b'{"query": "q", "pos": ["p"]}\n').hexdigest()}]


def _one_error_line(capsys: pytest.CaptureFixture[str], verb: str, outcome: str = "error") -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"bgeflow {verb}: {outcome}: ")
    return lines[0]


def test_cli_publish_and_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = make_training_output(tmp_path / "a")
    settings = tmp_path / "publish.yaml"
    settings.write_text(f"model: {out}\nname: m\nregistry: {tmp_path / 'reg'}\nversion: v1\nchampion: always\n")
    assert main(["publish", "--config", str(settings)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["version"] == "v1" and printed["champion"] and printed["created"]

    settings.write_text(f"model: {out}\nname: m\nregistry: {tmp_path / 'reg'}\nlearning_rate: 3\n")
    assert main(["publish", "--config", str(settings)]) == 2
    line = _one_error_line(capsys, "publish")
    assert "unknown setting 'learning_rate'" in line and str(settings) in line


def test_cli_publish_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope"
    assert main(["publish", "--model", str(missing), "--name", "m", "--registry", str(tmp_path / "r")]) == 2
    assert str(missing) in _one_error_line(capsys, "publish")


def test_cli_publish_unreachable_s3(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # restored after the test
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    started = time.monotonic()
    code = main(["--s3-endpoint-url", "http://127.0.0.1:1", "publish", "--model", str(make_training_output(tmp_path / "a")),
                 "--name", "m", "--registry", "s3://bucket/reg"])
    assert code == 1  # the input is fine, the store is not: a failure, not bad input
    line = _one_error_line(capsys, "publish", "failed")
    assert "http://127.0.0.1:1" in line and "cannot reach" in line
    assert time.monotonic() - started < 20


def test_cli_holds_back_a_model_whose_own_gate_failed_and_exits_0(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: evaluate's gate failed for the retriever; publish writes nothing, says why, exits 0."""
    reg = tmp_path / "reg"
    argv = ["publish", "--model", str(make_training_output(tmp_path / "zh_ret")), "--name", "zh-ret2",
            "--registry", str(reg), "--metrics", str(gate_metrics(tmp_path / "ev.json", retriever_ndcg=0.60))]
    assert main(argv) == 0
    captured = capsys.readouterr()
    printed = json.loads(captured.out)
    reason = "its gate rules failed: ndcg@10 0.6000 is not >= base 0.6000 +0.01 = 0.6100"
    assert (printed["published"], printed["latest"], printed["champion"], printed["reasons"]) == (
        False, False, False, [reason])
    said = [line for line in captured.err.splitlines() if "not published" in line]  # once, not twice
    assert len(said) == 1 and said[0].endswith(f"publish: zh-ret2 not published: {reason} (--publish-if-gate-failed, "
                                               "publish_if_gate_failed in a spec, publishes it anyway)"), said
    assert not reg.exists()  # nothing written

    assert main([*argv, "--publish-if-gate-failed", "--champion", "if-gate-passed"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["published"] and printed["latest"] and not printed["champion"]
    assert registry.get_version(str(reg), "zh-ret2", "latest").manifest["gate_passed"] is False

    # The flag that only decided the champion, yet read as "publish only if the gate passed", is gone.
    assert main([*argv, "--only-if-gate-passed"]) == 2
    line = _one_error_line(capsys, "publish")
    assert "--only-if-gate-passed was removed" in line and "--champion if-gate-passed" in line


def _evaluated(path: Path, column: str, **model: str) -> Path:
    """A passed evaluation that lists ``model`` as its ``column`` (``finetuned`` or ``finetuned_reranker``)."""
    document = json.loads(write_metrics(path, True).read_text())
    document["models"][column] = {"role": "reranker" if column.endswith("reranker") else "retriever", **model}
    path.write_text(json.dumps(document))
    return path


#: case → (the column the metrics list, how they name the model, published as a reranker?, refusal or None)
EVALUATED_CASES = {
    "this model's fingerprint": ("finetuned", "fingerprint:new", False, None),
    "another model's fingerprint": ("finetuned", "fingerprint:other", False,
                                    "describes the finetuned model {other}, not --model {new} (content fingerprint"),
    "older metrics: this model's absolute path": ("finetuned", "path:new", False, None),
    "older metrics: this model's relative path": ("finetuned", "relative:new", False, None),
    "older metrics: its model/ folder": ("finetuned", "path:new/model", False, None),
    "older metrics: another model's path": ("finetuned", "path:other", False,
                                            "describes the finetuned model {other}, not --model {new} (compared by "
                                            "path: that metrics.json predates model fingerprints)"),
    "a reranker with a retriever's evaluation": ("finetuned", "fingerprint:new", True,
                                                 "scored no fine-tuned reranker (no 'finetuned_reranker' column, only "
                                                 "finetuned): --model {new} is published as a reranker"),
    "a reranker with its own evaluation": ("finetuned_reranker", "fingerprint:new", True, None),
}


@pytest.mark.parametrize("case", EVALUATED_CASES)
def test_metrics_of_another_model_are_refused(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--metrics must have scored --model: by its files' fingerprint, else (older metrics.json) by its folder."""
    from bgeflow.core.errors import ConfigError
    from bgeflow.core.weights import content_fingerprint

    column, named, reranker, refusal = EVALUATED_CASES[case]
    models = {"new": make_training_output(tmp_path / "new", reranker=reranker),
              "other": make_training_output(tmp_path / "other", seed=1, reranker=reranker)}
    how, _, which = named.partition(":")
    folder = tmp_path / which
    model = {"fingerprint": {"model": str(folder), "fingerprint": content_fingerprint(folder / "model")},
             "path": {"model": str(folder)}, "relative": {"model": which}}[how]
    monkeypatch.chdir(tmp_path)
    spec = PublishSpec.of(model=str(models["new"]), name="m", registry=str(tmp_path / "reg"), champion="if-gate-passed",
                          metrics=str(_evaluated(tmp_path / "metrics.json", column, **model)))
    if refusal is None:
        assert publish(spec).champion
        return
    with pytest.raises(ConfigError, match="^--metrics " + re.escape(
            f"{tmp_path / 'metrics.json'} {refusal.format(new=models['new'], other=models['other'])}")):
        publish(spec)
    assert not (tmp_path / "reg").exists()  # nothing written


def test_cli_refuses_to_publish_a_model_with_anothers_evaluation(minilm_path: str, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: ret1 evaluated, ret2 published with ret1's metrics. A copy of ret1 elsewhere (a KFP
    run publishes another URI of the model it evaluated) is ret1 all the same."""
    import shutil

    from bgeflow.steps.evaluation import EvaluateSpec, evaluate
    from test_evaluate import FAST, write_eval_dir

    ret1, ret2, copy = (tmp_path / n for n in ("ret1", "ret2", "elsewhere"))
    shutil.copytree(minilm_path, ret1)
    shutil.copytree(minilm_path, ret2)
    (ret2 / "config.json").write_text((ret2 / "config.json").read_text() + "\n")  # other bytes: another model
    evaluate(EvaluateSpec.of(output=str(tmp_path / "ev1"), eval_data=str(write_eval_dir(tmp_path / "eval")),
                             retriever=str(ret1), **FAST))
    metrics = str(tmp_path / "ev1" / "metrics.json")
    assert json.loads(Path(metrics).read_text())["models"]["finetuned"]["fingerprint"]
    argv = ["publish", "--name", "toy-ret", "--registry", str(tmp_path / "reg"), "--metrics", metrics,
            "--champion", "if-gate-passed"]
    capsys.readouterr()  # evaluate's log lines
    assert main([*argv, "--model", str(ret2)]) == 2
    line = _one_error_line(capsys, "publish")
    assert f"describes the finetuned model {ret1}, not --model {ret2}" in line
    assert not (tmp_path / "reg").exists()
    shutil.copytree(ret1, copy)
    assert main([*argv, "--model", str(copy)]) == 0
    assert json.loads(capsys.readouterr().out)["champion"] is True


#: case → (the kinds published under the name before, in order, which one is champion (index or None), the kind
#: published now): the name's kind is its champion's, else its latest version's.
KIND_CASES = {
    "a reranker under a retriever's name": (["retriever"], 0, "reranker", "retriever"),
    "a retriever under a reranker's name": (["reranker"], None, "retriever", "reranker"),
    "the champion decides, not a newer version": (["retriever", "reranker"], 0, "reranker", "retriever"),
    "a retriever under a retriever's name": (["retriever"], 0, "retriever", None),
    "a new name": ([], None, "reranker", None),
}


@pytest.mark.parametrize("case", KIND_CASES)
def test_a_name_keeps_one_kind(case: str, tmp_path: Path) -> None:
    from bgeflow.core.errors import ConflictError
    from bgeflow.steps.publish import pointers

    before, champion, kind, refused_for = KIND_CASES[case]
    reg = str(tmp_path / "reg")
    (Path(reg) / "m").mkdir(parents=True)
    for n, earlier in enumerate(before):
        # As a registry from before this check could hold them (a mixed name): each version published under
        # a name of its own, then moved under "m".
        reranker = earlier == "reranker"
        publish(PublishSpec.of(model=str(make_training_output(tmp_path / f"v{n}", seed=n, reranker=reranker)),
                               name=f"k{n}", registry=reg, version=f"v{n}"))
        (Path(reg) / f"k{n}" / f"v{n}").rename(Path(reg) / "m" / f"v{n}")
        pointers.write_pointer(open_store(f"{reg}/m"), "latest", f"v{n}", "")
    if champion is not None:
        pointers.write_pointer(open_store(f"{reg}/m"), "champion", f"v{champion}", "")
    spec = PublishSpec.of(model=str(make_training_output(tmp_path / "new", seed=9, reranker=kind == "reranker")),
                          name="m", registry=reg, champion="always")
    if refused_for is None:
        assert publish(spec).champion
        return
    with pytest.raises(ConflictError, match=f"^{re.escape(reg)}/m is a {refused_for} name \\(its (champion|latest) "
                                            f"v\\d is a {refused_for}\\), and --model {re.escape(spec.model)} is a "
                                            f"{kind}: .* under a name of its own \\(--name\\)$"):
        publish(spec)
    assert len(registry.list_versions(reg, "m")) == len(before)


def test_cli_refuses_a_reranker_as_a_retrievers_champion(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: ``publish --model rr1 --name toy-ret --set-champion``, toy-ret's versions retrievers."""
    reg = str(tmp_path / "reg")
    first = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "ret1")), name="toy-ret", registry=reg,
                                   champion="always"))
    rr1 = make_training_output(tmp_path / "rr1", seed=1, reranker=True)
    capsys.readouterr()  # the first publish's log lines
    assert main(["publish", "--model", str(rr1), "--name", "toy-ret", "--registry", reg, "--set-champion"]) == 2
    line = _one_error_line(capsys, "publish")
    assert f"{reg}/toy-ret is a retriever name (its champion {first.version} is a retriever)" in line
    assert f"--model {rr1} is a reranker" in line
    assert [v.version for v in registry.list_versions(reg, "toy-ret")] == [first.version]
    assert registry.get_version(reg, "toy-ret", "champion").version == first.version
