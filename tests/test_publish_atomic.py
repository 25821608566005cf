"""No corrupt publish: one content per version under concurrency, and leftovers listed and reclaimed.

- two publishes of one ``--version`` at once with different content: one wins, the other gets a
  ConflictError, and the version's files match its manifest;
- two identical publishes at once: both succeed with one version (no raw ``[Errno 2]``, no orphan);
- an interrupted publish blocks other content from its version until ``bgeflow models gc``
  reclaims it; ``bgeflow models verify`` checks versions against their manifests.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import main
from bgeflow.core.errors import ConflictError
from bgeflow.core.storage import LocalStore, S3Store, open_store
from bgeflow.steps.publish import PublishSpec, publish, registry
from test_publish import make_training_output


def _concurrently(monkeypatch: pytest.MonkeyPatch, *specs: PublishSpec) -> list[Any]:
    """Run the publishes in threads that meet inside their uploads, so their writes interleave."""
    barrier = threading.Barrier(len(specs), timeout=5)
    real = LocalStore.put_file

    def put(self: LocalStore, local: Any, key: str, **kw: Any) -> None:
        if key.endswith("model/config.json"):
            with contextlib.suppress(threading.BrokenBarrierError):  # the other publish never got this far
                barrier.wait()
        real(self, local, key, **kw)

    monkeypatch.setattr(LocalStore, "put_file", put)
    results: list[Any] = [None] * len(specs)

    def one(i: int) -> None:
        try:
            results[i] = publish(specs[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.undo()
    return results


def test_two_publishes_of_one_version_with_other_content_one_wins_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = str(tmp_path / "registry")
    specs = [PublishSpec.of(model=str(make_training_output(tmp_path / f"m{i}", seed=i)), name="m", registry=reg,
                            version="v1") for i in range(2)]
    results = _concurrently(monkeypatch, *specs)
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    info = registry.get_version(reg, "m", "latest")
    assert info.version == "v1" and info.content_hash == won[0].content_hash
    assert registry.verify(reg, "m", "v1") == []  # latest's files are the manifest's, byte for byte
    assert isinstance(lost[0], ConflictError) and "other content" in str(lost[0])


def test_two_identical_publishes_at_once_make_one_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgeflow.steps.publish.run as run

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # both start in the same second
            return datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    monkeypatch.setattr(run, "datetime", Frozen)
    reg = str(tmp_path / "registry")
    model = str(make_training_output(tmp_path / "a"))
    results = _concurrently(monkeypatch, *(PublishSpec.of(model=model, name="m", registry=reg) for _ in range(2)))
    assert not any(isinstance(r, BaseException) for r in results), results
    assert results[0].version == results[1].version and sorted(r.created for r in results) == [False, True]
    assert [v.version for v in registry.list_versions(reg, "m")] == [results[0].version]
    assert registry.verify(reg, "m", results[0].version) == []
    folders = [p for p in (Path(reg) / "m").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert all((p / "manifest.json").exists() for p in folders)  # no orphan version


def _interrupted(reg: str, model: str, store_class: type, monkeypatch: pytest.MonkeyPatch) -> None:
    real = store_class.write_bytes

    def fail_manifest(self: Any, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if key.endswith("manifest.json"):
            raise OSError("killed before the manifest")
        real(self, key, data, if_absent=if_absent)

    monkeypatch.setattr(store_class, "write_bytes", fail_manifest)
    with pytest.raises(OSError, match="killed"):
        publish(PublishSpec.of(model=model, name="m", registry=reg, version="v2"))
    monkeypatch.undo()


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_an_interrupted_version_is_claimed_until_gc_reclaims_it(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    from bgeflow.steps.publish.maintenance import find_orphans, reclaim

    reg = str(tmp_path / "registry") if kind == "local" else f"s3://{request.getfixturevalue('s3_bucket')}/reg"
    v1 = publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=reg,
                                version="v1"))
    _interrupted(reg, str(make_training_output(tmp_path / "b", seed=1)), LocalStore if kind == "local" else S3Store,
                 monkeypatch)
    other = str(make_training_output(tmp_path / "c", seed=2))
    with pytest.raises(ConflictError, match=r"being published with other content.*bgeflow models gc"):
        publish(PublishSpec.of(model=other, name="m", registry=reg, version="v2"))
    assert registry.find_version(reg, "m", "v2") is None

    assert find_orphans(reg, "m") == []  # young: it might be a publish still running
    orphans = find_orphans(reg, "m", older_than_s=0, temp_dir=tmp_path / "no-temp")
    assert [(o.kind, o.uri) for o in orphans] == [("unfinished", open_store(reg).url("m/v2"))]
    assert reclaim(orphans) == orphans[0].objects + 1  # its files and its claim
    assert find_orphans(reg, "m", older_than_s=0, temp_dir=tmp_path / "no-temp") == []
    assert registry.verify(reg, "m", v1.version) == []  # a complete version is never touched

    done = publish(PublishSpec.of(model=other, name="m", registry=reg, version="v2"))
    assert done.created and registry.verify(reg, "m", "v2") == []


def test_gc_cli_lists_then_reclaims_staging_and_temp_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    reg = tmp_path / "registry"
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a")), name="m", registry=str(reg), version="v1"))
    (reg / "m" / ".staging" / "abc123" / "model").mkdir(parents=True)
    (reg / "m" / ".staging" / "abc123" / "model" / "w.bin").write_bytes(b"x" * 10)
    temp = tmp_path / "tmp"
    leftover = temp / "bgeflow-publish-dead"
    (leftover / "download").mkdir(parents=True)
    (leftover / "download" / "w.bin").write_bytes(b"y" * 5)
    old = time.time() - 7 * 24 * 3600
    for path in [*leftover.rglob("*"), leftover, *(reg / "m" / ".staging").rglob("*")]:
        os.utime(path, (old, old))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    running = temp / "bgeflow-publish-now"  # written a moment ago: it may be a publish still running
    running.mkdir()
    (running / "w.bin").write_bytes(b"z")

    assert main(["registry", "gc", "--registry", str(reg)]) == 0
    out, err = capsys.readouterr()
    listed = json.loads(out)
    assert sorted(o["kind"] for o in listed["orphans"]) == ["staging", "tempdir"] and listed["removed"] == 0
    # The user's case: a young leftover was simply absent, "orphans": [] read as a gc that missed it.
    assert [o["uri"] for o in listed["too_young"]] == [str(running)]
    assert "1 leftover(s) younger than --older-than 10800s not reclaimed" in err and str(running) in err
    assert leftover.exists()
    assert main(["registry", "gc", "--registry", str(reg), "--delete"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 2
    assert not leftover.exists() and not (reg / "m" / ".staging").exists() and running.exists()

    assert main(["registry", "verify", "--registry", str(reg), "--name", "m"]) == 0
    assert json.loads(capsys.readouterr().out) == {"status": "ok", "ok": True, "versions": {"v1": []}}
    (reg / "m" / "v1" / "model" / "vocab.txt").write_text("tampered")
    assert main(["registry", "verify", "--registry", str(reg), "--name", "m"]) == 1
    assert "differ from their manifest" in capsys.readouterr().err
