"""``train(spec)``: one pod's part of a training job (or, with ``local_nodes``, every pod here).

A pod fetches the training data to local scratch (validating every line), checks the run can work
before anything heavy starts, picks the newest complete checkpoint, and runs
``torchrun ... -m bgeflow.steps.training.worker`` (FlagEmbedding's runner) as its child, handing
the runner its options as a JSON document its ``HfArgumentParser`` reads. Node 0 then exports the
final model and uploads ``model/``, ``logs/`` (TensorBoard's event files, ``tracking``),
``train_config.yaml`` (the resolved spec) and, last, ``train_summary.json``: a reader that sees the
summary sees a complete output.

Run identity (``run_identity``): a hash of the fetched data's sha256, the base model (reference
and files), the resolved runner options and the job's shape. It is stamped into every checkpoint
and checked before resuming: another run's checkpoints in the output are refused with a message,
never resumed from (see ``checkpoints.plan_resume`` for why not "start fresh" there). The local
scratch is keyed by identity and output, so different runs never share one, and is removed after
success. Node 0 holds the output's lock (``core.storage.output_lock``) while the job writes it, and
each node a lock on its scratch. ``train_summary.json`` is removed only when this run starts
writing its own model: a rerun that fails before leaves a good earlier output whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bgeflow.core import reports
from bgeflow.core.errors import EXIT_BAD_INPUT, ConfigError, DataError, Interrupted, StepFailed
from bgeflow.core.models import check_token_limits, inspectable_model, resolve_model
from bgeflow.core.storage import LocalStore, join_uri, open_store, output_lock
from bgeflow.data import check_record, iter_json, query_prompt
from bgeflow.retrieval.pooling import resolve_pooling, resolve_query_instruction
from bgeflow.steps.training import checkpoints, tracking, validation
from bgeflow.steps.training.distributed import Distributed, resolve, torchrun_command
from bgeflow.steps.training.export import export_model, instruction_prefix
from bgeflow.steps.training.handoff import FAILURE_PREFIX, HISTORY_FILE
from bgeflow.steps.training.local import oversubscription, run_local_pods, shared_cores_env
from bgeflow.steps.training.runners import Runner, check_names, runner_options, typed
from bgeflow.steps.training.spec import MANAGED, TrainSpec

log = logging.getLogger(__name__)

MODEL_DIR = "model"
SPEC_FILE = "train_spec.yaml"
CONFIG_FILE = "train_config.yaml"
SUMMARY_FILE = reports.TRAIN_SUMMARY
WORKER_MODULE = "bgeflow.steps.training.worker"
RUNNER_ARGS_FILE = "runner_args.json"
#: ``<scratch>/run_inputs.json``: the run identity's inputs, for the worker to keep in checkpoint markers.
RUN_INPUTS_FILE = "run_inputs.json"
#: ``<scratch>/events``: the trackers' local files (TensorBoard's), uploaded to ``<output>/logs/``.
EVENTS_DIR = "events"


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
    #: The output already held this run, finished: nothing was trained or written (``completed_run``).
    already_complete: bool = False


@dataclass
class DataStats:
    path: Path
    records: int
    min_negatives: int
    short_records: int = 0
    first_short: str | None = None
    sha256: str = ""  # of the bytes written to ``path``: what the run trains on


def train(spec: TrainSpec) -> TrainResult:
    """Run ``spec``: this pod's share of the job, or every pod here with ``distributed.local_nodes``.

    Raises:
        ConfigError, DataError, NotFoundError: bad settings, data or references (before any process starts),
            or a training process failed for a reason a rerun would repeat (``failure_error``).
        StepFailed: a training process failed otherwise (its output says why); a rerun resumes.
    """
    if spec.distributed.local_nodes:
        return _train_local_pods(spec)
    return _train_pod(spec)


def resolved_options(spec: TrainSpec, runner: Runner | None = None, model_path: str | None = None) -> dict[str, Any]:
    """The runner's options (seed recipe + the spec's), names checked against FlagEmbedding's dataclasses.

    ``runner``: the one ``spec.chosen_runner()`` picks, when not given; ``model_path``: the base model
    already fetched (a pod), else it is read where it lies.

    Raises:
        ConfigError: an option no dataclass of the runner declares, one bgeflow sets itself, a value
            the runner cannot train with (``runner_options``), or text that is not of the option's type
            (``typed``: Helm's ``--set`` and quoted YAML give strings).
    """
    runner = runner or spec.chosen_runner(model_path)
    options = spec.resolved_hyperparameters(runner.name)
    where = f"train {spec.kind} hyperparameters ({runner.name} runner)"
    check_names(runner, options, managed=MANAGED, where=where, near=TrainSpec.model_fields)
    return typed(runner, runner_options(runner, options, model_path or inspectable_model(spec.model)), where=where)


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
    tracking.check_report_to(options.get("report_to"))
    if options.get("negatives_cross_device") and dist.world_size == 1:
        raise ConfigError("negatives_cross_device shares negatives between processes, but this job has one "
                          "process: drop it, or use --nproc-per-node/--local-nodes (or more PyTorchJob workers)")
    return use_cpu


@dataclass(frozen=True)
class BaseModel:
    """The base model as this pod loads it, and what the run takes from it."""

    path: str
    pooling: str  # retriever: the resolved pooling; reranker: ""
    instruction: str  # retriever: the query instruction of queries without a prompt; reranker: ""


def token_limits(kind: str, options: dict[str, Any]) -> dict[str, int]:
    """The input lengths the runner will tokenize to, named as the user sets them."""
    query, passage = int(options["query_max_len"]), int(options["passage_max_len"])
    if kind == "retriever":
        return {"query_max_len": query, "passage_max_len": passage}
    # FlagEmbedding's reranker truncates a pair to the sum (max_len set both, unless given).
    return {f"max_len (a pair: query_max_len {query} + passage_max_len {passage})": query + passage}


def prepare_model(spec: TrainSpec, options: dict[str, Any]) -> BaseModel:
    """Resolve the base model to a local folder and check the run's limits against it, before any launch.

    Raises:
        ConfigError: a token limit above the model's positions, or a pooling it cannot use.
        NotFoundError: the model is not where ``spec.model`` points.
    """
    path = resolve_model(spec.model)
    check_token_limits(path, token_limits(spec.kind, options), model=spec.model, where=f"train {spec.kind}")
    if spec.kind != "retriever":
        return BaseModel(path, "", "")
    instruction = resolve_query_instruction(str(options.get("query_instruction_for_retrieval") or ""), path)
    return BaseModel(path, resolve_pooling(spec.pooling, path), instruction)


def fetch_train_data(spec: TrainSpec, options: dict[str, Any], dest: Path, *, instruction: str = "") -> DataStats:
    """Copy the training data to ``dest`` as one JSONL file, validating every line on the way.

    A retriever's records each get the prompt their query is encoded with (``bgeflow.data.query_prompt``:
    their own, else ``instruction``). FlagEmbedding reads all files as one table, where a record
    without ``prompt`` has ``None`` in that column and its query would become ``"None" + query``.

    Raises:
        DataError: naming ``uri:line`` of the first record that cannot train.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    needed = int(options["train_group_size"]) - 1
    distill = bool(options.get("knowledge_distillation"))
    prompts = spec.kind == "retriever"
    stats = DataStats(path=dest, records=0, min_negatives=sys.maxsize)
    tmp = dest.with_suffix(".part")
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for where, obj in iter_json(spec.train_data):
            # FlagEmbedding divides by the negative count: a record without negatives cannot train.
            problems = check_record(obj, where, min_negatives=1)
            if problems:
                # The mining hint only where negatives are what is missing, not on any malformed line.
                hint = ("; every training record needs >= 1 negative (add them with `bgeflow mine`)"
                        if any(p.rule == "too_few_negatives" for p in problems) else "")
                more = f" (+{len(problems) - 1} more on this line)" if len(problems) > 1 else ""
                raise DataError(f"{problems[0]}{more}{hint}")
            if distill and (obj.get("pos_scores") is None or obj.get("neg_scores") is None):
                raise DataError(f"{where}: knowledge_distillation needs pos_scores and neg_scores in every record")
            negatives = len(obj["neg"])
            stats.records += 1
            stats.min_negatives = min(stats.min_negatives, negatives)
            if negatives < needed:
                stats.short_records += 1
                stats.first_short = stats.first_short or where
            if prompts:
                obj["prompt"] = query_prompt(obj.get("prompt"), instruction)
            line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(line)
            out.write(line)
    os.replace(tmp, dest)
    stats.sha256 = digest.hexdigest()
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
        # The pod cannot know where the user set it: FlagEmbedding's name, and its key in a run spec.
        raise DataError(f"{stats.records} records fill no batch of {batch} × {dist.world_size} processes with "
                        f"dataloader_drop_last: lower per_device_train_batch_size (in a bgeflow run spec: "
                        f"{spec.kind}.hyperparameters.per_device_train_batch_size)"
                        + (f" to {stats.records // dist.world_size}" if stats.records >= dist.world_size else "")
                        + ", or train on more records")


# --------------------------------------------------------------------------- one pod


def scratch_root(spec: TrainSpec) -> Path:
    """Where every run's scratch lives: ``work_dir``, else ``$BGEFLOW_WORK_DIR``, else the temp dir."""
    return Path(spec.work_dir or os.environ.get("BGEFLOW_WORK_DIR") or Path(tempfile.gettempdir()) / "bgeflow-train")


def model_fingerprint(model_path: str) -> dict[str, Any]:
    """What identifies a base model cheaply: its reference, and for a directory each file's name and size."""
    path = Path(model_path)
    if not path.is_dir():
        return {"ref": model_path}
    return {"ref": model_path, "files": {p.relative_to(path).as_posix(): p.stat().st_size
                                         for p in sorted(path.rglob("*")) if p.is_file()}}


def identity_inputs(spec: TrainSpec, options: dict[str, Any], *, data_sha256: str, model_path: str, pooling: str,
                    dist: Distributed) -> dict[str, Any]:
    """Everything that decides which model a run trains, as JSON (what ``run_identity`` hashes).

    The fetched data's digest, the base model (reference and files), the resolved runner options,
    the spec's own training settings and the job's shape (world size changes the batches). Not the
    output, the scratch or a pod's place in the job: every pod of a job, and every retry, gets the
    same. Kept in every checkpoint's marker beside the hash, so that a run refused another run's
    checkpoints is told which of these differ (``checkpoints.plan_resume``).
    """
    document = {
        "kind": spec.kind, "model": spec.model, "base_model": model_fingerprint(model_path),
        "data_sha256": data_sha256, "options": options, "pooling": pooling,
        "use_inbatch_neg": spec.use_inbatch_neg, "allow_repeated_negatives": spec.allow_repeated_negatives,
        "nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node,
    }
    # As a marker gives it back (values JSON cannot hold as text): compared with one read from a marker.
    return json.loads(json.dumps(document, sort_keys=True, default=str))


def identity_of(inputs: dict[str, Any]) -> str:
    """The run identity: a sha256 over its ``identity_inputs``."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def run_identity(spec: TrainSpec, options: dict[str, Any], *, data_sha256: str, model_path: str, pooling: str,
                 dist: Distributed) -> str:
    """The run's identity: a sha256 over everything that decides which model it trains (``identity_inputs``)."""
    return identity_of(identity_inputs(spec, options, data_sha256=data_sha256, model_path=model_path,
                                       pooling=pooling, dist=dist))


def work_dir(spec: TrainSpec, node_rank: int, identity: str) -> Path:
    """Per-node scratch of one run into one output: found again by a rerun of the same run, never
    shared with another (a different identity or output gets its own)."""
    tag = hashlib.sha256(f"{identity}\0{spec.output}".encode()).hexdigest()[:16]
    return scratch_root(spec) / tag / f"node-{node_rank}"


def runner_arguments(spec: TrainSpec, options: dict[str, Any], *, model_path: str, data: Path, run_dir: Path,
                     use_cpu: bool, dist: Distributed, pooling: str, resume: Path | None,
                     deepspeed: str | None, instruction: str = "") -> dict[str, Any]:
    """Every option the runner's ``HfArgumentParser`` gets: the resolved ones plus what bgeflow manages."""
    args = dict(options)
    args.update(model_name_or_path=model_path, train_data=[str(data)], output_dir=str(run_dir),
                # datasets caches its Arrow copy next to the data: reused on resume, gone with the scratch
                # (by default it lands in ~/.cache, one more copy for every run).
                cache_path=str(data.parent / "datasets-cache"))
    if spec.kind == "retriever":
        args["sentence_pooling_method"] = pooling
        # Never None: FlagEmbedding applies the records' prompts only when an instruction is set.
        args["query_instruction_for_retrieval"] = instruction
        args.setdefault("negatives_cross_device", dist.world_size > 1 and spec.use_inbatch_neg)
    args["use_cpu"] = use_cpu
    args.setdefault("ddp_backend", "gloo" if use_cpu else "nccl")
    # The user's report_to as given; unset, every tracker installed and configured here (TensorBoard's
    # events in the scratch, uploaded to <output>/logs/ with the model).
    args.update(tracking.runner_settings(args, str(run_dir.parent / EVENTS_DIR)))
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


def torchrun_env(dist: Distributed, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``OMP_NUM_THREADS=1`` for torchrun's processes when it is unset and they are several.

    torchrun sets that same 1 itself, with a five-line banner at every launch; said here, the banner goes
    and nothing else changes. Not the cores divided among the processes, as ``--local-nodes`` does on this
    machine: in a cluster's pod ``os.cpu_count()`` counts the node's cores, not the pod's CPU limit, and
    that many threads a process would be throttled. A lone process keeps the libraries' own choice.
    """
    env = os.environ if environ is None else environ
    if dist.nproc_per_node <= 1 or "OMP_NUM_THREADS" in env:
        return {}
    return {"OMP_NUM_THREADS": "1"}


def _run_child(cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Run torchrun as a child, passing SIGTERM/SIGINT on (kubelet signals only the pod's PID 1).

    Its stdout joins stderr: Trainer prints its loss dicts to stdout, which is the verb's JSON result.
    ``env``: variables added to this process's for the child.

    Raises:
        Interrupted: this process got SIGINT/SIGTERM and the child then exited non-zero (the
            message names the signal). Its exit status is the signal's doing, not a failure:
            torchrun raises SignalException (its traceback, and the workers' KeyboardInterrupt ones
            on a terminal's Ctrl-C, are printed by those processes; bgeflow cannot quiet them short of
            moving them off the terminal's process group, which would let them outlive a killed
            group), so only the verb's own last line says what happened.
    """
    proc = subprocess.Popen(cmd, stdout=2, env={**os.environ, **env} if env else None)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    # Handlers can only be installed from the main thread; elsewhere the caller owns signals.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)} if main_thread else {}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    # A child that finished anyway (the signal came as it exited 0) finished: its result stands.
    if received and code != 0:
        raise Interrupted(f"training stopped by {signal.Signals(received[0]).name}")
    return code


#: Exceptions of a training process that come from its settings, data or model: the same run fails
#: the same way again, so resuming cannot help.
_DETERMINISTIC = frozenset({
    "ValueError", "TypeError", "KeyError", "IndexError", "AttributeError", "AssertionError", "NotImplementedError",
    "ImportError", "ModuleNotFoundError", "ConfigError", "DataError", "NotFoundError", "OutOfMemoryError",
})
#: RuntimeError messages of shape and index errors (a tensor longer than the model's positions, ...).
_SHAPE_ERROR = re.compile(r"size of tensor|must match the size|shapes? .*(cannot|invalid|mismatch)|"
                          r"index out of (range|bounds)|out of bounds", re.IGNORECASE)
_HINTS = {"OutOfMemoryError": "lower per_device_train_batch_size, passage_max_len or train_group_size"}


def _repeats(failure: dict[str, Any]) -> bool:
    """Whether a worker's recorded exception comes from its input, so a rerun would raise it again."""
    kind, message = str(failure.get("type", "")), str(failure.get("message", ""))
    return kind in _DETERMINISTIC or (kind == "RuntimeError" and bool(_SHAPE_ERROR.search(message)))


def _read_failures(work: Path) -> list[dict[str, Any]]:
    failures = []
    for path in sorted(work.glob(f"{FAILURE_PREFIX}*.json")):
        try:
            failures.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return failures


def failure_error(node_rank: int, code: int, work: Path, output: str) -> Exception:
    """The error for a training process that exited with ``code``: a crash, or a cause a rerun repeats.

    Workers record the exception that ended them (``worker.record_failure``). One whose kind says it
    comes from the settings, data or model gives a ``ConfigError`` that names it and advises no
    resume (resuming would fail the same way); anything else (killed, lost node, NCCL or S3 faults)
    gives a ``StepFailed`` advising to rerun, which resumes from the newest complete checkpoint.
    """
    failures = _read_failures(work)
    # One rank's own error makes the others fail in collectives: name a deterministic cause first.
    failures.sort(key=lambda f: not _repeats(f))
    first = failures[0] if failures else None
    if first is not None:
        kind, message = str(first.get("type", "")), str(first.get("message", "")).strip().splitlines()
        said = f"rank {first.get('rank', '?')} raised {kind}: {message[0][:300] if message else ''}"
        if _repeats(first):
            hint = _HINTS.get(kind, "change the setting, data or model it names")
            return ConfigError(f"training failed on node {node_rank}: {said}. A rerun fails the same way: {hint}, "
                               "then rerun")
        return StepFailed(f"training failed on node {node_rank}: {said}; if the cause was transient, rerun the "
                          f"same command to resume from the newest complete checkpoint in "
                          f"{join_uri(output, checkpoints.CHECKPOINTS_PREFIX)}")
    return StepFailed(f"training failed on node {node_rank}: torchrun exited with {code}; rerun the same "
                      f"command to resume from the newest complete checkpoint in "
                      f"{join_uri(output, checkpoints.CHECKPOINTS_PREFIX)}")


def _train_pod(spec: TrainSpec) -> TrainResult:
    started = time.time()
    # This pod's copy of the base model (an s3:// one fetched once, to the cache prepare_model reads).
    model_path = resolve_model(spec.model)
    runner = spec.chosen_runner(model_path)
    options = resolved_options(spec, runner, model_path)
    dist = resolve(spec.distributed, gpu_count=_cuda_devices)
    use_cpu = check_launch(options, dist, _cuda_devices())
    # Here, the one place every local path passes (`bgeflow train`, each of --local-nodes' pods, `bgeflow
    # launch --backend local|container`, `bgeflow run`), before the data is fetched and torchrun starts its
    # processes. Not in check_launch: --local-nodes runs that before its pods too, and would warn twice.
    warning = oversubscription(dist, use_cpu=use_cpu)
    if warning:
        log.warning(warning)
    output = open_store(spec.output)
    # Node 0 writes the output (checkpoints, model, summary): one job at a time, from the start.
    lock = output_lock(output, owner=f"bgeflow train {spec.kind} node 0") if dist.node_rank == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        return _train_locked(spec, runner, options, dist, use_cpu, output, started)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(spec: TrainSpec, runner: Runner, options: dict[str, Any], dist: Distributed, use_cpu: bool, output: Any,
                  started: float) -> TrainResult:
    # The base model first: a reference or limit that cannot work fails before the data is fetched.
    base = prepare_model(spec, options)
    root = scratch_root(spec)
    root.mkdir(parents=True, exist_ok=True)
    # The data decide the run's identity, and so its scratch: fetched beside it first.
    incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        stats = fetch_train_data(spec, options, incoming / "train.jsonl", instruction=base.instruction)
        check_data(spec, options, stats, dist)
        inputs = identity_inputs(spec, options, data_sha256=stats.sha256, model_path=base.path,
                                 pooling=base.pooling, dist=dist)
        identity = identity_of(inputs)
        done = completed_run(spec, output, identity, started)
        if done is not None:
            return done
        work = work_dir(spec, dist.node_rank, identity)
        (work / "data").mkdir(parents=True, exist_ok=True)
        stats.path = work / "data" / "train.jsonl"
        os.replace(incoming / "train.jsonl", stats.path)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    run_dir = work / "run"
    log.info("node %d/%d: %d process(es), master %s:%d, run %s, scratch %s, FlagEmbedding runner %s", dist.node_rank,
             dist.nnodes, dist.nproc_per_node, dist.master_addr, dist.master_port, identity[:16], work, runner.name)
    try:
        # Two processes of one node never share a scratch (a second copy of this job on this machine).
        with output_lock(LocalStore(work), owner=f"bgeflow train node {dist.node_rank}"):
            result = _train_in(spec, runner, options, dist, use_cpu, output, started, stats, base, identity, work,
                               run_dir, inputs)
    except BaseException:
        # Why the scratch is kept at all after a failure: a rerun of the same run finds it again (same
        # identity) and resumes from its complete local checkpoints. Without one there is nothing to
        # resume here (the data is fetched again, the output's checkpoints are read from the output),
        # so a run refused or failed before its first checkpoint leaves no copy of the data behind.
        if not checkpoints.local_checkpoints(run_dir)[0]:
            _remove_scratch(work)
        raise
    # The model is in the output: the scratch (data, checkpoints, export; ~2 model sizes) is not needed.
    _remove_scratch(work)
    return result


def completed_run(spec: TrainSpec, output: Any, identity: str, started: float) -> TrainResult | None:
    """This run's result when the output already holds it finished (its summary names this identity).

    A rerun of a finished run would otherwise resume from its last checkpoint, train no step and
    write a summary of that empty resume (train loss 0.0, no losses, a runtime of milliseconds) over
    the real one, and export the same weights again. The summary is written last (``_publish_outputs``),
    so one naming this identity means its model is complete: nothing to do, and nothing is touched.
    A summary of another run (other data or settings) is not this run's: training goes on, and
    ``checkpoints.plan_resume`` decides about the checkpoints.
    """
    try:
        summary = json.loads(output.read_text(SUMMARY_FILE)) if output.exists(SUMMARY_FILE) else None
    except ValueError:
        return None  # unreadable: not a record of anything; this run writes its own
    if not isinstance(summary, dict) or summary.get("run_identity") != identity:
        return None
    log.info("%s already holds this run, complete at step %s (run %s): nothing to train; the model and "
             "train_summary.json are left as they are (write to another output, or delete %s, to train again)",
             output.uri, summary.get("global_step"), identity[:16], output.uri)
    return TrainResult(model_uri=str(summary.get("model_uri") or join_uri(spec.output, MODEL_DIR)),
                       output_uri=spec.output, global_step=int(summary.get("global_step") or 0),
                       resumed_from=summary.get("resumed_from"), train_loss=summary.get("train_loss"),
                       loss_history=list(summary.get("losses") or []), seconds=time.time() - started,
                       world_size=int(summary.get("world_size") or 1), summary=summary, already_complete=True)


def _remove_scratch(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    with contextlib.suppress(OSError):
        work.parent.rmdir()  # the last node of this machine removes the run's folder too


def _train_in(spec: TrainSpec, runner: Runner, options: dict[str, Any], dist: Distributed, use_cpu: bool, output: Any,
              started: float, stats: DataStats, base: BaseModel, identity: str, work: Path,
              run_dir: Path, inputs: dict[str, Any]) -> TrainResult:
    deepspeed = None
    if options.get("deepspeed"):
        deepspeed = str(work / "deepspeed.json")
        open_store(str(options["deepspeed"])).get_file("", deepspeed)
    fetched = time.time()

    plan = checkpoints.plan_resume(run_dir, output.child(checkpoints.CHECKPOINTS_PREFIX),
                                   use_local=dist.nnodes == 1, run=identity, inputs=inputs)
    for ignored in plan.ignored:
        log.warning("ignoring incomplete checkpoint %s (no completion marker matching its files)", ignored)
    if plan.local_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)  # FlagEmbedding refuses a non-empty output_dir
        log.info("starting from step 0")
    else:
        log.info("resuming from %s (step %d)", plan.source, plan.step)
    run_dir.mkdir(parents=True, exist_ok=True)

    pooling = base.pooling
    runner_args = runner_arguments(spec, options, model_path=base.path, data=stats.path, run_dir=run_dir,
                                   use_cpu=use_cpu, dist=dist, pooling=pooling, resume=plan.local_dir,
                                   deepspeed=deepspeed, instruction=base.instruction)
    for stale in work.glob(f"{FAILURE_PREFIX}*.json"):
        stale.unlink()  # a previous attempt's; this one's decide the message below
    args_file = work / RUNNER_ARGS_FILE
    args_file.write_text(json.dumps(runner_args, indent=1, ensure_ascii=False), encoding="utf-8")
    inputs_file = work / RUN_INPUTS_FILE
    inputs_file.write_text(json.dumps(inputs, ensure_ascii=False), encoding="utf-8")
    worker_args = ["--kind", spec.kind, "--runner", runner.name, "--publish-to", spec.output,
                   "--runner-args", str(args_file), "--run-identity", identity, "--run-inputs", str(inputs_file)]
    if spec.validation.enabled:
        worker_args += ["--validate", str(_validation_file(spec, runner_args, work, base.path, pooling))]
    if options.get("save_total_limit"):
        worker_args += ["--keep-checkpoints", str(options["save_total_limit"])]
    if spec.kind == "retriever" and not spec.use_inbatch_neg:
        worker_args.append("--no-inbatch-neg")
    cmd = torchrun_command(dist, WORKER_MODULE, worker_args)
    log.info("launching: %s", " ".join(cmd))
    try:
        code = _run_child(cmd, torchrun_env(dist))
    except Interrupted as exc:
        # Said here, where the output is known: what the user does next, on the verb's one last line.
        raise Interrupted(f"{exc}; rerun the same command to resume from the newest complete checkpoint in "
                          f"{join_uri(spec.output, checkpoints.CHECKPOINTS_PREFIX)}") from None
    trained = time.time()
    if code != 0:
        raise failure_error(dist.node_rank, code, work, spec.output)

    model_uri = join_uri(spec.output, MODEL_DIR)
    history: dict[str, Any] = {}
    if (run_dir / HISTORY_FILE).is_file():
        history = json.loads((run_dir / HISTORY_FILE).read_text(encoding="utf-8"))
    losses = [{"step": e["step"], "loss": e["loss"]} for e in history.get("log_history", []) if "loss" in e]
    end = next((e for e in reversed(history.get("log_history", [])) if "train_loss" in e), {})
    summary: dict[str, Any] = {
        "kind": spec.kind, "runner": runner.name, "model": spec.model, "model_uri": model_uri,
        "run_identity": identity,
        "global_step": history.get("global_step", 0), "start_step": history.get("start_step", 0),
        "epoch": history.get("epoch"), "resumed_from": plan.source, "ignored_checkpoints": plan.ignored,
        "world_size": dist.world_size, "nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node,
        "device": "cpu" if use_cpu else "cuda", "records": stats.records, "pooling": pooling or None,
        "train_loss": trained_loss(end.get("train_loss"), start_step=history.get("start_step", 0),
                                   global_step=history.get("global_step", 0)),
        "losses": losses, "validation": history.get("validation"),
        "train_runtime_s": end.get("train_runtime"),
        "seconds": {"fetch": round(fetched - started, 3), "train": round(trained - fetched, 3)},
    }
    if dist.node_rank == 0:
        _publish_outputs(spec, runner, runner_args, dist, pooling, run_dir, work, summary, started)
    return TrainResult(model_uri=model_uri, output_uri=spec.output, global_step=summary["global_step"],
                       resumed_from=plan.source, train_loss=summary["train_loss"], loss_history=losses,
                       seconds=time.time() - started, world_size=dist.world_size, summary=summary)


def trained_loss(reported: float | None, *, start_step: int, global_step: int) -> float | None:
    """The mean training loss of the steps this process trained (``start_step``+1 .. ``global_step``).

    transformers' ``train_loss`` sums the loss of the steps trained since the process started but
    divides by ``global_step``, every step of the run: after a resume from step s of n it is that
    mean times (n - s) / n (half the real loss when resumed half-way), and 0.0 when resumed at the
    last step, where nothing was trained. Rescaled here; None when no step was trained, rather than a
    loss of 0.0 that never was. The loss log (``losses``) keeps every step's loss across resumes:
    Trainer restores it from the checkpoint.
    """
    if reported is None or start_step <= 0:
        return reported
    if global_step <= start_step:
        return None
    return reported * global_step / (global_step - start_step)


def resolved_spec(spec: TrainSpec, runner_args: dict[str, Any], dist: Distributed, pooling: str,
                  runner: Runner | None = None) -> dict[str, Any]:
    """The spec with every value this run chose written out (not the per-pod rank and master)."""
    document = spec.to_dict()
    if runner is not None:
        document["runner"] = runner.name
    document["hyperparameters"] = {k: v for k, v in runner_args.items()
                                   if k not in ("model_name_or_path", "train_data", "output_dir", "cache_path",
                                                "resume_from_checkpoint", "deepspeed")}
    document["distributed"] = {"nnodes": dist.nnodes, "nproc_per_node": dist.nproc_per_node}
    if pooling:
        document["pooling"] = pooling
    return document


def _publish_outputs(spec: TrainSpec, runner: Runner, runner_args: dict[str, Any], dist: Distributed, pooling: str,
                     run_dir: Path, work: Path, summary: dict[str, Any], started: float) -> None:
    uploading = time.time()
    max_seq_length = (runner_args["passage_max_len"] if spec.kind == "retriever"
                      else runner_args["query_max_len"] + runner_args["passage_max_len"])
    exported = export_model(run_dir, work / "export" / MODEL_DIR, kind=spec.kind, pooling=pooling or "cls",
                            normalize=bool(runner_args.get("normalize_embeddings", True)),
                            max_seq_length=int(max_seq_length), query_prompt=instruction_prefix(runner_args),
                            runner=runner.name, runner_args=runner_args,
                            base_model=resolve_model(spec.model))
    output = open_store(spec.output)
    # The summary is the output's completion marker: gone before the first file of this run's model
    # lands, back only after the last. Killed in between, the output has no summary.
    output.delete(SUMMARY_FILE)
    _upload_replacing(output, exported, MODEL_DIR)
    events = work / EVENTS_DIR
    has_events = events.is_dir() and any(p.is_file() for p in events.rglob("*"))
    if summary.get("resumed_from") is None:
        # From step 0 the output's logs are this run's alone: an earlier run's event files (another run's, kept
        # after its checkpoints were deleted to start over) would draw as one series with this run's in
        # TensorBoard. A resumed run adds to them: its scratch may hold only the events since the resume.
        _upload_replacing(output, events if has_events else None, tracking.EVENTS_PREFIX)
    elif has_events:
        output.upload_dir(events, tracking.EVENTS_PREFIX)
    if has_events:
        summary["events"] = join_uri(spec.output, tracking.EVENTS_PREFIX)
    if (summary.get("validation") or {}).get("curve"):
        plot = work / validation.CURVE_PLOT
        validation.plot_curve(summary["validation"]["curve"], summary["validation"].get("kept_step"), plot)
        output.put_file(plot, validation.CURVE_PLOT)
    output.write_text(CONFIG_FILE, yaml.safe_dump(resolved_spec(spec, runner_args, dist, pooling, runner), sort_keys=False,
                                                  allow_unicode=True))
    summary["seconds"]["upload"] = round(time.time() - uploading, 3)
    summary["seconds"]["total"] = round(time.time() - started, 3)
    output.write_text(SUMMARY_FILE, json.dumps(summary, indent=2, ensure_ascii=False))
    log.info("model: %s (step %d, train loss %s)", join_uri(spec.output, MODEL_DIR), summary["global_step"],
             summary["train_loss"])


def _upload_replacing(output: Any, local: Path | None, prefix: str) -> None:
    """Make ``<output>/<prefix>/`` hold exactly ``local``'s files (none when ``local`` is None): upload them,
    then delete what an earlier run left there that this upload did not write."""
    written = set(output.upload_dir(local, prefix)) if local is not None else set()
    for stale in output.child(prefix).list():
        if f"{prefix}/{stale.key}" not in written:
            output.delete(f"{prefix}/{stale.key}")


# --------------------------------------------------------------------------- the job as a document


def spec_document(spec: TrainSpec) -> str:
    """The job's spec as every pod reads it: YAML, without any pod's place in the job."""
    document = spec.model_copy(update={"distributed": spec.distributed.job_shape_only()}).to_dict()
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


def write_spec(spec: TrainSpec) -> str:
    """Write the job's spec (``spec_document``) to ``<output>/train_spec.yaml``; returns its URI.

    Every pod of the job runs ``bgeflow train --config <that URI>``: one document, read by all.
    """
    open_store(spec.output).write_text(SPEC_FILE, spec_document(spec))
    return join_uri(spec.output, SPEC_FILE)


def read_spec(uri: str) -> TrainSpec:
    """The spec ``write_spec`` wrote at ``uri``, as ``bgeflow train --config <uri>`` reads it.

    Raises:
        NotFoundError: nothing at ``uri``.
        ConfigError: not a training spec (naming the file and the setting).
    """
    from bgeflow.core.config_file import load_mapping

    return TrainSpec.build(load_mapping(uri, "training settings"), where=uri)


def pod_command(spec_uri: str, *, program: list[str] | None = None) -> list[str]:
    """The command every pod of the job runs: ``bgeflow train --config <spec_uri>``."""
    return [*(program or ["bgeflow"]), "train", "--config", spec_uri]


def pod_command_spec(command: list[str]) -> str:
    """The spec URI of a ``pod_command``.

    Raises:
        ConfigError: ``command`` is not ``... train --config <uri>``.
    """
    if len(command) < 3 or command[-3:-1] != ["train", "--config"]:
        raise ConfigError(f"not a training pod command (... train --config <spec>): {' '.join(command)}")
    return command[-1]


def _train_local_pods(spec: TrainSpec) -> TrainResult:
    started = time.time()
    nnodes, nproc = spec.distributed.local_nodes or 1, spec.distributed.nproc_per_node or 1
    options = resolved_options(spec)
    shape = Distributed(nnodes=nnodes, node_rank=0, nproc_per_node=nproc, master_addr="127.0.0.1", master_port=0)
    check_launch(options, shape, _cuda_devices())
    prepare_model(spec, options)  # the pods check it too; here it fails once, before any pod starts
    pod_spec = spec.model_copy(update={"distributed": spec.distributed.model_copy(update={"local_nodes": None})})
    spec_uri = write_spec(pod_spec)
    env = shared_cores_env(nnodes * nproc)
    command = pod_command(spec_uri, program=[sys.executable, "-m", "bgeflow"])
    resume = f"rerun the same command to resume from the newest complete checkpoint in " \
             f"{join_uri(spec.output, checkpoints.CHECKPOINTS_PREFIX)}"
    try:
        code = run_local_pods(command, nnodes=nnodes, nproc_per_node=nproc, env=env,
                              master_port=spec.distributed.master_port)
    except KeyboardInterrupt:
        # The pods run in their own sessions (Ctrl-C reaches only this process; run_local_pods stops them):
        # what a rerun does is said here, as a single-pod run says it.
        raise Interrupted(f"training stopped by SIGINT; {resume}") from None
    if code == EXIT_BAD_INPUT:
        # A pod refused its input (the message is in its output above): a rerun would refuse it again.
        raise ConfigError(f"a local pod refused the training input (exit code {code}; its error is above): "
                          "fix it, then rerun")
    if code != 0:
        raise StepFailed(f"a local pod failed with exit code {code}; {resume}")
    summary = json.loads(open_store(spec.output).read_text(SUMMARY_FILE))
    return TrainResult(model_uri=summary["model_uri"], output_uri=spec.output, global_step=summary["global_step"],
                       resumed_from=summary["resumed_from"], train_loss=summary["train_loss"],
                       loss_history=summary["losses"], seconds=time.time() - started,
                       world_size=summary["world_size"], summary=summary)
