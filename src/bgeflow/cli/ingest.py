"""``bgeflow ingest``: validate, dedupe and split raw training JSONL."""

from __future__ import annotations

import argparse
import json
import sys

from bgeflow.core.storage import DEFAULT_WORKERS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "ingest",
        help="validate, dedupe and split raw JSONL into train.jsonl + an eval set",
        description="Read every line of the inputs, report every problem with file:line, merge duplicate "
        "queries, split train/eval by query, and write train.jsonl, eval/, report.json and report.md.",
    )
    p.add_argument("--input", dest="inputs", action="append", required=True, metavar="URI",
                   help="a .jsonl/.jsonl.gz file or a prefix/directory of them (s3:// or local); repeatable")
    p.add_argument("--output", required=True, metavar="URI", help="where the outputs go (s3:// or local)")
    p.add_argument("--eval-fraction", type=float, default=0.05, help="share of queries held out (default 0.05)")
    p.add_argument("--seed", type=int, default=42, help="seed of the deterministic split (default 42)")
    p.add_argument("--min-negatives", type=int, default=0,
                   help="records with fewer negatives break a rule (default 0; FlagEmbedding training needs >=1: "
                   "run `bgeflow mine` to add them)")
    p.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: any bad line fails the run, nothing is written; skip: bad lines are dropped and counted")
    p.add_argument("--tokenizer", default=None, metavar="MODEL",
                   help="count lengths with this model's tokenizer (default: a word-based estimate)")
    p.add_argument("--query-max-len", type=int, default=64, help="query token limit for the truncation report")
    p.add_argument("--passage-max-len", type=int, default=256, help="passage token limit for the truncation report")
    p.add_argument("--eval-distractors", type=int, default=10_000,
                   help="training passages added to the eval corpus as distractors (default 10000)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="objects read concurrently")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.ingest import IngestConfig, IngestFailed, ingest

    config = IngestConfig(
        inputs=args.inputs, output=args.output, eval_fraction=args.eval_fraction, seed=args.seed,
        min_negatives=args.min_negatives, on_error=args.on_error, tokenizer=args.tokenizer,
        query_max_len=args.query_max_len, passage_max_len=args.passage_max_len,
        eval_distractors=args.eval_distractors, workers=args.workers,
    )
    try:
        result = ingest(config)
    except IngestFailed as exc:
        for info in exc.report["failures"].values():
            for example in info["examples"]:
                print(f"  {example['where']} [{example['field']}] {example['message']} ({example['rule']})",
                      file=sys.stderr)
        print(f"bgeflow ingest: data failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"status": result.report["status"], "counts": result.report["counts"],
                      "outputs": result.outputs}, ensure_ascii=False, indent=2))
    return 0
