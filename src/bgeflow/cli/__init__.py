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
from collections.abc import Sequence

from bgeflow import __version__
from bgeflow.core.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, BgeflowError, StepFailed
from bgeflow.core.log import setup_logging
from bgeflow.core.storage import StorageError, redact

#: Verbs in pipeline order; any other verb module is listed after them.
PIPELINE_ORDER = ("ingest", "mine", "train", "evaluate", "publish", "run")

log = logging.getLogger("bgeflow")


def _verb_modules() -> list[str]:
    found = {m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")}
    return [v for v in PIPELINE_ORDER if v in found] + sorted(found - set(PIPELINE_ORDER))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgeflow",
        description="Fine-tune BGE retrievers and rerankers: ingest → mine → train → evaluate → publish.",
    )
    parser.add_argument("--version", action="version", version=f"bgeflow {__version__}")
    parser.add_argument(
        "--s3-endpoint-url",
        default=None,
        help="S3-compatible endpoint (MinIO, Ceph, ...); default: $AWS_ENDPOINT_URL, else AWS.",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    subparsers = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in _verb_modules():
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line as every verb sees it.

    ``bgeflow train`` and ``bgeflow launch`` hand what they do not declare (``runner_flags``) to
    FlagEmbedding's own argument parser; every other verb refuses it here.
    """
    from bgeflow.cli.train import kind_help

    argv = list(sys.argv[1:] if argv is None else argv)
    narrowed = kind_help(argv)  # `bgeflow train retriever --help`: that kind's settings only
    if narrowed is not None:
        print(narrowed, end="")
        raise SystemExit(0)
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "accepts_runner_flags", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.runner_flags = unknown
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; the exit code says how it ended (``bgeflow.core.errors``)."""
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
    except KeyboardInterrupt:
        print(f"bgeflow {args.verb}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
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
        # Not an outcome bgeflow expects: a bug here or in a library. The traceback says where.
        print(redact(traceback.format_exc()), file=sys.stderr, end="")
        print(f"bgeflow {args.verb}: internal error (a bug; please report it with the traceback above)",
              file=sys.stderr)
        return EXIT_FAILED


def add_seed_alias(parser: argparse.ArgumentParser, *names: str, **kwargs: object) -> None:
    """Add an option under its bgeflow spelling plus FlagEmbedding's (``--a-b`` and ``--a_b``)."""
    spellings: list[str] = []
    for name in names:
        for spelling in (name, "--" + name.removeprefix("--").replace("-", "_")):
            if spelling not in spellings:
                spellings.append(spelling)
    parser.add_argument(*spellings, **kwargs)  # type: ignore[arg-type]
