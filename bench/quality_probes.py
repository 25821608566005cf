"""Probes for issue #20 that ``bench/quality.py``'s variants cannot express: bgeflow's default recipe
with one change to its data or its trained weights, on one seed, scored as the bench scores.

- ``tas --clusters K``: topic-aware batches (TAS, Hofstätter et al., SIGIR 2021). The mined records'
  queries are clustered (spherical k-means over the base model's embeddings) and cut into batches of
  one training step (2 processes x 16 queries) in cluster order, so in-batch negatives come from the
  same topic; FlagEmbedding's ``same_dataset_within_batch`` keeps each batch (one file each) together.
- ``ict``: corpus pseudo-queries (the Inverse Cloze Task, Lee et al., ACL 2019). Each pool passage that
  is no training positive gives a record: its first sentence as the query, the rest as the positive;
  they are mined and trained with the real records.
- ``task-vector --alpha A ...``: the trained model's weights moved along the fine-tuning direction,
  ``base + A x (trained - base)``: A < 1 interpolates towards the base (WiSE-FT, Wortsman et al., CVPR
  2022), A > 1 extrapolates (ExPO, Zheng et al., 2024).
- ``loss --mode sym|mask|gist[+...]``: FlagEmbedding's retriever loss changed in its training processes
  (``bench/probe_losses/sitecustomize.py`` says how): symmetric InfoNCE, in-batch false negatives masked by
  the model itself, or masked by a frozen copy of the base model (GISTEmbed).

    python bench/quality_probes.py --work /tmp/bq3 --seed 1 tas --clusters 16

``--work`` is a ``bench/quality.py`` work folder (its ``data/``); each probe writes under
``<work>/probes/`` and appends one JSON line per scored model to ``<work>/probes/results.jsonl``.
The measured figures: ``docs/quality.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402 - the sibling module, found through HERE

#: Queries a training step takes: the bench's batch per process x its processes.
STEP_QUERIES = quality.BUDGET["per_device_train_batch_size"] * quality.NPROC
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def mine(data: Path, out: Path, seed: int, model: str, inputs: Path) -> tuple[Path, float]:
    """``bgeflow mine`` with the default recipe's settings over the bench's pool; (mined file, CPU s)."""
    settings, _ = quality.bgeflow_recipe()
    mined = out / "mined.jsonl"
    config = {**{k: v for k, v in settings.items() if v is not None and k != "teacher"}, "seed": seed,
              "model": model, "inputs": [str(inputs)], "output": str(mined),
              "candidate_pool": [str(data / "pool.jsonl")],
              "encoding": {k: quality.BUDGET[k] for k in ("query_max_len", "passage_max_len")}}
    (out / "mine.yaml").write_text(yaml.safe_dump(config))
    cpu = quality.run_timed([sys.executable, "-m", "bgeflow", "mine", "--config", str(out / "mine.yaml")],
                            out / "log.txt")
    return mined, cpu


def train(out: Path, seed: int, model: str, train_data: Path, extra: dict[str, Any] | None = None,
          env: dict[str, str] | None = None) -> float:
    """``bgeflow train retriever`` with the default recipe under the bench's budget; CPU s."""
    _, hyper = quality.bgeflow_recipe()
    config = {"kind": "retriever", "model": model, "train_data": [str(train_data)], "output": str(out / "train"),
              "work_dir": str(out / "scratch"), "distributed": {"nproc_per_node": quality.NPROC},
              "hyperparameters": {**hyper, **quality.BUDGET, "seed": seed, **(extra or {})}}
    (out / "train.yaml").write_text(yaml.safe_dump(config))
    return quality.run_timed([sys.executable, "-m", "bgeflow", "train", "--config", str(out / "train.yaml")],
                             out / "log.txt", env)


def topic_batches(mined: Path, dest: Path, model: str, clusters: int, seed: int) -> int:
    """Write ``mined``'s records as one file per training step, grouped by query topic; the batch count.

    The clusters are taken in a seeded random order and shuffled inside; the last incomplete batch is
    dropped, as the bench's ``dataloader_drop_last`` drops it.
    """
    import faiss
    import numpy as np

    from bgeflow.retrieval.encoder import Encoder

    records = [json.loads(line) for line in mined.read_text().splitlines()]
    encoder = Encoder(model, pooling="mean", normalize=True, query_max_len=quality.BUDGET["query_max_len"],
                      passage_max_len=quality.BUDGET["passage_max_len"], device="cpu")
    vectors = np.asarray(encoder.encode_queries([r["query"] for r in records]), dtype="float32")
    kmeans = faiss.Kmeans(vectors.shape[1], clusters, niter=20, seed=seed, spherical=True)
    kmeans.train(vectors)
    assigned = kmeans.index.search(vectors, 1)[1][:, 0]
    rng = np.random.default_rng(seed)
    order = [int(i) for c in rng.permutation(clusters) for i in rng.permutation(np.flatnonzero(assigned == c))]
    dest.mkdir(parents=True, exist_ok=True)
    batches = [order[i:i + STEP_QUERIES] for i in range(0, len(order) - STEP_QUERIES + 1, STEP_QUERIES)]
    for n, batch in enumerate(batches):
        (dest / f"batch-{n:04d}.jsonl").write_text("".join(json.dumps(records[i]) + "\n" for i in batch))
    return len(batches)


def pseudo_queries(data: Path) -> list[dict[str, Any]]:
    """ICT records from the pool passages that are no training positive (first sentence → the rest)."""
    positives = {p for line in (data / "train.jsonl").read_text().splitlines() for p in json.loads(line)["pos"]}
    records = []
    for line in (data / "pool.jsonl").read_text().splitlines():
        text = json.loads(line)["text"]
        if text in positives:
            continue
        parts = _SENTENCE_END.split(text, maxsplit=1)
        if len(parts) == 2 and len(parts[0].split()) >= 4 and len(parts[1].split()) >= 15:
            records.append({"query": " ".join(parts[0].split()[:24]), "pos": [parts[1]]})
    return records


def moved(base: Path, trained: Path, alpha: float, dest: Path) -> Path:
    """A copy of ``trained`` with the weights ``base + alpha x (trained - base)`` (tensors both have)."""
    from safetensors.torch import load_file, save_file

    start, end = load_file(str(base / "model.safetensors")), load_file(str(trained / "model.safetensors"))
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(trained, dest)
    save_file({k: start[k] + alpha * (v - start[k]) if k in start else v for k, v in end.items()},
              str(dest / "model.safetensors"))
    return dest


def record(work: Path, row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)
    with open(work / "probes" / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="a bench/quality.py work folder (its data/)")
    parser.add_argument("--seed", type=int, default=1)
    probes = parser.add_subparsers(dest="probe", required=True)
    probes.add_parser("tas", help="topic-aware batches").add_argument("--clusters", type=int, default=16)
    probes.add_parser("ict", help="corpus pseudo-queries")
    probes.add_parser("task-vector", help="weights along the fine-tuning direction").add_argument(
        "--alpha", type=float, nargs="+", default=[0.8, 1.2])
    probes.add_parser("loss", help="another retriever loss").add_argument(
        "--mode", required=True, help="sym, mask or gist, +-joined (bench/probe_losses/sitecustomize.py)")
    args = parser.parse_args(argv)

    from bgeflow.core.models import resolve_model

    data, model = args.work / "data", resolve_model("bundled:minilm")
    suffix = f"-k{args.clusters}" if args.probe == "tas" else f"-{args.mode}" if args.probe == "loss" else ""
    name = args.probe + suffix
    out = args.work / "probes" / f"{name}-seed{args.seed}"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    row: dict[str, Any] = {"probe": name, "seed": args.seed}
    if args.probe == "ict":
        extra = pseudo_queries(data)
        inputs = out / "train_with_pseudo_queries.jsonl"
        inputs.write_text((data / "train.jsonl").read_text() + "".join(json.dumps(r) + "\n" for r in extra))
        row["pseudo_queries"] = len(extra)
    else:
        inputs = data / "train.jsonl"
    mined, cpu = mine(data, out, args.seed, model, inputs)
    if args.probe == "tas":
        row["batches"] = topic_batches(mined, out / "batches", model, args.clusters, args.seed)
        cpu += train(out, args.seed, model, out / "batches", {"same_dataset_within_batch": True})
    elif args.probe == "loss":
        # Every process of the run imports bench/probe_losses/sitecustomize.py, which patches the loss.
        env = {"BGEFLOW_PROBE_LOSS": args.mode,
               "PYTHONPATH": os.pathsep.join(filter(None, (str(HERE / "probe_losses"), os.environ.get("PYTHONPATH"))))}
        cpu += train(out, args.seed, model, mined, env=env)
    else:
        cpu += train(out, args.seed, model, mined)
    trained = out / "train" / "model"
    if args.probe != "task-vector":
        record(args.work, {**row, "cpu_s": round(cpu), **quality.score(str(trained), data)})
        return 0
    record(args.work, {**row, "alpha": 1.0, "cpu_s": round(cpu), **quality.score(str(trained), data)})
    for alpha in args.alpha:
        record(args.work, {**row, "alpha": alpha,
                           **quality.score(str(moved(Path(model), trained, alpha, out / "moved")), data)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
