"""Hard-negative mining side by side: ``bgeflow mine`` vs FlagEmbedding's own ``scripts/hn_mine.py``.

The peer is FlagEmbedding's script as FlagEmbedding ships it, not a re-implementation: its text is
taken at bench time (``--hn-mine``: a URL, default the raw file at a pinned commit; a git directory
of a FlagEmbedding clone, read with ``git show``; or a file), written into a temp dir and run with
this Python (FlagEmbedding's package must be importable: the 1.4 wheel lacks the script, not the
code it calls). Both sides get the same input and the same candidate pool (every pos/neg text of
the example data, ``src/bgeflow/examples/train.jsonl.gz``), the same model (bundled
all-MiniLM-L6-v2, mean pooling, normalised), token limits, batch size, window 2-200 and 15
negatives. FlagEmbedding runs on CPU in fp32 (it calls ``model.float()`` on CPU whatever
``use_fp16`` says); bgeflow runs with its defaults (``precision auto``).

Two modes, both by default:

- concurrent: the two runs at the same time, each pinned to one core (``taskset``) with one thread,
  so whatever else loads the machine slows both (as ``bench/train.py`` does); ``--repeats`` pairs,
  the cores swapped between pairs (other work is rarely spread evenly over the cores);
- sequential: one after the other, each with every core.

Per run: wall time (the whole process: imports, model load, encode, search, write), peak RSS
(``wait4``'s ``ru_maxrss`` of the child), texts/s and tokens/s (pool + queries encoded, per wall
second; tokens after truncation), and the load average before and after. bgeflow's
``mine_report.json`` adds its own phase timings and the precision it chose.

Quality, checked after the timed runs: the reference is FlagEmbedding's own encoder in fp32 over
the pool and the queries. ``cosine``: per pool text, bgeflow's saved vector against the
reference (the goal: >= 0.999 for every text). ``score p5/p50/p95``: each side's mined
negatives scored with the reference vectors, so the distributions compare which negatives were
chosen, not the arithmetic (goal: within 0.01 at each; hn_mine samples with an unseeded
``random``, so a few thousandths of sampling noise remain).

Prints ``wall_time_ratio (bgeflow/hn_mine) <mode>: R`` per mode (goal <= 0.5; concurrent: the
median over pairs), ``cpu_time_ratio`` (user + system seconds of each process: what a loaded
machine disturbs least) and ``peak_rss_ratio``. Usage::

    python bench/mine.py [--rows 0] [--mode both|concurrent|sequential] [--hn-mine URL|GITDIR|FILE]
                         [--batch-size 64] [--query-max-len 64] [--passage-max-len 256]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "src" / "bgeflow" / "examples" / "train.jsonl.gz"
#: FlagEmbedding's master when this benchmark was written; the script's path in that repository.
HN_MINE_COMMIT = "7ed43d67ec03fbe5c31c0992dbfa941fb1860549"
HN_MINE_PATH = "scripts/hn_mine.py"
HN_MINE_URL = f"https://raw.githubusercontent.com/FlagOpen/FlagEmbedding/{HN_MINE_COMMIT}/{HN_MINE_PATH}"
GOAL_RATIO = 0.5
GOAL_COSINE = 0.999
GOAL_SCORE = 0.01


# --------------------------------------------------------------------------- inputs


def hn_mine_script(source: str, into: Path) -> tuple[Path, str]:
    """FlagEmbedding's hn_mine.py, written to ``into``; returns its path and where it came from.

    Raises:
        SystemExit: the source cannot be read.
    """
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=30) as response:
                text = response.read().decode("utf-8")
        except OSError as exc:
            raise SystemExit(f"cannot download {source} ({exc}); give --hn-mine a FlagEmbedding git dir or file") from exc
        origin = source
    elif (Path(source) / "HEAD").is_file() or (Path(source) / ".git").exists():
        git_dir = Path(source) / ".git" if (Path(source) / ".git").exists() else Path(source)
        commit = subprocess.run(["git", "--git-dir", str(git_dir), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
        text = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"HEAD:{HN_MINE_PATH}"],
                              capture_output=True, text=True, check=True).stdout
        origin = f"{git_dir} at {commit}"
    else:
        text = Path(source).read_text(encoding="utf-8")
        origin = source
    path = into / "hn_mine.py"
    path.write_text(text, encoding="utf-8")
    return path, f"{origin} (sha256 {hashlib.sha256(text.encode()).hexdigest()[:12]})"


def write_inputs(tmp: Path, rows: int) -> tuple[Path, Path, list[dict[str, Any]], list[str]]:
    """train.jsonl (the first ``rows`` records; 0: all) and pool.jsonl (their unique pos/neg texts, sorted)."""
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    records = records[:rows] if rows else records
    pool = sorted({t for r in records for t in (*r["pos"], *r.get("neg", []))})
    train, pool_path = tmp / "train.jsonl", tmp / "pool.jsonl"
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    pool_path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in pool), encoding="utf-8")
    return train, pool_path, records, pool


def commands(args: argparse.Namespace, script: Path, model: str, train: Path, pool: Path,
             out: Path) -> dict[str, list[str]]:
    """The two mining commands, same settings under each tool's own flag names."""
    lo, hi = args.range.split("-")
    return {
        "hn_mine": [sys.executable, str(script), f"--embedder_name_or_path={model}",
                    "--embedder_model_class=encoder-only-base", "--pooling_method=mean",
                    "--normalize_embeddings=True", f"--input_file={train}", f"--candidate_pool={pool}",
                    f"--output_file={out / 'hn_mine' / 'mined.jsonl'}", f"--range_for_sampling={lo}-{hi}",
                    f"--negative_number={args.negative_number}", f"--batch_size={args.batch_size}",
                    f"--embedder_query_max_length={args.query_max_len}",
                    f"--embedder_passage_max_length={args.passage_max_len}"],
        "bgeflow": [sys.executable, "-m", "bgeflow", "mine", f"--model={model}", f"--input={train}",
                    f"--candidate-pool={pool}", f"--output={out / 'bgeflow' / 'mined.jsonl'}", "--pooling=mean",
                    f"--range-for-sampling={lo}-{hi}", f"--negative-number={args.negative_number}",
                    f"--batch-size={args.batch_size}", f"--query-max-len={args.query_max_len}",
                    f"--passage-max-len={args.passage_max_len}", f"--work-dir={out / 'bgeflow' / 'work'}",
                    f"--precision={args.precision}"],
    }


# --------------------------------------------------------------------------- running


def run_one(cmd: list[str], log: Path, env: dict[str, str], core: int | None) -> dict[str, float]:
    """Run ``cmd`` to completion; wall seconds, peak RSS (MB) and the load average around it.

    Raises:
        SystemExit: the command failed (its log's tail is shown).
    """
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
        # wait4: this child's own peak RSS (the bench process imports nothing heavy before the runs,
        # so what Linux carries over from the forking parent is small).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "peak_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime,
            "load_before": load_before, "load_after": os.getloadavg()[0]}


def run_mode(mode: str, cmds: dict[str, list[str]], out: Path, swap: bool = False) -> dict[str, dict[str, float]]:
    """Both commands, concurrently on a core each with one thread (``swap``: bgeflow on core 0), or one
    after the other with all cores."""
    for name in cmds:
        shutil.rmtree(out / name, ignore_errors=True)
        (out / name).mkdir(parents=True)
    if mode == "sequential":
        env = dict(os.environ)
        return {name: run_one(cmd, out / f"{name}-{mode}.log", env, None) for name, cmd in cmds.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    results: dict[str, dict[str, float]] = {}

    def target(name: str, core: int) -> None:
        results[name] = run_one(cmds[name], out / f"{name}-{mode}.log", env, core)

    names = list(cmds)[::-1] if swap else list(cmds)
    threads = [threading.Thread(target=target, args=(name, core)) for core, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(results) != len(cmds):
        raise SystemExit(f"a {mode} run failed; see the logs above")
    return results


# --------------------------------------------------------------------------- quality


def percentiles(values: list[float]) -> list[float]:
    import numpy as np

    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), [5, 50, 95])]


def quality(args: argparse.Namespace, model: str, out: Path, records: list[dict[str, Any]],
            pool: list[str]) -> dict[str, Any]:
    """Cosine of bgeflow's pool vectors to FlagEmbedding's fp32 ones, and both sides' negative scores under the latter."""
    os.environ["TQDM_DISABLE"] = "1"  # FlagEmbedding's progress bars: noise in the bench's output
    import numpy as np
    from FlagEmbedding import FlagAutoModel
    from transformers import AutoTokenizer

    reference = FlagAutoModel.from_finetuned(model, model_class="encoder-only-base", pooling_method="mean",
                                             normalize_embeddings=True, use_fp16=False, devices="cpu",
                                             batch_size=args.batch_size, query_max_length=args.query_max_len,
                                             passage_max_length=args.passage_max_len)
    ref_pool = np.asarray(reference.encode_corpus(pool), dtype=np.float32)
    queries = list(dict.fromkeys(r["query"] for r in records))
    ref_queries = np.asarray(reference.encode_queries(queries), dtype=np.float32)
    report = json.loads((out / "bgeflow" / "mine_report.json").read_text())
    dtype = report["encoding"]["dtype"]
    # bgeflow's pool order is its pool_texts.jsonl (unique non-blank texts, first seen first).
    work = out / "bgeflow" / "work"
    ours_texts = [json.loads(line) for line in (work / "pool_texts.jsonl").read_text(encoding="utf-8").splitlines()]
    ours = np.fromfile(work / f"pool.{dtype}", dtype=dtype).reshape(len(ours_texts), -1).astype(np.float32)
    where = {t: i for i, t in enumerate(pool)}
    matched = ref_pool[[where[t] for t in ours_texts]]
    cosine = np.einsum("ij,ij->i", ours, matched) / np.linalg.norm(ours, axis=1)
    qrow = {q: i for i, q in enumerate(queries)}

    def negative_scores(path: Path) -> list[float]:
        scores = []
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            q = ref_queries[qrow[row["query"]]]
            scores += [float(q @ ref_pool[where[t]]) for t in row["neg"]]
        return scores

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokens = sum(len(ids) for ids in tokenizer(pool, truncation=True, max_length=args.passage_max_len)["input_ids"])
    tokens += sum(len(ids) for ids in tokenizer([r["query"] for r in records], truncation=True,
                                                max_length=args.query_max_len)["input_ids"])
    return {"cosine": cosine, "scores": {name: negative_scores(out / name / "mined.jsonl")
                                         for name in ("hn_mine", "bgeflow")},
            "tokens": tokens, "report": report}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="first N records of the example data (0: all 1,647)")
    parser.add_argument("--mode", choices=("both", "concurrent", "sequential"), default="both")
    parser.add_argument("--repeats", type=int, default=2, help="concurrent pairs, cores swapped between them")
    parser.add_argument("--hn-mine", default=HN_MINE_URL, help="FlagEmbedding's hn_mine.py: URL, git dir or file")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--query-max-len", type=int, default=64)
    parser.add_argument("--passage-max-len", type=int, default=256)
    parser.add_argument("--range", default="2-200")
    parser.add_argument("--negative-number", type=int, default=15)
    parser.add_argument("--precision", default="auto", help="bgeflow's --precision (auto, fp32, bf16, fp16)")
    parser.add_argument("--keep", default=None, help="keep inputs, outputs and logs in this directory")
    args = parser.parse_args()
    if args.mode != "sequential" and ((os.cpu_count() or 1) < 2 or not shutil.which("taskset")):
        parser.error("concurrent mode needs 2 cores and taskset; use --mode sequential")

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="bench-mine-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        script, origin = hn_mine_script(args.hn_mine, tmp)
        # Resolved in a child: the bench process stays free of torch until the timed runs are over.
        model = subprocess.run([sys.executable, "-c", "from bgeflow.core.models import resolve_model as r;"
                                "print(r('bundled:minilm'))"], capture_output=True, text=True, check=True).stdout.strip()
        train, pool_path, records, pool = write_inputs(tmp, args.rows)
        print(f"hn_mine: {origin}")
        print(f"data: {len(records)} records, pool {len(pool)} texts; bundled:minilm, mean pooling, query/passage "
              f"{args.query_max_len}/{args.passage_max_len} tokens, batch {args.batch_size}, window {args.range}, "
              f"{args.negative_number} negatives; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}")
        runs = [f"concurrent-{i}" for i in range(args.repeats)] if args.mode != "sequential" else []
        runs += ["sequential"] if args.mode != "concurrent" else []
        results = {}
        for i, run in enumerate(runs):
            out = tmp / "out" / run
            results[run] = run_mode(run.split("-")[0], commands(args, script, model, train, pool_path, out), out,
                                    swap=i % 2 == 1)
        # Quality on the last run's outputs (every run has the same settings).
        last = tmp / "out" / runs[-1]
        q = quality(args, model, last, records, pool)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    texts = len(pool) + len(records)
    enc = q["report"]["encoding"]
    print(f"bgeflow encoder: backend {enc['backend']}, device {enc['device']}, precision {enc['precision']} "
          f"(asked {enc['precision_requested']}), attention {enc['attention']}, batches <= {enc['batch_size']} "
          f"texts / {enc['batch_tokens']} tokens; texts encoded per run {texts}, tokens {q['tokens']}")
    ratios: dict[str, list[float]] = {}
    for run, runs in results.items():
        mode = run.split("-")[0]
        cores = ""
        if mode == "concurrent":
            cores = ", bgeflow on core 0" if int(run.split("-")[1]) % 2 else ", hn_mine on core 0"
        label = f"one core + one thread each, at once{cores}" if mode == "concurrent" else "all cores, one after the other"
        print(f"{run} ({label}):")
        for name, r in runs.items():
            print(f"  {name:<8} wall {r['wall_s']:7.1f}s  cpu {r['cpu_s']:7.1f}s  peak RSS {r['peak_mb']:7.0f} MB  "
                  f"{texts / r['wall_s']:6.1f} texts/s  {q['tokens'] / r['wall_s']:7.0f} tokens/s  "
                  f"load avg {r['load_before']:.2f} -> {r['load_after']:.2f}")
        ratios.setdefault(mode, []).append(runs["bgeflow"]["wall_s"] / runs["hn_mine"]["wall_s"])
        print(f"  wall {ratios[mode][-1]:.2f}, cpu {runs['bgeflow']['cpu_s'] / runs['hn_mine']['cpu_s']:.2f}, peak RSS "
              f"{runs['bgeflow']['peak_mb'] / runs['hn_mine']['peak_mb']:.2f} (bgeflow/hn_mine)")
    for mode, values in ratios.items():
        median = statistics.median(values)
        cpu = statistics.median(results[r]["bgeflow"]["cpu_s"] / results[r]["hn_mine"]["cpu_s"]
                                for r in results if r.startswith(mode))
        rss = max(results[r]["bgeflow"]["peak_mb"] / results[r]["hn_mine"]["peak_mb"] for r in results
                  if r.startswith(mode))
        print(f"wall_time_ratio (bgeflow/hn_mine) {mode}: {median:.2f} (goal <= {GOAL_RATIO}; "
              f"runs {', '.join(f'{v:.2f}' for v in values)})")
        print(f"cpu_time_ratio (bgeflow/hn_mine) {mode}: {cpu:.2f}")
        print(f"peak_rss_ratio (bgeflow/hn_mine) {mode}: {rss:.2f} (largest; goal <= 1)")
    t = q["report"]["timings"]
    print("bgeflow phases (last run): " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))

    import numpy as np

    cosine = q["cosine"]
    print(f"cosine to FlagEmbedding fp32 per pool text: min {cosine.min():.6f}  p1 {np.percentile(cosine, 1):.6f}  "
          f"median {np.median(cosine):.6f}  below {GOAL_COSINE}: {int((cosine < GOAL_COSINE).sum())}/{len(cosine)}")
    pct = {name: percentiles(s) for name, s in q["scores"].items()}
    for name, (p5, p50, p95) in pct.items():
        print(f"  mined negatives of {name:<8} ({len(q['scores'][name])}) fp32 reference score "
              f"p5 {p5:.4f}  p50 {p50:.4f}  p95 {p95:.4f}")
    gap = max(abs(a - b) for a, b in zip(pct["hn_mine"], pct["bgeflow"], strict=True))
    print(f"score distribution gap (max over p5/p50/p95): {gap:.4f} (goal <= {GOAL_SCORE})")
    quality_ok = bool(cosine.min() >= GOAL_COSINE and gap <= GOAL_SCORE)
    print(f"equal_output_quality: {quality_ok}")
    print(f"goal met: {quality_ok and all(statistics.median(v) <= GOAL_RATIO for v in ratios.values())} "
          f"(bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB)")


if __name__ == "__main__":
    main()
