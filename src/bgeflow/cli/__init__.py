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
from collections.abc import Sequence

from bgeflow import __version__
from bgeflow.core.log import setup_logging

#: Verbs in pipeline order; any other verb module is listed after them.
PIPELINE_ORDER = ("ingest", "mine", "train", "evaluate", "publish", "run")
EXIT_BAD_INPUT = 2

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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.s3_endpoint_url:
        # Exported, not passed around: training subprocesses and boto3 itself read it.
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint_url
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"bgeflow {args.verb}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, TimeoutError) as exc:
        # One line naming the problem; the traceback only when asked for.
        log.debug("traceback", exc_info=True)
        print(f"bgeflow {args.verb}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, ValueError | FileNotFoundError) else 1


def add_seed_alias(parser: argparse.ArgumentParser, *names: str, **kwargs: object) -> None:
    """Add an option under its bgeflow spelling plus FlagEmbedding's (``--a-b`` and ``--a_b``)."""
    spellings: list[str] = []
    for name in names:
        for spelling in (name, "--" + name.removeprefix("--").replace("-", "_")):
            if spelling not in spellings:
                spellings.append(spelling)
    parser.add_argument(*spellings, **kwargs)  # type: ignore[arg-type]
