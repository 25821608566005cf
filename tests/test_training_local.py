"""Local pods (the operator's env, one failure stops all) and checkpoint completeness: no training."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from bgeflow.core.storage import open_store
from bgeflow.steps.training import checkpoints
from bgeflow.steps.training.local import run_local_pods

ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "PET_NNODES", "PET_NODE_RANK",
            "PET_NPROC_PER_NODE", "PET_MASTER_ADDR", "PET_MASTER_PORT", "PYTHONUNBUFFERED", "EXTRA")


def test_pods_get_the_operator_env_and_prefixed_output_on_stderr(tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str]) -> None:
    script = ("import json, os, sys; keys = sys.argv[1].split(','); "
              "print(json.dumps({k: os.environ.get(k) for k in keys}))")
    code = run_local_pods([sys.executable, "-c", script, ",".join(ENV_KEYS)], nnodes=3, nproc_per_node=2,
                          env={"EXTRA": "x"}, master_port=23456)
    assert code == 0
    out, err = capfd.readouterr()
    assert "[pod-" not in out  # stdout is the verb's JSON result; the pods' output is log
    lines = [line for line in err.splitlines() if line.startswith("[pod-")]
    seen = {int(line[5]): json.loads(line.split("] ", 1)[1]) for line in lines}
    assert sorted(seen) == [0, 1, 2]
    for rank, env in seen.items():
        assert env == {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "23456", "WORLD_SIZE": "6", "RANK": str(rank),
                       "PET_NNODES": "3", "PET_NODE_RANK": str(rank), "PET_NPROC_PER_NODE": "2",
                       "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": "23456", "PYTHONUNBUFFERED": "0",
                       "EXTRA": "x"}


def test_one_failed_pod_stops_the_others_and_its_code_is_returned() -> None:
    script = ("import os, sys, time\n"
              "if os.environ['PET_NODE_RANK'] == '1':\n    time.sleep(0.5); sys.exit(7)\n"
              "time.sleep(120)\n")
    started = time.monotonic()
    assert run_local_pods([sys.executable, "-c", script], nnodes=3, nproc_per_node=1, timeout=60) == 7
    assert time.monotonic() - started < 30


def test_timeout_stops_every_pod() -> None:
    with pytest.raises(TimeoutError):
        run_local_pods([sys.executable, "-c", "import time; time.sleep(60)"], nnodes=2, nproc_per_node=1, timeout=1)


def fake_checkpoint(root: Path, step: int, *, complete: bool) -> Path:
    ckpt = root / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"w" * step)
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if complete:
        checkpoints.mark_complete(ckpt, step)
    return ckpt


def test_only_checkpoints_with_a_matching_marker_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    fake_checkpoint(run, 2, complete=True)
    fake_checkpoint(run, 4, complete=True)
    truncated = fake_checkpoint(run, 6, complete=True)
    (truncated / "model.safetensors").write_bytes(b"w")  # a file changed after the marker: not complete
    fake_checkpoint(run, 8, complete=False)
    complete, partial = checkpoints.local_checkpoints(run)
    assert [c.step for c in complete] == [2, 4] and [c.step for c in partial] == [6, 8]

    output = open_store(str(tmp_path / "out")).child(checkpoints.CHECKPOINTS_PREFIX)
    plan = checkpoints.plan_resume(run, output, use_local=True)
    assert plan.step == 4 and plan.local_dir == run / "checkpoint-4"
    assert sorted(Path(p).name for p in plan.ignored) == ["checkpoint-6", "checkpoint-8"]
    assert not (run / "checkpoint-8").exists()  # partial local scratch is cleared for the next save


def test_resume_downloads_the_newest_complete_remote_checkpoint(tmp_path: Path) -> None:
    out = open_store(str(tmp_path / "out")).child(checkpoints.CHECKPOINTS_PREFIX)
    checkpoints.publish(fake_checkpoint(tmp_path / "a", 3, complete=False), 3, out)
    checkpoints.publish(fake_checkpoint(tmp_path / "b", 5, complete=False), 5, out)
    # An upload killed before its marker: files there, marker missing.
    partial = fake_checkpoint(tmp_path / "c", 9, complete=False)
    out.upload_dir(partial, "checkpoint-9")
    node = tmp_path / "node-1" / "run"
    fake_checkpoint(node, 7, complete=True)  # newer, but only on this node
    plan = checkpoints.plan_resume(node, out, use_local=False)
    assert plan.step == 5 and plan.source == out.url("checkpoint-5")
    assert (node / "checkpoint-5" / "model.safetensors").read_bytes() == b"w" * 5
    assert checkpoints.is_complete_dir(node / "checkpoint-5")
    assert plan.ignored == [out.url("checkpoint-9")]
    assert checkpoints.plan_resume(node, out, use_local=True).step == 7

    checkpoints.prune(out, keep=1)
    complete, partial_left = checkpoints.remote_checkpoints(out)
    assert [c.step for c in complete] == [5] and [c.step for c in partial_left] == [9]


def test_resume_from_a_step_both_hold_reads_scratch_and_names_the_output_copy(tmp_path: Path) -> None:
    """The newest step on this node and in the output: read from scratch (no download), reported as the
    output's copy (the durable one; the scratch path means nothing on another machine)."""
    out = open_store(str(tmp_path / "out")).child(checkpoints.CHECKPOINTS_PREFIX)
    checkpoints.publish(fake_checkpoint(tmp_path / "a", 5, complete=False), 5, out)
    node = tmp_path / "run"
    fake_checkpoint(node, 5, complete=True)
    plan = checkpoints.plan_resume(node, out, use_local=True)
    assert plan.step == 5 and plan.local_dir == node / "checkpoint-5"
    assert plan.source == out.url("checkpoint-5")
    assert not (node / ".download-checkpoint-5").exists()
    fake_checkpoint(node, 6, complete=True)  # only on this node: its scratch path is all there is
    assert checkpoints.plan_resume(node, out, use_local=True).source == str(node / "checkpoint-6")


def test_nothing_to_resume(tmp_path: Path) -> None:
    plan = checkpoints.plan_resume(tmp_path / "run", open_store(str(tmp_path / "out")), use_local=True)
    assert plan.local_dir is None and plan.step == 0 and plan.ignored == []


def test_export_writes_the_pooling_it_was_trained_with(tmp_path: Path, minilm_path: str) -> None:
    from bgeflow.retrieval.pooling import saved_pooling
    from bgeflow.steps.training.export import export_model

    assert saved_pooling(minilm_path) == "mean"
    run = tmp_path / "run"
    fake_checkpoint(run, 1, complete=True)
    (run / "config.json").write_text(json.dumps({"hidden_size": 8}))
    (run / "model.safetensors").write_bytes(b"w")
    (run / "training_args.bin").write_bytes(b"pickle")
    (run / "bgeflow-history.json").write_text("{}")
    model = export_model(run, tmp_path / "model", kind="retriever", pooling="cls", normalize=False,
                         max_seq_length=128, query_prompt="Represent this query: ")
    assert sorted(p.name for p in model.iterdir()) == [
        "1_Pooling", "config.json", "config_sentence_transformers.json", "flagembedding.json", "model.safetensors",
        "modules.json", "sentence_bert_config.json"]
    pooling = json.loads((model / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_cls_token"] and not pooling["pooling_mode_mean_tokens"]
    assert pooling["word_embedding_dimension"] == 8
    assert [m["path"] for m in json.loads((model / "modules.json").read_text())] == ["", "1_Pooling"]
    st = json.loads((model / "config_sentence_transformers.json").read_text())
    assert st["prompts"]["query"] == "Represent this query: " and st["similarity_fn_name"] == "dot"
    assert json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"] == 128
    assert json.loads((model / "flagembedding.json").read_text())["class"] == "FlagModel"
    reranker = export_model(run, tmp_path / "reranker", kind="reranker", max_seq_length=512)
    assert not (reranker / "modules.json").exists()
    assert json.loads((reranker / "flagembedding.json").read_text()) == {
        "class": "FlagReranker", "runner": "reranker-encoder", "init": {"max_length": 512}}
    (run / "model.safetensors").unlink()
    with pytest.raises(RuntimeError, match="no safetensors weights"):
        export_model(run, tmp_path / "broken", kind="reranker", max_seq_length=512)


def test_no_inbatch_negatives_flag_reaches_the_model() -> None:
    from bgeflow.steps.training.worker import _NoInBatchNegatives

    batch = _NoInBatchNegatives(lambda features: {"queries": features, "no_in_batch_neg_flag": False})([1])
    assert batch == {"queries": [1], "no_in_batch_neg_flag": True}
