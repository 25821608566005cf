"""bgeflow's training wrapper vs bare FlagEmbedding: step time and start-up overhead.

Runs the same retriever config N steps twice in this process's lifetime (ABBA-interleaved when
``--repeats`` > 1; medians reported): ``torchrun -m FlagEmbedding.finetune.embedder.encoder_only.base`` and
``bgeflow train retriever``. Step time is transformers' ``train_runtime`` / steps (the training
loop only); overhead is the wall time outside it (imports, data fetch, export, upload).
Goal: step-time ratio <= 1.03.

    python bench/train.py [--steps 20] [--nproc 1] [--repeats 1] [--model bundled:minilm]
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
from pathlib import Path

from bgeflow.models import resolve_model
from bgeflow.training.distributed import Distributed, torchrun_command

COMMON = {"per_device_train_batch_size": 4, "train_group_size": 2, "query_max_len": 32, "passage_max_len": 64,
          "learning_rate": 1e-5, "temperature": 0.02, "logging_steps": 5, "dataloader_num_workers": 0, "seed": 42}


def write_data(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            record = {"query": f"what does item {i} do?", "pos": [f"Item {i} converts value {i * 7} to text."],
                      "neg": [f"Item {i + 1} parses dates.", f"Item {i + 2} sorts lists.", f"Item {i + 3} opens files."]}
            fh.write(json.dumps(record) + "\n")


def bare(args: argparse.Namespace, model: str, data: Path, out: Path) -> tuple[float, float]:
    runner = [f"--model_name_or_path={model}", f"--train_data={data}", f"--output_dir={out}",
              f"--max_steps={args.steps}", f"--save_steps={args.steps * 10}", "--use_cpu=True", "--ddp_backend=gloo",
              f"--sentence_pooling_method={args.pooling}", f"--negatives_cross_device={args.nproc > 1}",
              "--report_to=none", "--dataloader_drop_last=True", *[f"--{k}={v}" for k, v in COMMON.items()]]
    dist = Distributed(nnodes=1, node_rank=0, nproc_per_node=args.nproc, master_addr="127.0.0.1", master_port=0,
                       port_is_default=True)
    cmd = torchrun_command(dist, "FlagEmbedding.finetune.embedder.encoder_only.base", runner)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bare FlagEmbedding failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    match = re.search(r"'train_runtime': ([0-9.]+)", done.stdout + done.stderr)
    if not match:
        raise SystemExit("no train_runtime in FlagEmbedding's output")
    return float(match.group(1)), wall


def wrapped(args: argparse.Namespace, model: str, data: Path, out: Path, work: Path) -> tuple[float, float]:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in COMMON.items()]
    cmd = [sys.executable, "-m", "bgeflow", "train", "retriever", f"--model={model}", f"--train-data={data}",
           f"--output={out}", f"--max-steps={args.steps}", f"--save-steps={args.steps * 10}",
           f"--nproc-per-node={args.nproc}", f"--pooling={args.pooling}", f"--work-dir={work}", *flags]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bgeflow train failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    summary = json.loads((out / "train_summary.json").read_text(encoding="utf-8"))
    return float(summary["train_runtime_s"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--model", default="bundled:minilm")
    parser.add_argument("--pooling", default="mean")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = resolve_model(args.model)
    root = Path(tempfile.mkdtemp(prefix="bgeflow-bench-train-"))
    try:
        data = root / "train.jsonl"
        write_data(data, args.steps * COMMON["per_device_train_batch_size"] * args.nproc)
        results: dict[str, list[tuple[float, float]]] = {"bare": [], "bgeflow": []}
        for i in range(args.repeats):
            # Alternate the order (ABBA) so a drift in machine load does not favour either side.
            order = ("bare", "bgeflow") if i % 2 == 0 else ("bgeflow", "bare")
            for name in order:
                if name == "bare":
                    results[name].append(bare(args, model, data, root / f"bare-{i}"))
                else:
                    results[name].append(wrapped(args, model, data, root / f"bgeflow-{i}", root / f"work-{i}"))
        step = {k: statistics.median(r[0] for r in v) / args.steps for k, v in results.items()}
        overhead = {k: statistics.median(r[1] - r[0] for r in v) for k, v in results.items()}
        print(f"retriever {args.model}, {args.steps} steps, {args.nproc} process(es), {args.repeats} repeat(s)")
        for name in ("bare", "bgeflow"):
            print(f"  {name:8s} step {step[name]:.3f}s  outside the training loop {overhead[name]:.1f}s")
        print(f"step-time ratio bgeflow/bare: {step['bgeflow'] / step['bare']:.3f} (goal <= 1.03)")
        print(f"start-up overhead bgeflow - bare: {overhead['bgeflow'] - overhead['bare']:+.1f}s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
