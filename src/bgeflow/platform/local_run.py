"""``bgeflow run``: the compiled ``bge-finetune`` pipeline, executed on this machine by kfp.local.

The cluster and the laptop run the same IR: this module loads ``pipelines/bge_finetune.yaml``
and hands it to kfp.local's SubprocessRunner in this interpreter (``use_venv=False``: nothing is
installed). kfp.local ignores the Kubernetes platform config (secrets, tolerations, GPUs,
timeouts). The train-launcher step gets ``launcher_backend=local``, so ``bgeflow.platform.launcher`` runs
the PyTorchJob's pod command as local processes with the training operator's env.

What the terminal shows is one line per step (``run_progress``): each task's output goes to
``<output>/runs/<time>/logs/<task>.log``, and a failed step's last lines are shown with that path.

One deliberate difference: retry policies are removed, so a local failure is reported at once
instead of after minutes of backoff (retries exist for transient cluster and S3 faults).

One kfp.local fault is corrected (``faithful_arguments``): its SubprocessRunner replaces the text
``python3`` with the interpreter's path in *every* element of a task's command, the executor input
included, so a parameter such as ``<venv>/lib/python3.11/site-packages/<pkg>/model`` reached the
step as ``<venv>/lib/<venv>/bin/python.11/...``.

Everything that can be checked before training is checked first (``preflight``), and each
problem is one line naming the key, URI or endpoint.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow.core import reports
from bgeflow.core.errors import BgeflowError, DataError, Interrupted, NotFoundError, StepFailed
from bgeflow.core.storage import open_store
from bgeflow.platform.run_progress import KFP_LOG, LOGS_DIR, StepReporter, quiet_tasks
from bgeflow.platform.run_spec import LocalRunSpec

log = logging.getLogger(__name__)

PIPELINE_FILE = "bge_finetune.yaml"
#: Where the ops image keeps the compiled pipeline (the Helm chart uploads it from there).
IMAGE_PIPELINE = Path("/opt/bgeflow/pipelines") / PIPELINE_FILE
#: Where ``pip install bgeflow`` puts it, under ``sys.prefix`` (pyproject's data-files).
INSTALLED_PIPELINE_DIR = Path("share/bgeflow/pipelines")
SUMMARY_FILE = reports.RUN_SUMMARY
STEP_NAMES = {
    "ingest": "ingest", "mine": "mine", "train-launcher": "train retriever", "train-launcher-2": "train reranker",
    "evaluate": "evaluate", "publish": "publish retriever", "publish-2": "publish reranker",
}


def find_pipeline(configured: str = "") -> Path:
    """The compiled pipeline: as configured, else this checkout's, the installed package's, the image's."""
    candidates = [Path(configured)] if configured else [
        Path(__file__).resolve().parents[3] / "pipelines" / PIPELINE_FILE,
        Path(sys.prefix) / INSTALLED_PIPELINE_DIR / PIPELINE_FILE, IMAGE_PIPELINE]
    for path in candidates:
        if path.is_file():
            return path
    raise NotFoundError(f"compiled pipeline not found at {' or '.join(map(str, candidates))} "
                            "(run `make pipelines` in a checkout, or set pipeline: in the run config)")


def _check_model(name: str, limits: dict[str, int]) -> None:
    """The model is where its reference points (nothing downloaded), and a local one takes ``limits``."""
    from bgeflow.core.models import check_token_limits, locate_model

    where = locate_model(name)  # bundled/local/s3: a config.json, or a NotFoundError naming the reference
    if where.kind in ("bundled", "local"):
        check_token_limits(where.location, limits, model=name, where="run")
    elif where.kind == "hub" and os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(where.location, "config.json"), str):
            raise NotFoundError(f"model {name}: not in the Hugging Face cache and HF_HUB_OFFLINE is set")


#: Local data up to this size is counted by the pre-flight (a read of a few seconds at most).
COUNT_BYTES = 64 * 1024 * 1024


#: Invalid lines named (``file:line``) in the pre-flight's one-line error.
SHOWN_PROBLEMS = 3


def _sampled(total: int, max_records: int, seed: int) -> list[int] | None:
    """Indexes (among the non-blank lines) of the records ``sample_data`` keeps; None: all of them.

    The one definition of the sample, so the pre-flight judges exactly the lines the run's ingest reads.
    """
    import random

    if not max_records or total <= max_records:
        return None
    return sorted(random.Random(seed).sample(range(total), max_records))


def _read_data(config: LocalRunSpec, sources: list[Any]) -> int | None:
    """Validate every line ingest will read, as ingest does; returns the count of non-blank lines.

    One pass serves both checks that need the data's lines: this one and ``_check_batches``'s
    bound. Remote or large data (over ``COUNT_BYTES``) is not read here (None): ingest validates it.
    With ``ingest.on_error: skip`` bad lines are ingest's to drop, so only the count is kept.

    Raises:
        DataError: under ``on_error: fail``, an invalid line among those the run's ingest reads (after
            ``max_records`` sampling), naming the first few as ``file:line``.
    """
    from bgeflow.core.storage import is_remote, iter_lines
    from bgeflow.steps.ingest import check_line

    if any(is_remote(s.uri) for s in sources) or sum(s.size for s in sources) > COUNT_BYTES:
        return None
    lines = 0
    bad: list[tuple[int, list[Any]]] = []  # (index among non-blank lines, its problems)
    for source, line_no, raw in iter_lines(sources, max_line_bytes=config.ingest.max_line_bytes, overlong="mark"):
        record, problems = check_line(source.uri, line_no, raw)
        if record is None and not problems:
            continue  # blank: neither a record nor a problem, as in ingest
        if problems:
            bad.append((lines, problems))
        lines += 1
    if bad and config.ingest.on_error == "fail":
        kept = _sampled(lines, config.max_records, config.ingest.seed)
        if kept is not None:
            chosen = set(kept)
            bad = [(index, problems) for index, problems in bad if index in chosen]
        read = len(kept) if kept is not None else lines
        if bad:
            shown = "; ".join(str(problems[0]) for _, problems in bad[:SHOWN_PROBLEMS])
            more = f"; +{len(bad) - SHOWN_PROBLEMS} more" if len(bad) > SHOWN_PROBLEMS else ""
            raise DataError(f"data: {len(bad)} of {read} records failed validation (ingest.on_error fail): "
                            f"{shown}{more} (`bgeflow ingest` reports every problem)")
    return lines


def _check_batches(config: LocalRunSpec, lines: int | None, options: dict[str, dict[str, Any]]) -> None:
    """Refuse a batch no training split of this data can fill, when the data is local and small.

    With ``dataloader_drop_last`` a pod refuses fewer records than one batch over every process
    (``pod.check_data``), after minutes of ingest and mining. Here the data's non-blank lines (after
    ``max_records``) are an upper bound on its records (dedupe, invalid lines and ``min_negatives``
    only remove), and ingest's hold-out of that bound an upper bound on the training split: only a
    run that certainly fails is refused.

    Raises:
        ConfigError: naming the run-spec key and the most records the training split can have.
    """
    from bgeflow.core.errors import ConfigError
    from bgeflow.steps.ingest.split import held_out_count

    if not options or lines is None:  # ``lines``: ``_read_data``'s count, None when the data was not read
        return
    records = min(lines, config.max_records) if config.max_records else lines
    held = held_out_count(records, config.ingest.eval_fraction)
    train = records - held
    processes = config.training.nproc_per_node * config.training.nnodes
    for kind, chosen in options.items():
        batch = int(chosen.get("per_device_train_batch_size", 8))
        if chosen.get("dataloader_drop_last") and train < batch * processes:
            fits = train // processes
            advice = (f"lower {kind}.hyperparameters.per_device_train_batch_size to {fits}" if fits else
                      "lower training.nproc_per_node")
            raise ConfigError(
                f"{kind}.hyperparameters.per_device_train_batch_size {batch} × {processes} process(es) "
                f"(training.nproc_per_node × training.nnodes) needs {batch * processes} training records with "
                f"dataloader_drop_last, but the data gives at most {train} ({records} records"
                + (f" of max_records {config.max_records}" if config.max_records and lines > records else "")
                + (f", {held} held out by ingest.eval_fraction {config.ingest.eval_fraction}" if held else "")
                + f"): {advice}, or add data")


def preflight(config: LocalRunSpec) -> Path:
    """Check settings, data, models, S3 and the pipeline before anything runs; returns the pipeline path.

    Each step's spec is built from the run's blocks exactly as the pipeline's components build it, so
    a setting that would fail a step fails here, before minutes of work.

    Raises:
        BgeflowError: one line naming the setting, URI or model at fault.
    """
    from bgeflow.core.storage import resolve_sources
    from bgeflow.core.storage.s3 import check_reachable
    from bgeflow.platform import run_spec as blocks
    pipeline = find_pipeline(config.pipeline)
    check_reachable([*config.data, *config.corpus, config.eval_data, config.registry, config.retriever.model,
                     config.reranker.model])
    sources = resolve_sources(config.data)
    if not any(s.size for s in sources):
        raise DataError(f"data {', '.join(config.data)}: every file is empty")
    if config.corpus and not any(s.size for s in resolve_sources(config.corpus)):
        raise DataError(f"corpus {', '.join(config.corpus)}: every file is empty")
    if config.eval_data:  # read whole now: a bad line fails here, not after training
        from bgeflow.steps.evaluation.evalset import load_eval_set, resolve_eval_uris

        load_eval_set(resolve_eval_uris(config.eval_data, None, None, None))
    scratch = tempfile.gettempdir()
    # What the evaluate step will judge on (the split stands for ingest's, held out when eval_fraction > 0).
    blocks.eval_set(config.eval_data, scratch if config.ingest.eval_fraction > 0 else "")
    blocks.ingest_spec(config.ingest, config.retriever, inputs=config.data, output=scratch)
    blocks.mine_spec(config.mine, config.retriever, inputs=config.data, output=f"{scratch}/mined.jsonl",
                     corpus=config.corpus, reranker=config.reranker)
    _check_model(config.retriever.model, {"retriever.query_max_len": config.retriever.query_max_len,
                                          "retriever.passage_max_len": config.retriever.passage_max_len})
    _check_model(config.reranker.model, {"reranker.max_len": config.reranker.max_len})
    if config.ingest.tokenizer:  # ingest loads it through the same resolver: the same references work
        try:
            _check_model(config.ingest.tokenizer, {})
        except BgeflowError as exc:
            raise type(exc)(f"ingest.tokenizer: {exc}") from exc
    lines = _read_data(config, sources)  # bad lines fail here, not minutes later in ingest
    options = blocks.check_hyperparameters(config)  # what the launcher and the pods will check, before any step
    _check_batches(config, lines, options)
    blocks.check_negatives(config)
    blocks.evaluate_spec(config.evaluate, config.retriever, config.reranker, eval_data=config.eval_data,
                         split=scratch if config.ingest.eval_fraction > 0 else "", output=scratch,
                         finetuned_retriever=config.retriever.model,
                         finetuned_reranker=config.reranker.model if config.reranker.train else None,
                         registry=config.registry)
    for block in (config.retriever, config.reranker):
        blocks.publish_spec(config.publish, model=scratch, name=block.name, registry=config.registry or scratch,
                            metrics=scratch, lineage_inputs=[])
    return pipeline


#: ``python3`` as a command word of the launcher's shell scripts (not inside a longer name or path).
_PYTHON3_WORD = re.compile(r"(?<![\w./-])python3(?![\w./-])")
#: How kfp's launcher script runs the component's code; the element after it is that code.
_LAUNCHER_MARKS = ('"$program_path/ephemeral_component.py"', '"$@"')


def launcher_python(full_command: list[str], new_executable: str) -> list[str]:
    """kfp.local's interpreter rewrite, limited to where it belongs: the launcher's own shell scripts.

    Elements from the component's code on (the code, ``--executor_input <JSON>``, the function
    name) are returned unchanged, so every parameter value reaches the step as given; in the
    scripts before it only ``python3`` as a word is replaced.
    """
    stop = len(full_command)
    for index, element in enumerate(full_command):
        if element == "--executor_input":
            stop = index
            break
        if all(mark in element for mark in _LAUNCHER_MARKS):
            stop = index + 1
            break
    return [_PYTHON3_WORD.sub(lambda _m: new_executable, element) if index < stop else element
            for index, element in enumerate(full_command)]


@contextmanager
def faithful_arguments() -> Iterator[None]:
    """While kfp.local runs tasks, its SubprocessRunner uses ``launcher_python`` for its rewrite.

    kfp.local picks the task handler by exact runner type, so a runner subclass is never used; the
    handler module's function is swapped for the duration of the run and restored after.
    """
    from kfp.local import subprocess_task_handler as handler

    original = handler.replace_python_executable
    handler.replace_python_executable = launcher_python
    try:
        yield
    finally:
        handler.replace_python_executable = original


def local_variant(pipeline_yaml: str) -> str:
    """The pipeline IR without retry policies (see the module docstring)."""
    import yaml

    docs = list(yaml.safe_load_all(pipeline_yaml))
    spec = docs[0]
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task.pop("retryPolicy", None)
    return yaml.safe_dump(spec, sort_keys=False)


def sample_data(config: LocalRunSpec, work: Path) -> tuple[str, int, int]:
    """``(uri, kept, total)``: ``config.max_records`` lines of the data, a seeded sample in file order
    (the pipeline's ingest validates them as it would the whole); the data itself when it is no larger."""
    from bgeflow.core.storage import iter_lines, resolve_sources

    data = ",".join(config.data)
    if not config.max_records:
        return data, -1, -1
    lines = [raw.rstrip(b"\r\n") for _, _, raw in iter_lines(resolve_sources(config.data)) if raw.strip()]
    if len(lines) <= config.max_records:
        return data, len(lines), len(lines)
    seed = config.ingest.seed
    keep = _sampled(len(lines), config.max_records, seed) or []
    path = work / f"sample-{config.max_records}-seed{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines[i] + b"\n" for i in keep))
    return str(path), len(keep), len(lines)


@dataclass
class RunSummary:
    output: str
    pipeline_root: str
    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, float] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    published: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: model kind → why it was not published (its gate rules failed, or it was not trained)
    skipped: dict[str, str] = field(default_factory=dict)
    eval_set: str = ""  # where the gate's metrics come from
    split_metrics: dict[str, Any] = field(default_factory=dict)  # ingest's split, scored beside eval_data
    eval_queries: int | None = None  # the gate's eval set size
    rerank_top_k: int | None = None  # how many of the retriever's hits the reranker reorders
    warnings: list[str] = field(default_factory=list)  # evaluate's (e.g. an eval set too small to judge on)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run(config: LocalRunSpec, pipeline: Path, reporter: StepReporter | None = None) -> RunSummary:
    """Execute the pipeline through kfp.local and gather what each step recorded.

    ``reporter``: where each step's start and end are shown (default: stderr; ``run_progress``);
    every task's output is in ``<output>/runs/<time>/logs/<task>.log``.

    Raises:
        StepFailed: a task failed (the message names its full log).
    """
    from kfp import local
    from kfp.components import load_component_from_text

    output = Path(config.output.removeprefix("file://")).resolve()
    root = output / "runs" / time.strftime("%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=False)
    started = time.monotonic()
    data, kept, total = sample_data(config, root / "data")
    if kept != total:
        log.info("data: %d of %d records sampled (max_records=%d)", kept, total, config.max_records)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    component = load_component_from_text(local_variant(pipeline.read_text()))
    reporter = reporter or StepReporter(names=STEP_NAMES)
    try:
        with faithful_arguments(), quiet_tasks(root, reporter) as logs:
            component(**{**config.pipeline_arguments(), "data": data})
    except KeyboardInterrupt:
        # Said plainly: kfp.local has no step cache, so a rerun is a new run from ingest (each finished
        # step's outputs stay here); resuming training alone is `bgeflow train`'s, on its step's output.
        raise Interrupted(f"a rerun starts a new run from ingest (kfp.local keeps no step cache); this run's "
                          f"logs and finished steps' outputs: {root}") from None
    except RuntimeError as exc:  # the reporter has shown the failing step's error or last log lines
        if reporter.failed:  # the step as the summary names it, and its own error when it wrote one
            step, log_file = reporter.failed[0]
            causes = reporter.causes.get(step) or []
            said = f"{step} failed" + (f": {causes[0]}" if causes else "")
            if step in reporter.refused:  # the step refused its input: exit 2, as its own verb does
                raise reporter.refused[step](f"{said}; full log: {log_file} (task outputs under {root})") from None
            raise StepFailed(f"{said}; full log: {log_file} (task outputs under {root})") from None
        plain = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
        raise StepFailed(f"{plain}; kfp.local's log: {logs / KFP_LOG} (task outputs under {root})") from None
    summary = collect(root, time.monotonic() - started)
    # The times the progress lines showed (process start to exit, model loading included), not the
    # steps' own work timers: one figure per step, wherever the user reads it.
    summary.steps = {**summary.steps, **reporter.seconds}
    summary.output = str(output)
    summary.data = {"uri": data, "records": kept, "of": total}
    (output / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2, ensure_ascii=False))
    return summary


def collect(root: Path, seconds: float) -> RunSummary:
    """Read every task's executor output under ``root`` (one kfp.local run)."""
    summary = RunSummary(output="", pipeline_root=str(root), seconds=round(seconds, 1))
    for path in sorted(root.glob("*/*/executor_output.json")):
        task = path.parent.name
        outputs = json.loads(path.read_text())
        artifacts = {name: group["artifacts"][0] for name, group in outputs.get("artifacts", {}).items()}
        step = STEP_NAMES.get(task, task)
        taken = [a["metadata"]["seconds"] for a in artifacts.values() if a.get("metadata", {}).get("seconds") is not None]
        if taken:
            summary.steps[step] = max(taken)
        meta = {name: a.get("metadata", {}) for name, a in artifacts.items()}
        if "model" in meta and meta["model"].get("kind"):
            summary.models[meta["model"]["kind"]] = meta["model"]
        if "evaluation" in meta and meta["evaluation"].get("metrics"):
            document = json.loads(open_store(meta["evaluation"]["metrics"]).read_text())
            summary.metrics = document.get("metrics", {})
            summary.gate = document.get("gate", {})
            summary.eval_set = str(meta["evaluation"].get("eval_set") or "")
            summary.eval_queries = (document.get("eval_set") or {}).get("queries")
            summary.rerank_top_k = document.get("rerank_top_k")
            summary.warnings = list(document.get("warnings") or [])
            if meta["evaluation"].get("split_metrics"):
                split = json.loads(open_store(meta["evaluation"]["split_metrics"]).read_text())
                summary.split_metrics = split.get("metrics", {})
        if "published" in meta and meta["published"].get("version"):
            summary.published[step.split()[-1]] = meta["published"]
        elif "published" in meta and meta["published"].get("skipped"):
            summary.skipped[step.split()[-1]] = str(meta["published"]["skipped"])
    return summary


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def format_summary(summary: RunSummary) -> str:
    lines = [f"bgeflow run: finished in {_minutes(summary.seconds)} (outputs under {summary.output})",
             f"  step logs: {Path(summary.pipeline_root) / LOGS_DIR}", ""]
    if summary.data.get("records", -1) != summary.data.get("of", -1):
        lines += [f"  data: {summary.data['records']} of {summary.data['of']} records sampled (max_records)", ""]
    for kind, meta in summary.models.items():
        where = meta.get("uri") if meta.get("trained") else f"{meta.get('uri')} (not trained in this run)"
        lines.append(f"  {kind:<10} {meta.get('base_model')} → {where}")
        curve = (meta.get("validation") or {}).get("curve") or []
        if curve:  # validation during training: the curve, and the step whose weights were kept
            name = meta["validation"]["metric"]
            lines.append(f"  {'':<10} validation {name} by step: " + ", ".join(
                f"{p['step']}: {p[name]:.4f}" for p in curve) + f" (kept step {meta['validation']['kept_step']})")
        if kind in summary.published:
            pub = summary.published[kind]
            lines.append(f"  {'':<10} published {pub.get('uri')}" + (" (champion)" if pub.get("champion") else ""))
        elif kind in summary.skipped and meta.get("trained"):
            lines.append(f"  {'':<10} NOT published: {summary.skipped[kind]}")
    base, tuned = summary.metrics.get("base", {}), summary.metrics.get("finetuned", {})
    unranked = summary.metrics.get("retriever", {})  # the retriever's own order of the reranked candidates
    if tuned:
        extra = f"{'not reranked':>14}" if unranked else ""
        if summary.eval_queries is not None:  # its own line: a column header's neighbour reads as a column
            lines += ["", f"  eval set: {summary.eval_queries} queries (the gate judges these)"]
        lines += ["", f"  {'metric':<18}{'base':>10}{'fine-tuned':>12}{'delta':>10}{extra}"]
        for name, value in tuned.items():
            before = base.get(name)
            delta = f"{value - before:+.4f}" if before is not None else ""
            shown = f"{before:.4f}" if before is not None else "-"
            plain = f"{unranked[name]:>14.4f}" if name in unranked else ""
            lines.append(f"  {name:<18}{shown:>10}{value:>12.4f}{delta:>10}{plain}")
        if unranked and summary.rerank_top_k:  # rerank.recall@100 over 5 reranked hits reads as a recall loss
            top = summary.rerank_top_k
            lines.append(f"  rerank.* reorder the retriever's top {top}: at k >= {top} they count those {top} only")
    if summary.split_metrics:
        base_split, tuned_split = summary.split_metrics.get("base", {}), summary.split_metrics.get("finetuned", {})
        lines += ["", f"  metrics above: your eval set {summary.eval_set}; ingest's held-out split (not gated): "
                      + ", ".join(f"{name} {tuned_split[name]:.4f} (base {base_split.get(name, float('nan')):.4f})"
                                  for name in ("ndcg@10", "rerank.ndcg@10") if name in tuned_split)]
    lines += [f"  WARNING: {warning}" for warning in summary.warnings]
    if summary.gate:
        verdict = "PASSED" if summary.gate.get("passed") else "FAILED"
        lines += ["", f"  gate {summary.gate.get('expression') or '(no rules)'}: {verdict}"]
        rules = {rule.get("rule"): rule for rule in summary.gate.get("rules", [])}
        for kind, own in (summary.gate.get("models") or {}).items():
            if not own.get("rules"):
                continue
            outcome = "passed" if own.get("passed") else (
                "FAILED, not published" if kind not in summary.published else "FAILED")
            lines.append(f"    {kind}: {outcome}")
            lines += [f"      {rules[name].get('reason')}" for name in own["rules"] if name in rules]
        if not summary.gate.get("models"):  # a verdict from before per-model rules
            lines += [f"    {rule.get('reason')}" for rule in summary.gate.get("rules", [])]
    if summary.steps:
        order = list(STEP_NAMES.values())
        steps = sorted(summary.steps.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))
        lines += ["", "  time per step (wall): " + ", ".join(f"{step} {_minutes(s)}" for step, s in steps)]
    return "\n".join(lines)
