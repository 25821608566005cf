"""The ``bgeflow`` command line: one verb per pipeline step, each a module of this package.

A verb module defines ``register(subparsers)``, which adds its parser and sets ``func`` to a
function taking the parsed namespace and returning an exit code. Verb modules import heavy
libraries (torch, kfp) only inside ``func``, so ``bgeflow --help`` and light verbs stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

from bgeflow import __version__
from bgeflow.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    BgeflowError,
    StepFailed,
    did_you_mean,
)
from bgeflow.core.log import setup_logging
from bgeflow.core.storage import StorageError, redact

#: Verbs in pipeline order; any other verb module is listed after them.
PIPELINE_ORDER = ("ingest", "mine", "train", "evaluate", "publish", "run")

log = logging.getLogger("bgeflow")

#: What ``--log-level`` and ``$BGEFLOW_LOG_LEVEL`` take: logging's names (any other is a traceback in setLevel).
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_level(text: str) -> str:
    """``text`` as logging names the level, in any case (``debug`` too: logging knows upper case only).

    Raises:
        argparse.ArgumentTypeError: not a level, naming the closest (argparse says which option).
    """
    if text.upper() in LOG_LEVELS:
        return text.upper()
    hint = did_you_mean(text.upper(), LOG_LEVELS) or f" (one of {', '.join(LOG_LEVELS)})"
    raise argparse.ArgumentTypeError(f"{text!r} is not a level{hint}")


def _verb_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [v for v in PIPELINE_ORDER if v in found] + sorted(found - set(PIPELINE_ORDER))


class Parser(argparse.ArgumentParser):
    """argparse's parser, naming a mistyped verb (or a verb's action, a kind) with the closest one.

    argparse's own message ("argument VERB: invalid choice: 'ingets' (choose from ...)") lists every
    verb and guesses none; flags get ``did_you_mean``, so verbs get it too. Sub-parsers inherit this
    class (``add_subparsers`` makes its parsers of the parent's type), so ``models lst`` is named as well.
    """

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and action.choices is not None \
                and value not in action.choices:
            what = str(action.metavar or action.dest or "choice").lower()
            names = list(action.choices)
            hint = did_you_mean(str(value), names) or f" (one of {', '.join(names)})"
            raise argparse.ArgumentError(None, f"unknown {what} {value!r}{hint}")
        super()._check_value(action, value)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="bgeflow",
        allow_abbrev=False,
        description="Fine-tune BGE retrievers and rerankers: ingest → mine → train → evaluate → publish.",
    )
    parser.add_argument("--version", action="version", version=f"bgeflow {__version__}")
    parser.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="S3-compatible endpoint (MinIO, Ceph, ...); default: $AWS_ENDPOINT_URL, else AWS.",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        type=log_level,
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ERROR (any case); before the verb: bgeflow --log-level DEBUG ingest ...",
    )
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in _verb_modules():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    for each in parsers(parser):
        # No prefix matching anywhere: --learning_rat is a typo to name, never learning_rate taken silently.
        each.allow_abbrev = False
    return parser


def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and every parser under it (verbs, their actions), depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases name a parser twice
                found += parsers(sub)
    return found


def chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost parser the command line chose (``bgeflow models list``'s, not ``bgeflow``'s)."""
    while True:
        sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if sub is None or name not in sub.choices:
            return parser
        parser = sub.choices[name]


def unrecognized(parser: argparse.ArgumentParser, tokens: Sequence[str], *, also: Iterable[str] = (),
                 top: argparse.ArgumentParser | None = None) -> str:
    """One line naming the first of ``tokens`` that ``parser`` does not know, with the closest flags it does.

    ``also``: more flags a typo may have meant (FlagEmbedding's options, for ``train``).
    ``top``: ``bgeflow``'s own parser, whose options (``--log-level``) go before the verb, not after it.
    """
    token = next((t for t in tokens if t.startswith("-")), tokens[0])
    name = token.split("=", 1)[0] if token.startswith("--") else token
    if not name.startswith("-"):
        return f"unrecognized argument {token!r} (see `{parser.prog} --help`)"
    if top is not None and top is not parser and name in top._option_string_actions:
        return (f"unrecognized argument {name}: an option of `{top.prog}` itself: put it before the verb "
                f"(`{top.prog} {name} ... {parser.prog.removeprefix(top.prog).strip()} ...`)")
    # Each flag once, by its shown spelling: --negative_numbr suggests --negative-number, not also the
    # hidden --negative_number (the help's flags come first).
    shown: dict[str, str] = {}
    for action in sorted(parser._actions, key=lambda a: a.help == argparse.SUPPRESS):
        for flag in action.option_strings:
            shown.setdefault(_flag_key(flag), flag)
    for flag in also:
        shown.setdefault(_flag_key(flag), flag)
    hint = did_you_mean(_flag_key(name), shown, show=shown.__getitem__)
    return f"unrecognized argument {name}{hint or f' (see `{parser.prog} --help`)'}"


def _flag_key(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def verb_index(parser: argparse.ArgumentParser, argv: Sequence[str]) -> int:
    """Where the verb is in ``argv``: after ``bgeflow``'s own options (``--log-level DEBUG``) and their values.

    Checks those options first, so that a mistake among them is named as one. Left to argparse, an
    unknown option before the verb is set aside and its value read as the verb: ``bgeflow --log-lev DEBUG
    ingest`` said "invalid choice: 'DEBUG'" for a typo in an option name.

    Raises:
        SystemExit: ``EXIT_BAD_INPUT`` after naming an unknown option before the verb.
    """
    i = 0
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "--":
        token = argv[i]
        name = token.split("=", 1)[0] if token.startswith("--") else token
        action = parser._option_string_actions.get(name)
        if action is None:
            print(f"{parser.prog}: error: {_unknown_before_verb(parser, token)}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT)
        if action.nargs != 0 and "=" not in token and i + 1 < len(argv) and not _takes(action, argv[i + 1]):
            # `bgeflow --log-level ingest ...`: argparse names the bad value (not what follows it).
            return i
        # --log-level DEBUG takes the next word; --log-level=DEBUG, --version and --help do not.
        i += 1 if action.nargs == 0 or "=" in token else 2
    return min(i, len(argv))


def _takes(action: argparse.Action, value: str) -> bool:
    """Whether ``action`` (an option of ``bgeflow`` itself) accepts ``value``."""
    try:
        converted = action.type(value) if callable(action.type) else value
    except (argparse.ArgumentTypeError, TypeError, ValueError):
        return False
    return action.choices is None or converted in action.choices


def _unknown_before_verb(parser: argparse.ArgumentParser, token: str) -> str:
    """The message for ``token``, an option ``bgeflow`` itself does not take, given before the verb."""
    name = token.split("=", 1)[0]
    # A verb's option given too early (`bgeflow --input x ingest`): where it goes, not a typo to guess at.
    verbs = list(dict.fromkeys(p.prog.removeprefix(parser.prog).strip()
                               for p in parsers(parser)[1:] if name in p._option_string_actions))
    if verbs:
        named = ", ".join(verbs[:4]) + (", ..." if len(verbs) > 4 else "")
        return (f"unrecognized argument {name}: an option of {named}, not of {parser.prog} itself: "
                f"put it after the verb (`{parser.prog} {verbs[0]} {name} ...`)")
    return unrecognized(parser, [token])  # a typo of bgeflow's own options: the closest of them


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line as every verb sees it.

    ``bgeflow train`` and ``bgeflow launch`` hand what they do not declare (``runner_flags``) to
    FlagEmbedding's own argument parser; every other verb refuses it here.
    """
    from bgeflow.cli.train import kind_help

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    start = verb_index(parser, argv)
    # `bgeflow [--log-level DEBUG] train retriever --help`: that kind's settings only.
    narrowed = kind_help(argv[start:])
    if narrowed is not None:
        print(narrowed, end="")
        raise SystemExit(0)
    args, unknown = parser.parse_known_args(argv)
    if not args.log_level and os.environ.get("BGEFLOW_LOG_LEVEL"):
        # Checked here, not left to logging's setLevel: a traceback for a typo in an environment variable.
        try:
            args.log_level = log_level(os.environ["BGEFLOW_LOG_LEVEL"])
        except argparse.ArgumentTypeError as exc:
            print(f"{parser.prog}: error: BGEFLOW_LOG_LEVEL: {exc}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
    verb = chosen_parser(parser, args)
    if unknown and not getattr(args, "accepts_runner_flags", False):
        print(f"{verb.prog}: error: {unrecognized(verb, unknown, top=parser)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    args.runner_flags = unknown
    args.verb_parser = verb  # what `train` names an unknown flag with (`train.build_spec`)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; the exit code says how it ended (``bgeflow.core.errors``).

    A reader of stdout that goes away early (``bgeflow models list reg | head -3``) ends the verb quietly
    with ``EXIT_BROKEN_PIPE`` (141, what a shell reports for a tool killed by SIGPIPE, as ``cat`` and
    ``grep`` are): not 0, since the output was cut short and ``set -o pipefail`` scripts should see it;
    not a traceback, since nothing is wrong with bgeflow. Python's "Note on SIGPIPE" is followed:
    stdout then points at /dev/null, so the flush at exit cannot fail again.
    """
    try:
        try:
            return _main(argv)
        finally:
            # Here, not at interpreter exit: a reader that has gone shows as BrokenPipeError below.
            sys.stdout.flush()
    except BrokenPipeError:
        if not _stdout_gone():
            raise
        return EXIT_BROKEN_PIPE


def _stdout_gone() -> bool:
    """Whether stdout's reader has gone; if so stdout is pointed at /dev/null (nothing more to flush)."""
    try:
        sys.stdout.flush()
        gone = False
    except BrokenPipeError:
        gone = True
    except (OSError, ValueError):
        return False
    if not gone:  # nothing was left to write: ask the pipe itself
        try:
            import select

            poll = select.poll()
            poll.register(sys.stdout.fileno(), select.POLLOUT)
            gone = any(events & select.POLLERR for _, events in poll.poll(0))
        except (OSError, ValueError, AttributeError):
            return False
    if gone:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):  # not a real file (a test's capture): nothing will flush it at exit
            pass
    return gone


def _main(argv: Sequence[str] | None) -> int:
    args = parse_args(argv)
    if args.log_level:
        # Exported: the processes a verb starts (torchrun workers, a run's tasks) log at the same level.
        os.environ["BGEFLOW_LOG_LEVEL"] = args.log_level
    setup_logging(args.log_level)
    if args.s3_endpoint_url:
        # Exported, not passed around: training subprocesses and boto3 itself read it.
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint_url
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        # An Interrupted carries what a rerun does (training: resumes from its last checkpoint).
        print(redact(f"bgeflow {args.verb}: interrupted" + (f"; {exc}" if str(exc) else "")), file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        if not _stdout_gone():  # another pipe than stdout's: handled as any unexpected error below
            return _internal_error(args.verb)
        return EXIT_BROKEN_PIPE  # stdout's reader went away (`| head`): nothing more to say
    except BgeflowError as exc:
        # Bad input: one line naming it; the traceback only when asked for.
        log.debug("traceback", exc_info=True)
        print(redact(f"bgeflow {args.verb}: error: {exc}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    except (StepFailed, StorageError, TimeoutError) as exc:
        log.debug("traceback", exc_info=True)
        print(redact(f"bgeflow {args.verb}: failed: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except Exception:
        return _internal_error(args.verb)


def _internal_error(verb: str) -> int:
    """Not an outcome bgeflow expects: a bug here or in a library. The traceback says where."""
    print(redact(traceback.format_exc()), file=sys.stderr, end="")
    print(f"bgeflow {verb}: internal error (a bug; please report it with the traceback above)", file=sys.stderr)
    return EXIT_FAILED


def add_seed_alias(parser: argparse.ArgumentParser, *names: str, **kwargs: object) -> None:
    """Add an option under its bgeflow spelling plus FlagEmbedding's (``--a-b`` and ``--a_b``)."""
    spellings: list[str] = []
    for name in names:
        for spelling in (name, "--" + name.removeprefix("--").replace("-", "_")):
            if spelling not in spellings:
                spellings.append(spelling)
    parser.add_argument(*spellings, **kwargs)  # type: ignore[arg-type]
