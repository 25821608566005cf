"""``bgeflow ingest``: validate, dedupe and split raw training JSONL."""

from __future__ import annotations

import argparse
import json
import sys

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.ingest import IngestSpec

    p = subparsers.add_parser(
        "ingest",
        help="validate, dedupe and split raw JSONL into train.jsonl + an eval set",
        description="Read every line of the inputs, report every problem with file:line, merge duplicate "
        "queries, split train/eval by query, and write train.jsonl, eval/, report.json and report.md.",
        allow_abbrev=False,
    )
    add_config_options(p)
    add_spec_options(p, IngestSpec)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.ingest import IngestFailed, IngestSpec, ingest

    spec = spec_from_args(IngestSpec, args, where="")
    try:
        result = ingest(spec)
    except IngestFailed as exc:
        for problem in exc.problems:  # in file then line order, as every reader's DataError writes one
            print(f"  {problem}", file=sys.stderr)
        for rule, info in exc.report["failures"].items():
            if info.get("more"):
                print(f"  +{info['more']} more ({rule})", file=sys.stderr)
        raise
    print(json.dumps({"status": result.report["status"], "counts": result.report["counts"],
                      "outputs": result.outputs}, ensure_ascii=False, indent=2))
    return 0
