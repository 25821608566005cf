"""No write outside its place, no credential in a message or a pod spec, files readable by the team.

- every local path built from a remote key, a manifest entry or a user-supplied name goes through
  ``safe_join``; names and run ids are refused at the edge;
- endpoints with userinfo are redacted (``user:***@host``) in errors and logs and never copied
  into a training job's pod spec;
- files are created with the umask's mode (0644 under 022), folders 0755;
- one writer per output (local flock, S3 conditional put with an expiry).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import pytest

from bgeflow.core.errors import BgeflowError, ConfigError, ConflictError
from bgeflow.core.storage import open_store
from bgeflow.steps.publish import PublishSpec, publish, registry
from test_publish import make_training_output

# ---------------------------------------------------------------------- 2. one safe-join


@pytest.mark.parametrize("key", ["/etc/x", "../x", "a/../../x", "a//b", "./a", ""])
def test_safe_join_refuses_keys_that_leave_the_folder(tmp_path: Path, key: str) -> None:
    from bgeflow.core.storage import safe_join

    with pytest.raises(BgeflowError, match="not a relative path"):
        safe_join(tmp_path, key)
    assert safe_join(tmp_path, "model/config.json") == tmp_path / "model" / "config.json"


def _s3_model_with_hostile_key(bucket: str, outside: Path) -> str:
    store = open_store(f"s3://{bucket}/out")
    store.write_text("model/config.json", json.dumps({"architectures": ["BertModel"]}))
    store.write_text("model/model.safetensors", "weights")
    # An object key with a leading slash after the prefix: "model//tmp/.../escaped.txt".
    store.client.put_object(Bucket=bucket, Key=f"out/model/{outside}", Body=b"owned")
    return f"s3://{bucket}/out"


def test_evaluate_model_fetch_refuses_an_s3_key_outside_its_folder(tmp_path: Path, s3_bucket: str) -> None:
    outside = tmp_path / "escaped-evaluate.txt"
    uri = _s3_model_with_hostile_key(s3_bucket, outside)
    with pytest.raises(BgeflowError, match="not a relative path"):
        registry.fetch_model(uri, tmp_path / "work")
    assert not outside.exists()
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.safetensors"))


def test_publish_refuses_an_s3_key_outside_its_folder(tmp_path: Path, s3_bucket: str) -> None:
    outside = tmp_path / "escaped-publish.txt"
    uri = _s3_model_with_hostile_key(s3_bucket, outside)
    with pytest.raises(BgeflowError, match="not a relative path"):
        publish(PublishSpec.of(model=uri, name="m", registry=str(tmp_path / "registry")))
    assert not outside.exists()


def test_a_manifest_entry_outside_the_model_folder_downloads_nothing(tmp_path: Path) -> None:
    root = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=root, version="v1"))
    payload = b"owned"
    (Path(root) / "m" / "escaped").write_bytes(payload)
    manifest_path = Path(root) / "m" / "v1" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"].append({"path": "model/../../escaped", "size": len(payload),
                              "sha256": hashlib.sha256(payload).hexdigest()})
    manifest_path.write_text(json.dumps(manifest))
    dest = tmp_path / "deep" / "dl"
    with pytest.raises(BgeflowError, match="not a relative path"):
        registry.download_model(root, "m", "v1", dest)
    assert not (tmp_path / "escaped").exists() and not dest.exists()


def test_names_and_run_ids_are_refused_at_the_edge(tmp_path: Path) -> None:
    from bgeflow.platform.kfp_io import step_output
    from bgeflow.platform.run_spec import RunSpec
    from bgeflow.steps.evaluation import EvaluateSpec

    class Artifact:
        def __init__(self) -> None:
            self.path = str(tmp_path / "artifact")
            self.metadata: dict = {}

    for bad in ("../x", "a/b", "/abs", ".hidden", ""):
        with pytest.raises(ConfigError, match=r"name|pattern"):
            EvaluateSpec.of(output=str(tmp_path), eval_data=str(tmp_path), retriever="bundled:minilm",
                            registry=str(tmp_path), name=bad)
        with pytest.raises(ConfigError):
            RunSpec.build({"data": "d", "retriever": {"name": bad}})
        if bad:
            with pytest.raises(ConfigError, match="run id"):
                step_output(Artifact(), "s3://bucket/work", bad, "ingest")
    assert step_output(Artifact(), "s3://bucket/work", "run-1.2_x", "ingest") == "s3://bucket/work/run-1.2_x/ingest"


# ---------------------------------------------------------------------- 7. credentials


def test_redact_masks_userinfo_in_every_url() -> None:
    from bgeflow.core.storage import redact

    assert redact("at http://user:s3cr3t@minio:9000/b and https://TOKEN@host/x") == \
        "at http://user:***@minio:9000/b and https://***@host/x"
    assert redact("s3://bucket/key@v1 and http://host:9000") == "s3://bucket/key@v1 and http://host:9000"


def test_unreachable_endpoint_with_credentials_is_redacted_in_the_message(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bgeflow.cli import main
    from bgeflow.core.storage import s3_client

    endpoint = "http://admin:hunter2@127.0.0.1:9"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the CLI exports the flag; restored afterwards
    monkeypatch.setenv("BGEFLOW_S3_MAX_ATTEMPTS", "1")
    s3_client.cache_clear()
    try:
        for argv in (["ingest", "--input", "s3://b/in.jsonl", "--output", str(tmp_path / "out")],
                     ["publish", "--model", "s3://b/model", "--name", "m", "--registry", str(tmp_path / "reg")]):
            code = main(["--s3-endpoint-url", endpoint, *argv])
            err = capsys.readouterr().err
            assert code != 0 and "hunter2" not in err, err
            assert "admin:***@127.0.0.1:9" in err, err
    finally:
        s3_client.cache_clear()


def test_storage_errors_and_logs_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    from bgeflow.core.log import RedactingFormatter
    from bgeflow.core.storage import StorageError

    assert "hunter2" not in str(StorageError("cannot reach http://u:hunter2@h/x"))
    record = logging.LogRecord("bgeflow", logging.INFO, __file__, 1, "endpoint %s", ("http://u:hunter2@h",), None)
    assert RedactingFormatter("%(message)s").format(record) == "endpoint http://u:***@h"


def test_the_launcher_never_copies_credentials_into_the_pod_spec(tmp_path: Path) -> None:
    from bgeflow.platform.launcher.spec import PodSettings
    from bgeflow.platform.launcher.train_job import build_launch_spec
    from bgeflow.steps.training.spec import TrainSpec

    spec = TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=["s3://b/t.jsonl"], output="s3://b/out")
    kwargs = {"owner": "run/task", "nnodes": 1, "nproc_per_node": 1, "pod": PodSettings(image="img"),
              "namespace": "ns"}
    with pytest.raises(ConfigError, match=r"AWS_ENDPOINT_URL=http://minio:\*\*\*@minio:9000 holds credentials") as exc:
        build_launch_spec(spec, environ={"AWS_ENDPOINT_URL": "http://minio:hunter2@minio:9000"}, **kwargs)
    assert "hunter2" not in str(exc.value)
    clean = build_launch_spec(spec, environ={"AWS_ENDPOINT_URL": "http://minio:9000"}, **kwargs)
    assert clean.env == {"AWS_ENDPOINT_URL": "http://minio:9000"}


# ---------------------------------------------------------------------- 11. file modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_files_get_the_umask_mode_not_0600(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        store = open_store(str(tmp_path / "out"))
        store.write_text("a/b/report.json", "{}")
        src = tmp_path / "src.bin"
        src.write_bytes(b"x")
        store.put_file(src, "c.bin")
        store.get_file("c.bin", tmp_path / "got" / "c.bin")
        store.download_dir(tmp_path / "dl")
    finally:
        os.umask(old)
    want_file, want_dir = 0o666 & ~umask, 0o777 & ~umask
    for path in (tmp_path / "out" / "a" / "b" / "report.json", tmp_path / "out" / "c.bin",
                 tmp_path / "got" / "c.bin", tmp_path / "dl" / "a" / "b" / "report.json"):
        assert _mode(path) == want_file, path
    for folder in (tmp_path / "out" / "a", tmp_path / "out" / "a" / "b", tmp_path / "dl" / "a"):
        assert _mode(folder) == want_dir, folder


def test_a_published_version_is_readable_by_the_team(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        root = tmp_path / "registry"
        publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=str(root)))
    finally:
        os.umask(old)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert files and {_mode(p) for p in files} == {0o644}
    assert {_mode(p) for p in root.rglob("*") if p.is_dir()} == {0o755}


# ---------------------------------------------------------------------- one writer per output


def test_local_output_lock_refuses_a_second_writer_and_frees_on_release(tmp_path: Path) -> None:
    from bgeflow.core.storage import output_lock

    store = open_store(str(tmp_path / "out"))
    with output_lock(store, owner="first"), pytest.raises(ConflictError, match=r"being written by another run.*first"):
        output_lock(store, owner="second").acquire()
    with output_lock(store, owner="third"):
        pass
    assert [o.key for o in store.list()] == []  # the lock file is hidden


@pytest.mark.parametrize(("case", "exists_before", "writes", "fails", "left"), [
    ("new output, refused before writing", False, False, True, None),
    ("new output, nothing written", False, False, False, None),
    ("new nested output, refused", False, False, True, None),
    ("existing output, refused", True, False, True, []),
    ("new output, written", False, True, False, ["model.bin"]),
    ("new output, written then failed", False, True, True, ["model.bin"]),
    ("stale lock of a killed run", True, False, False, []),
])
def test_a_released_local_lock_leaves_no_lock_file_nor_a_folder_made_only_for_it(
        tmp_path: Path, case: str, exists_before: bool, writes: bool, fails: bool, left: list[str] | None) -> None:
    from bgeflow.core.storage import output_lock
    from bgeflow.core.storage.lock import LOCK_KEY

    top = tmp_path / "parent" if "nested" in case else tmp_path / "out"
    root = top / "out" if "nested" in case else top
    if exists_before:
        root.mkdir(parents=True)
    if "stale" in case:  # a killed process's file: no flock on it any more
        (root / LOCK_KEY).write_text(json.dumps({"owner": "killed", "pid": 2**22 + 1}))
    store = open_store(str(root))
    with contextlib.suppress(RuntimeError), output_lock(store, owner=case):
        assert (root / LOCK_KEY).is_file()
        if writes:
            store.write_text("model.bin", "x")
        if fails:
            raise RuntimeError("refused")
    if left is None:
        assert not top.exists(), case
        assert tmp_path.exists()
    else:
        assert sorted(p.name for p in root.iterdir()) == left, case
    with output_lock(store, owner="next"):  # and the output can be locked again
        pass


def test_s3_output_lock_expires_and_is_taken_over(s3_bucket: str) -> None:
    from bgeflow.core.storage import output_lock
    from bgeflow.core.storage.lock import LOCK_KEY

    store = open_store(f"s3://{s3_bucket}/out")
    first = output_lock(store, owner="first", ttl_s=60).acquire()
    # Another host's live run: refused.
    foreign = json.loads(store.read_text(LOCK_KEY))
    store.write_text(LOCK_KEY, json.dumps({**foreign, "host": "elsewhere", "token": "t"}))
    with pytest.raises(ConflictError, match=r"being written by another run.*first on elsewhere"):
        output_lock(store, owner="second").acquire()
    # Its run died: past the expiry the lock is taken over.
    store.write_text(LOCK_KEY, json.dumps({**foreign, "host": "elsewhere", "token": "t", "expires": 0}))
    second = output_lock(store, owner="second").acquire()
    assert json.loads(store.read_text(LOCK_KEY))["owner"] == "second"
    first.release()  # no longer its lock: left alone
    assert json.loads(store.read_text(LOCK_KEY))["owner"] == "second"
    second.release()
    assert not store.exists(LOCK_KEY)
    # A lock left by an earlier process of this host (a restarted container) does not block.
    store.write_text(LOCK_KEY, json.dumps({**foreign, "pid": 2**22 + 1, "expires": 2**40}))
    output_lock(store, owner="restarted").acquire().release()
