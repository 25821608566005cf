"""Any fsspec scheme where a URI is accepted, here ``memory://`` (gs://, az://, hf:// take the same path).

S3 keeps its own store (conditional puts, checksum settings); every other scheme is ``FsspecStore``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bgeflow.core.errors import ConfigError
from bgeflow.core.storage import open_store, resolve_sources
from bgeflow.core.storage.base import UnsafePathError
from bgeflow.core.storage.remote import FsspecStore


@pytest.fixture
def memory_uri() -> str:
    """A fresh ``memory://`` prefix (fsspec's in-memory filesystem is shared by the whole process)."""
    return f"memory://bgeflow-test-{uuid.uuid4().hex[:8]}"


def test_the_store_contract(memory_uri: str, tmp_path: Path) -> None:
    store = open_store(memory_uri)
    assert isinstance(store, FsspecStore) and store.uri == memory_uri
    assert store.list() == [] and store.stat("a.txt") is None
    store.write_text("a.txt", "alpha")
    store.write_text("dir/b.jsonl", '{"x": 1}\n')
    store.write_text(".claims/v1.json", "{}")
    assert [o.key for o in store.list()] == ["a.txt", "dir/b.jsonl"]  # hidden keys only when asked
    assert [o.key for o in store.list(hidden=True)] == [".claims/v1.json", "a.txt", "dir/b.jsonl"]
    assert [o.key for o in store.list((".jsonl",))] == ["dir/b.jsonl"]
    assert store.stat("a.txt").size == 5 and store.read_text("a.txt") == "alpha"
    child = store.child("dir")
    assert child.uri == f"{memory_uri}/dir" and child.read_text("b.jsonl") == '{"x": 1}\n'
    assert open_store(f"{memory_uri}/dir/b.jsonl").list()[0].size == 9  # a URI naming one object
    with pytest.raises(FileExistsError, match=r"a\.txt already exists"):
        store.write_text("a.txt", "beta", if_absent=True)
    assert store.read_text("a.txt") == "alpha"
    assert [p.name for p in store.download_dir(tmp_path / "dl")] == ["a.txt", "b.jsonl"]
    store.delete("a.txt")
    store.delete("never-there")
    assert not store.exists("a.txt")
    with pytest.raises(UnsafePathError):
        store.write_text("../outside", "x")


def test_jsonl_inputs_read_from_any_scheme(memory_uri: str) -> None:
    from bgeflow.data import iter_json

    store = open_store(memory_uri)
    store.write_text("data/part-1.jsonl", json.dumps({"query": "q", "pos": ["p"]}) + "\n")
    store.write_text("data/part-2.json", json.dumps({"query": "r", "pos": ["s"]}) + "\n")
    assert [s.uri for s in resolve_sources([f"{memory_uri}/data"])] == [f"{memory_uri}/data/part-1.jsonl",
                                                                        f"{memory_uri}/data/part-2.json"]
    assert [obj["query"] for _, obj in iter_json([f"{memory_uri}/data"])] == ["q", "r"]


def test_a_model_and_a_registry_on_any_scheme(memory_uri: str, minilm_path: str, tmp_path: Path) -> None:
    from bgeflow.core.models import hub_model_id, locate_model, resolve_model
    from bgeflow.steps.publish import PublishSpec, publish, registry

    open_store(f"{memory_uri}/train").upload_dir(minilm_path, "model")
    assert locate_model(f"{memory_uri}/train").kind == "remote"
    local = resolve_model(f"{memory_uri}/train")  # fetched once to the cache, as an s3:// model is
    assert Path(local, "config.json").read_bytes() == Path(minilm_path, "config.json").read_bytes()
    assert resolve_model(f"{memory_uri}/train") == local

    reg = f"{memory_uri}/registry"
    result = publish(PublishSpec.of(model=f"{memory_uri}/train", name="m", registry=reg))
    assert registry.get_version(reg, "m", "latest").version == result.version
    assert registry.verify(reg, "m", result.version) == []
    fetched = registry.fetch_model(f"{reg}/m@latest", tmp_path)
    assert Path(fetched, "README.md").is_file()
    # hf://<org>/<name> is a hub model: its id, served by the hub cache.
    assert locate_model("hf://BAAI/bge-base-en-v1.5").location == "BAAI/bge-base-en-v1.5"
    assert hub_model_id("hf://BAAI/bge-base-en-v1.5") == "BAAI/bge-base-en-v1.5"


def test_an_unknown_scheme_is_one_config_error() -> None:
    from bgeflow.core.models import locate_model

    with pytest.raises(ConfigError, match="zz://x/model: the zz:// scheme"):
        locate_model("zz://x/model")
