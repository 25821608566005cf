"""``train(spec)``: one pod's part of a training job (or, with ``local_nodes``, every pod here).

A pod fetches the training data to local scratch (validating every line), checks the run can work
before anything heavy starts, picks the newest complete checkpoint, and runs
``torchrun ... -m bgeflow.steps.training.worker`` (FlagEmbedding's runner) as its child, handing
the runner its options as a JSON document its ``HfArgumentParser`` reads. Node 0 then exports the
final model and uploads ``model/``, ``train_config.yaml`` (the resolved spec) and, last,
``train_summary.json``: a reader that sees the summary sees a complete output.
"""

from __future__ import annotations

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

import yaml

from bgeflow.core.errors import ConfigError, DataError, StepFailed
from bgeflow.core.models import resolve_model
from bgeflow.core.storage import join_uri, open_store
from bgeflow.data import check_record, iter_json
from bgeflow.retrieval.pooling import resolve_pooling
from bgeflow.steps.training import checkpoints, validation
from bgeflow.steps.training.distributed import Distributed, resolve, torchrun_command
from bgeflow.steps.training.export import export_model
from bgeflow.steps.training.local import run_local_pods
from bgeflow.steps.training.runners import check_names, integral, runner_for
from bgeflow.steps.training.spec import MANAGED, TrainSpec
from bgeflow.steps.training.worker import HISTORY_FILE

log = logging.getLogger(__name__)

MODEL_DIR = "model"
SPEC_FILE = "train_spec.yaml"
CONFIG_FILE = "train_config.yaml"
SUMMARY_FILE = "train_summary.json"
WORKER_MODULE = "bgeflow.steps.training.worker"
RUNNER_ARGS_FILE = "runner_args.json"


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


def train(spec: TrainSpec) -> TrainResult:
    """Run ``spec``: this pod's share of the job, or every pod here with ``distributed.local_nodes``.

    Raises:
        ConfigError, DataError, NotFoundError: bad settings, data or references (before any process starts).
        StepFailed: a training process failed (its output says why).
    """
    if spec.distributed.local_nodes:
        return _train_local_pods(spec)
    return _train_pod(spec)


def resolved_options(spec: TrainSpec) -> dict[str, Any]:
    """The runner's options (seed recipe + the spec's), names checked against FlagEmbedding's dataclasses.

    Raises:
        ConfigError: an option no dataclass of the runner declares, or one bgeflow sets itself.
    """
    runner = runner_for(spec.kind)
    options = spec.resolved_hyperparameters()
    check_names(runner, options, managed=MANAGED, where=f"train {spec.kind} hyperparameters",
                near=TrainSpec.model_fields)
    return integral(runner, options)


# --------------------------------------------------------------------------- checks


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_launch(options: dict[str, Any], dist: Distributed, gpus: int) -> bool:
    """Refuse combinations that cannot work, before any process starts; returns whether to train on CPU.

    Raises:
        ConfigError: naming the options at fault and what to do instead.
    """
    use_cpu = bool(options["use_cpu"]) if options.get("use_cpu") is not None else gpus == 0
    if not use_cpu and gpus == 0:
        raise ConfigError("use_cpu False but no CUDA device is visible here")
    if use_cpu and options.get("fp16"):
        raise ConfigError("fp16 needs a CUDA GPU and this node has none: drop --fp16 to train in fp32 on CPU "
                          "(or use --bf16), or run on a GPU node")
    if use_cpu and options.get("deepspeed"):
        raise ConfigError("deepspeed needs CUDA GPUs and this node has none: drop --deepspeed")
    if options.get("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed needs the deepspeed package in the training image (pip install deepspeed)")
    if not use_cpu and dist.nproc_per_node > gpus:
        raise ConfigError(f"nproc_per_node {dist.nproc_per_node} but only {gpus} CUDA device(s) here")
    if options.get("negatives_cross_device") and dist.world_size == 1:
        raise ConfigError("negatives_cross_device shares negatives between processes, but this job has one "
                          "process: drop it, or use --nproc-per-node/--local-nodes (or more PyTorchJob workers)")
    return use_cpu


def fetch_train_data(spec: TrainSpec, options: dict[str, Any], dest: Path) -> DataStats:
    """Copy the training data to ``dest`` as one JSONL file, validating every line on the way.

    Raises:
        DataError: naming ``uri:line`` of the first record that cannot train.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    needed = int(options["train_group_size"]) - 1
    distill = bool(options.get("knowledge_distillation"))
    stats = DataStats(path=dest, records=0, min_negatives=sys.maxsize)
    tmp = dest.with_suffix(".part")
    with open(tmp, "w", encoding="utf-8") as out:
        for where, obj in iter_json(spec.train_data):
            # FlagEmbedding divides by the negative count: a record without negatives cannot train.
            problems = check_record(obj, where, min_negatives=1)
            if problems:
                raise DataError(f"{problems[0]}; every training record needs >= 1 negative "
                                "(add them with `bgeflow mine`)" if len(problems) == 1 else
                                f"{problems[0]} (+{len(problems) - 1} more on this line)")
            if distill and (obj.get("pos_scores") is None or obj.get("neg_scores") is None):
                raise DataError(f"{where}: knowledge_distillation needs pos_scores and neg_scores in every record")
            negatives = len(obj["neg"])
            stats.records += 1
            stats.min_negatives = min(stats.min_negatives, negatives)
            if negatives < needed:
                stats.short_records += 1
                stats.first_short = stats.first_short or where
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    os.replace(tmp, dest)
    if stats.records == 0:
        raise DataError(f"{', '.join(spec.train_data)}: no training records")
    return stats


def check_data(spec: TrainSpec, options: dict[str, Any], stats: DataStats, dist: Distributed) -> None:
    """Refuse data the run cannot train on (too few negatives, fewer records than one batch).

    Raises:
        DataError: naming the first record short of negatives and what to change.
    """
    group = int(options["train_group_size"])
    if stats.short_records and not spec.allow_repeated_negatives:
        raise DataError(
            f"train_group_size {group} needs {group - 1} negatives per record, but {stats.short_records} of "
            f"{stats.records} records have fewer (min {stats.min_negatives}, first at {stats.first_short}): lower "
            f"--train_group_size to {stats.min_negatives + 1}, mine more with `bgeflow mine --negative-number N`, "
            "or pass --allow-repeated-negatives")
    batch = int(options.get("per_device_train_batch_size", 8))
    if options.get("dataloader_drop_last") and stats.records < batch * dist.world_size:
        raise DataError(f"{stats.records} records fill no batch of {batch} × {dist.world_size} processes with "
                        "dataloader_drop_last: lower per_device_train_batch_size")


# --------------------------------------------------------------------------- one pod


def work_dir(spec: TrainSpec, node_rank: int) -> Path:
    """Per-node scratch, stable across reruns of the same output so local checkpoints are found again."""
    root = Path(spec.work_dir or os.environ.get("BGEFLOW_WORK_DIR") or Path(tempfile.gettempdir()) / "bgeflow-train")
    tag = hashlib.sha256(spec.output.encode("utf-8")).hexdigest()[:12]
    return root / f"{tag}" / f"node-{node_rank}"


def runner_arguments(spec: TrainSpec, options: dict[str, Any], *, model_path: str, data: Path, run_dir: Path,
                     use_cpu: bool, dist: Distributed, pooling: str, resume: Path | None,
                     deepspeed: str | None) -> dict[str, Any]:
    """Every option the runner's ``HfArgumentParser`` gets: the resolved ones plus what bgeflow manages."""
    args = dict(options)
    args.update(model_name_or_path=model_path, train_data=[str(data)], output_dir=str(run_dir),
                # datasets caches its Arrow copy next to the data: reused on resume, gone with the scratch
                # (by default it lands in ~/.cache, one more copy for every run).
                cache_path=str(data.parent / "datasets-cache"))
    if spec.kind == "retriever":
        args["sentence_pooling_method"] = pooling
        args.setdefault("negatives_cross_device", dist.world_size > 1 and spec.use_inbatch_neg)
    args["use_cpu"] = use_cpu
    args.setdefault("ddp_backend", "gloo" if use_cpu else "nccl")
    args.setdefault("report_to", "none")
    if deepspeed:
        args["deepspeed"] = deepspeed
    if resume is not None:
        args["resume_from_checkpoint"] = str(resume)
    return args


def _validation_file(spec: TrainSpec, runner_args: dict[str, Any], work: Path, model_path: str, pooling: str) -> Path:
    """Fetch the validation set here and write what the worker's callback needs to score it."""
    folder = validation.fetch(str(spec.validation.eval_data), work / "validation")
    path = work / "validation.json"
    path.write_text(json.dumps({
        "folder": str(folder), "steps": spec.validation.steps, "metric": spec.validation.metric,
        "keep_best": spec.validation.keep_best, "tokenizer": model_path, "pooling": pooling,
        "normalize": bool(runner_args.get("normalize_embeddings", True)),
        "query_max_len": int(runner_args["query_max_len"]), "passage_max_len": int(runner_args["passage_max_len"]),
        "query_instruction": runner_args.get("query_instruction_for_retrieval") or ""}), encoding="utf-8")
    return path


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


def _train_pod(spec: TrainSpec) -> TrainResult:
    started = time.time()
    options = resolved_options(spec)
    dist = resolve(spec.distributed, gpu_count=_cuda_devices)
    use_cpu = check_launch(options, dist, _cuda_devices())
    work = work_dir(spec, dist.node_rank)
    run_dir = work / "run"
    log.info("node %d/%d: %d process(es), master %s:%d, scratch %s", dist.node_rank, dist.nnodes,
             dist.nproc_per_node, dist.master_addr, dist.master_port, work)

    stats = fetch_train_data(spec, options, work / "data" / "train.jsonl")
    check_data(spec, options, stats, dist)
    deepspeed = None
    if options.get("deepspeed"):
        deepspeed = str(work / "deepspeed.json")
        open_store(str(options["deepspeed"])).get_file("", deepspeed)
    fetched = time.time()

    output = open_store(spec.output)
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

    model_path = resolve_model(spec.model)
    pooling = resolve_pooling(spec.pooling, model_path) if spec.kind == "retriever" else ""
    runner_args = runner_arguments(spec, options, model_path=model_path, data=stats.path, run_dir=run_dir,
                                   use_cpu=use_cpu, dist=dist, pooling=pooling, resume=plan.local_dir,
                                   deepspeed=deepspeed)
    args_file = work / RUNNER_ARGS_FILE
    args_file.write_text(json.dumps(runner_args, indent=1, ensure_ascii=False), encoding="utf-8")
    worker_args = ["--kind", spec.kind, "--publish-to", spec.output, "--runner-args", str(args_file)]
    if spec.validation.enabled:
        worker_args += ["--validate", str(_validation_file(spec, runner_args, work, model_path, pooling))]
    if options.get("save_total_limit"):
        worker_args += ["--keep-checkpoints", str(options["save_total_limit"])]
    if spec.kind == "retriever" and not spec.use_inbatch_neg:
        worker_args.append("--no-inbatch-neg")
    cmd = torchrun_command(dist, WORKER_MODULE, worker_args)
    log.info("launching: %s", " ".join(cmd))
    code = _run_child(cmd)
    trained = time.time()
    if code != 0:
        raise StepFailed(f"training failed on node {dist.node_rank}: torchrun exited with {code}; rerun the same "
                         f"command to resume from the newest complete checkpoint in "
                         f"{join_uri(spec.output, checkpoints.CHECKPOINTS_PREFIX)}")

    model_uri = join_uri(spec.output, MODEL_DIR)
    history: dict[str, Any] = {}
    if (run_dir / HISTORY_FILE).is_file():
        history = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    losses = [{"step": e["step"], "loss": e["loss"]} for e in history.get("log_history", []) if "loss" in e]
    end = next((e for e in reversed(history.get("log_history", [])) if "train_loss" in e), {})
    summary: dict[str, Any] = {
        "kind": spec.kind, "model": spec.model, "model_uri": model_uri,
        "global_step": history.get("global_step", 0), "start_step": history.get("start_step", 0),
        "epoch": history.get("epoch"), "resumed_from": plan.source, "ignored_checkpoints": plan.ignored,
        "world_size": dist.world_size, "nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node,
        "device": "cpu" if use_cpu else "cuda", "records": stats.records, "pooling": pooling or None,
        "train_loss": end.get("train_loss"), "losses": losses, "validation": history.get("validation"),
        "train_runtime_s": end.get("train_runtime"),
        "seconds": {"fetch": round(fetched - started, 3), "train": round(trained - fetched, 3)},
    }
    if dist.node_rank == 0:
        _publish_outputs(spec, runner_args, dist, pooling, run_dir, work, summary, started)
    return TrainResult(model_uri=model_uri, output_uri=spec.output, global_step=summary["global_step"],
                       resumed_from=plan.source, train_loss=summary["train_loss"], loss_history=losses,
                       seconds=time.time() - started, world_size=dist.world_size, summary=summary)


def resolved_spec(spec: TrainSpec, runner_args: dict[str, Any], dist: Distributed, pooling: str) -> dict[str, Any]:
    """The spec with every value this run chose written out (not the per-pod rank and master)."""
    document = spec.to_dict()
    document["hyperparameters"] = {k: v for k, v in runner_args.items()
                                   if k not in ("model_name_or_path", "train_data", "output_dir", "cache_path",
                                                "resume_from_checkpoint", "deepspeed")}
    document["distributed"] = {"nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node}
    if pooling:
        document["pooling"] = pooling
    return document


def _publish_outputs(spec: TrainSpec, runner_args: dict[str, Any], dist: Distributed, pooling: str, run_dir: Path,
                     work: Path, summary: dict[str, Any], started: float) -> None:
    uploading = time.time()
    instruction = runner_args.get("query_instruction_for_retrieval")
    prompt = instruction if instruction and runner_args.get("query_instruction_format", "{}{}") == "{}{}" else None
    max_seq_length = (runner_args["passage_max_len"] if spec.kind == "retriever"
                      else runner_args["query_max_len"] + runner_args["passage_max_len"])
    exported = export_model(run_dir, work / "export" / MODEL_DIR, kind=spec.kind, pooling=pooling or "cls",
                            normalize=bool(runner_args.get("normalize_embeddings", True)),
                            max_seq_length=int(max_seq_length), query_prompt=prompt)
    output = open_store(spec.output)
    output.upload_dir(exported, MODEL_DIR)
    if (summary.get("validation") or {}).get("curve"):
        plot = work / validation.CURVE_PLOT
        validation.plot_curve(summary["validation"]["curve"], summary["validation"].get("kept_step"), plot)
        output.put_file(plot, validation.CURVE_PLOT)
    output.write_text(CONFIG_FILE, yaml.safe_dump(resolved_spec(spec, runner_args, dist, pooling), sort_keys=False,
                                                  allow_unicode=True))
    summary["seconds"]["upload"] = round(time.time() - uploading, 3)
    summary["seconds"]["total"] = round(time.time() - started, 3)
    output.write_text(SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False))
    log.info("model: %s (step %d, train loss %s)", join_uri(spec.output, MODEL_DIR), summary["global_step"],
             summary["train_loss"])


# --------------------------------------------------------------------------- the job as a document


def write_spec(spec: TrainSpec) -> str:
    """Write the job's spec (without any pod's place in it) to ``<output>/train_spec.yaml``; returns its URI.

    Every pod of the job runs ``bgeflow train --config <that URI>``: one document, read by all.
    """
    document = spec.model_copy(update={"distributed": spec.distributed.job_shape_only()}).to_dict()
    open_store(spec.output).write_text(SPEC_FILE, yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return join_uri(spec.output, SPEC_FILE)


def pod_command(spec_uri: str, *, program: list[str] | None = None) -> list[str]:
    """The command every pod of the job runs: ``bgeflow train --config <spec_uri>``."""
    return [*(program or ["bgeflow"]), "train", "--config", spec_uri]


def _train_local_pods(spec: TrainSpec) -> TrainResult:
    started = time.time()
    nnodes, nproc = spec.distributed.local_nodes or 1, spec.distributed.nproc_per_node or 1
    options = resolved_options(spec)
    shape = Distributed(nnodes=nnodes, node_rank=0, nproc_per_node=nproc, master_addr="127.0.0.1", master_port=0)
    check_launch(options, shape, _cuda_devices())
    pod_spec = spec.model_copy(update={"distributed": spec.distributed.model_copy(update={"local_nodes": None})})
    spec_uri = write_spec(pod_spec)
    # Real pods have their own cores; here they share this machine's, so split them instead of oversubscribing.
    env = {} if "OMP_NUM_THREADS" in os.environ else {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // (nnodes * nproc)))}
    command = pod_command(spec_uri, program=[sys.executable, "-m", "bgeflow"])
    code = run_local_pods(command, nnodes=nnodes, nproc_per_node=nproc, env=env,
                          master_port=spec.distributed.master_port)
    if code != 0:
        raise StepFailed(f"a local pod failed with exit code {code}; rerun the same command to resume from the "
                         f"newest complete checkpoint in {join_uri(spec.output, checkpoints.CHECKPOINTS_PREFIX)}")
    summary = json.loads(open_store(spec.output).read_text(SUMMARY_FILE))
    return TrainResult(model_uri=summary["model_uri"], output_uri=spec.output, global_step=summary["global_step"],
                       resumed_from=summary["resumed_from"], train_loss=summary["train_loss"],
                       loss_history=summary["losses"], seconds=time.time() - started,
                       world_size=summary["world_size"], summary=summary)
