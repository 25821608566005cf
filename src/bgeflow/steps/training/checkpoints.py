"""Crash-safe checkpoints: a checkpoint counts only once its completion marker exists.

transformers writes ``checkpoint-<step>/`` file by file; a process killed half-way leaves a
directory that looks like a checkpoint but is not one. Rank 0 therefore writes
``bgeflow-checkpoint-complete.json`` (the step, every file's size, the run identity: a hash
of the data, the base model and the resolved settings, see ``pod.run_identity``, and those inputs
themselves, so that a refusal can name what differs) after all ranks
finished saving, uploads the files to ``<output>/checkpoints/checkpoint-<step>/`` and then the
marker. On start the newest checkpoint whose marker matches its files is resumed from, and only
if it belongs to this run; others are reported and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow.core.errors import ConflictError, StepFailed
from bgeflow.core.storage import Store

log = logging.getLogger(__name__)

MARKER = "bgeflow-checkpoint-complete.json"
CHECKPOINTS_PREFIX = "checkpoints"
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    name: str
    where: str  # local path or URI
    run: str | None = None  # the run identity its marker names (None: none, an older bgeflow's)
    #: What that identity hashes (``pod.identity_inputs``); None in markers of bgeflow before they kept it.
    inputs: dict[str, Any] | None = field(default=None, compare=False, hash=False)


@dataclass
class ResumePlan:
    """What a starting run resumes from (``local_dir`` None: from scratch) and what it ignored."""

    local_dir: Path | None = None
    step: int = 0
    source: str | None = None
    ignored: list[str] = field(default_factory=list)


def step_of(name: str) -> int | None:
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def mark_complete(ckpt_dir: Path, step: int, run: str | None = None,
                  inputs: dict[str, Any] | None = None) -> dict[str, object]:
    """Write the marker (atomically, last) listing every file of ``ckpt_dir``; returns its content.

    ``run``: the run identity the checkpoint belongs to, checked before anything resumes from it;
    ``inputs``: what it hashes, kept so that another run refused here is told what differs.
    """
    files = {p.relative_to(ckpt_dir).as_posix(): p.stat().st_size
             for p in sorted(ckpt_dir.rglob("*")) if p.is_file() and p.name != MARKER and not p.name.startswith(".")}
    marker: dict[str, object] = {"step": step, "files": files, "completed_at": time.time(), "run": run}
    if inputs is not None:
        marker["inputs"] = inputs
    tmp = ckpt_dir / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(marker, indent=1), encoding="utf-8")
    os.replace(tmp, ckpt_dir / MARKER)
    return marker


def _complete(marker_text: str | None, sizes: dict[str, int]) -> dict[str, object] | None:
    """The marker when it is valid and matches the files, else None."""
    if marker_text is None:
        return None
    try:
        marker = json.loads(marker_text)
        listed = marker["files"]
        ok = all(sizes.get(name) == size for name, size in listed.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return marker if ok and isinstance(marker, dict) else None


def _run_of(marker: dict[str, object] | None) -> str | None:
    run = (marker or {}).get("run")
    return run if isinstance(run, str) else None


def _inputs_of(marker: dict[str, object] | None) -> dict[str, Any] | None:
    inputs = (marker or {}).get("inputs")
    return inputs if isinstance(inputs, dict) else None


def local_checkpoints(run_dir: Path) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """``(complete, partial)`` checkpoints in a local run directory, oldest first."""
    complete: list[Checkpoint] = []
    partial: list[Checkpoint] = []
    if not run_dir.is_dir():
        return complete, partial
    for path in run_dir.iterdir():
        step = step_of(path.name)
        if step is None or not path.is_dir():
            continue
        marker = _local_marker(path)
        (complete if marker else partial).append(Checkpoint(step, path.name, str(path), _run_of(marker),
                                                            _inputs_of(marker)))
    return sorted(complete, key=lambda c: c.step), sorted(partial, key=lambda c: c.step)


def remote_checkpoints(store: Store) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """``(complete, partial)`` checkpoints under ``store`` (the output's ``checkpoints/``), oldest first."""
    sizes: dict[str, dict[str, int]] = {}
    for info in store.list():
        name, _, rest = info.key.partition("/")
        if step_of(name) is not None and rest:
            sizes.setdefault(name, {})[rest] = info.size
    complete: list[Checkpoint] = []
    partial: list[Checkpoint] = []
    for name, files in sizes.items():
        marker = _complete(store.read_text(f"{name}/{MARKER}") if MARKER in files else None, files)
        (complete if marker else partial).append(Checkpoint(step_of(name) or 0, name, store.url(name), _run_of(marker),
                                                            _inputs_of(marker)))
    return sorted(complete, key=lambda c: c.step), sorted(partial, key=lambda c: c.step)


def publish(ckpt_dir: Path, step: int, store: Store | None, run: str | None = None,
            inputs: dict[str, Any] | None = None) -> None:
    """Mark a saved checkpoint complete and copy it to ``store``: every file first, the marker last.

    ``run``: the run identity stamped into the marker; ``inputs``: what it hashes (``mark_complete``).
    """
    if store is not None:
        for path in sorted(ckpt_dir.rglob("*")):
            if path.is_file() and path.name != MARKER and not path.name.startswith("."):
                store.put_file(path, f"{ckpt_dir.name}/{path.relative_to(ckpt_dir).as_posix()}")
    mark_complete(ckpt_dir, step, run, inputs)
    if store is not None:
        store.put_file(ckpt_dir / MARKER, f"{ckpt_dir.name}/{MARKER}")
    log.info("checkpoint %s complete%s", ckpt_dir.name, f" and uploaded to {store.url(ckpt_dir.name)}" if store else "")


def prune(store: Store, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints under ``store`` (marker first)."""
    complete, _ = remote_checkpoints(store)
    for old in complete[:-keep] if keep > 0 else []:
        store.delete(f"{old.name}/{MARKER}")
        for info in store.child(old.name).list():
            store.delete(f"{old.name}/{info.key}")


def plan_resume(run_dir: Path, store: Store, *, use_local: bool, run: str | None = None,
                inputs: dict[str, Any] | None = None) -> ResumePlan:
    """Pick the newest complete checkpoint and make it available in ``run_dir``.

    ``use_local``: local checkpoints count too (one node). With several nodes only the output's
    checkpoints count, so that every node picks the same step. Partial local checkpoints are
    deleted (they are this node's scratch); partial remote ones are left alone and reported.

    ``run``: this run's identity. A complete checkpoint of another run in the output is refused
    rather than resumed (a model trained on other data or settings, published as this one) or
    skipped (this run's checkpoints would then be saved beside, and under the names of, another
    run's); local ones are this scratch's leftovers and are deleted. ``inputs``: what ``run``
    hashes; the refusal names where the other run's (kept in its marker) differ from them.

    Raises:
        ConflictError: the output holds complete checkpoints of another run (or of an older
            bgeflow that stamped none), naming them and what to do.
        StepFailed: the chosen checkpoint changed while it was downloaded.
    """
    local_complete, local_partial = local_checkpoints(run_dir)
    remote_complete, remote_partial = remote_checkpoints(store)
    if run is not None:
        foreign = [c for c in remote_complete if c.run != run]
        if foreign:
            raise ConflictError(
                f"{store.uri} holds checkpoints of another run ({', '.join(c.name for c in foreign)}: run "
                f"{foreign[-1].run or 'unknown (no identity in its marker)'}; this run is {run}: "
                f"{_what_differs(foreign[-1].inputs, inputs)}). Resuming would train from the wrong model, and "
                f"saving beside them would mix two runs: write to another output, or delete {store.uri} to start "
                "this output over")
        stale = [c for c in local_complete if c.run != run]
        for ckpt in stale:
            shutil.rmtree(ckpt.where, ignore_errors=True)
        local_complete = [c for c in local_complete if c.run == run]
        local_partial = local_partial + stale
    plan = ResumePlan(ignored=[c.where for c in remote_partial + local_partial])
    candidates = remote_complete + (local_complete if use_local else [])
    for ckpt in local_partial:
        shutil.rmtree(ckpt.where, ignore_errors=True)
    if not candidates:
        return plan
    newest = max(candidates, key=lambda c: (c.step, c in local_complete))
    target = run_dir / newest.name
    if newest not in local_complete:
        staging = run_dir / f".download-{newest.name}"
        shutil.rmtree(staging, ignore_errors=True)
        store.child(newest.name).download_dir(staging)
        if not is_complete_dir(staging):
            raise StepFailed(f"checkpoint {newest.where} changed while it was downloaded; rerun to retry")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    # Said as the output's copy when it has this step too: the scratch copy is only the faster read, and a
    # user (or the summary's reader on another machine) finds the output's, not this node's temp dir.
    durable = next((c for c in remote_complete if c.step == newest.step), newest)
    plan.local_dir, plan.step, plan.source = target, newest.step, durable.where
    return plan


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


#: Identity inputs named by what they are: their digests, paths and file sizes say nothing to a reader.
_GROUPS = {"data_sha256": "training data", "base_model": "base model files"}
_MAX_NAMED = 6


def _what_differs(theirs: dict[str, Any] | None, ours: dict[str, Any] | None) -> str:
    """``"they differ in max_steps 3 → 5, training data"``: where two runs' identity inputs differ.

    Settings by name with both values; the data and the base model's files by what they are (their
    digests and sizes say nothing to a reader). Without the other run's inputs (a marker of bgeflow
    before it kept them) only the groups an identity covers can be named.
    """
    if theirs is None or ours is None:
        return "other data, base model or settings (its checkpoints do not record which)"
    mine, other = _flatten(ours), _flatten(theirs)
    named: list[str] = []
    for key in sorted(set(mine) | set(other), key=lambda k: (not k.startswith("options."), k)):
        if mine.get(key, "<unset>") == other.get(key, "<unset>"):
            continue
        group = key.split(".", 1)[0]
        if group in _GROUPS:
            said = _GROUPS[group]  # one entry for all of a group's parts (the model's files)
        else:  # a runner option by its own name (max_steps), else the spec's (pooling, nnodes)
            said = f"{key.removeprefix('options.')} {other.get(key, '<unset>')} → {mine.get(key, '<unset>')}"
        if said not in named:
            named.append(said)
    if not named:
        return "other data, base model or settings"
    more = f" and {len(named) - _MAX_NAMED} more" if len(named) > _MAX_NAMED else ""
    return f"they differ in {', '.join(named[:_MAX_NAMED])}{more}"


def _local_marker(ckpt_dir: Path) -> dict[str, object] | None:
    sizes = {p.relative_to(ckpt_dir).as_posix(): p.stat().st_size for p in ckpt_dir.rglob("*") if p.is_file()}
    marker = ckpt_dir / MARKER
    return _complete(marker.read_text(encoding="utf-8") if marker.is_file() else None, sizes)


def is_complete_dir(ckpt_dir: Path) -> bool:
    """Whether a local checkpoint directory has a marker that matches its files."""
    return _local_marker(ckpt_dir) is not None
