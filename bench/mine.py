"""Hard-negative mining speed, as a ratio to FlagEmbedding's ``hn_mine`` shape, in one process.

Same data (src/bgeflow/examples/train.jsonl.gz), same model (bundled MiniLM, mean pooling), same
max lengths and batch size for both:

- baseline: the straightforward script FlagEmbedding shipped: pool = set of all pos+neg texts,
  every query encoded (duplicates too), batches in input order, ``torch.no_grad``, one in-memory
  array, ``faiss.IndexFlatIP``, search in batches of 64, then the rank-window sampling;
- bgeflow: ``bgeflow.steps.mining.mine`` end to end (reading, encoding to the chunked memmap, search,
  selection, writing the output and the report), in a fresh work dir;
- bgeflow, rerun with ``--max-memory 256KB``: the same job resumed from its finished chunks and
  searched out of core (exact, shard by shard), to show the resumable and bounded-memory path.

"Equal output quality" is checked, not assumed: the pool vectors of both paths must agree to
1e-4, every mined (non-fill) negative must sit inside the baseline's own rank window for its
query, and the mean baseline-model score of the chosen negatives must match within 0.02.

Last, the search's memory bound: a synthetic 200k x 384 pool (293 MB on disk) searched in fresh
processes with no budget and with a 32 MiB budget; peak RSS of the sharded search stays at the
budget, not the pool.

Prints ``wall_time_ratio_vs_baseline: R`` (bgeflow seconds / baseline seconds; goal <= 0.5),
passages/s encoded, queries/s searched and peak RSS of each run.
Usage: ``python bench/mine.py [--rows 300] [--passage-max-len 256]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "bgeflow" / "examples" / "train.jsonl.gz"


def _rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@contextmanager
def peak_rss(out: dict[str, float]) -> Any:
    """Sample this process's resident memory every 20 ms; ``out['peak_mb']`` is the maximum seen."""
    stop = threading.Event()
    peak = [_rss_bytes()]

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_bytes())

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        out["wall_s"] = time.perf_counter() - start
        stop.set()
        thread.join()
        out["peak_mb"] = max(peak[0], _rss_bytes()) / 2**20


def load_rows(limit: int | None) -> list[dict[str, Any]]:
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return rows[:limit] if limit else rows


def baseline(rows: list[dict[str, Any]], model_path: str, args: argparse.Namespace) -> dict[str, Any]:
    """FlagEmbedding's hn_mine, reduced to its shape (the model code is transformers' in both runs)."""
    import faiss
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModel.from_pretrained(model_path).eval()

    def encode(texts: list[str], max_len: int) -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), args.batch_size):
                batch = tokenizer(texts[start : start + args.batch_size], padding=True, truncation=True,
                                  max_length=max_len, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(vectors, dim=-1).numpy())
        return np.concatenate(out).astype(np.float32)

    timings: dict[str, float] = {}
    corpus = list(dict.fromkeys(t for r in rows for t in (*r["pos"], *r.get("neg", []))))
    t = time.perf_counter()
    p_vecs = encode(corpus, args.passage_max_len)
    timings["encode_pool_s"] = time.perf_counter() - t
    t = time.perf_counter()
    q_vecs = encode([r["query"] for r in rows], args.query_max_len)
    timings["encode_queries_s"] = time.perf_counter() - t
    t = time.perf_counter()
    index = faiss.IndexFlatIP(p_vecs.shape[1])
    index.add(p_vecs)
    all_ids, all_scores = [], []
    for start in range(0, len(q_vecs), 64):
        scores, ids = index.search(q_vecs[start : start + 64], args.end)
        all_ids.append(ids)
        all_scores.append(scores)
    ids = np.concatenate(all_ids)
    timings["search_s"] = time.perf_counter() - t
    rng = random.Random(args.seed)
    mined = []
    for i, row in enumerate(rows):
        window = [j for j in ids[i][args.start : args.end] if j >= 0 and corpus[j] not in row["pos"]
                  and corpus[j] != row["query"]]
        if len(window) > args.negative_number:
            window = rng.sample(window, args.negative_number)
        neg = [corpus[j] for j in window]
        if len(neg) < args.negative_number:
            fill = rng.sample(corpus, args.negative_number - len(neg) + len(row["pos"]))
            neg += [t for t in fill if t not in row["pos"]][: args.negative_number - len(neg)]
        mined.append({**row, "neg": neg})
    return {"corpus": corpus, "p_vecs": p_vecs, "q_vecs": q_vecs, "ids": ids, "mined": mined, "timings": timings}


def bgeflow_run(rows_path: Path, out: Path, work: Path, model_path: str, args: argparse.Namespace,
                max_memory: str | None = None) -> Any:
    from bgeflow.steps.mining import MineSpec, mine

    return mine(MineSpec.of(
        model=model_path, inputs=[str(rows_path)], output=str(out), work_dir=str(work), pooling="mean",
        range_for_sampling=f"{args.start}-{args.end}", negative_number=args.negative_number, seed=args.seed,
        query_max_len=args.query_max_len, passage_max_len=args.passage_max_len, batch_size=args.batch_size,
        max_memory=max_memory, chunk_size=args.chunk_size,
    ))


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent across exec.
_SEARCH_CHILD = """
import sys, numpy as np
from bgeflow.retrieval.search import search
def status(key): return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) // 1024
path, n, dim, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
passages = np.memmap(path, dtype=np.float32, mode="r", shape=(n, dim))
queries = np.ascontiguousarray(np.asarray(passages[:256]) + 0.01)
import faiss
before = status("VmRSS:")
result = search(queries, passages, 200, max_memory_bytes=None if budget == "none" else int(budget))
print(result.method, before, status("VmHWM:"))
"""


def search_memory(tmp_path: Path, rows: int, dim: int = 384) -> None:
    """Peak RSS of searching a large encodings file, flat vs a 32 MB budget, each in a fresh process."""
    import subprocess
    import sys

    import numpy as np

    path = tmp_path / "big.float32"
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        for start in range(0, rows, 50_000):
            block = rng.standard_normal((min(50_000, rows - start), dim), dtype=np.float32)
            fh.write((block / np.linalg.norm(block, axis=1, keepdims=True)).tobytes())
    size_mb = rows * dim * 4 / 2**20
    for budget in ("none", str(32 * 2**20)):
        out = subprocess.run([sys.executable, "-c", _SEARCH_CHILD, str(path), str(rows), str(dim), budget],
                             capture_output=True, text=True, check=True).stdout.split()
        label = "no budget" if budget == "none" else "--max-memory 32MiB"
        print(f"search memory: pool {rows} x {dim} float32 ({size_mb:.0f} MB on disk), {label:<18} -> "
              f"{out[0]:<13} peak RSS {int(out[2])} MB (RSS before the search: {int(out[1])} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300,
                        help="use the first N records (default 300, a few minutes on 2 shared cores; 0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--query-max-len", type=int, default=64)
    parser.add_argument("--passage-max-len", type=int, default=256)
    parser.add_argument("--start", type=int, default=2)
    parser.add_argument("--end", type=int, default=200)
    parser.add_argument("--negative-number", type=int, default=15)
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--search-memory-rows", type=int, default=200_000,
                        help="rows of the synthetic pool for the search-memory check (0: skip)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from bgeflow.core.log import setup_logging
    from bgeflow.core.models import resolve_model

    setup_logging("WARNING")
    model_path = resolve_model("bundled:minilm")
    rows = load_rows(args.rows)
    print(f"data: {len(rows)} records from {DATA.name}; model bundled:minilm; torch threads {torch.get_num_threads()}")

    with tempfile.TemporaryDirectory(prefix="bench-mine-") as tmp:
        tmp_path = Path(tmp)
        rows_path = tmp_path / "train.jsonl"
        rows_path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")

        base_stats: dict[str, float] = {}
        with peak_rss(base_stats):
            base = baseline(rows, model_path, args)
        ours_stats: dict[str, float] = {}
        with peak_rss(ours_stats):
            result = bgeflow_run(rows_path, tmp_path / "mined.jsonl", tmp_path / "work", model_path, args)
        rerun_stats: dict[str, float] = {}
        with peak_rss(rerun_stats):
            rerun = bgeflow_run(rows_path, tmp_path / "mined-ooc.jsonl", tmp_path / "work", model_path, args,
                                max_memory="256KB")

        report = result.report
        pool = report["pool_size"]
        queries = report["unique_queries"]
        bt, ot, rt = base["timings"], report["timings"], rerun.report["timings"]

        # Quality: same vectors, negatives from the baseline's own rank window, same score level.
        ours_vecs = np.fromfile(tmp_path / "work" / "pool.float32", dtype=np.float32).reshape(pool, -1)
        assert pool == len(base["corpus"]), "pool sizes differ"
        vec_diff = float(np.abs(ours_vecs - base["p_vecs"]).max())
        position = {text: j for j, text in enumerate(base["corpus"])}
        mined = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text(encoding="utf-8").splitlines()]
        in_window = total_mined = 0
        ours_scores, base_scores = [], []
        for i, (row, base_row) in enumerate(zip(mined, base["mined"], strict=True)):
            window = {int(j) for j in base["ids"][i][args.start : args.end]}
            for text in row["neg"]:
                j = position[text]
                total_mined += 1
                in_window += j in window
                ours_scores.append(float(base["q_vecs"][i] @ base["p_vecs"][j]))
            base_scores += [float(base["q_vecs"][i] @ base["p_vecs"][position[t]]) for t in base_row["neg"]]
        ooc_same = (tmp_path / "mined-ooc.jsonl").read_text() == (tmp_path / "mined.jsonl").read_text()
        filled = report["random_fill_negatives"]

        def line(name: str, stats: dict[str, float], t: dict[str, float]) -> None:
            print(f"{name:<22} wall {stats['wall_s']:7.2f}s  encode pool {t['encode_pool_s']:6.2f}s "
                  f"({pool / max(t['encode_pool_s'], 1e-9):7.1f} passages/s)  queries {t['encode_queries_s']:6.2f}s  "
                  f"search {t['search_s']:6.3f}s ({queries / max(t['search_s'], 1e-9):9.0f} queries/s)  "
                  f"peak RSS {stats['peak_mb']:7.1f} MB")

        print(f"pool: {pool} unique passages, {queries} unique queries of {len(rows)} rows; "
              f"window {args.start}-{args.end}, {args.negative_number} negatives per row")
        line("baseline (hn_mine)", base_stats, bt)
        line("bgeflow mine", ours_stats, ot)
        line("bgeflow rerun, 256KB", rerun_stats, rt)
        print(f"rerun search method: {rerun.report['search']['method']} "
              f"(recall {rerun.report['search']['recall_estimate']}), output identical to in-memory run: {ooc_same}")
        print(f"quality: max |vector diff| {vec_diff:.2e}; mined negatives inside the baseline's rank window "
              f"{in_window}/{total_mined - filled} (+{filled} random fill); mean negative score "
              f"bgeflow {np.mean(ours_scores):.4f} vs baseline {np.mean(base_scores):.4f}")
        ratio = ours_stats["wall_s"] / base_stats["wall_s"]
        print(f"wall_time_ratio_vs_baseline: {ratio:.2f}")
        ok = vec_diff < 1e-4 and in_window == total_mined - filled and abs(np.mean(ours_scores) - np.mean(base_scores)) < 0.02
        print(f"equal_output_quality: {ok}")
        if args.search_memory_rows:
            search_memory(tmp_path, args.search_memory_rows)


if __name__ == "__main__":
    main()
