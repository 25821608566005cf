"""Storage against local paths and a real S3 HTTP endpoint (moto's server): same behaviour both ways."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bgeflow.core.storage import StorageError, iter_lines, open_store, resolve_sources


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/prefix"


def test_write_list_read_roundtrip(root: str) -> None:
    store = open_store(root)
    store.write_text("a/one.jsonl", '{"x": 1}\n')
    store.write_bytes("b.jsonl.gz", gzip.compress(b'{"x": 2}\n'))
    store.write_text("notes.txt", "ignored by the jsonl filter")
    assert [o.key for o in store.list()] == ["a/one.jsonl", "b.jsonl.gz", "notes.txt"]
    assert [o.key for o in store.list((".jsonl", ".jsonl.gz"))] == ["a/one.jsonl", "b.jsonl.gz"]
    assert store.read_text("a/one.jsonl") == '{"x": 1}\n'
    assert store.stat("missing") is None
    assert store.child("a").list()[0].key == "one.jsonl"


def test_conditional_put_refuses_to_overwrite(root: str) -> None:
    store = open_store(root)
    store.write_text("manifest.json", "first", if_absent=True)
    with pytest.raises(FileExistsError):
        store.write_text("manifest.json", "second", if_absent=True)
    assert store.read_text("manifest.json") == "first"


def test_iter_lines_streams_many_objects_in_order(root: str) -> None:
    store = open_store(root)
    for i in range(5):
        lines = "".join(json.dumps({"obj": i, "n": n}) + "\n" for n in range(100 + i))
        data = gzip.compress(lines.encode()) if i % 2 else lines.encode()
        store.write_bytes(f"part-{i}.jsonl{'.gz' if i % 2 else ''}", data)
    sources = resolve_sources([root])
    seen = [(src.key, n, json.loads(raw)) for src, n, raw in iter_lines(sources, workers=3)]
    assert len(seen) == sum(100 + i for i in range(5))
    for key, line_no, obj in seen:
        assert key.startswith(f"part-{obj['obj']}") and line_no == obj["n"] + 1
    assert [obj["obj"] for _, _, obj in seen] == sorted(obj["obj"] for _, _, obj in seen)


def test_large_object_is_streamed_line_by_line(root: str) -> None:
    store = open_store(root)
    store.write_bytes("big.jsonl", b"".join(b'{"i": %d}\n' % i for i in range(50_000)))
    line_numbers = []
    for _, line_no, raw in iter_lines(resolve_sources([store.url("big.jsonl")])):
        assert json.loads(raw)["i"] == line_no - 1
        line_numbers.append(line_no)
    assert line_numbers == list(range(1, 50_001))


def test_missing_input_names_the_uri(root: str) -> None:
    with pytest.raises(StorageError, match="nothing-here"):
        resolve_sources([root + "/nothing-here"])


def test_local_writer_leaves_no_partial_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(str(tmp_path))
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 10)
    store.put_file(src, "out/target.bin")

    def copy_half_then_fail(_src: str, dst: str, *args: object, **kwargs: object) -> None:
        Path(dst).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr("bgeflow.core.storage.local.shutil.copyfile", copy_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(src, "out/target.bin")
    assert (tmp_path / "out" / "target.bin").read_bytes() == b"x" * 10
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["target.bin"]


def test_a_scheme_without_its_package_names_the_package() -> None:
    import importlib.util

    if importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed here: gs:// is served")
    with pytest.raises(ValueError, match=r"gs://bucket/x: the gs:// scheme needs .*pip install gcsfs"):
        open_store("gs://bucket/x")
    with pytest.raises(ValueError, match="zz:// scheme needs an fsspec filesystem"):
        open_store("zz://bucket/x")
