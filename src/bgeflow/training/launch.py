"""``train(config)``: one pod's part of a training job (or, with ``local_nodes``, every pod here).

A pod fetches the training data to local scratch (validating every line), checks the run can work
before anything heavy starts, picks the newest complete checkpoint, and runs
``torchrun ... -m bgeflow.training.entry`` (FlagEmbedding's runner) as its child. Node 0 then
exports the final model and uploads ``model/``, ``train_config.yaml`` and, last,
``train_summary.json``: a reader that sees the summary sees a complete output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow.data import DataError, check_record, iter_json
from bgeflow.registry import fetch_model
from bgeflow.storage import join_uri, open_store
from bgeflow.training import checkpoints
from bgeflow.training.config import TrainConfig, format_value
from bgeflow.training.distributed import Distributed, resolve, torchrun_command
from bgeflow.training.entry import HISTORY_FILE
from bgeflow.training.export import base_pooling, export_model
from bgeflow.training.local import run_local_pods

log = logging.getLogger(__name__)

MODEL_DIR = "model"
CONFIG_FILE = "train_config.yaml"
SUMMARY_FILE = "train_summary.json"
ENTRY_MODULE = "bgeflow.training.entry"


@dataclass
class TrainResult:
    model_uri: str
    output_uri: str
    global_step: int
    resumed_from: str | None
    train_loss: float | None
    loss_history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    world_size: int = 1
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataStats:
    path: Path
    records: int
    min_negatives: int
    short_records: int = 0
    first_short: str | None = None


def train(config: TrainConfig) -> TrainResult:
    """Run ``config``: this pod's share of the job, or every pod here with ``config.local_nodes``."""
    if config.local_nodes:
        return _train_local_pods(config)
    return _train_pod(config)


# --------------------------------------------------------------------------- checks


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_launch(config: TrainConfig, dist: Distributed, gpus: int) -> bool:
    """Refuse combinations that cannot work, before any process starts; returns use_cpu."""
    use_cpu = config.use_cpu if config.use_cpu is not None else gpus == 0
    if not use_cpu and gpus == 0:
        raise ValueError("--use-cpu False but no CUDA device is visible here")
    if use_cpu and config.fp16:
        raise ValueError("--fp16 needs a CUDA GPU and this node has none: drop --fp16 to train in fp32 on CPU "
                         "(or use --bf16), or run on a GPU node")
    if use_cpu and config.deepspeed:
        raise ValueError("--deepspeed needs CUDA GPUs and this node has none: drop --deepspeed")
    if config.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise ValueError("--deepspeed needs the deepspeed package in the training image (pip install deepspeed)")
    if not use_cpu and dist.nproc_per_node > gpus:
        raise ValueError(f"--nproc-per-node {dist.nproc_per_node} but only {gpus} CUDA device(s) here")
    if config.negatives_cross_device and dist.world_size == 1:
        raise ValueError("--negatives-cross-device shares negatives between processes, but this job has one "
                         "process: drop it, or use --nproc-per-node/--local-nodes (or more PyTorchJob workers)")
    return use_cpu


def fetch_train_data(config: TrainConfig, dest: Path) -> DataStats:
    """Copy the training data to ``dest`` as one JSONL file, validating every line on the way."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    needed = config.train_group_size - 1
    stats = DataStats(path=dest, records=0, min_negatives=sys.maxsize)
    tmp = dest.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as out:
        for where, obj in iter_json(config.train_data):
            # FlagEmbedding divides by the negative count: a record without negatives cannot train.
            problems = check_record(obj, where, min_negatives=1)
            if problems:
                raise DataError(f"{problems[0]}; every training record needs >= 1 negative "
                                "(add them with `bgeflow mine`)" if len(problems) == 1 else
                                f"{problems[0]} (+{len(problems) - 1} more on this line)")
            if config.knowledge_distillation and (obj.get("pos_scores") is None or obj.get("neg_scores") is None):
                raise DataError(f"{where}: --knowledge-distillation needs pos_scores and neg_scores in every record")
            negatives = len(obj["neg"])
            stats.records += 1
            stats.min_negatives = min(stats.min_negatives, negatives)
            if negatives < needed:
                stats.short_records += 1
                stats.first_short = stats.first_short or where
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(tmp, dest)
    if stats.records == 0:
        raise DataError(f"{config.train_data}: no training records")
    return stats


def check_data(config: TrainConfig, stats: DataStats, dist: Distributed) -> None:
    if stats.short_records and not config.allow_repeated_negatives:
        raise ValueError(
            f"--train-group-size {config.train_group_size} needs {config.train_group_size - 1} negatives per "
            f"record, but {stats.short_records} of {stats.records} records have fewer (min {stats.min_negatives}, "
            f"first at {stats.first_short}): lower --train-group-size to {stats.min_negatives + 1}, mine more "
            "with `bgeflow mine --negative-number N`, or pass --allow-repeated-negatives")
    per_step = config.per_device_train_batch_size * dist.world_size
    if config.dataloader_drop_last and stats.records < per_step:
        raise ValueError(f"{stats.records} records fill no batch of {config.per_device_train_batch_size} × "
                         f"{dist.world_size} processes with --dataloader-drop-last: lower the batch size")


# --------------------------------------------------------------------------- one pod


def work_dir(config: TrainConfig, node_rank: int) -> Path:
    """Per-node scratch, stable across reruns of the same output so local checkpoints are found again."""
    root = Path(config.work_dir or os.environ.get("BGEFLOW_WORK_DIR") or Path(tempfile.gettempdir()) / "bgeflow-train")
    tag = hashlib.sha256(config.output.encode("utf-8")).hexdigest()[:12]
    return root / f"{tag}" / f"node-{node_rank}"


def _resolved_pooling(config: TrainConfig, model_path: str) -> str:
    if config.pooling:
        return config.pooling
    return base_pooling(model_path) or "cls"


def _cross_device(config: TrainConfig, dist: Distributed) -> bool:
    if config.negatives_cross_device is not None:
        return config.negatives_cross_device
    return dist.world_size > 1 and config.use_inbatch_neg


def resolved_config(config: TrainConfig, dist: Distributed, *, use_cpu: bool, pooling: str) -> TrainConfig:
    """``config`` with every value this run chose written out (not the per-pod rank and master)."""
    changes: dict[str, Any] = {"nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node, "use_cpu": use_cpu}
    if config.kind == "retriever":
        changes.update(pooling=pooling, negatives_cross_device=_cross_device(config, dist))
    return dataclasses.replace(config, **changes)


def runner_args(config: TrainConfig, *, model_path: str, data: Path, run_dir: Path, use_cpu: bool,
                dist: Distributed, pooling: str, resume: Path | None, deepspeed: str | None) -> list[str]:
    """FlagEmbedding/transformers options for ``config`` (after the entry module's ``--``)."""
    def opt(name: str, value: Any) -> list[str]:
        return [f"--{name}", format_value(value)]

    args = [*opt("model_name_or_path", model_path), *opt("train_data", data), *opt("output_dir", run_dir)]
    # datasets caches its Arrow copy of the data under ~/.cache (or HF_HOME) by default, one more copy
    # for every run's scratch path; next to the data it is reused on resume and goes with the scratch.
    args += opt("cache_path", data.parent / "datasets-cache")
    for name in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "weight_decay", "warmup_ratio", "train_group_size",
                 "dataloader_drop_last", "dataloader_num_workers", "seed", "logging_steps", "save_steps",
                 "query_max_len", "passage_max_len"):
        args += opt(name, getattr(config, name))
    if config.save_total_limit:
        args += opt("save_total_limit", config.save_total_limit)
    for flag in ("fp16", "bf16", "gradient_checkpointing", "knowledge_distillation"):
        if getattr(config, flag):
            args += opt(flag, True)
    if deepspeed:
        args += opt("deepspeed", deepspeed)
    if config.kind == "retriever":
        args += opt("temperature", config.temperature) + opt("negatives_cross_device", _cross_device(config, dist))
        args += opt("normalize_embeddings", config.normalize_embeddings) + opt("sentence_pooling_method", pooling)
        if config.query_instruction_for_retrieval is not None:
            args += opt("query_instruction_for_retrieval", config.query_instruction_for_retrieval)
            args += opt("query_instruction_format", config.query_instruction_format)
    else:
        args += opt("max_len", config.max_len)
    args += opt("use_cpu", True) + opt("ddp_backend", "gloo") if use_cpu else opt("ddp_backend", "nccl")
    if resume is not None:
        args += opt("resume_from_checkpoint", resume)
    if "--report_to" not in config.extra_args:
        args += opt("report_to", "none")
    return [*args, *config.extra_args]


def _run_child(cmd: list[str]) -> int:
    """Run torchrun as a child, passing SIGTERM/SIGINT on (kubelet signals only the pod's PID 1)."""
    proc = subprocess.Popen(cmd)

    def forward(signum: int, _frame: Any) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    # Handlers can only be installed from the main thread; elsewhere the caller owns signals.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _train_pod(config: TrainConfig) -> TrainResult:
    started = time.time()
    dist = resolve(config, gpu_count=_cuda_devices)
    use_cpu = check_launch(config, dist, _cuda_devices())
    work = work_dir(config, dist.node_rank)
    run_dir = work / "run"
    log.info("node %d/%d: %d process(es), master %s:%d, scratch %s", dist.node_rank, dist.nnodes,
             dist.nproc_per_node, dist.master_addr, dist.master_port, work)

    stats = fetch_train_data(config, work / "data" / "train.jsonl")
    check_data(config, stats, dist)
    # The base model where transformers can load it: an s3:// directory (or registry reference) is
    # downloaded to this node's scratch, since the pods of a job without hub access have only S3.
    model_path = fetch_model(config.model, work / "base-model")
    deepspeed = None
    if config.deepspeed:
        deepspeed = str(work / "deepspeed.json")
        open_store(config.deepspeed).get_file("", deepspeed)
    fetched = time.time()

    output = open_store(config.output)
    plan = checkpoints.plan_resume(run_dir, output.child(checkpoints.CHECKPOINTS_PREFIX), use_local=dist.nnodes == 1)
    for ignored in plan.ignored:
        log.warning("ignoring incomplete checkpoint %s (no completion marker matching its files)", ignored)
    if plan.local_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # FlagEmbedding refuses a non-empty output_dir
        log.info("starting from step 0")
    else:
        log.info("resuming from %s (step %d)", plan.source, plan.step)
    run_dir.mkdir(parents=True, exist_ok=True)
    if dist.node_rank == 0 and output.exists(SUMMARY_FILE):
        # The summary is written last: while it is absent, readers know the output is in progress.
        output.delete(SUMMARY_FILE)

    pooling = _resolved_pooling(config, model_path) if config.kind == "retriever" else ""
    entry_args = ["--kind", config.kind, "--publish-to", config.output]
    if config.save_total_limit:
        entry_args += ["--keep-checkpoints", str(config.save_total_limit)]
    if config.kind == "retriever" and not config.use_inbatch_neg:
        entry_args.append("--no-inbatch-neg")
    cmd = torchrun_command(dist, ENTRY_MODULE, [*entry_args, "--", *runner_args(
        config, model_path=model_path, data=stats.path, run_dir=run_dir, use_cpu=use_cpu,
        dist=dist, pooling=pooling, resume=plan.local_dir, deepspeed=deepspeed)])
    log.info("launching: %s", " ".join(cmd))
    code = _run_child(cmd)
    trained = time.time()
    if code != 0:
        raise RuntimeError(f"training failed on node {dist.node_rank}: torchrun exited with {code}; rerun the same "
                           f"command to resume from the newest complete checkpoint in "
                           f"{join_uri(config.output, checkpoints.CHECKPOINTS_PREFIX)}")

    model_uri = join_uri(config.output, MODEL_DIR)
    history: dict[str, Any] = {}
    if (run_dir / HISTORY_FILE).is_file():
        history = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    losses = [{"step": e["step"], "loss": e["loss"]} for e in history.get("log_history", []) if "loss" in e]
    end = next((e for e in reversed(history.get("log_history", [])) if "train_loss" in e), {})
    summary: dict[str, Any] = {
        "kind": config.kind, "model": config.model, "model_uri": model_uri,
        "global_step": history.get("global_step", 0), "start_step": history.get("start_step", 0),
        "epoch": history.get("epoch"), "resumed_from": plan.source, "ignored_checkpoints": plan.ignored,
        "world_size": dist.world_size, "nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node,
        "device": "cpu" if use_cpu else "cuda", "records": stats.records, "pooling": pooling or None,
        "train_loss": end.get("train_loss"), "losses": losses,
        "train_runtime_s": end.get("train_runtime"),
        "seconds": {"fetch": round(fetched - started, 3), "train": round(trained - fetched, 3)},
    }
    if dist.node_rank == 0:
        _publish_outputs(resolved_config(config, dist, use_cpu=use_cpu, pooling=pooling), run_dir, work, summary,
                         started)
    return TrainResult(model_uri=model_uri, output_uri=config.output, global_step=summary["global_step"],
                       resumed_from=plan.source, train_loss=summary["train_loss"], loss_history=losses,
                       seconds=time.time() - started, world_size=dist.world_size, summary=summary)


def _publish_outputs(config: TrainConfig, run_dir: Path, work: Path, summary: dict[str, Any],
                     started: float) -> None:
    uploading = time.time()
    prompt = config.query_instruction_for_retrieval if config.query_instruction_format == "{}{}" else None
    exported = export_model(run_dir, work / "export" / MODEL_DIR, kind=config.kind, pooling=config.pooling or "cls",
                            normalize=config.normalize_embeddings,
                            max_seq_length=config.passage_max_len if config.kind == "retriever" else config.max_len,
                            query_prompt=prompt)
    output = open_store(config.output)
    output.upload_dir(exported, MODEL_DIR)
    output.write_text(CONFIG_FILE, config.to_yaml())
    summary["seconds"]["upload"] = round(time.time() - uploading, 3)
    summary["seconds"]["total"] = round(time.time() - started, 3)
    output.write_text(SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False))
    log.info("model: %s (step %d, train loss %s)", join_uri(config.output, MODEL_DIR), summary["global_step"],
             summary["train_loss"])


# --------------------------------------------------------------------------- all pods here


def pod_command(config: TrainConfig) -> list[str]:
    """The command a PyTorchJob pod runs for ``config``: ``bgeflow train <kind> ...`` without the job shape."""
    pod_config = dataclasses.replace(config, local_nodes=None, nnodes=None, node_rank=None, nproc_per_node=None,
                                     master_addr=None, master_port=None)
    return [sys.executable, "-m", "bgeflow", "train", config.kind, *pod_config.to_cli_args()]


def _train_local_pods(config: TrainConfig) -> TrainResult:
    started = time.time()
    nnodes, nproc = config.local_nodes or 1, config.nproc_per_node or 1
    shape = Distributed(nnodes=nnodes, node_rank=0, nproc_per_node=nproc, master_addr="127.0.0.1", master_port=0)
    check_launch(config, shape, _cuda_devices())
    # Real pods have their own cores; here they share this machine's, so split them instead of oversubscribing.
    env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // (nnodes * nproc)))}
    code = run_local_pods(pod_command(config), nnodes=nnodes, nproc_per_node=nproc, env=env,
                          master_port=config.master_port)
    if code != 0:
        raise RuntimeError(f"a local pod failed with exit code {code}; rerun the same command to resume from the "
                           f"newest complete checkpoint in {join_uri(config.output, checkpoints.CHECKPOINTS_PREFIX)}")
    summary = json.loads(open_store(config.output).read_text(SUMMARY_FILE))
    return TrainResult(model_uri=summary["model_uri"], output_uri=config.output, global_step=summary["global_step"],
                       resumed_from=summary["resumed_from"], train_loss=summary["train_loss"],
                       loss_history=summary["losses"], seconds=time.time() - started,
                       world_size=summary["world_size"], summary=summary)
