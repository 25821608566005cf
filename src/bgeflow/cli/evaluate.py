"""``bgeflow evaluate``: base vs fine-tuned (vs champion) retrieval and reranking metrics, and the gate."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args
from bgeflow.core.errors import EXIT_GATE_FAILED

_EPILOG = """\
metrics (means over queries; exact definitions in bgeflow.steps.evaluation.metrics):
  ndcg@10 (linear gains), mrr@10, recall@1, recall@10, recall@100, map@100 (denominator
  min(|relevant|, 100)); rerank.<metric>: the same on the reranked top --rerank-top-k.

quality gate (--gate), a ',' or ';' separated list of rules:
{grammar}
  The left side is the fine-tuned model's value; base/champion are those models' values of the
  same metric; retriever (rerank.<metric> only) is the fine-tuned retriever's own order of the
  candidates the reranker reorders. A rule against champion passes when no champion is published
  (the reason says so). Example:
  --gate "ndcg@10>=base+0.01; recall@100>=champion-0.005; rerank.ndcg@10>=retriever"
  The verdict and the reason of every rule go into metrics.json under "gate".

exit status: 0 whatever the verdict, unless --fail-on-gate (then 3 when the gate fails);
  2 for bad input (options, config, data), 1 for other failures.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.evaluation import EvaluateSpec
    from bgeflow.steps.evaluation.gate import GRAMMAR

    p = subparsers.add_parser(
        "evaluate",
        help="metrics of base vs fine-tuned (vs champion) models, and the quality gate",
        description="Encode the eval corpus and queries with each retriever (the encoder mining uses), search "
        "with faiss, rerank the fine-tuned retriever's top candidates with each reranker, and write "
        "metrics.json, report.md and deltas.png under --output. --ingest-split scores a second eval set the "
        "same way, into --output's ingest-split/, reported and never gated.",
        epilog=_EPILOG.format(grammar=textwrap.indent(GRAMMAR, "  ")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    add_config_options(p)
    add_spec_options(p, EvaluateSpec)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.core.storage.s3 import check_reachable
    from bgeflow.steps.evaluation import EvaluateSpec, evaluate

    spec = spec_from_args(EvaluateSpec, args, where="")
    check_reachable([spec.output, spec.eval_data, spec.corpus, spec.queries, spec.qrels, spec.retriever,
                     spec.base_retriever, spec.reranker, spec.base_reranker, spec.champion_ref,
                     spec.champion_reranker_ref])
    result = evaluate(spec)
    print(json.dumps({"gate": result.metrics["gate"], "metrics": result.metrics["metrics"],
                      "outputs": result.outputs}, ensure_ascii=False, indent=2))
    if not result.gate_passed:
        failed = [r["reason"] for r in result.metrics["gate"]["rules"] if not r["passed"]]
        print(f"bgeflow evaluate: quality gate failed: {'; '.join(failed)}", file=sys.stderr)
        if spec.fail_on_gate:
            return EXIT_GATE_FAILED
    return 0
