"""bgeflow's training wrapper vs bare FlagEmbedding: step time and start-up overhead.

Runs the same retriever config N steps in pairs of runs, ABBA-interleaved, in this process's
lifetime: ``torchrun -m FlagEmbedding.finetune.embedder.encoder_only.base`` and
``bgeflow train retriever``. Step time is transformers' ``train_runtime`` / steps (the training
loop only); overhead is the wall time outside it (imports, data fetch, export, upload).
The figure is the median over pairs of bgeflow/bare step time. Goal: <= 1.03.

On a shared 2-core machine two runs of the same command, one after the other, differ by up to ~10%
(``--control --mode sequential`` shows it), more than the goal. So by default the two sides of a
pair run at the same time, each pinned to its own core with one thread: whatever slows the
machine slows both. ``--mode sequential`` runs them one after the other with all cores.

    python bench/train.py [--steps 20] [--repeats 4] [--mode concurrent|sequential] [--control]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bgeflow.core.models import resolve_model
from bgeflow.steps.training.distributed import Distributed, torchrun_command

COMMON = {"per_device_train_batch_size": 4, "train_group_size": 2, "query_max_len": 32, "passage_max_len": 64,
          "learning_rate": 1e-5, "temperature": 0.02, "logging_steps": 5, "dataloader_num_workers": 0, "seed": 42}


def write_data(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            record = {"query": f"what does item {i} do?", "pos": [f"Item {i} converts value {i * 7} to text."],
                      "neg": [f"Item {i + 1} parses dates.", f"Item {i + 2} sorts lists.", f"Item {i + 3} opens files."]}
            fh.write(json.dumps(record) + "\n")


def bare_command(args: argparse.Namespace, model: str, data: Path, out: Path) -> list[str]:
    runner = [f"--model_name_or_path={model}", f"--train_data={data}", f"--output_dir={out}",
              f"--max_steps={args.steps}", f"--save_steps={args.steps * 10}", "--use_cpu=True", "--ddp_backend=gloo",
              f"--sentence_pooling_method={args.pooling}", f"--negatives_cross_device={args.nproc > 1}",
              "--report_to=none", "--dataloader_drop_last=True", *[f"--{k}={v}" for k, v in COMMON.items()]]
    dist = Distributed(nnodes=1, node_rank=0, nproc_per_node=args.nproc, master_addr="127.0.0.1", master_port=0,
                       port_is_default=True)
    return torchrun_command(dist, "FlagEmbedding.finetune.embedder.encoder_only.base", runner)


def bgeflow_command(args: argparse.Namespace, model: str, data: Path, out: Path, work: Path) -> list[str]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in COMMON.items()]
    return [sys.executable, "-m", "bgeflow", "train", "retriever", f"--model={model}", f"--train-data={data}",
            f"--output={out}", f"--max-steps={args.steps}", f"--save-steps={args.steps * 10}",
            f"--nproc-per-node={args.nproc}", f"--pooling={args.pooling}", f"--work-dir={work}", *flags]


def train_runtime(out: Path, output: str) -> float:
    """Seconds inside transformers' training loop, as each side reports it."""
    if (out / "train_summary.json").is_file():  # bgeflow's
        return float(json.loads((out / "train_summary.json").read_text(encoding="utf-8"))["train_runtime_s"])
    match = re.search(r"'train_runtime': ([0-9.]+)", output)
    if not match:
        raise SystemExit("no train_runtime in FlagEmbedding's output")
    return float(match.group(1))


def run_pair(args: argparse.Namespace, commands: dict[str, list[str]], outs: dict[str, Path],
             order: tuple[str, str]) -> dict[str, tuple[float, float]]:
    """Both sides' (loop seconds, wall seconds): at once on a core each, or one after the other."""
    concurrent = args.mode == "concurrent"
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if concurrent else None

    def run(core: int, name: str) -> tuple[float, float]:
        cmd = ["taskset", "-c", str(core), *commands[name]] if concurrent else commands[name]
        started = time.perf_counter()
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stdout[-3000:]}")
        return train_runtime(outs[name], done.stdout), wall

    if not concurrent:
        return {name: run(0, name) for name in order}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run, core, name) for core, name in enumerate(order)}
        return {name: future.result() for name, future in futures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--model", default="bundled:minilm")
    parser.add_argument("--pooling", default="mean")
    parser.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent",
                        help="concurrent: both sides of a pair at once, one core and one thread each, so "
                             "machine-wide noise hits both alike (needs taskset, 2 cores, --nproc 1); "
                             "sequential: one after the other with all cores")
    parser.add_argument("--control", action="store_true",
                        help="run bare against bare: the ratio this mode shows when nothing differs")
    args = parser.parse_args()
    if args.mode == "concurrent" and (args.nproc != 1 or (os.cpu_count() or 1) < 2 or not shutil.which("taskset")):
        parser.error("--mode concurrent needs --nproc 1, at least 2 cores and taskset; use --mode sequential")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = resolve_model(args.model)
    root = Path(tempfile.mkdtemp(prefix="bgeflow-bench-train-"))
    try:
        data = root / "train.jsonl"
        write_data(data, args.steps * COMMON["per_device_train_batch_size"] * args.nproc)
        results: dict[str, list[tuple[float, float]]] = {"bare": [], "bgeflow": []}
        for i in range(args.repeats):
            # Alternate the order (ABBA; concurrently, the cores) so neither side is favoured.
            order = ("bare", "bgeflow") if i % 2 == 0 else ("bgeflow", "bare")
            outs = {"bare": root / f"bare-{i}", "bgeflow": root / f"bgeflow-{i}"}
            commands = {"bare": bare_command(args, model, data, outs["bare"]),
                        "bgeflow": bare_command(args, model, data, outs["bgeflow"]) if args.control
                        else bgeflow_command(args, model, data, outs["bgeflow"], root / f"work-{i}")}
            for name, result in run_pair(args, commands, outs, order).items():
                results[name].append(result)
        step = {k: statistics.median(r[0] for r in v) / args.steps for k, v in results.items()}
        overhead = {k: statistics.median(r[1] - r[0] for r in v) for k, v in results.items()}
        # Runs of a pair are adjacent in time, so their ratio cancels the slow drift of a shared
        # machine; the median of those ratios is the figure, their range shows the noise.
        paired = sorted(b[0] / a[0] for a, b in zip(results["bare"], results["bgeflow"], strict=True))
        mode = "concurrently, one core and thread each" if args.mode == "concurrent" else "one after the other"
        print(f"retriever {args.model}, {args.steps} steps, {args.nproc} process(es), {args.repeats} pair(s) run {mode}"
              + (" (CONTROL: the 'bgeflow' side runs bare FlagEmbedding too)" if args.control else ""))
        for name in ("bare", "bgeflow"):
            runs = [r[0] / args.steps for r in results[name]]
            print(f"  {name:8s} step {step[name]:.3f}s (runs {min(runs):.3f}-{max(runs):.3f})  "
                  f"outside the training loop {overhead[name]:.1f}s")
        print(f"paired step-time ratios bgeflow/bare: {', '.join(f'{r:.3f}' for r in paired)}")
        print(f"step-time ratio bgeflow/bare: {statistics.median(paired):.3f} (median of pairs; goal <= 1.03)")
        print(f"start-up overhead bgeflow - bare: {overhead['bgeflow'] - overhead['bare']:+.1f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
