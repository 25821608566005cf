"""``bgeflow mine``: add hard negatives to training JSONL (replaces FlagEmbedding's ``hn_mine``).

FlagEmbedding's README command runs with only the entry point changed: every ``hn_mine`` flag is accepted
under its own spelling (``--range_for_sampling``, ``--use_gpu_for_searching``, ...).
"""

from __future__ import annotations

import argparse
import json

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.mining import MineSpec

    p = subparsers.add_parser(
        "mine",
        help="mine hard negatives with a retriever and faiss",
        description="Search a candidate pool with each query and take --negative-number negatives from a rank "
        "window of the hits; positives and the query never become negatives, short lists are filled with "
        "random pool texts. Writes the mined JSONL (every input field kept, neg replaced) and, beside it, "
        "mine_report.json and score_histogram.png (search scores: positives vs mined negatives and what each "
        "filter removed; see the README), each prefixed with the output's stem when it is not mined.jsonl "
        "(a_minedHN.jsonl: a_minedHN.mine_report.json).",
        allow_abbrev=False,
    )
    add_config_options(p)
    add_spec_options(p, MineSpec, group_titles={"teacher": "teacher scores (optional)"})
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.mining import MineSpec, mine

    result = mine(spec_from_args(MineSpec, args, where=""))
    report = result.report
    print(json.dumps({
        "output": result.output, "report": result.report_uri, "rows": report["rows"], "pool_size": report["pool_size"],
        "negatives_per_row": report["negatives_per_row"], "rows_short_of_negatives": report["rows_short_of_negatives"],
        "filtered": report["filtered"], "scores": report["scores"], "search": report["search"]["method"],
        "pooling": report["encoding"]["pooling"],
    }, ensure_ascii=False, indent=2))
    return 0
