"""Distillation wired through a run's blocks, and validation during training, each on tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bgeflow.platform import run_spec as blocks
from bgeflow.steps.mining import mine
from bgeflow.steps.training import train
from bgeflow.steps.training.spec import TrainSpec
from test_training_run import CITIES, HELD_OUT, NAMES, write_data


def test_distill_scores_the_mined_pairs_with_the_base_reranker_and_trains_on_them(tmp_path: Path, tiny_reranker: str,
                                                                                  minilm_path: str) -> None:
    """retriever.distill: mining writes the base reranker's scores, training runs knowledge_distillation on them."""
    run = blocks.RunSpec.build({"data": "-", "retriever": {"model": minilm_path, "distill": True, "query_max_len": 16,
                                                           "passage_max_len": 32},
                                "reranker": {"model": tiny_reranker, "max_len": 64},
                                "mine": {"range_for_sampling": "0-6", "negative_number": 3}})
    data = write_data(tmp_path / "train.jsonl", n_negatives=1, n_records=8)
    spec = blocks.mine_spec(run.mine, run.retriever, inputs=[str(data)], output=str(tmp_path / "mined.jsonl"),
                            reranker=run.reranker)
    assert spec.teacher.model == tiny_reranker and spec.teacher.max_len == 64
    mine(spec)
    rows = [json.loads(line) for line in (tmp_path / "mined.jsonl").read_text().splitlines()]
    assert all(len(r["neg_scores"]) == len(r["neg"]) == 3 and len(r["pos_scores"]) == 1 for r in rows)
    job = blocks.train_spec("retriever", run.retriever, train_data=str(tmp_path / "mined.jsonl"),
                            output=str(tmp_path / "out"))
    assert job.resolved_hyperparameters()["knowledge_distillation"] is True
    job = TrainSpec.build(job.to_dict(), {"hyperparameters": {"max_steps": 2, "per_device_train_batch_size": 4,
                                                               "logging_steps": 1, "save_steps": 100}})
    result = train(job)
    assert result.global_step == 2 and all(loss["loss"] == loss["loss"] for loss in result.loss_history)
    resolved = yaml.safe_load((tmp_path / "out" / "train_config.yaml").read_text())
    assert resolved["hyperparameters"]["knowledge_distillation"] is True
    # Without a teacher and without a reranker block to take one from, the run says what to set.
    with pytest.raises(ValueError, match=r"retriever\.distill needs a teacher: set mine\.teacher\.model"):
        blocks.mine_spec(run.mine, run.retriever, inputs=[str(data)], output=str(tmp_path / "m.jsonl"))


def _eval_set(root: Path) -> Path:
    """The held-out people as an eval set: each query's relevant passage among every city sentence."""
    root.mkdir(parents=True)
    people = list(HELD_OUT) + [(name, CITIES[i % len(CITIES)]) for i, name in enumerate(NAMES)]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"{name} lives in {city}."}) + "\n"
                                               for i, (name, city) in enumerate(people)))
    (root / "queries.jsonl").write_text("".join(
        json.dumps({"id": f"q{i}", "text": f"Where does {name} live?", "relevant": {f"d{i}": 1}}) + "\n"
        for i, (name, _) in enumerate(HELD_OUT)))
    return root


def test_validation_scores_every_n_steps_and_exports_the_best_step(tmp_path: Path, minilm_path: str) -> None:
    from bgeflow.steps.training.validation import Validator

    evalset = _eval_set(tmp_path / "eval")
    data = write_data(tmp_path / "train.jsonl", n_negatives=1)
    run = blocks.RunSpec.build({"data": "-", "retriever": {
        "model": minilm_path, "validation_steps": 2, "query_max_len": 16, "passage_max_len": 32,
        # A high learning rate makes later steps likely worse than an early one: the kept step is the best one.
        "hyperparameters": {"max_steps": 6, "per_device_train_batch_size": 4, "learning_rate": 3e-4,
                            "logging_steps": 1, "save_steps": 100}}})
    job = blocks.train_spec("retriever", run.retriever, train_data=str(data), output=str(tmp_path / "out"),
                            validation_data=str(evalset))
    assert job.validation.steps == 2 and job.validation.metric == "ndcg@10"
    result = train(job)
    validation = result.summary["validation"]
    assert [p["step"] for p in validation["curve"]] == [2, 4, 6]
    best = max(validation["curve"], key=lambda p: p["ndcg@10"])
    assert validation["best_step"] == best["step"] == validation["kept_step"]
    assert (tmp_path / "out" / "validation.png").stat().st_size > 0
    # The exported model is the kept step's: scored again the same way, it gives the same numbers.
    from transformers import AutoModel, AutoTokenizer

    exported = str(tmp_path / "out" / "model")
    scorer = Validator(evalset, pooling="mean", normalize=True, query_max_len=16, passage_max_len=32)
    again = scorer.score(AutoModel.from_pretrained(exported), AutoTokenizer.from_pretrained(exported))
    assert again["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-4)
    # Not for a reranker, and off without an eval set.
    with pytest.raises(ValueError, match="validation: retriever options, not for a reranker"):
        TrainSpec.of(kind="reranker", model="m", train_data="d", output="o",
                     validation={"eval_data": "e", "steps": 2})
    assert not blocks.train_spec("retriever", run.retriever, train_data="d", output="o").validation.enabled
