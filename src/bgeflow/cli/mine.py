"""``bgeflow mine``: add hard negatives to training JSONL (replaces FlagEmbedding's ``hn_mine``).

The seed's command runs with only the entry point changed: every ``hn_mine`` flag is accepted
under its own spelling (``--range_for_sampling``, ``--use_gpu_for_searching``, ...).
"""

from __future__ import annotations

import argparse
import json

from bgeflow.cli import add_seed_alias

_RANKS_HELP = (
    "rank window A-B to sample negatives from (default 2-200). Ranks are 0-based positions in the "
    "query's search hits, best first, counting every hit: A <= rank < B, i.e. hits[A:B] as in "
    "FlagEmbedding's hn_mine; 2-200 skips the two best hits and samples among the next 198. The "
    "query's positives and its own text are then removed"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "mine",
        help="mine hard negatives with a retriever and faiss",
        description="Search a candidate pool with each query and take --negative-number negatives from a rank "
        "window of the hits; positives and the query never become negatives, short lists are filled with "
        "random pool texts. Writes the mined JSONL (every input field kept, neg replaced) and "
        "mine_report.json beside it.",
    )
    add_seed_alias(p, "--model", "--model-name-or-path", required=True, metavar="MODEL",
                   help="retriever: a Hugging Face name or path (e.g. BAAI/bge-base-en-v1.5), or bundled:minilm")
    add_seed_alias(p, "--input", "--input-file", dest="inputs", action="append", required=True, metavar="URI",
                   help="training JSONL: a file or a prefix/directory (s3:// or local); repeatable")
    add_seed_alias(p, "--output", "--output-file", dest="output", required=True, metavar="URI",
                   help="the mined JSONL to write (s3://…/mined.jsonl or a local path); mine_report.json goes beside it")
    add_seed_alias(p, "--range-for-sampling", default="2-200", metavar="A-B", help=_RANKS_HELP)
    add_seed_alias(p, "--negative-number", type=int, default=15, help="negatives per record (default 15)")
    add_seed_alias(p, "--candidate-pool", dest="candidate_pool", action="append", default=None, metavar="URI",
                   help="corpus JSONL with a 'text' field per line to mine from (repeatable); default: every pos "
                   "and neg text of the input")
    add_seed_alias(p, "--use-gpu", "--use-gpu-for-searching", dest="use_gpu", action="store_true",
                   help="search with a faiss GPU index (needs faiss-gpu and a CUDA GPU; a clear error otherwise)")
    add_seed_alias(p, "--query-instruction", "--query-instruction-for-retrieval", dest="query_instruction",
                   default="", metavar="TEXT",
                   help="prepended to every query before encoding (BGE v1.5 English: 'Represent this sentence "
                   "for searching relevant passages: '); default none")
    add_seed_alias(p, "--pooling", choices=("cls", "mean"), default="cls",
                   help="cls for BGE models (default), mean for sentence-transformers models such as MiniLM")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                   help="L2-normalise embeddings, so scores are cosine similarities (default on)")
    add_seed_alias(p, "--batch-size", type=int, default=64, help="encoding batch size (default 64)")
    add_seed_alias(p, "--query-max-len", type=int, default=64, help="query token limit (default 64)")
    add_seed_alias(p, "--passage-max-len", type=int, default=256, help="passage token limit (default 256)")
    p.add_argument("--seed", type=int, default=42, help="seed of the negative sampling (default 42): same seed, same output")

    f = p.add_argument_group(
        "positive-aware filtering (off by default)",
        "Drop likely false negatives from the window before sampling. The reference is the query's lowest "
        "query-positive score. The report counts the candidates each rule removed.",
    )
    add_seed_alias(f, "--max-score-ratio", type=float, default=None, metavar="R",
                   help="drop candidates scoring above R x the query-positive score (NV-Retriever TopK-PercPos: 0.95)")
    add_seed_alias(f, "--max-score", type=float, default=None, help="drop candidates scoring above this")
    add_seed_alias(f, "--min-score", type=float, default=None, help="drop candidates scoring below this")

    t = p.add_argument_group("teacher scores (optional)")
    add_seed_alias(t, "--teacher-reranker", default=None, metavar="MODEL",
                   help="cross-encoder (e.g. BAAI/bge-reranker-base) that scores the final pos/neg into "
                   "pos_scores/neg_scores for FlagEmbedding's distillation")
    add_seed_alias(t, "--teacher-max-len", type=int, default=512, help="teacher's pair token limit (default 512)")
    add_seed_alias(t, "--teacher-batch-size", type=int, default=32, help="teacher batch size (default 32)")

    s = p.add_argument_group("scale")
    add_seed_alias(s, "--max-memory", default=None, metavar="SIZE",
                   help="memory budget for the search index, e.g. 512MB or 2GiB; a larger pool is searched "
                   "exactly in shards (default: no limit, one flat index)")
    add_seed_alias(s, "--work-dir", default=None, metavar="DIR",
                   help="where pool texts and encodings (resumable chunks) live; default: a directory under the "
                   "system temp keyed by model and pool, removed after success (a failed run's rerun resumes from it); an "
                   "explicit dir is kept, so reruns with other windows or filters skip encoding")
    add_seed_alias(s, "--embedding-dtype", choices=("float32", "float16"), default="float32",
                   help="on-disk type of the pool encodings (float16 halves disk and I/O)")
    add_seed_alias(s, "--chunk-size", type=int, default=8192, help="passages per resumable encoding chunk")
    add_seed_alias(s, "--query-batch-size", type=int, default=4096, help="queries per faiss search call")
    p.add_argument("--device", default=None, help="torch device for encoding (default: cuda if available, else cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.mining import MineConfig, mine

    config = MineConfig(
        model=args.model, inputs=args.inputs, output=args.output, range_for_sampling=args.range_for_sampling,
        negative_number=args.negative_number, candidate_pool=args.candidate_pool, use_gpu=args.use_gpu,
        query_instruction=args.query_instruction, pooling=args.pooling, normalize=args.normalize,
        batch_size=args.batch_size, query_max_len=args.query_max_len, passage_max_len=args.passage_max_len,
        seed=args.seed, max_score_ratio=args.max_score_ratio, max_score=args.max_score, min_score=args.min_score,
        teacher_reranker=args.teacher_reranker, teacher_max_len=args.teacher_max_len,
        teacher_batch_size=args.teacher_batch_size, max_memory=args.max_memory, work_dir=args.work_dir,
        embedding_dtype=args.embedding_dtype, chunk_size=args.chunk_size, query_batch_size=args.query_batch_size,
        device=args.device,
    )
    result = mine(config)
    report = result.report
    print(json.dumps({
        "output": result.output, "report": result.report_uri, "rows": report["rows"], "pool_size": report["pool_size"],
        "negatives_per_row": report["negatives_per_row"], "rows_short_of_negatives": report["rows_short_of_negatives"],
        "filtered": report["filtered"], "scores": report["scores"], "search": report["search"]["method"],
    }, ensure_ascii=False, indent=2))
    return 0
