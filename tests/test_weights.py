"""Safetensors only: a model folder whose weights are pickles only is refused by publish and evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bgeflow.cli import main
from bgeflow.core.errors import DataError
from bgeflow.steps.publish import PublishSpec, publish
from test_publish import make_training_output


def _pickle_only(model: Path) -> Path:
    for weights in model.glob("*.safetensors"):
        weights.unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle would run code here")
    return model


def test_publish_refuses_bin_only_weights_and_writes_nothing(tmp_path: Path) -> None:
    out = make_training_output(tmp_path / "a")
    _pickle_only(out / "model")
    registry = tmp_path / "registry"
    with pytest.raises(DataError, match=r"pytorch_model\.bin.*safetensors only.*safe_serialization=True"):
        publish(PublishSpec.of(model=str(out), name="m", registry=str(registry)))
    assert not registry.exists() or not any(p.is_file() for p in registry.rglob("*"))


def test_evaluate_refuses_bin_only_weights_in_one_line(tmp_path: Path, minilm_path: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "tuned"
    shutil.copytree(minilm_path, model, ignore=shutil.ignore_patterns("*.safetensors"))
    _pickle_only(model)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "corpus.jsonl").write_text('{"id": "d1", "text": "a cat"}\n{"id": "d2", "text": "a dog"}\n')
    (tmp_path / "eval" / "queries.jsonl").write_text('{"id": "q1", "text": "cat", "relevant": {"d1": 1}}\n')
    code = main(["evaluate", "--eval-data", str(tmp_path / "eval"), "--retriever", str(model),
                 "--output", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2, err
    assert "pytorch_model.bin" in err[-1] and "safetensors only" in err[-1]
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_folder_with_safetensors_passes(tmp_path: Path, minilm_path: str) -> None:
    from bgeflow.core.weights import require_safetensors

    require_safetensors(minilm_path)
    require_safetensors("BAAI/bge-base-en-v1.5")  # a hub name: the loader's to fetch
    shards = tmp_path / "m"
    shards.mkdir()
    for i in range(5):
        (shards / f"pytorch_model-0000{i}-of-00005.bin").write_bytes(b"x")
    with pytest.raises(DataError, match=r"\(\+2 more\)"):
        require_safetensors(shards)
