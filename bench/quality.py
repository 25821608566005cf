"""Trained quality, side by side over seeds: bgeflow's default recipe vs the recipes users run by hand.

One invocation builds the man-page benchmark (``bench/manpages.py``: NAME description → query,
DESCRIPTION → passage; held out from the shipped example data), then for every seed trains and
scores each system on the same split, from all-MiniLM-L6-v2, under the same budget (1 epoch,
2 CPU processes x 16 queries a step, query/passage limits 32/64 tokens):

- ``base``: the base model, untrained (once);
- ``bgeflow``: bgeflow's default recipe as ``bgeflow run`` applies it on this machine (the run spec's
  defaults under the CPU profile, ``src/bgeflow/examples/cpu-run.yaml``): ``bgeflow mine`` with the
  run's ``mine`` settings over the corpus, then ``bgeflow train retriever`` with its retriever options;
- ``--variant NAME:KEY=VALUE;...``: bgeflow's recipe with some settings changed (``mine.NAME``,
  ``train.NAME``), e.g. ``no-filter:mine.max_score_ratio=null`` measures what the filter buys; a variant's
  ``train.`` options win over the budget (``2ep:train.num_train_epochs=2``), so compare its CPU time too;
  ``NAME:mnrl.KEY=VALUE`` is the mnrl baseline with its training arguments changed instead
  (``mnrl-2ep:mnrl.num_train_epochs=2``: a baseline given the epochs a bgeflow variant takes);
  ``NAME:rounds=2`` re-mines with the first round's model and trains on from it for one more budget
  (ANCE/RocketQA's second round; the issue's "re-mine with the fine-tuned retriever");
- ``mnrl``: sentence-transformers, MultipleNegativesRankingLoss (in-batch negatives only), batch 32,
  its own defaults otherwise (lr 5e-5, scale 20), one process;
- ``flagembedding``: FlagEmbedding's recipe as its README has users run it: ``hn_mine`` (2-200, 15
  negatives, the corpus as ``candidate_pool``) then FlagEmbedding's runner under torchrun with the
  README's options (lr 2e-5 here, temperature 0.02, group size 2, cross-device negatives);
- ``fe-on-bgeflow-mine`` (``--diagnose``): FlagEmbedding's runner, same options, on ``bgeflow mine``'s
  output with hn_mine's settings (2-200, 15, no filter): isolates the mining from the training.

Seeds drive negative sampling (``bgeflow mine --seed``; hn_mine samples with an unseeded
``random``) and data order (the trainers' ``seed``). Each system's CPU time is the user+system
time of its mining and training processes (children included), measured with ``getrusage``.
Scoring is one code path for every model (mean pooling, normalised, exact search):
nDCG@10 and Recall@10 over the test queries (``bgeflow.steps.evaluation.metrics``).

hn_mine: FlagEmbedding 1.4's wheel does not ship it, so by default FlagEmbedding 1.2.11 (the last
release with ``FlagEmbedding/baai_general_embedding/finetune/hn_mine.py``) is installed with pip
into ``<work>/flagembedding-1.2.11`` (``--target``, no dependencies) and run from there; give
``--hn-mine-path DIR`` to use another directory that holds such a package.

    python bench/quality.py [--seeds 3] [--work DIR] [--diagnose] [--train 2000] [--test 500] [--corpus 4000]
                            [--variant 'no-filter:mine.max_score_ratio=null'] [--resume]

``--resume`` keeps ``<work>/results.json``'s runs and adds only the (system, seed) pairs it lacks, so
the baseline table, a few variants on one seed and a candidate over three seeds add up to one table.
The table ends with issue #20's bar for every recipe measured over >= 3 seeds. The last measured
figures, with their commands: ``docs/quality.md``.

Needs the man pages of the Debian packages ``bench/manpages.py`` names (``PACKAGES``: 2,920 usable pages with
Debian 12's versions; ``apt-get install`` them); prints one table and writes ``<work>/results.json`` after every
run (``--table FILE`` reprints it). The results name the split (the packages' versions, a sha256 over its
pages): ``--resume`` refuses a results file measured on another.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import manpages  # noqa: E402 - the sibling module, found through HERE

NPROC = 2
#: The budget every trained system gets (FlagEmbedding runner option names).
BUDGET: dict[str, Any] = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "query_max_len": 32,
                          "passage_max_len": 64, "dataloader_drop_last": True, "logging_steps": 10,
                          "save_steps": 1_000_000}
#: FlagEmbedding's README recipe as the issue ran it by hand (lr 2e-5 over the README's 1e-5).
FE_RECIPE: dict[str, Any] = {"learning_rate": 2e-5, "temperature": 0.02, "train_group_size": 2,
                             "normalize_embeddings": True, "negatives_cross_device": True,
                             "query_instruction_for_retrieval": ""}
HN_MINE = {"range_for_sampling": "2-200", "negative_number": 15}
HN_MINE_PACKAGE = "FlagEmbedding==1.2.11"
METRICS = ("ndcg@10", "recall@10")
SYSTEMS = ("bgeflow", "mnrl", "flagembedding")
DIAGNOSTIC = "fe-on-bgeflow-mine"
#: Issue #20's bar: bgeflow's recipe beats both baselines by this much nDCG@10 (mean over >= 3 seeds).
BAR = 0.02


# --------------------------------------------------------------------------- running and timing


def run_timed(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` (output to ``log``); its CPU seconds, children included.

    Raises:
        SystemExit: the command failed (the log's tail is printed).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "ab") as fh:
        fh.write(("$ " + " ".join(cmd) + "\n").encode())
        fh.flush()
        code = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"{cmd[:4]} failed with {code}; log {log}:\n{tail}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _torchrun() -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={NPROC}"]


def _flags(options: dict[str, Any]) -> list[str]:
    return [f"--{k}={v}" for k, v in options.items()]


# --------------------------------------------------------------------------- the systems


#: Options of the CPU profile that size the demo's run, not its recipe (the budget above replaces them).
_DEMO_SIZE = ("max_steps", "save_steps", "logging_steps", "per_device_train_batch_size")


def bgeflow_recipe() -> tuple[dict[str, Any], dict[str, Any]]:
    """``(mine settings, retriever hyperparameters)`` of ``bgeflow run`` on this machine: the run spec's
    defaults under the CPU profile it applies (``bgeflow.cli.run``), less the demo's size."""
    from bgeflow.cli.run import _defaults
    from bgeflow.platform.run_spec import LocalRunSpec
    from bgeflow.steps.training.spec import TrainSpec

    run = LocalRunSpec.build(*_defaults())
    own = {k: v for k, v in run.retriever.hyperparameters.items() if k not in _DEMO_SIZE}
    spec = TrainSpec.build({"kind": "retriever", "model": "-", "train_data": "-", "output": "-",
                            "hyperparameters": own})
    return run.mine.to_dict(), spec.resolved_hyperparameters()


def train_bgeflow(data: Path, out: Path, seed: int, model: str, log: Path, mine: dict[str, Any],
                  hyper: dict[str, Any], over_budget: dict[str, Any] | None = None, rounds: int = 1) -> float:
    """``bgeflow mine`` + ``bgeflow train retriever`` with ``mine`` settings and ``hyper`` over the budget
    (``over_budget``: a variant's own training options, which win over the budget's, e.g. more epochs).

    ``rounds`` > 1: ANCE/RocketQA's re-mining. Each further round mines again with the previous round's
    model and trains on to it from that model (one more budget each); the last round's model is at
    ``out/train/model``, the earlier ones under ``out/round<N>/``.
    """
    cpu = 0.0
    for round_ in range(1, rounds + 1):
        where = out if round_ == rounds else out / f"round{round_}"
        where.mkdir(parents=True, exist_ok=True)
        cpu += _bgeflow_round(data, where, seed, model, log, mine, hyper, over_budget)
        model = str(where / "train" / "model")
    return cpu


def _bgeflow_round(data: Path, out: Path, seed: int, model: str, log: Path, mine: dict[str, Any],
                   hyper: dict[str, Any], over_budget: dict[str, Any] | None) -> float:
    import yaml

    mined = out / "mined.jsonl"
    lengths = {"query_max_len": BUDGET["query_max_len"], "passage_max_len": BUDGET["passage_max_len"]}
    mine_config = {**{k: v for k, v in mine.items() if v is not None and k != "teacher"}, "seed": seed,
                   "model": model, "inputs": [str(data / "train.jsonl")], "output": str(mined),
                   "candidate_pool": [str(data / "pool.jsonl")], "encoding": lengths}
    if (mine.get("teacher") or {}).get("model"):
        mine_config["teacher"] = mine["teacher"]
    (out / "mine.yaml").write_text(yaml.safe_dump(mine_config))
    cpu = run_timed([sys.executable, "-m", "bgeflow", "mine", "--config", str(out / "mine.yaml")], log)
    train_config = {"kind": "retriever", "model": model, "train_data": [str(mined)], "output": str(out / "train"),
                    "work_dir": str(out / "scratch"), "distributed": {"nproc_per_node": NPROC},
                    "hyperparameters": {**hyper, **BUDGET, **(over_budget or {}), "seed": seed}}
    (out / "train.yaml").write_text(yaml.safe_dump(train_config))
    cpu += run_timed([sys.executable, "-m", "bgeflow", "train", "--config", str(out / "train.yaml")], log)
    return cpu


def train_flagembedding(data: Path, out: Path, seed: int, model: str, log: Path, hn_mine_path: Path,
                        mined: Path | None = None) -> float:
    """hn_mine (unless ``mined`` is given) + FlagEmbedding's runner under torchrun, the README's way."""
    cpu = 0.0
    if mined is None:
        mined = out / "hn_mined.jsonl"
        cpu += run_timed([sys.executable, "-m", "FlagEmbedding.baai_general_embedding.finetune.hn_mine",
                          f"--model_name_or_path={model}", f"--input_file={data / 'train.jsonl'}",
                          f"--candidate_pool={data / 'pool.jsonl'}", f"--output_file={mined}",
                          f"--range_for_sampling={HN_MINE['range_for_sampling']}",
                          f"--negative_number={HN_MINE['negative_number']}"],
                         log, env={"PYTHONPATH": str(hn_mine_path)})
    options = {**FE_RECIPE, **BUDGET, "seed": seed, "model_name_or_path": model, "train_data": str(mined),
               "output_dir": str(out / "model"), "sentence_pooling_method": "mean", "use_cpu": True,
               "ddp_backend": "gloo", "report_to": "none", "overwrite_output_dir": True}
    cpu += run_timed([*_torchrun(), "-m", "FlagEmbedding.finetune.embedder.encoder_only.base", *_flags(options)],
                     log)
    return cpu


def train_mnrl(data: Path, out: Path, seed: int, model: str, overrides: dict[str, Any] | None = None) -> None:
    """sentence-transformers' MNRL: (query, positive) pairs, in-batch negatives, batch 32 (``overrides``:
    ``SentenceTransformerTrainingArguments`` of an ``mnrl.`` variant)."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
        losses,
    )
    from sentence_transformers.training_args import BatchSamplers

    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_dict({"anchor": [r["query"] for r in rows], "positive": [r["pos"][0] for r in rows]})
    st = SentenceTransformer(model, device="cpu")
    st.max_seq_length = BUDGET["passage_max_len"]
    options = {"output_dir": str(out / "run"), "num_train_epochs": BUDGET["num_train_epochs"],
               "per_device_train_batch_size": 32, "seed": seed, "batch_sampler": BatchSamplers.NO_DUPLICATES,
               "save_strategy": "no", "report_to": "none", "logging_steps": BUDGET["logging_steps"], "use_cpu": True}
    args = SentenceTransformerTrainingArguments(**{**options, **(overrides or {})})
    SentenceTransformerTrainer(model=st, args=args, train_dataset=dataset,
                               loss=losses.MultipleNegativesRankingLoss(st)).train()
    st.save(str(out / "model"))


# --------------------------------------------------------------------------- scoring


def score(model: str, data: Path) -> dict[str, float]:
    """nDCG@10 / Recall@10 of ``model`` on the test queries (mean pooling, normalised, exact search)."""
    from bgeflow.retrieval.encoder import Encoder
    from bgeflow.retrieval.search import search
    from bgeflow.steps.evaluation.metrics import compute_metrics

    corpus = [json.loads(line) for line in (data / "eval" / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line) for line in (data / "eval" / "queries.jsonl").read_text().splitlines()]
    encoder = Encoder(model, pooling="mean", normalize=True, query_max_len=BUDGET["query_max_len"],
                      passage_max_len=BUDGET["passage_max_len"], device="cpu")
    passages = encoder.encode_passages([c["text"] for c in corpus])
    found = search(encoder.encode_queries([q["text"] for q in queries]), passages, 10)
    rankings = {q["id"]: [corpus[i]["id"] for i in row if i >= 0] for q, row in zip(queries, found.ids, strict=True)}
    return compute_metrics(rankings, {q["id"]: q["relevant"] for q in queries}, METRICS)


def negatives_profile(mined: Path, data: Path, model: str) -> dict[str, float]:
    """How hard a mined file's negatives are under the base model with mean pooling (the model's own).

    ``ratio``: mean of score(q, neg) / score(q, pos); ``suspect``: the share of negatives scoring above
    0.95 x their query's positive (NV-Retriever's TopK-PercPos line), i.e. likely false negatives.
    """
    import numpy as np

    from bgeflow.retrieval.encoder import Encoder

    rows = [json.loads(line) for line in mined.read_text().splitlines()]
    encoder = Encoder(model, pooling="mean", normalize=True, query_max_len=BUDGET["query_max_len"],
                      passage_max_len=BUDGET["passage_max_len"], device="cpu")
    texts = sorted({t for r in rows for t in (*r["pos"], *r["neg"])})
    index = {t: i for i, t in enumerate(texts)}
    vectors = encoder.encode_passages(texts)
    queries = encoder.encode_queries([r["query"] for r in rows])
    ratios, suspects = [], 0
    for q, r in zip(queries, rows, strict=True):
        pos = float(vectors[index[r["pos"][0]]] @ q)
        negs = vectors[[index[t] for t in r["neg"]]] @ q
        ratios.extend((negs / pos).tolist())
        suspects += int(np.sum(negs > 0.95 * pos))
    return {"ratio": float(np.mean(ratios)), "suspect": suspects / len(ratios)}


def overlap(a: Path, b: Path) -> float:
    """Mean Jaccard overlap of the two files' negative sets, record by record."""
    rows_a = [json.loads(line) for line in a.read_text().splitlines()]
    rows_b = {r["query"]: set(r["neg"]) for r in (json.loads(line) for line in b.read_text().splitlines())}
    shares = [len(set(r["neg"]) & rows_b[r["query"]]) / max(1, len(set(r["neg"]) | rows_b[r["query"]]))
              for r in rows_a]
    return statistics.fmean(shares)


# --------------------------------------------------------------------------- the table


def summarize(values: list[float]) -> tuple[float, float, float, float]:
    """``(mean, sample std, min, max)`` (std 0 for a single value)."""
    return (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, min(values),
            max(values))


def _declared(variant: tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]) -> dict[str, Any]:
    """A bgeflow variant's settings as results.json records them (``rounds`` only when re-mining)."""
    own_mine, hyper, _, rounds = variant
    return {"mine": own_mine, "train": hyper, **({"rounds": rounds} if rounds > 1 else {})}


def _seed(row: dict[str, Any]) -> int:
    return int(row["seed"])


def _mean(rows: list[dict[str, Any]], key: str = "ndcg@10") -> float:
    return statistics.fmean(r[key] for r in rows)


def _delta(ours: list[dict[str, Any]], other: list[dict[str, Any]], metric: str = "ndcg@10") -> str:
    """``mean(ours) − mean(other) ± the standard error of that difference``."""
    a, b = [r[metric] for r in ours], [r[metric] for r in other]
    se = (summarize(a)[1] ** 2 / len(a) + summarize(b)[1] ** 2 / len(b)) ** 0.5
    return f"{statistics.fmean(a) - statistics.fmean(b):+.4f} ± {se:.4f}"


def table(results: dict[str, Any]) -> str:
    runs: dict[str, list[dict[str, Any]]] = results["runs"]
    data = results["data"]
    # The split the figures belong to: results of two splits are not comparable (bench/manpages.py).
    split = (f"split: {data['train']} training queries, {data['pool']}-text pool, {data['test_queries']} test queries "
             f"over {data['eval_corpus']} passages; pages sha256 {str(data.get('pages_sha256', 'not recorded'))[:12]}")
    lines = [split, "", f"{'system':<20}{'seeds':>6}{'nDCG@10 mean ± std':>22}{'[min, max]':>18}"
             f"{'Recall@10 mean ± std':>24}{'CPU s/seed':>12}"]
    base = results["base"]
    lines.append(f"{'base (untrained)':<20}{'-':>6}{base['ndcg@10']:>15.4f}{'':>25}{base['recall@10']:>17.4f}")
    for name, rows in runs.items():
        if not rows:
            continue
        n = summarize([r["ndcg@10"] for r in rows])
        rc = summarize([r["recall@10"] for r in rows])
        cpu = statistics.fmean(r["cpu_s"] for r in rows)
        lines.append(f"{name:<20}{len(rows):>6}{n[0]:>15.4f} ± {n[1]:.4f}{f'[{n[2]:.4f}, {n[3]:.4f}]':>18}"
                     f"{rc[0]:>17.4f} ± {rc[1]:.4f}{cpu:>12.0f}")
    lines += ["", "nDCG@10 per seed:"]
    lines += [f"  {name:<18} " + ", ".join(f"{r['seed']}: {r['ndcg@10']:.4f}" for r in sorted(rows, key=_seed))
              for name, rows in runs.items() if rows]
    ours = runs.get("bgeflow") or []
    if ours:
        lines += ["", "deltas (bgeflow − other; ± = standard error of the difference of the two means):"]
        for name, rows in runs.items():
            if name == "bgeflow" or not rows:
                continue
            parts = [f"{metric} {_delta(ours, rows, metric)}" for metric in METRICS]
            cpu = statistics.fmean(r["cpu_s"] for r in ours) / statistics.fmean(r["cpu_s"] for r in rows)
            lines.append(f"  vs {name:<18} " + ", ".join(parts) + f", CPU time x{cpu:.2f}")
    if runs.get(DIAGNOSTIC) and runs.get("flagembedding"):
        lines += ["", f"mining alone ({DIAGNOSTIC} − flagembedding: the same runner and options on bgeflow mine's "
                      f"negatives instead of hn_mine's): nDCG@10 {_delta(runs[DIAGNOSTIC], runs['flagembedding'])}"]
    baselines = [name for name in ("mnrl", "flagembedding") if runs.get(name)]
    comparators = {"mnrl", "flagembedding", DIAGNOSTIC, *(k for k, v in results.get("variants", {}).items() if "mnrl" in v)}
    judged = [name for name, rows in runs.items() if name not in comparators and len(rows) >= 3 and len(baselines) == 2]
    lines += [""] if judged else []
    for name in judged:
        rows = runs[name]
        margin = min(_mean(rows) - _mean(runs[b]) for b in baselines)
        cpu_ok = _mean(rows, "cpu_s") <= _mean(runs["flagembedding"], "cpu_s")
        met = margin >= BAR and cpu_ok
        lines.append(f"bar (>= {BAR} nDCG@10 over both baselines, mean of >= 3 seeds, CPU <= flagembedding's): "
                     f"{name} {'MET' if met else 'NOT MET'} (margin over the better baseline {margin:+.4f}, "
                     f"CPU {'<=' if cpu_ok else '>'} flagembedding's)")
    stds = [summarize([r["ndcg@10"] for r in rows])[1] for rows in runs.values() if len(rows) > 1]
    if stds:
        lines += ["", f"noise floor: nDCG@10 std over seeds of one system, median over systems {statistics.median(stds):.4f}"
                      f" (max {max(stds):.4f}); a delta below ~2x the standard error above is not a difference"]
    if results.get("mining"):
        lines += ["", "mining (negatives scored by the base model with mean pooling; suspect = above 0.95 x the "
                      "positive's score):"]
        for name, profile in results["mining"].items():
            lines.append(f"  {name:<34} score/positive {profile['ratio']:.3f}, suspect {profile['suspect']:.3f}")
        if results.get("overlap") is not None:
            lines.append(f"  overlap of hn_mine's and bgeflow's negatives (same settings): {results['overlap']:.3f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def install_hn_mine(work: Path) -> Path:
    """FlagEmbedding 1.2.11 (the last release shipping hn_mine) in a ``--target`` dir of its own."""
    target = work / "flagembedding-1.2.11"
    if not (target / "FlagEmbedding" / "baai_general_embedding" / "finetune" / "hn_mine.py").is_file():
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                               HN_MINE_PACKAGE])
    return target


def _worker(argv: list[str]) -> int:
    """Child-process entry points (so each is timed and freed apart): mnrl and score."""
    if argv[0] == "mnrl":
        train_mnrl(Path(argv[1]), Path(argv[2]), int(argv[3]), argv[4], json.loads(argv[5]) if len(argv) > 5 else None)
    elif argv[0] == "score":
        Path(argv[3]).write_text(json.dumps(score(argv[1], Path(argv[2]))))
    elif argv[0] == "profile":
        Path(argv[4]).write_text(json.dumps(negatives_profile(Path(argv[1]), Path(argv[2]), argv[3])))
    return 0


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw and raw[0] == "--worker":
        return _worker(raw[1:])
    if raw and raw[0] == "--table":  # reprint the table of a finished or interrupted run
        print(table(json.loads(Path(raw[1]).read_text())))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--work", default="bench-quality")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--corpus", type=int, default=4000, help="eval corpus size cap (all usable pages if fewer)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--diagnose", action="store_true", help=f"add {DIAGNOSTIC} and the mining profiles")
    parser.add_argument("--hn-mine-path", default=None, help="a directory holding FlagEmbedding with hn_mine")
    parser.add_argument("--resume", action="store_true",
                        help="keep <work>/results.json's runs and measure only the (system, seed) pairs it lacks")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[;KEY=VALUE]",
                        help="one more system: bgeflow's recipe with mine.KEY / train.KEY changed, or the mnrl "
                        "baseline with mnrl.KEY changed (YAML values)")
    args = parser.parse_args(raw)

    import yaml

    from bgeflow.cli._options import parse_value  # a variant's value reads as a --set value does
    from bgeflow.core.models import resolve_model

    work = Path(args.work).resolve()
    data = work / "data"
    sizes = manpages.build(data, train=args.train, test=args.test, corpus=args.corpus)
    model = resolve_model("bundled:minilm")
    systems = [s for s in args.systems.split(",") if s] + ([DIAGNOSTIC] if args.diagnose else [])
    hn_mine_path = Path(args.hn_mine_path) if args.hn_mine_path else None
    if {"flagembedding", DIAGNOSTIC} & set(systems) and hn_mine_path is None:
        hn_mine_path = install_hn_mine(work)
    mine, hyper = bgeflow_recipe()
    variants: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {}
    mnrl_variants: dict[str, dict[str, Any]] = {}
    for item in args.variant:
        name, _, changes = item.partition(":")
        own_mine, own_hyper, own, baseline, rounds = dict(mine), dict(hyper), {}, {}, 1
        for change in filter(None, changes.split(";")):
            key, _, value = change.partition("=")
            block, _, option = key.strip().partition(".")
            if key.strip() == "rounds":
                rounds = int(value)
                continue
            if block not in ("mine", "train", "mnrl"):
                raise SystemExit(f"--variant {item!r}: keys are rounds, mine.NAME, train.NAME or mnrl.NAME, "
                                 f"got {key!r}")
            {"mine": own_mine, "train": own, "mnrl": baseline}[block][option] = parse_value(value)
        if baseline and (own or own_mine != mine):
            raise SystemExit(f"--variant {item!r}: an mnrl variant changes only mnrl.NAME keys")
        if baseline:
            mnrl_variants[name] = baseline
        else:
            variants[name] = (own_mine, {**own_hyper, **own}, own, rounds)
    systems += [*variants, *mnrl_variants]
    print(f"data: {json.dumps(sizes)}\nbgeflow recipe: mine {json.dumps({k: v for k, v in mine.items() if v is not None})}"
          f"\n  train {json.dumps(hyper)}\nbudget: {json.dumps(BUDGET)} x {NPROC} processes", flush=True)

    def scored(model_dir: str, where: Path) -> dict[str, float]:
        out = where / "scores.json"
        subprocess.check_call([sys.executable, __file__, "--worker", "score", model_dir, str(data), str(out)])
        return json.loads(out.read_text())

    previous = json.loads((work / "results.json").read_text()) if args.resume and (work / "results.json").is_file() else {}
    results: dict[str, Any] = {"data": sizes, "budget": BUDGET, "nproc": NPROC, "bgeflow": {"mine": mine, "train": hyper},
                               "variants": {**previous.get("variants", {}),
                                            **{k: _declared(v) for k, v in variants.items()},
                                            **{k: {"mnrl": v} for k, v in mnrl_variants.items()}},
                               "base": previous.get("base") or scored(model, work),
                               "runs": {**previous.get("runs", {}), **{s: [] for s in systems if s not in previous.get("runs", {})}},
                               "mining": previous.get("mining", {}), "overlap": previous.get("overlap")}
    declared = {**{k: _declared(v) for k, v in variants.items()},
                **{k: {"mnrl": v} for k, v in mnrl_variants.items()}}
    clash = [k for k, v in declared.items() if previous.get("variants", {}).get(k, v) != v]
    if clash:
        raise SystemExit(f"--resume: variant {', '.join(clash)} was measured with other settings; give it another name")
    if previous and (previous["data"] != sizes or previous["bgeflow"] != results["bgeflow"]):
        raise SystemExit(f"--resume: {work / 'results.json'} was measured on other data or another bgeflow recipe")
    # Seed by seed, every system: an interrupted run still compares every system over the seeds it finished
    # (--table); --resume skips the (system, seed) pairs results.json already has.
    for seed in range(1, args.seeds + 1):
        for system in systems:
            if any(row["seed"] == seed for row in results["runs"][system]):
                continue
            out = work / "runs" / system / f"seed{seed}"
            out.mkdir(parents=True, exist_ok=True)
            log = out / "log.txt"
            log.write_text("")
            started = time.monotonic()
            if system == "bgeflow" or system in variants:
                cpu = train_bgeflow(data, out, seed, model, log, *variants.get(system, (mine, hyper, None, 1)))
                trained = str(out / "train" / "model")
            elif system == "mnrl" or system in mnrl_variants:
                cpu = run_timed([sys.executable, __file__, "--worker", "mnrl", str(data), str(out), str(seed), model,
                                 json.dumps(mnrl_variants.get(system, {}))], log)
                trained = str(out / "model")
            elif system == "flagembedding":
                assert hn_mine_path is not None
                cpu = train_flagembedding(data, out, seed, model, log, hn_mine_path)
                trained = str(out / "model")
            elif system == DIAGNOSTIC:
                assert hn_mine_path is not None
                mined = out / "mined.jsonl"
                (out / "mine.yaml").write_text(yaml.safe_dump({
                    **HN_MINE, "seed": seed, "model": model, "inputs": [str(data / "train.jsonl")],
                    "output": str(mined), "candidate_pool": [str(data / "pool.jsonl")],
                    "encoding": {"query_max_len": BUDGET["query_max_len"],
                                 "passage_max_len": BUDGET["passage_max_len"]}}))
                cpu = run_timed([sys.executable, "-m", "bgeflow", "mine", "--config", str(out / "mine.yaml")], log)
                cpu += train_flagembedding(data, out, seed, model, log, hn_mine_path, mined=mined)
                trained = str(out / "model")
            else:
                raise SystemExit(f"unknown system {system!r}; choose from {', '.join((*SYSTEMS, DIAGNOSTIC))}")
            row = {"seed": seed, "cpu_s": round(cpu, 1), "wall_s": round(time.monotonic() - started, 1),
                   **scored(trained, out)}
            results["runs"][system].append(row)
            print(f"seed {seed} {system:<20} nDCG@10 {row['ndcg@10']:.4f} recall@10 {row['recall@10']:.4f} "
                  f"cpu {row['cpu_s']:.0f}s wall {row['wall_s']:.0f}s", flush=True)
            (work / "results.json").write_text(json.dumps(results, indent=1))
    if args.diagnose and results["runs"].get("flagembedding") and results["runs"].get(DIAGNOSTIC):
        files = {"hn_mine (FlagModel: CLS pooling)": work / "runs" / "flagembedding" / "seed1" / "hn_mined.jsonl",
                 "bgeflow mine, hn_mine's settings": work / "runs" / DIAGNOSTIC / "seed1" / "mined.jsonl"}
        if "bgeflow" in systems:
            files["bgeflow mine, its defaults"] = work / "runs" / "bgeflow" / "seed1" / "mined.jsonl"
        for name, path in files.items():
            out = path.with_suffix(".profile.json")
            subprocess.check_call([sys.executable, __file__, "--worker", "profile", str(path), str(data), model,
                                   str(out)])
            results["mining"][name] = json.loads(out.read_text())
        results["overlap"] = overlap(*list(files.values())[:2])
        (work / "results.json").write_text(json.dumps(results, indent=1))
    print()
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
