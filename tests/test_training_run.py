"""Real fine-tuning runs of the bundled MiniLM with FlagEmbedding under torchrun (CPU, gloo).

The data teach one thing the base model gets wrong: for "Where does X live?" the answer
"X lives in C." beats question-like texts that repeat the query (which MiniLM ranks higher).
Held-out names check that the model learnt the rule rather than the training pairs. Each run
costs ~10 s of imports per process, so one run's outputs serve several assertions.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import main
from bgeflow.core.storage import open_store
from bgeflow.steps.training import checkpoints
from test_training_spec import SEED_RETRIEVER

NAMES = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Niaj",
         "Olivia", "Peggy", "Rupert", "Sybil"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo", "Hanoi", "Quito", "Accra", "Dublin", "Seoul", "Cairo"]
HELD_OUT = [("Walter", "Rome"), ("Yvonne", "Bern"), ("Victor", "Riga")]


def negatives(name: str, city: str, other: str) -> list[str]:
    return [f"Where does {name} live these days?", f"Does {name} live in {city}?", f"Why does {name} live there?",
            f"Where did {name} live before?", f"Who knows where {name} lives?", f"{other} lives in {city}.",
            f"Where will {name} live next year?", f"Can {name} live in {city}?",
            f"Where would {name} like to live?", f"Where does {name} work?", f"How does {name} live?",
            f"Where does {name}'s sister live?", f"Is {name} living in {city}?", f"Where should {name} live?",
            f"When did {name} move?"]


def write_data(path: Path, n_negatives: int, n_records: int = len(NAMES)) -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for i, name in enumerate(NAMES[:n_records]):
            city = CITIES[i % len(CITIES)]
            record = {"query": f"Where does {name} live?", "pos": [f"{name} lives in {city}."],
                      "neg": negatives(name, city, NAMES[(i + 1) % len(NAMES)])[:n_negatives]}
            fh.write(json.dumps(record) + "\n")
    return path


def held_out_triples() -> list[tuple[str, str, str]]:
    triples = []
    for name, city in HELD_OUT:
        for negative in negatives(name, city, "Zoe")[:3]:
            triples.append((f"Where does {name} live?", f"{name} lives in {city}.", negative))
    return triples


def embedding_margin(model_path: str) -> float:
    """Mean cos(query, positive) - cos(query, negative) on held-out names."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    margins = []
    for query, positive, negative in held_out_triples():
        q, p, n = model.encode([query, positive, negative], normalize_embeddings=True)
        margins.append(float(q @ p - q @ n))
    return sum(margins) / len(margins)


def rerank_margin(model_path: str) -> float:
    """Mean score(query, positive) - score(query, negative) on held-out names."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)  # the base model's classifier head is freshly initialised
    model = CrossEncoder(model_path, device="cpu", num_labels=1)
    triples = held_out_triples()
    scores = model.predict([pair for q, p, n in triples for pair in ((q, p), (q, n))],
                           activation_fn=torch.nn.Identity())
    return float(sum(scores[0::2] - scores[1::2]) / len(triples))


def summary_of(output: str) -> dict[str, Any]:
    return json.loads(open_store(output).read_text("train_summary.json"))


def local_model(output: str, dest: Path) -> str:
    open_store(output).download_dir(dest, "model")
    return str(dest)


# --------------------------------------------------------------------------- retriever, 2 local pods


@pytest.fixture(scope="module")
def retriever_two_pods(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("retriever2")
    data = write_data(root / "train.jsonl", 3)
    output = str(root / "out")
    argv = ["train", "retriever", "--model", "bundled:minilm", "--train-data", str(data), "--output", output,
            "--local-nodes", "2", "--nproc-per-node", "1", "--negatives-cross-device",
            "--per-device-train-batch-size", "2", "--num-train-epochs", "1", "--learning-rate", "5e-5",
            "--pooling", "mean", "--query-max-len", "32", "--passage-max-len", "32", "--logging-steps", "1",
            "--work-dir", str(root / "work")]
    assert main(argv) == 0
    return {"output": output, "summary": summary_of(output), "root": root}


def test_two_pods_form_one_process_group(retriever_two_pods: dict[str, Any]) -> None:
    summary = retriever_two_pods["summary"]
    assert (summary["world_size"], summary["nnodes"], summary["nproc_per_node"]) == (2, 2, 1)
    # 16 examples / (batch 2 × world 2) = 4 steps; two ranks each training alone would take 8.
    assert summary["global_step"] == 4 and summary["epoch"] == pytest.approx(1.0)
    losses = [entry["loss"] for entry in summary["losses"]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert summary["resumed_from"] is None


def test_retriever_loads_in_sentence_transformers_and_beats_the_base(retriever_two_pods: dict[str, Any],
                                                                     minilm_path: str) -> None:
    path = local_model(retriever_two_pods["output"], retriever_two_pods["root"] / "model")
    pooling = json.loads((Path(path) / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    assert any(m["type"].endswith("Normalize") for m in json.loads((Path(path) / "modules.json").read_text()))
    assert list(Path(path).glob("*.safetensors"))
    base, tuned = embedding_margin(minilm_path), embedding_margin(path)
    assert base < 0 < tuned, (base, tuned)
    config = open_store(retriever_two_pods["output"]).read_text("train_config.yaml")
    for resolved in ("nnodes: 2", "nproc_per_node: 1", "pooling: mean", "negatives_cross_device: true",
                     "use_cpu: true"):
        assert resolved in config


# --------------------------------------------------------------------------- reranker, data and model on S3


def test_training_leaves_tensorboard_event_files(retriever_two_pods: dict[str, Any]) -> None:
    """TensorBoard is on by default when installed: its events land in <output>/logs with the model."""
    pytest.importorskip("tensorboard", reason="needs the tensorboard package (not installed in this venv): "
                        "without it a run reports to no tracker and writes no event files")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = Path(retriever_two_pods["output"]) / "logs"
    events = sorted(logs.rglob("events.out.tfevents.*"))
    assert events, f"no event files under {logs}"
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "train/loss" in accumulator.Tags()["scalars"]
    assert [e.step for e in accumulator.Scalars("train/loss")][-1] == retriever_two_pods["summary"]["global_step"]
    assert retriever_two_pods["summary"]["events"] == str(logs)


def test_reranker_with_data_model_and_output_on_s3(s3_bucket: str, tmp_path: Path, minilm_path: str) -> None:
    """Everything a training pod touches is in S3, the base model too (a pod without hub access)."""
    data = write_data(tmp_path / "train.jsonl", 3)
    open_store(f"s3://{s3_bucket}/data").put_file(data, "train.jsonl")
    open_store(f"s3://{s3_bucket}/models").upload_dir(minilm_path, "minilm")
    output = f"s3://{s3_bucket}/runs/reranker"
    assert main(["train", "reranker", "--model", f"s3://{s3_bucket}/models/minilm",
                 "--train-data", f"s3://{s3_bucket}/data/",
                 "--output", output, "--train-group-size", "4", "--per-device-train-batch-size", "4",
                 "--gradient-accumulation-steps", "1", "--num-train-epochs", "2", "--learning-rate", "1e-4",
                 "--max-len", "64", "--logging-steps", "1", "--save-steps", "4",
                 "--work-dir", str(tmp_path / "work")]) == 0
    summary = summary_of(output)
    # 16 examples / batch 4 = 4 steps per epoch, 2 epochs, one process.
    assert summary["global_step"] == 8 and summary["world_size"] == 1
    losses = [entry["loss"] for entry in summary["losses"]]
    assert losses[-1] < losses[0]
    complete, partial = checkpoints.remote_checkpoints(open_store(output).child("checkpoints"))
    assert [c.step for c in complete] == [4, 8] and not partial
    assert {c.run for c in complete} == {summary["run_identity"]}  # stamped with this run's identity
    assert not any((tmp_path / "work").iterdir())  # the scratch (data, checkpoints, export) is gone
    path = local_model(output, tmp_path / "model")
    assert not (Path(path) / "modules.json").exists()  # a plain sequence-classification model
    assert rerank_margin(path) > max(rerank_margin(minilm_path), 0.0)


# --------------------------------------------------------------------------- slow: more processes, faults


SEED_RERANKER = (
    "--output_dir {out} --model_name_or_path bundled:minilm --train_data {data} --learning_rate 6e-5 --fp16 "
    "--num_train_epochs 5 --per_device_train_batch_size 4 --gradient_accumulation_steps 4 "
    "--dataloader_drop_last True --train_group_size 16 --max_len 512 --weight_decay 0.01 --logging_steps 10"
)


@pytest.mark.slow
def test_seed_reranker_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 4 records × 16 passages: one micro-batch per epoch keeps the seed's group size affordable on CPU.
    data = write_data(tmp_path / "train.jsonl", 15, n_records=4)
    output = str(tmp_path / "out")
    argv = shlex.split(SEED_RERANKER.format(out=output, data=data))
    # On CPU the seed's --fp16 is refused before anything starts, saying what to do.
    assert main(["train", "reranker", *argv, "--work-dir", str(tmp_path / "work")]) == 2
    assert "drop --fp16" in capsys.readouterr().err
    assert not Path(output).exists()
    argv.remove("--fp16")
    assert main(["train", "reranker", *argv, "--work-dir", str(tmp_path / "work")]) == 0
    summary = summary_of(output)
    assert summary["global_step"] == 5 and summary["world_size"] == 1 and summary["train_loss"] > 0
    from sentence_transformers import CrossEncoder

    assert CrossEncoder(str(Path(output) / "model"), device="cpu").predict([("q", "p")]).shape == (1,)


@pytest.mark.slow
def test_reranker_two_processes(tmp_path: Path, minilm_path: str) -> None:
    data = write_data(tmp_path / "train.jsonl", 7)
    output = str(tmp_path / "out")
    assert main(["train", "reranker", "--model", "bundled:minilm", "--train-data", str(data), "--output", output,
                 "--nproc-per-node", "2", "--train-group-size", "8", "--per-device-train-batch-size", "2",
                 "--gradient-accumulation-steps", "1", "--num-train-epochs", "2", "--max-len", "64",
                 "--logging-steps", "1", "--work-dir", str(tmp_path / "work")]) == 0
    summary = summary_of(output)
    # 16 / (2 × 2) = 4 steps per epoch.
    assert summary["world_size"] == 2 and summary["global_step"] == 8
    losses = [entry["loss"] for entry in summary["losses"]]
    assert losses[-1] < losses[0]
    assert rerank_margin(str(Path(output) / "model")) > max(rerank_margin(minilm_path), 0.0)


@pytest.mark.slow
def test_seed_retriever_command_two_processes(tmp_path: Path, minilm_path: str) -> None:
    data = write_data(tmp_path / "train.jsonl", 3)
    output = str(tmp_path / "out")
    argv = shlex.split(SEED_RETRIEVER.format(out=output, model="bundled:minilm", data=data))
    argv.remove("--fp16")
    assert main(["train", "retriever", *argv, "--nproc_per_node", "2", "--sentence_pooling_method", "mean",
                 "--work-dir", str(tmp_path / "work")]) == 0
    summary = summary_of(output)
    # 16 / (4 × 2) = 2 steps per epoch × 5 epochs.
    assert summary["world_size"] == 2 and summary["global_step"] == 10
    assert embedding_margin(str(Path(output) / "model")) > embedding_margin(minilm_path)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _worker_of_node(root_pid: int, node_rank: int) -> int | None:
    for pid in _descendants(root_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"bgeflow.steps.training.worker" in cmdline and f"GROUP_RANK={node_rank}".encode() in environ:
            return pid
    return None


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_complete_checkpoint(tmp_path: Path) -> None:
    data = write_data(tmp_path / "train.jsonl", 3)
    output = str(tmp_path / "out")
    command = [sys.executable, "-m", "bgeflow", "train", "retriever", "--model", "bundled:minilm",
               "--train-data", str(data), "--output", output, "--local-nodes", "2", "--nproc-per-node", "1",
               "--per-device-train-batch-size", "2", "--max-steps", "8", "--save-steps", "2",
               "--logging-steps", "1", "--pooling", "mean", "--query-max-len", "32", "--passage-max-len", "32",
               "--work-dir", str(tmp_path / "work")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    store = open_store(output).child(checkpoints.CHECKPOINTS_PREFIX)
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 600
            while not store.exists(f"checkpoint-2/{checkpoints.MARKER}"):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline
                time.sleep(0.2)
            victim = _worker_of_node(first.pid, 1)
            assert victim is not None
            os.kill(victim, signal.SIGKILL)
            assert first.wait(timeout=180) != 0
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
    complete, _ = checkpoints.remote_checkpoints(store)
    last = complete[-1].step
    assert 2 <= last < 8
    # A checkpoint whose upload never finished: its files, no marker.
    shutil.copytree(Path(output) / "checkpoints" / f"checkpoint-{last}", Path(output) / "checkpoints" / "checkpoint-100")
    (Path(output) / "checkpoints" / "checkpoint-100" / checkpoints.MARKER).unlink()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    # The checkpoint's weights went into the transformers model, key for key.
    assert "keys in the checkpoint model loaded" not in rerun.stdout + rerun.stderr
    summary = summary_of(output)
    assert summary["resumed_from"].endswith(f"checkpoint-{last}")
    assert summary["start_step"] == last and summary["global_step"] == 8
    assert next(e["step"] for e in summary["losses"] if e["step"] > last) == last + 1
    assert any(p.endswith("checkpoint-100") for p in summary["ignored_checkpoints"])
