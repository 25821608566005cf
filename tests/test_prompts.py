"""One rule for a query's prompt in mine, train and evaluate: its record's own ``prompt``, else the instruction.

FlagEmbedding 1.4 reads all training files as one table: once any record has a ``prompt``, every
record has that column, ``None`` where it had none, and ``query_instruction_format.format(None,
query)`` trains on ``"None" + query``. bgeflow writes each record's resolved prompt before training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import main

INSTRUCTION = "Represent this sentence for searching relevant passages: "
OWN = "Find the recipe: "


def mixed_records(explicit_empty: bool = False) -> list[dict[str, Any]]:
    """10 records, 3 with a prompt of their own (the issue's 7 of 10 without one)."""
    rows: list[dict[str, Any]] = []
    for i in range(10):
        row: dict[str, Any] = {"query": f"how do I cook dish {i}", "pos": [f"Dish {i} is cooked slowly."],
                               "neg": [f"Dish {i + 1} is served cold.", f"Dish {i + 2} is fried."]}
        if i % 3 == 0 and i < 9:
            row["prompt"] = OWN
        if explicit_empty and i == 1:
            row["prompt"] = ""  # this record asks for no prompt at all
        rows.append(row)
    return rows


def expected(rows: list[dict[str, Any]], instruction: str) -> list[str]:
    return sorted(r.get("prompt", instruction) + r["query"] for r in rows)


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def trained_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]],
                    *flags: str) -> list[str]:
    """The query strings FlagEmbedding's own dataset builds from what ``bgeflow train`` hands the runner."""
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderTrainDataset
    from transformers import AutoTokenizer, HfArgumentParser

    import bgeflow.steps.training.pod as pod
    from bgeflow.steps.training.runners import runner_for

    seen: list[str] = []

    def child(cmd: list[str], env: dict[str, str] | None = None) -> int:
        args = json.loads(Path(cmd[cmd.index("--runner-args") + 1]).read_text())
        args.pop("ddp_backend")  # outside torchrun a gloo backend would make accelerate start a process group
        _, data_args, _ = HfArgumentParser(runner_for("retriever").classes()[:3]).parse_dict(args)
        dataset = AbsEmbedderTrainDataset(data_args, AutoTokenizer.from_pretrained(args["model_name_or_path"]))
        seen.extend(dataset[i][0] for i in range(len(dataset)))
        return 1

    monkeypatch.setattr(pod, "_run_child", child)
    argv = ["train", "retriever", "--model", "bundled:minilm", "--train_data", str(_write(tmp_path / "d.jsonl", rows)),
            "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), *flags]
    main(argv)
    return sorted(seen)


def test_training_applies_the_prompt_or_the_instruction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: mixed records and ``--query_instruction_for_retrieval``."""
    rows = mixed_records()
    got = trained_queries(tmp_path, monkeypatch, rows, "--query_instruction_for_retrieval", INSTRUCTION)
    assert got == expected(rows, INSTRUCTION)
    assert not any(q.startswith("None") for q in got)


def test_training_without_an_instruction_and_an_explicit_empty_prompt(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A second input of the kind: no instruction set (the seed's ""), one record asking for none."""
    rows = mixed_records(explicit_empty=True)
    got = trained_queries(tmp_path, monkeypatch, rows)
    assert got == expected(rows, "") and "how do I cook dish 1" in got


def _capture_encoded_queries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from bgeflow.retrieval.encoder import Encoder

    seen: list[str] = []
    real = Encoder._encode

    def capture(self: Encoder, texts: list[str], max_len: int, desc: str | None) -> Any:
        if desc == "encode queries":
            seen.extend(texts)
        return real(self, texts, max_len, desc)

    monkeypatch.setattr(Encoder, "_encode", capture)
    return seen


@pytest.mark.parametrize("explicit_empty", [False, True])
def test_mining_encodes_each_query_with_its_prompt_or_the_instruction(
    minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, explicit_empty: bool
) -> None:
    from bgeflow.steps.mining import MineSpec, mine

    rows = mixed_records(explicit_empty)
    seen = _capture_encoded_queries(monkeypatch)
    mine(MineSpec.of(model=minilm_path, inputs=[str(_write(tmp_path / "d.jsonl", rows))],
                     output=str(tmp_path / "m.jsonl"), query_instruction=INSTRUCTION, negative_number=2,
                     range_for_sampling="0-10", query_max_len=32, passage_max_len=32))
    assert sorted(seen) == expected(rows, INSTRUCTION)


def test_evaluation_applies_the_same_rule(minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bgeflow.retrieval.loaders import Retriever
    from bgeflow.steps.evaluation import EvaluateSpec, evaluate

    rows = mixed_records(explicit_empty=True)
    (tmp_path / "eval").mkdir()
    _write(tmp_path / "eval" / "corpus.jsonl", [{"id": f"d{i}", "text": r["pos"][0]} for i, r in enumerate(rows)])
    _write(tmp_path / "eval" / "queries.jsonl", [
        {"id": f"q{i}", "text": r["query"], "relevant": {f"d{i}": 1}, **({"prompt": r["prompt"]} if "prompt" in r
                                                                       else {})} for i, r in enumerate(rows)])
    seen: list[str] = []
    real = Retriever._encode

    def capture(self: Retriever, texts: list[str], prompt: str) -> Any:
        if self.model.max_seq_length == 32:  # the query side (passages: 48)
            seen.extend(prompt + t for t in texts)
        return real(self, texts, prompt)

    monkeypatch.setattr(Retriever, "_encode", capture)
    evaluate(EvaluateSpec.of(output=str(tmp_path / "out"), eval_data=str(tmp_path / "eval"), retriever=minilm_path,
                             query_instruction=INSTRUCTION, query_max_len=32, passage_max_len=48))
    assert sorted(seen) == expected(rows, INSTRUCTION)


def test_a_saved_query_prompt_is_the_instruction_when_none_is_given(minilm_path: str, tmp_path: Path) -> None:
    """A model that declares a query prompt (sentence-transformers' ``prompts``) gets it, as with ``encode_query``."""
    import shutil

    from bgeflow.retrieval.encoder import Encoder

    model = tmp_path / "prompted"
    shutil.copytree(minilm_path, model)
    (model / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "}}))
    assert Encoder(str(model), query_max_len=16, passage_max_len=16).query_instruction == "query: "
    assert Encoder(str(model), query_instruction="q> ", query_max_len=16).query_instruction == "q> "
