"""``bgeflow run``: the whole retrain on this machine, through the same pipeline the cluster runs.

ingest → mine → train retriever and reranker → evaluate → gate → publish, executed by kfp.local
from the compiled ``bge-finetune`` pipeline, training as local processes with the training
operator's env. Settings: the run spec (the pipeline's parameters; ``--config FILE`` or one flag
per setting, ``--<block>-<name>``), over defaults sized for a 2-core CPU (the shipped example
data, the bundled MiniLM as base of both models; with internet and a GPU you would use
BAAI/bge-base-en-v1.5 and BAAI/bge-reranker-base). A partial block in a config file merges over
those defaults. Progress is one line per step on stderr (each step's full log in the run's logs/
folder); the summary goes to stdout on a terminal, and piped, stdout is the summary as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.platform.run_spec import LocalRunSpec

    p = subparsers.add_parser(
        "run",
        help="the whole retrain here (ingest → mine → train → evaluate → gate → publish) via kfp.local",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
        allow_abbrev=False,
    )
    add_config_options(p, example="retriever.learning_rate=2e-5")
    add_spec_options(p, LocalRunSpec, defaults=LocalRunSpec.build(*_defaults()).to_dict())
    p.add_argument("--check", action="store_true", help="only validate the settings, data, models and S3; run nothing")
    p.set_defaults(func=run)


def _defaults() -> list[dict[str, Any]]:
    """``bgeflow run``'s own defaults: the example data, then the CPU profile."""
    from bgeflow.core.config_file import load_mapping
    from bgeflow.platform.run_spec import CPU_PROFILE, EXAMPLE_DATA, LocalRunSpec

    return [{"data": EXAMPLE_DATA}, LocalRunSpec.canonical(load_mapping(str(CPU_PROFILE), "run settings"),
                                                          where=str(CPU_PROFILE))]


def build_spec(args: argparse.Namespace) -> object:
    """The run's spec: the example data, the CPU profile, then files, ``--set`` and flags."""
    from bgeflow.platform.run_spec import LocalRunSpec

    return spec_from_args(LocalRunSpec, args, base=_defaults(), where="")


def run(args: argparse.Namespace) -> int:
    from bgeflow.platform import local_run

    spec = build_spec(args)
    pipeline = local_run.preflight(spec)  # type: ignore[arg-type]
    print(f"bgeflow run: checks passed; pipeline {pipeline}", file=sys.stderr)
    if args.check:
        if not sys.stdout.isatty():  # piped, stdout is one JSON document, as after a run
            print(json.dumps({"status": "ok", "checked": True, "pipeline": str(pipeline), "output": spec.output}))
        return 0
    summary = local_run.run(spec, pipeline)  # type: ignore[arg-type]
    text = local_run.format_summary(summary)
    if sys.stdout.isatty():
        print(text)
    else:
        # Piped, stdout is for programs: one JSON document (run_summary.json's, on one line); people
        # still read the summary, on stderr.
        print(text, file=sys.stderr)
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    return 0
