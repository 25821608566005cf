"""Evaluation encoding side by side: bgeflow's encoders vs FlagEmbedding's, same texts, same model.

Three encoders embed the same passages (the unique pos/neg texts of
``src/bgeflow/examples/train.jsonl.gz``) with bundled all-MiniLM-L6-v2, mean pooling, normalised,
passages truncated at ``--passage-max-len``, batch ``--batch-size``:

- ``flagembedding``: ``FlagAutoModel.from_finetuned(..., model_class="encoder-only-base")``'s
  ``encode_corpus``, as FlagEmbedding's evaluation encodes (fp32 on CPU);
- ``evaluate``: ``bgeflow.retrieval.loaders.load_retriever`` (sentence-transformers, what ``bgeflow
  evaluate`` runs), precision ``--precision``;
- ``mine``: ``bgeflow.retrieval.encoder.Encoder`` (what ``bgeflow mine`` runs), same precision.

Each runs in its own process, timed from the start of encoding (model load excluded; wall and
CPU seconds) and for the whole process; ``--mode concurrent`` pins FlagEmbedding and one bgeflow encoder to a core each
with one thread, at the same time (twice, one per bgeflow encoder), so machine-wide load hits both
alike; ``--mode sequential`` runs them one after the other on every core. Cosine: each bgeflow
encoder's vectors against FlagEmbedding's fp32 ones, per text (goal >= 0.999).

    python bench/encode.py [--rows 0] [--mode concurrent|sequential] [--precision auto]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parents[1] / "src" / "bgeflow" / "examples" / "train.jsonl.gz"
SIDES = ("flagembedding", "evaluate", "mine")


def child(side: str, texts_path: Path, out: Path, args: argparse.Namespace) -> None:
    """Encode the texts with one side's encoder; write its vectors (.npy) and timings (.json)."""
    started = time.perf_counter()
    import numpy as np

    texts = json.loads(texts_path.read_text(encoding="utf-8"))
    if side == "flagembedding":
        from FlagEmbedding import FlagAutoModel

        model = FlagAutoModel.from_finetuned(args.model, model_class="encoder-only-base", pooling_method="mean",
                                             normalize_embeddings=True, use_fp16=False, devices="cpu",
                                             batch_size=args.batch_size, passage_max_length=args.passage_max_len)
        encode, precision = model.encode_corpus, "fp32"
    elif side == "evaluate":
        from bgeflow.retrieval.loaders import load_retriever
        from bgeflow.retrieval.spec import EncodingSettings

        retriever = load_retriever("minilm", args.model, EncodingSettings.of(
            pooling="mean", passage_max_len=args.passage_max_len, batch_size=args.batch_size,
            precision=args.precision))
        encode, precision = retriever.encode_passages, retriever.precision
    else:
        from bgeflow.retrieval.encoder import Encoder

        encoder = Encoder(args.model, pooling="mean", passage_max_len=args.passage_max_len, batch_size=args.batch_size,
                          precision=args.precision)
        encode, precision = encoder.encode_passages, encoder.precision
    loaded, cpu = time.perf_counter(), time.process_time()
    vectors = np.asarray(encode(texts), dtype=np.float32)
    done, cpu = time.perf_counter(), time.process_time() - cpu
    np.save(out / f"{side}.npy", vectors)
    (out / f"{side}.json").write_text(json.dumps({"encode_s": done - loaded, "encode_cpu_s": cpu,
                                                  "process_s": done - started, "precision": precision}))


def run(side: str, texts_path: Path, out: Path, args: argparse.Namespace, core: int | None) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", side, str(texts_path), str(out), f"--model={args.model}",
           f"--batch-size={args.batch_size}", f"--passage-max-len={args.passage_max_len}",
           f"--precision={args.precision}"]
    env = dict(os.environ)
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    load = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{side} failed:\n{output[-3000:]}")
    return {**json.loads((out / f"{side}.json").read_text()), "peak_mb": usage.ru_maxrss / 1024, "load": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "TEXTS", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help="first N records' texts (0: all)")
    parser.add_argument("--mode", choices=("concurrent", "sequential"), default="concurrent")
    parser.add_argument("--model", default=None, help="model path (default: bundled:minilm)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passage-max-len", type=int, default=256)
    parser.add_argument("--precision", default="auto")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]), args)
        return
    if args.model is None:
        args.model = subprocess.run([sys.executable, "-c", "from bgeflow.core.models import resolve_model as r;"
                                     "print(r('bundled:minilm'))"], capture_output=True, text=True,
                                    check=True).stdout.strip()
    with gzip.open(DATA, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    records = records[: args.rows] if args.rows else records
    texts = sorted({t for r in records for t in (*r["pos"], *r.get("neg", []))})
    tmp = Path(tempfile.mkdtemp(prefix="bench-encode-"))
    try:
        texts_path = tmp / "texts.json"
        texts_path.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        print(f"{len(texts)} passages, max {args.passage_max_len} tokens, batch {args.batch_size}, mode {args.mode}, "
              f"load average {os.getloadavg()[0]:.2f}")
        results: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        if args.mode == "sequential":
            for side in SIDES:
                results[side].append(run(side, texts_path, tmp, args, None))
        else:
            for ours in SIDES[1:]:
                pair: dict[str, dict[str, float]] = {}

                def target(side: str, core: int, into: dict[str, dict[str, float]] = pair) -> None:
                    into[side] = run(side, texts_path, tmp, args, core)

                threads = [threading.Thread(target=target, args=(side, core))
                           for core, side in enumerate(("flagembedding", ours))]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                for side, result in pair.items():
                    results[side].append(result)
        import numpy as np

        reference = np.load(tmp / "flagembedding.npy")
        for i, ours in enumerate(SIDES[1:]):
            base = results["flagembedding"][i if args.mode == "concurrent" else 0]
            mine = results[ours][0]
            cosine = np.einsum("ij,ij->i", np.load(tmp / f"{ours}.npy"), reference)
            print(f"{ours:<8} ({mine['precision']}) encode {mine['encode_s']:6.1f}s {len(texts) / mine['encode_s']:6.1f} "
                  f"texts/s, process {mine['process_s']:6.1f}s, peak RSS {mine['peak_mb']:5.0f} MB | FlagEmbedding "
                  f"encode {base['encode_s']:6.1f}s {len(texts) / base['encode_s']:6.1f} texts/s, process "
                  f"{base['process_s']:6.1f}s, peak RSS {base['peak_mb']:5.0f} MB | encode ratio "
                  f"{mine['encode_s'] / base['encode_s']:.2f} (cpu {mine['encode_cpu_s'] / base['encode_cpu_s']:.2f}), "
                  f"process ratio {mine['process_s'] / base['process_s']:.2f}"
                  f" | cosine min {cosine.min():.6f}, below 0.999: {int((cosine < 0.999).sum())}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
