"""Reading the registry: only manifested versions, pointers that are not trusted blindly, verification."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bgeflow.core.errors import NotFoundError
from bgeflow.steps.publish import PublishSpec, publish, registry
from test_publish import make_training_output


@pytest.fixture
def reg(tmp_path: Path) -> str:
    """A registry with versions v1 (champion) and v2 (latest) of "m"."""
    root = str(tmp_path / "registry")
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "a", seed=1)), name="m", registry=root,
                          version="v1", champion="always"))
    publish(PublishSpec.of(model=str(make_training_output(tmp_path / "b", seed=2)), name="m", registry=root,
                          version="v2"))
    return root


def test_list_and_get(reg: str) -> None:
    versions = registry.list_versions(reg, "m")
    assert [v.version for v in versions] == ["v1", "v2"]
    assert versions[0].kind == "retriever" and versions[0].content_hash
    assert registry.get_version(reg, "m").version == "v2"
    assert registry.get_version(reg, "m", "champion").version == "v1"
    assert registry.get_version(reg, "m", "v1").uri == f"{reg}/m/v1"
    assert registry.list_versions(reg, "other") == []
    with pytest.raises(FileNotFoundError, match="no complete version for 'latest'"):
        registry.get_version(reg, "other")
    assert registry.find_version(reg, "other", "champion") is None


def test_version_without_manifest_is_invisible(reg: str) -> None:
    incomplete = Path(reg) / "m" / "v3"
    shutil.copytree(Path(reg) / "m" / "v2", incomplete)
    (incomplete / "manifest.json").unlink()
    assert [v.version for v in registry.list_versions(reg, "m")] == ["v1", "v2"]
    assert registry.find_version(reg, "m", "v3") is None
    # Pointers naming it are ignored: the newest complete version stands in.
    for pointer in ("latest", "champion"):
        (Path(reg) / "m" / f"{pointer}.json").write_text(json.dumps({"version": "v3"}))
        assert registry.get_version(reg, "m", pointer).version == "v2"
    (Path(reg) / "m" / "latest.json").write_text("{not json")
    assert registry.get_version(reg, "m", "latest").version == "v2"


def test_corrupt_manifest_is_skipped(reg: str) -> None:
    (Path(reg) / "m" / "v2" / "manifest.json").write_text("{broken")
    assert [v.version for v in registry.list_versions(reg, "m")] == ["v1"]
    with pytest.raises(registry.RegistryError, match="corrupt manifest"):
        registry.get_version(reg, "m", "v2")


def test_verify_and_download_catch_tampering(reg: str, tmp_path: Path) -> None:
    assert registry.verify(reg, "m", "v1") == []
    weights = Path(reg) / "m" / "v1" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[0] ^= 0xFF  # same size, other bytes
    weights.write_bytes(bytes(data))
    problems = registry.verify(reg, "m", "v1")
    assert len(problems) == 1 and "model.safetensors: sha256 differs" in problems[0]
    assert registry.verify(reg, "m", "v1", checksums=False) == []
    with pytest.raises(registry.RegistryError, match="sha256 differs"):
        registry.download_model(reg, "m", "v1", tmp_path / "dl")
    (Path(reg) / "m" / "v1" / "model" / "vocab.txt").unlink()
    assert any("vocab.txt: missing" in p for p in registry.verify(reg, "m", "v1"))


def test_model_references(reg: str, tmp_path: Path) -> None:
    work = tmp_path / "work"
    assert registry.parse_ref(f"{reg}/m") == (reg, "m", "champion")
    assert registry.parse_ref(f"{reg}/m@v2") == (reg, "m", "v2")
    assert registry.parse_ref(f"{reg}/m/v1") == (reg, "m", "v1")
    assert registry.parse_ref(str(tmp_path / "a")) is None  # a training output, not a registry name
    assert registry.find_ref(f"{reg}/never-published") is None  # a first pipeline run: no champion yet
    assert registry.find_ref(f"{reg}/m@v9") is None
    champion = Path(registry.fetch_model(f"{reg}/m", work))
    assert (champion / "model.safetensors").read_bytes() == (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    latest = Path(registry.fetch_model(f"{reg}/m@latest", work))
    assert (latest / "model.safetensors").read_bytes() == (tmp_path / "b" / "model" / "model.safetensors").read_bytes()
    # training outputs and model dirs are used in place
    assert registry.fetch_model(str(tmp_path / "a"), work) == str(tmp_path / "a" / "model")
    assert registry.fetch_model(str(tmp_path / "a" / "model"), work) == str(tmp_path / "a" / "model")
    # A hub id goes through the resolver of every verb: its cached snapshot, or not found offline.
    with pytest.raises(NotFoundError, match=r"BAAI/bge-base-en-v1\.5: no such directory, and not in the Hugging Face"):
        registry.fetch_model("BAAI/bge-base-en-v1.5", work)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        registry.fetch_model(str(tmp_path / "missing"), work)
    with pytest.raises(FileNotFoundError, match="or a registry name with a complete version"):
        registry.fetch_model(f"{reg}/m@v9", work)


def test_model_from_s3_training_output(tmp_path: Path, s3_bucket: str) -> None:
    from bgeflow.core.storage import open_store

    open_store(f"s3://{s3_bucket}/runs/7").upload_dir(make_training_output(tmp_path / "a"))
    local = Path(registry.fetch_model(f"s3://{s3_bucket}/runs/7", tmp_path / "work"))
    assert (local / "config.json").is_file() and (local / "1_Pooling" / "config.json").is_file()
    assert registry.is_model_location(f"s3://{s3_bucket}/runs/7")
    assert not registry.is_model_location(f"s3://{s3_bucket}/runs")


@pytest.mark.parametrize("bad", ["", ".hidden", "_x", "a/b", "latest", "champion", "x" * 200, "sp ace"])
def test_names_are_checked(bad: str) -> None:
    with pytest.raises(ValueError, match="is not valid"):
        registry.check_name(bad, "version")
