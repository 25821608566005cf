"""``bgeflow compare A B``: two evaluations, metric by metric and query by query (``steps.evaluation.compare``)."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare two evaluations: every metric, and per query which got better or worse",
        description="Read two `bgeflow evaluate` outputs (metrics.json and runs/<column>.trec), score every query "
        "of one column with one metric in both, and print one JSON document: the metric table (B - A), how many "
        "queries got better, worse or stayed the same, and the largest changes with their query texts.",
        allow_abbrev=False,
    )
    p.add_argument("a", metavar="A", help="the first evaluation's output (a directory or s3:// prefix)")
    p.add_argument("b", metavar="B", help="the second one; deltas are B minus A")
    p.add_argument("--column", default="finetuned",
                   help="the model column to compare: base, finetuned, champion, finetuned_reranker, ... "
                   "(default: %(default)s)")
    p.add_argument("--metric", default="ndcg@10", help="the per-query metric (default: %(default)s)")
    p.add_argument("--top", type=int, default=10, help="how many most improved and degraded queries (default: 10)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.evaluation.compare import compare

    print(json.dumps(compare(args.a, args.b, column=args.column, metric=args.metric, top=args.top),
                     ensure_ascii=False, indent=2))
    return 0
