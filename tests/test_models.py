"""One model resolver for every verb and the training pods: hub id, local path, ``s3://``, ``bundled:``.

Whatever the reference, a verb loads a local copy and reads the model's own settings (pooling,
normalisation, positions) from that copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.models import resolve_model
from bgeflow.core.storage import open_store


def _train_data(path: Path) -> Path:
    rows = [{"query": f"what is item {i}", "pos": [f"item {i} is a thing"], "neg": [f"item {i + 1} is another"]}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_hub_model(cache: Path, repo_id: str, model_dir: str | Path) -> Path:
    """``model_dir`` laid out as huggingface_hub caches a download of ``repo_id`` (no network)."""
    root = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    shutil.copytree(model_dir, snapshot, dirs_exist_ok=True)
    return snapshot


def last_token_copy(minilm_path: str, dest: Path) -> Path:
    """MiniLM saved as a sentence-transformers model with last-token pooling."""
    shutil.copytree(minilm_path, dest)
    (dest / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384,
                                                                "pooling_mode_lasttoken": True}))
    return dest


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def model_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BGEFLOW_MODEL_CACHE", str(tmp_path / "model-cache"))
    return tmp_path / "model-cache"


def test_train_retriever_from_s3_loads_a_local_copy_and_its_pooling(
    s3_bucket: str, model_cache: Path, minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's case: ``train retriever --model s3://models/base/minilm``; torchrun got the s3:// string."""
    import bgeflow.steps.training.pod as pod
    from bgeflow.cli import main

    open_store(f"s3://{s3_bucket}/base/minilm").upload_dir(minilm_path)
    launched: list[dict] = []

    def child(cmd: list[str], env: dict[str, str] | None = None) -> int:
        launched.append(json.loads(Path(cmd[cmd.index("--runner-args") + 1]).read_text()))
        return 1

    monkeypatch.setattr(pod, "_run_child", child)
    argv = ["train", "retriever", "--model", f"s3://{s3_bucket}/base/minilm", "--train_data",
            str(_train_data(tmp_path / "d.jsonl")), "--output", str(tmp_path / "out"), "--work-dir",
            str(tmp_path / "work")]
    assert main(argv) == 1  # the fake torchrun fails; what it was given is what counts
    args = launched[0]
    model = Path(args["model_name_or_path"])
    assert model.is_relative_to(model_cache) and (model / "config.json").is_file()
    assert args["sentence_pooling_method"] == "mean"  # MiniLM's own, read from the downloaded copy


def test_mine_with_a_hub_id_reads_the_pooling_from_its_snapshot(
    hub_cache: Path, minilm_path: str, tmp_path: Path
) -> None:
    """A second input of the kind: a hub id (the cached snapshot of a last-token model)."""
    from bgeflow.steps.mining import MineSpec, mine

    snapshot = fake_hub_model(hub_cache, "org/minilm-last", last_token_copy(minilm_path, tmp_path / "lt"))
    assert resolve_model("org/minilm-last") == str(snapshot)
    result = mine(MineSpec.of(model="org/minilm-last", inputs=[str(_train_data(tmp_path / "d.jsonl"))],
                              output=str(tmp_path / "m.jsonl"), negative_number=1, range_for_sampling="0-10",
                              query_max_len=16, passage_max_len=16))
    assert result.report["encoding"]["pooling"] == "last_token"


def test_s3_models_are_cached_by_uri_and_etags(
    s3_bucket: str, model_cache: Path, minilm_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bgeflow.core.storage.s3 import S3Store

    store = open_store(f"s3://{s3_bucket}/base")
    store.upload_dir(minilm_path)
    fetched: list[str] = []
    real = S3Store.get_file
    monkeypatch.setattr(S3Store, "get_file", lambda self, key, dest: fetched.append(key) or real(self, key, dest))
    first = resolve_model(store.uri)
    assert fetched and Path(first, "model.safetensors").is_file()
    fetched.clear()
    assert resolve_model(store.uri) == first and fetched == []  # unchanged: no download
    store.write_text("README.md", "changed")
    assert resolve_model(store.uri) != first and fetched  # a changed object: a new copy


def test_training_outputs_and_references_that_are_not_models(
    s3_bucket: str, model_cache: Path, minilm_path: str, tmp_path: Path, hub_cache: Path
) -> None:
    from bgeflow.core.models import locate_model

    output = tmp_path / "train-out"
    shutil.copytree(minilm_path, output / "model")
    assert resolve_model(str(output)) == str(output / "model")
    open_store(f"s3://{s3_bucket}/run").upload_dir(minilm_path, "model")
    assert Path(resolve_model(f"s3://{s3_bucket}/run"), "config.json").is_file()
    assert locate_model("bundled:minilm").location == minilm_path
    with pytest.raises(ConfigError, match="unknown bundled model"):
        resolve_model("bundled:nope")
    with pytest.raises(NotFoundError, match=r"no config\.json under it"):
        resolve_model(f"s3://{s3_bucket}/nothing")
    with pytest.raises(NotFoundError, match="not in the Hugging Face cache"):
        resolve_model("org/not-cached")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NotFoundError, match="no model directory"):
        resolve_model(str(tmp_path / "empty"))


def test_evaluate_and_the_registry_resolve_through_the_same_function(
    s3_bucket: str, model_cache: Path, minilm_path: str, tmp_path: Path
) -> None:
    from bgeflow.steps.publish.registry import fetch_model

    open_store(f"s3://{s3_bucket}/m").upload_dir(minilm_path)
    assert fetch_model(f"s3://{s3_bucket}/m", tmp_path / "work") == resolve_model(f"s3://{s3_bucket}/m")
    assert Path(fetch_model(f"s3://{s3_bucket}/m", tmp_path / "work")).is_relative_to(model_cache)
