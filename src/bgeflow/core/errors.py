"""The errors bgeflow raises on purpose, and the exit codes every verb maps them to.

Two kinds of failure reach a user, and they call for different answers:

- ``BgeflowError``: the input is wrong (a setting, a data line, a URI, a model reference). The
  message names what and where in one line; rerunning the same command cannot help, fixing the
  input does. Every verb exits ``EXIT_BAD_INPUT``.
- ``StepFailed``: the input was fine but the work did not finish (a training process crashed, a
  job failed, a store was unreachable). One line too; a rerun may succeed. Exit ``EXIT_FAILED``.

Anything else is a bug in bgeflow or a library: the CLI prints the traceback and exits
``EXIT_FAILED``. The subclasses also derive from the builtin a caller would catch without
knowing bgeflow (``ValueError``, ``FileNotFoundError``, ``RuntimeError``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
#: ``bgeflow evaluate --fail-on-gate`` when the quality gate fails.
EXIT_GATE_FAILED = 3
EXIT_INTERRUPTED = 130
#: stdout's reader went away (``bgeflow models list | head``): what a shell reports for a tool killed by SIGPIPE.
EXIT_BROKEN_PIPE = 141


class BgeflowError(Exception):
    """Bad input: the message names the setting, file:line or URI at fault."""


class ConfigError(BgeflowError, ValueError):
    """A setting is missing, malformed, out of range or contradicts another one."""


class DataError(BgeflowError, ValueError):
    """Input data broke the contract; the message is a one-line summary naming where."""


class NotFoundError(BgeflowError, FileNotFoundError):
    """A file, object, prefix or model that the input names does not exist."""


class ConflictError(BgeflowError, FileExistsError):
    """What the input asks for exists already with other content (a registry version, an output)."""


class UnsafePathError(BgeflowError, ValueError):
    """A key, manifest entry or name would make a path outside its folder (absolute, ``..``, empty part)."""


class StepFailed(RuntimeError):
    """The work stopped for a reason outside the input; the message says what and where."""


class Interrupted(KeyboardInterrupt):
    """The user (Ctrl-C) or the system (SIGTERM) stopped the work; the message says what a rerun does.

    A ``KeyboardInterrupt``: every caller that handles Ctrl-C handles it unchanged, and the CLI says
    ``bgeflow <verb>: interrupted; <message>`` and exits ``EXIT_INTERRUPTED``, not "failed". For work
    done by child processes (torchrun), whose own exit status after the signal is no failure.
    """


def did_you_mean(word: str, known: Iterable[str], *, show: Callable[[str], str] | None = None, limit: int = 3) -> str:
    """``"; did you mean a, b?"`` naming the known names closest to ``word``, or ``""`` when none is close.

    The one suggestion of every "unknown name" message (flags, settings, FlagEmbedding options).
    ``show``: how a match is written in the message (matches written the same way are named once).
    """
    import difflib

    close = difflib.get_close_matches(word, list(known), n=2 * limit)
    shown = list(dict.fromkeys(show(name) if show else name for name in close))[:limit]
    return f"; did you mean {', '.join(shown)}?" if shown else ""
