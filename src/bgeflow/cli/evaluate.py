"""``bgeflow evaluate``: base vs fine-tuned (vs champion) retrieval and reranking metrics, and the gate."""

from __future__ import annotations

import argparse
import json
import sys

from bgeflow.cli._settings import add_config_option, apply_config_file
from bgeflow.core.storage.s3 import check_reachable as check_s3_reachable

EXIT_GATE_FAILED = 3

_EPILOG = """\
metrics (means over queries; exact definitions in bgeflow.steps.evaluation.metrics):
  ndcg@10 (linear gains), mrr@10, recall@1, recall@10, recall@100, map@100 (denominator
  min(|relevant|, 100)); rerank.<metric>: the same on the reranked top --rerank-top-k.

quality gate (--gate), a ',' or ';' separated list of rules:
  rule      := METRIC OP REFERENCE
  METRIC    := [rerank.]NAME@K         NAME: ndcg | mrr | recall | map
  OP        := >= | > | <= | <
  REFERENCE := NUMBER | base[+|-NUMBER] | champion[+|-NUMBER]
  The left side is the fine-tuned model's value; base/champion are those models' values of the
  same metric. A rule against champion passes when no champion is published (the reason says
  so). Example: --gate "ndcg@10>=base+0.01; recall@100>=champion-0.005; rerank.ndcg@10>base"
  The verdict and the reason of every rule go into metrics.json under "gate".

exit status: 0 whatever the verdict, unless --fail-on-gate (then 3 when the gate fails);
  2 for bad input (options, config, data), 1 for other failures.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="metrics of base vs fine-tuned (vs champion) models, and the quality gate",
        description="Encode the eval corpus and queries with each retriever (the encoder mining uses), search "
        "with faiss, rerank the fine-tuned retriever's top candidates with each reranker, and write "
        "metrics.json, report.md and deltas.png under --output.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(p)
    data = p.add_argument_group("eval set")
    data.add_argument("--eval-data", metavar="URI",
                      help="directory/prefix with corpus.jsonl and queries.jsonl (ingest's eval/)")
    data.add_argument("--corpus", metavar="URI", help='corpus JSONL {"id", "text"} (instead of --eval-data)')
    data.add_argument("--queries", metavar="URI",
                      help='queries JSONL {"id", "text", "relevant": {doc_id: grade}} (instead of --eval-data)')
    data.add_argument("--qrels", metavar="URI",
                      help="judgements: BEIR TSV query_id<TAB>doc_id<TAB>grade or JSONL; replace the queries' own")
    models = p.add_argument_group("models (a path, s3:// URI, training output, hub name, bundled:minilm or registry ref)")
    models.add_argument("--retriever", metavar="MODEL", help="the fine-tuned retriever (required)")
    models.add_argument("--base-retriever", metavar="MODEL", help="the retriever it was fine-tuned from")
    models.add_argument("--reranker", metavar="MODEL", help="the fine-tuned reranker")
    models.add_argument("--base-reranker", metavar="MODEL", help="the reranker it was fine-tuned from")
    models.add_argument("--champion", metavar="REF",
                        help="the published champion retriever: <registry>/<name>[@version] (or a model dir)")
    models.add_argument("--champion-reranker", metavar="REF", help="the published champion reranker")
    models.add_argument("--registry", metavar="URI", help="with --name / --reranker-name: where champions are looked up")
    models.add_argument("--name", metavar="NAME", help="registry name of the retriever (champion = <registry>/<name>)")
    models.add_argument("--reranker-name", metavar="NAME", help="registry name of the reranker")
    enc = p.add_argument_group("encoding")
    enc.add_argument("--query-instruction", default="", metavar="TEXT",
                     help="prepended to queries without their own 'prompt' (BGE v1.5 English: 'Represent this "
                     "sentence for searching relevant passages: ')")
    enc.add_argument("--pooling", choices=("auto", "cls", "mean"), default="auto",
                     help="auto (default): the model's sentence-transformers pooling config, else cls")
    enc.add_argument("--query-max-len", type=int, default=64, help="query token limit (default 64)")
    enc.add_argument("--passage-max-len", type=int, default=256, help="passage token limit (default 256)")
    enc.add_argument("--rerank-max-len", type=int, default=512, help="reranker pair token limit (default 512)")
    enc.add_argument("--rerank-top-k", type=int, default=100, help="candidates reranked per query (default 100)")
    enc.add_argument("--batch-size", type=int, default=64, help="encoding batch size (default 64)")
    enc.add_argument("--rerank-batch-size", type=int, default=32, help="reranker batch size (default 32)")
    enc.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    enc.add_argument("--use-gpu", action="store_true", help="search with a faiss GPU index")
    p.add_argument("--output", metavar="URI", help="where metrics.json, report.md and deltas.png go (required)")
    p.add_argument("--gate", default="", metavar="RULES", help="quality gate rules (grammar below)")
    p.add_argument("--fail-on-gate", action="store_true", help=f"exit {EXIT_GATE_FAILED} when the gate fails")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.evaluation import EvalConfig, evaluate

    apply_config_file(args._parser, args)
    config = EvalConfig(
        output=args.output, retriever=args.retriever, base_retriever=args.base_retriever,
        eval_data=args.eval_data, corpus=args.corpus, queries=args.queries, qrels=args.qrels,
        reranker=args.reranker, base_reranker=args.base_reranker, champion=args.champion,
        champion_reranker=args.champion_reranker, registry=args.registry, name=args.name,
        reranker_name=args.reranker_name, gate=args.gate, query_instruction=args.query_instruction,
        pooling=args.pooling, query_max_len=args.query_max_len, passage_max_len=args.passage_max_len,
        rerank_max_len=args.rerank_max_len, rerank_top_k=args.rerank_top_k, batch_size=args.batch_size,
        rerank_batch_size=args.rerank_batch_size, device=args.device, use_gpu=args.use_gpu,
    )
    check_s3_reachable([config.output, config.eval_data, config.corpus, config.queries, config.qrels,
                        config.retriever, config.base_retriever, config.reranker, config.base_reranker,
                        config.champion, config.champion_reranker])
    result = evaluate(config)
    print(json.dumps({"gate": result.metrics["gate"], "metrics": result.metrics["metrics"],
                      "outputs": result.outputs}, ensure_ascii=False, indent=2))
    if not result.gate_passed:
        failed = [r["reason"] for r in result.metrics["gate"]["rules"] if not r["passed"]]
        print(f"bgeflow evaluate: quality gate failed: {'; '.join(failed)}", file=sys.stderr)
        if args.fail_on_gate:
            return EXIT_GATE_FAILED
    return 0
