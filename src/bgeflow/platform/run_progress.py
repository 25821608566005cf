"""What ``bgeflow run`` shows while kfp.local runs the pipeline: one line per step, logs in files.

kfp.local streams every task's output, its executor input and its own coloured banners to stdout
(about 1,200 lines for the demo). Here each task's output goes to ``<run>/logs/<task>.log`` and
kfp.local's own messages to ``<run>/logs/kfp.log``, both without colour codes; the terminal gets
one line when a step starts and one when it ends (on a terminal, a status line that follows the
step's latest log line instead). A failed step's own error lines (``bgeflow <verb>: error: ...`` from any
pod) are shown, else its last log lines, with the file's path.

kfp.local has no option for this: ``quiet_tasks`` swaps its subprocess handler's
``run_local_subprocess`` (the one function that runs and streams a task) and its ``color_text``
for the duration of the run and restores them after, as ``local_run.faithful_arguments`` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from bgeflow.core.errors import BgeflowError

LOGS_DIR = "logs"
KFP_LOG = "kfp.log"
#: Lines of a failed step's log shown on the terminal (the whole log stays in its file).
TAIL_LINES = 25
#: Piped, a running step repeats its latest log line this often (CI logs show it is alive).
HEARTBEAT_S = 300.0


def task_name(full_command: list[str]) -> str:
    """The pipeline task a kfp.local command runs, from its executor input (its output file's folder)."""
    if "--executor_input" in full_command:
        index = full_command.index("--executor_input") + 1
        try:
            executor_input = json.loads(full_command[index])
            return Path(executor_input["outputs"]["outputFile"]).parent.name
        except (IndexError, ValueError, KeyError, TypeError):
            pass
    return "task"


def last_lines(path: Path, count: int, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` non-empty lines of a text file (reading at most its last ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    # tqdm rewrites its bar with carriage returns: the text after the last one is what a terminal shows.
    lines = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return [line for line in lines if line.strip()][-count:]


#: A bgeflow verb's own one-line error (``bgeflow train: error: ...``), from any pod or process
#: (the local launcher prefixes each pod's lines with ``[pod-N] ``).
_ERROR_LINE = re.compile(r"^(?:\[[\w.-]+\]\s*)?(bgeflow [\w -]{1,40}: error: .+)$")
#: The last line of a traceback of one of bgeflow's typed errors, raised in a step's own process
#: (``bgeflow.steps.ingest.report.IngestFailed: 60 of 60 lines failed validation ...``).
_RAISED_LINE = re.compile(r"^(?:\[[\w.-]+\]\s*)?bgeflow(?:\.\w+)+\.(\w+): (.+)$")
#: At most this many of a failed step's error lines are shown.
ERROR_LINES = 8


def error_lines(path: Path, *, max_bytes: int = 4 * 1024 * 1024) -> list[str]:
    """A step's own error lines in its log, each once, in log order.

    The lines of bgeflow verbs (``bgeflow <verb>: error: ...``, from any pod or process) name the
    cause; without any, the last lines of tracebacks of bgeflow's typed errors. What follows them is
    the KFP wrapper's traceback of the step's exit, which names no cause.
    """
    verbs: list[str] = []
    raised: list[str] = []
    for line in last_lines(path, 10**9, max_bytes=max_bytes):
        line = line.strip()
        found = verbs if _ERROR_LINE.match(line) else raised if _RAISED_LINE.match(line) else None
        if found is not None and line not in found:
            found.append(line)
    return (verbs or raised)[:ERROR_LINES]


def cause_of(line: str) -> str:
    """The message of an error line, without its pod prefix, ``bgeflow <verb>: error:`` or exception type."""
    line = line.strip()
    if match := _ERROR_LINE.match(line):
        return match.group(1).split(": error: ", 1)[1]
    if match := _RAISED_LINE.match(line):
        return match.group(2)
    return line


def refusal(line: str) -> type[BgeflowError] | None:
    """The bad-input error an error line (``error_lines``) reports, or None when the step failed otherwise.

    A verb writes ``bgeflow <verb>: error:`` only for bad input (``failed:`` otherwise): ``BgeflowError``.
    A traceback's last line names the error's class: bad input when it is one of bgeflow's
    ``BgeflowError``, given as its class in ``core.errors`` (``IngestFailed`` is a ``DataError``), a
    class any caller can raise with a message. ``bgeflow run`` then exits as the step's own verb would.
    """
    import importlib

    from bgeflow.core import errors

    line = line.strip()
    if _ERROR_LINE.match(line):
        return errors.BgeflowError
    if not _RAISED_LINE.match(line):
        return None
    path = line[len(_prefix(line)):].split(": ", 1)[0]
    module, _, name = path.rpartition(".")
    try:
        raised = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):  # not a class of this bgeflow: say nothing of it
        return None
    if not (isinstance(raised, type) and issubclass(raised, errors.BgeflowError)):
        return None
    return next(c for c in raised.__mro__ if c.__module__ == errors.__name__ and issubclass(c, errors.BgeflowError))


@dataclass
class StepReporter:
    """Prints each step's start, end (with its time) and, on failure, its log's tail to ``out``."""

    out: TextIO = field(default_factory=lambda: sys.stderr)
    names: dict[str, str] = field(default_factory=dict)  # task → the step's name in the summary
    interactive: bool | None = None
    heartbeat_s: float = HEARTBEAT_S
    failed: list[tuple[str, Path]] = field(default_factory=list)
    #: step → the messages of its own error lines (``error_lines``), for each failed step
    causes: dict[str, list[str]] = field(default_factory=dict)
    #: step → the bad-input error of its first error line (``refusal``): the run exits 2 as the verb would
    refused: dict[str, type[BgeflowError]] = field(default_factory=dict)
    #: step → seconds from its process's start to its exit: the time its ``done in`` line showed
    seconds: dict[str, float] = field(default_factory=dict)
    _status_shown: bool = False

    def __post_init__(self) -> None:
        if self.interactive is None:
            self.interactive = self.out.isatty()

    def step(self, task: str) -> str:
        return self.names.get(task, task)

    def started(self, task: str, log: Path) -> None:
        if not self.interactive:
            self._print(f"bgeflow run: {self.step(task)} ...")

    def running(self, task: str, log: Path, elapsed: float, *, beat: bool) -> None:
        latest = last_lines(log, 1)
        if self.interactive:
            width = shutil.get_terminal_size((100, 20)).columns
            line = f"  {self.step(task)} {_clock(elapsed)}  {latest[0] if latest else ''}"
            self.out.write("\r" + line[: width - 1].ljust(width - 1))
            self.out.flush()
            self._status_shown = True
        elif beat and latest:
            self._print(f"  {self.step(task)} {_clock(elapsed)}: {latest[0][:160]}")

    def finished(self, task: str, log: Path, code: int, elapsed: float) -> None:
        self.seconds[self.step(task)] = round(elapsed, 1)
        if code == 0:
            self._print(f"bgeflow run: {self.step(task)} done in {_clock(elapsed)}")
            return
        self.failed.append((self.step(task), log))
        errors = error_lines(log)
        self.causes[self.step(task)] = [cause_of(line) for line in errors]
        if errors and (refused := refusal(errors[0])):
            self.refused[self.step(task)] = refused
        if errors:  # the step's own error: what the user must change, not the KFP wrapper's traceback
            self._print(f"bgeflow run: {self.step(task)} FAILED after {_clock(elapsed)} (exit code {code}); "
                        f"its error (full log: {log}):")
            # A traceback's line without its class path: the message is what the user acts on.
            shown = [line if _ERROR_LINE.match(line) else _prefix(line) + cause_of(line) for line in errors]
        else:
            self._print(f"bgeflow run: {self.step(task)} FAILED after {_clock(elapsed)} (exit code {code}); "
                        f"the last lines of {log}:")
            shown = last_lines(log, TAIL_LINES)
        for line in shown:
            self._print(f"    {line}")

    def _print(self, line: str) -> None:
        if self._status_shown:  # end the terminal's status line first
            width = shutil.get_terminal_size((100, 20)).columns
            self.out.write("\r" + " " * (width - 1) + "\r")
            self._status_shown = False
        # Not print(): kfp.local replaces builtins.print while a task runs (to indent its output).
        self.out.write(line + "\n")
        self.out.flush()


def _prefix(line: str) -> str:
    """A pod's ``[pod-N] `` prefix of a log line, or ``""``."""
    match = re.match(r"^\[[\w.-]+\]\s*", line.strip())
    return match.group(0) if match else ""


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def run_task(full_command: list[str], env_vars: dict[str, str] | None, *, logs: Path,
             reporter: StepReporter) -> int:
    """Run one kfp.local task with its output in ``logs/<task>.log``; returns its exit code."""
    task = task_name(full_command)
    log = logs / f"{task}.log"
    env = {**os.environ, **(env_vars or {})}
    reporter.started(task, log)
    started = last_beat = time.monotonic()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.Popen(full_command, stdout=fh, stderr=subprocess.STDOUT, env=env)
        try:
            while True:
                try:
                    code = proc.wait(timeout=1.0)
                    break
                except subprocess.TimeoutExpired:
                    now = time.monotonic()
                    beat = now - last_beat >= reporter.heartbeat_s
                    last_beat = now if beat else last_beat
                    reporter.running(task, log, now - started, beat=beat)
        finally:
            if proc.poll() is None:  # interrupted here: the task must not outlive the run
                proc.terminate()
                proc.wait()
    reporter.finished(task, log, code, time.monotonic() - started)
    return code


@contextlib.contextmanager
def quiet_tasks(root: Path, reporter: StepReporter) -> Iterator[Path]:
    """While kfp.local runs under ``root``: task output to ``root/logs``, kfp.local's own to ``kfp.log``.

    Yields the logs folder. kfp.local's logger and prints write to ``sys.stdout`` when they run,
    so redirecting stdout moves them into ``kfp.log`` (the step lines go to the reporter's stream).
    """
    from kfp.local import logging_utils
    from kfp.local import subprocess_task_handler as handler

    logs = root / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    originals = (handler.run_local_subprocess, logging_utils.color_text)

    def run_local_subprocess(full_command: list[str], env_vars: dict[str, str] | None = None) -> int:
        return run_task(full_command, env_vars, logs=logs, reporter=reporter)

    handler.run_local_subprocess = run_local_subprocess
    logging_utils.color_text = lambda text, _color: text  # a file gets no terminal colour codes
    try:
        with open(logs / KFP_LOG, "a", encoding="utf-8") as kfp_log, contextlib.redirect_stdout(kfp_log), \
                _root_records_to(kfp_log), warnings.catch_warnings():
            # kfp.local warns for every task that its image is not a python one: bgeflow's ops image runs
            # the same code as this interpreter, on purpose.
            warnings.filterwarnings("ignore", message=".*non-Python base image", category=RuntimeWarning)
            # ... and for every task whose Kubernetes settings (GPUs, memory, display name) it ignores.
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner", category=UserWarning)
            yield logs
    finally:
        handler.run_local_subprocess, logging_utils.color_text = originals


class _Divert(logging.Filter):
    """Writes records of the root logger itself (kfp.local's module-level ``logging.info``) to a file instead."""

    def __init__(self, fh: TextIO) -> None:
        super().__init__()
        self.fh = fh

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "root" or record.levelno >= logging.WARNING:
            return True
        self.fh.write(f"{record.levelname} {record.getMessage()}\n")
        return False


@contextlib.contextmanager
def _root_records_to(fh: TextIO) -> Iterator[None]:
    """kfp.local logs some messages ("Cleaned up workspace") outside its own logger context."""
    divert = _Divert(fh)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(divert)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(divert)
