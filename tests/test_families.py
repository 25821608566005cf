"""The BGE families: runner choice, each runner's own options, LoRA export, family-aware evaluation.

Tiny random-weight models built from configs (``tiny_models``): a 2-layer XLM-R with bge-m3's heads, a
2-layer Qwen2 (LLM embedder and LLM reranker base) and a 2-layer layerwise MiniCPM reranker. The fast
tests choose runners, read options and score; the ``slow`` ones train each runner a few steps under
torchrun, then load the output with the FlagEmbedding class users load that family with.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import build_parser, main
from bgeflow.cli.train import build_spec
from bgeflow.core.errors import ConfigError
from bgeflow.steps.training import TrainSpec
from bgeflow.steps.training.distributed import Distributed
from bgeflow.steps.training.pod import resolved_options, runner_arguments
from tiny_models import build_decoder, build_layerwise, build_m3

NAMES = ["Alice", "Bob", "Carol", "David", "Erin", "Frank", "Grace", "Heidi"]
CITIES = ["Paris", "Lagos", "Lima", "Oslo"]
PAIRS = [("Where does Alice live?", "Alice lives in Paris."), ("Where does Bob live?", "Where does Bob work?"),
         ("Where does Carol live?", "Carol lives in Lima.")]


def _records() -> list[dict[str, Any]]:
    records = []
    for i, name in enumerate(NAMES):
        city = CITIES[i % len(CITIES)]
        records.append({"query": f"Where does {name} live?", "pos": [f"{name} lives in {city}."],
                        "neg": [f"Where does {name} work?", f"Does {name} live in {city}?",
                                f"{NAMES[(i + 1) % len(NAMES)]} lives in {city}."]})
    return records


def _texts() -> list[str]:
    return [t for r in _records() for t in (r["query"], *r["pos"], *r["neg"])]


@pytest.fixture(scope="session")
def family_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("family-data") / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_m3(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_m3(tmp_path_factory.mktemp("tiny-m3"), _texts()))


@pytest.fixture(scope="session")
def tiny_decoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_decoder(tmp_path_factory.mktemp("tiny-decoder"), _texts()))


@pytest.fixture(scope="session")
def tiny_layerwise(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_layerwise(tmp_path_factory.mktemp("tiny-layerwise"), _texts()))


@pytest.fixture
def models(request: pytest.FixtureRequest) -> Any:
    """The path of a fixture by name (parametrised tests name their model)."""
    return lambda name: request.getfixturevalue(name)


def parse(*argv: str) -> TrainSpec:
    parser = build_parser()
    args, unknown = parser.parse_known_args(["train", *argv])
    args.runner_flags = unknown
    return build_spec(args)


def one_node() -> Distributed:
    return Distributed(nnodes=1, node_rank=0, nproc_per_node=1, master_addr="127.0.0.1", master_port=29500)


# --------------------------------------------------------------------------- runner choice


@pytest.mark.parametrize(("model", "kind", "runner"), [
    ("tiny_m3", "retriever", "encoder-m3"),
    ("tiny_decoder", "retriever", "decoder-base"),
    ("tiny_decoder", "reranker", "reranker-decoder"),
    ("tiny_layerwise", "reranker", "reranker-layerwise"),
    ("minilm_path", "retriever", "encoder-base"),
    ("tiny_reranker", "reranker", "reranker-encoder"),
    ("tiny_m3", "reranker", "reranker-encoder"),  # bge-reranker-v2-m3: an XLM-R cross-encoder
])
def test_auto_runner_follows_the_base_model(models: Any, model: str, kind: str, runner: str) -> None:
    spec = TrainSpec.of(kind=kind, model=models(model), train_data="d.jsonl", output="o")
    assert spec.runner == "auto" and spec.chosen_runner().name == runner


def test_runner_by_name_and_an_unreadable_model(tiny_decoder: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bgeflow.steps.training.runners")
    base = {"train_data": "d.jsonl", "output": "o"}
    assert TrainSpec.of(kind="retriever", model=tiny_decoder, runner="decoder-icl", **base).chosen_runner().name == \
        "decoder-icl"
    with pytest.raises(ConfigError, match="runner reranker-decoder trains a reranker, not a retriever"):
        TrainSpec.of(kind="retriever", model=tiny_decoder, runner="reranker-decoder", **base)
    with pytest.raises(ConfigError, match="runner"):
        TrainSpec.of(kind="retriever", model=tiny_decoder, runner="decoder-large", **base)
    # Read by the pods that fetch it: here the kind's encoder runner, and a log line saying how to choose.
    assert TrainSpec.of(kind="retriever", model="s3://b/m3", **base).chosen_runner().name == "encoder-base"
    assert "pass --runner" in caplog.text
    # Its options: refused in one line naming the runner they belong to.
    with pytest.raises(ConfigError, match="it is one of the encoder-m3 runner's: pass --runner encoder-m3"):
        parse("retriever", "--model", "s3://b/m3", "--train-data", "d", "--output", "o", "--unified_finetuning", "True")


# --------------------------------------------------------------------------- each runner's own options

M3_FLAGS = ["--unified_finetuning", "True", "--use_self_distill", "True", "--self_distill_start_step", "0",
            "--fix_encoder", "False", "--colbert_dim", "-1"]
LORA_FLAGS = ["--use_lora", "True", "--lora_rank", "8", "--lora_alpha", "16", "--target_modules", "q_proj", "v_proj",
              "--save_merged_lora_model", "True"]


@pytest.mark.parametrize(("model", "kind", "flags", "runner", "expected"), [
    ("tiny_m3", "retriever", M3_FLAGS, "encoder-m3",
     {"unified_finetuning": True, "use_self_distill": True, "self_distill_start_step": 0, "colbert_dim": -1}),
    ("tiny_decoder", "retriever", LORA_FLAGS, "decoder-base",
     {"use_lora": True, "lora_rank": 8, "lora_alpha": 16.0, "target_modules": ["q_proj", "v_proj"],
      "save_merged_lora_model": True}),
    ("tiny_decoder", "retriever", ["--runner", "decoder-icl", *LORA_FLAGS, "--icl_suffix_str", " <response>",
                                   "--example_query_max_len", "16"], "decoder-icl",
     {"icl_suffix_str": " <response>", "example_query_max_len": 16, "lora_rank": 8}),
    ("tiny_decoder", "reranker", [*LORA_FLAGS, "--model_type", "decoder"], "reranker-decoder",
     {"model_type": "decoder", "lora_rank": 8}),
    ("tiny_layerwise", "reranker", [*LORA_FLAGS, "--model_type", "from_finetuned_model", "--start_layer", "1",
                                    "--head_multi", "True", "--head_type", "simple"], "reranker-layerwise",
     {"model_type": "from_finetuned_model", "start_layer": 1, "head_multi": True, "head_type": "simple"}),
])
def test_each_runner_reads_its_own_flags(models: Any, tmp_path: Path, model: str, kind: str, flags: list[str],
                                         runner: str, expected: dict[str, Any]) -> None:
    """FlagEmbedding's flags for the runner, typed by its parser, reach its dataclasses unchanged."""
    from transformers import HfArgumentParser

    data = tmp_path / "d.jsonl"
    data.write_text("")  # FlagEmbedding checks the data files exist
    spec = parse(kind, "--model", models(model), "--train-data", str(data), "--output", str(tmp_path / "o"), *flags)
    chosen = spec.chosen_runner()
    assert chosen.name == runner and expected.items() <= spec.hyperparameters.items()
    options = resolved_options(spec, chosen)
    args = runner_arguments(spec, options, model_path=models(model), data=data, run_dir=tmp_path / "run",
                            use_cpu=True, dist=one_node(), pooling="last_token" if "decoder" in runner else "cls",
                            resume=None, deepspeed=None)
    args.pop("ddp_backend")  # outside torchrun a gloo backend would make accelerate start a process group
    parsed = {k: v for dc in HfArgumentParser(chosen.classes()[:3]).parse_dict(args) for k, v in vars(dc).items()}
    assert {k: parsed[k] for k in expected} == expected
    if chosen.kind == "reranker":
        assert parsed["model_type"] != "encoder"  # the LLM rerankers' inputs, not a cross-encoder's


def test_a_runner_refuses_another_runners_options(tiny_decoder: str, minilm_path: str) -> None:
    with pytest.raises(ConfigError, match=r"unified_finetuning is not an option of FlagEmbedding's decoder-base"):
        parse("retriever", "--model", tiny_decoder, "--train-data", "d", "--output", "o", "--unified_finetuning",
              "True")
    with pytest.raises(ConfigError, match="use_lora is not an option of FlagEmbedding's encoder-base"):
        parse("retriever", "--model", minilm_path, "--train-data", "d", "--output", "o", "--use_lora", "True")


def test_runner_options_that_cannot_train(tiny_decoder: str, tiny_layerwise: str) -> None:
    base = {"train_data": "d.jsonl", "output": "o"}
    options = resolved_options(TrainSpec.of(kind="reranker", model=tiny_decoder, **base))
    assert options["model_type"] == "decoder" and options["use_lora"] and options["query_instruction_for_rerank"] == "A: "
    assert options["gradient_checkpointing_kwargs"] == {"use_reentrant": False}
    raw = TrainSpec.of(kind="reranker", model=tiny_decoder, runner="reranker-layerwise", **base)
    assert resolved_options(raw)["model_type"] == "from_raw_model"  # a plain LM: heads built from its LM head
    assert resolved_options(TrainSpec.of(kind="reranker", model=tiny_layerwise, **base))["model_type"] == \
        "from_finetuned_model"
    with pytest.raises(ConfigError, match="model_type encoder"):
        resolved_options(TrainSpec.of(kind="reranker", model=tiny_decoder, model_type="encoder", **base))
    with pytest.raises(ConfigError, match="must be one of from_raw_model"):
        resolved_options(TrainSpec.of(kind="reranker", model=tiny_layerwise, model_type="decoder", **base))
    with pytest.raises(ConfigError, match="same_dataset_within_batch"):
        resolved_options(TrainSpec.of(kind="retriever", model=tiny_decoder, runner="decoder-icl",
                                      same_dataset_within_batch=False, **base))
    with pytest.raises(ConfigError, match="raw_peft"):
        resolved_options(TrainSpec.of(kind="retriever", model=tiny_decoder, raw_peft="/adapter", **base))


def test_run_blocks_carry_the_runner(tiny_decoder: str) -> None:
    from bgeflow.platform.run_spec import RunSpec, train_spec

    run = RunSpec.of(data="d.jsonl", retriever={"model": tiny_decoder, "runner": "decoder-icl", "lora_rank": 8},
                     reranker={"model": tiny_decoder})
    spec = train_spec("retriever", run.retriever, train_data="d.jsonl", output="o")
    assert spec.runner == "decoder-icl" and spec.hyperparameters["lora_rank"] == 8
    assert train_spec("reranker", run.reranker, train_data="d.jsonl", output="o").chosen_runner().name == \
        "reranker-decoder"


def test_resume_restores_m3_heads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trainer restores the encoder; bge-m3's heads come back from their own files in the checkpoint."""
    from types import SimpleNamespace

    import torch
    from transformers import Trainer

    from bgeflow.steps.training.worker import _load_wrapped

    restored: list[Any] = []
    monkeypatch.setattr(Trainer, "_load_from_checkpoint",
                        lambda self, ckpt, model=None: restored.append((ckpt, model)))
    torch.manual_seed(0)
    saved = {"colbert_linear": torch.nn.Linear(4, 4), "sparse_linear": torch.nn.Linear(4, 1)}
    for name, head in saved.items():
        torch.save(head.state_dict(), tmp_path / f"{name}.pt")
    live = {"colbert_linear": torch.nn.Linear(4, 4), "sparse_linear": torch.nn.Linear(4, 1)}
    encoder = torch.nn.Linear(4, 4)
    trainer = SimpleNamespace(model=SimpleNamespace(model=encoder, **live))
    _load_wrapped(trainer)(str(tmp_path))
    assert restored == [(str(tmp_path), encoder)]
    for name, head in saved.items():
        assert torch.equal(live[name].weight, head.weight) and torch.equal(live[name].bias, head.bias)


# --------------------------------------------------------------------------- LoRA export


def _lora_run(base: str, run_dir: Path, runner: str) -> dict[str, Any]:
    """A trained-looking adapter (random, non-zero) on ``base``, saved as the runner saves it; its options."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from bgeflow.steps.training.export import base_model_for

    options = {"model_name_or_path": base, "use_lora": True, "lora_rank": 4, "lora_alpha": 8,
               "target_modules": ["q_proj", "v_proj"]}
    if runner == "reranker-layerwise":
        options["model_type"] = "from_finetuned_model"  # what runner_options sets for a layerwise base
    torch.manual_seed(1)
    model = base_model_for(runner, options, Path(base))
    adapter = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                               init_lora_weights=False))
    adapter.save_pretrained(run_dir)
    AutoTokenizer.from_pretrained(base).save_pretrained(run_dir)
    return options


def _outputs(model: Any, ids: Any) -> Any:
    import torch

    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    logits = getattr(out, "logits", None)
    if isinstance(logits, (list, tuple)):  # the layerwise model: one score per head
        return torch.stack([x.float() for x in logits])
    return out.last_hidden_state if logits is None else logits


@pytest.mark.parametrize(("model", "runner"), [
    ("tiny_decoder", "decoder-base"), ("tiny_decoder", "reranker-decoder"), ("tiny_layerwise", "reranker-layerwise")])
def test_lora_merge_round_trips(models: Any, tmp_path: Path, model: str, runner: str) -> None:
    """The exported model = base + adapter (to 1e-4); the adapter is kept and names the base."""
    import torch
    from peft import PeftModel

    from bgeflow.steps.training.export import base_model_for, export_model

    base, run_dir = models(model), tmp_path / "run"
    options = _lora_run(base, run_dir, runner)
    kind = "retriever" if runner.startswith("decoder") else "reranker"
    dest = export_model(run_dir, tmp_path / "model", kind=kind, pooling="last_token", max_seq_length=64,
                        runner=runner, runner_args=options, base_model="org/tiny-base")
    assert not (dest / "adapter_config.json").exists()  # transformers would load the adapter instead
    assert json.loads((dest / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        "org/tiny-base"
    ids = torch.tensor([[0, 7, 9, 11, 13, 2], [0, 5, 6, 8, 10, 2]])
    expected = _outputs(PeftModel.from_pretrained(base_model_for(runner, options, run_dir), str(run_dir)), ids)
    kept = _outputs(PeftModel.from_pretrained(base_model_for(runner, options, run_dir), str(dest / "adapter")), ids)
    merged_path = {**options, "model_name_or_path": str(dest)}
    merged = _outputs(base_model_for(runner, merged_path, dest), ids)
    base_out = _outputs(base_model_for(runner, options, run_dir), ids)
    assert torch.allclose(merged, expected, atol=1e-4) and torch.equal(kept, expected)
    assert not torch.allclose(base_out, expected, atol=1e-4)  # the adapter changes the outputs
    document = json.loads((dest / "flagembedding.json").read_text())
    assert document["runner"] == runner


# --------------------------------------------------------------------------- family-aware evaluation


def test_m3_scores_are_bgem3flagmodels(tiny_m3: str) -> None:
    """Sparse, ColBERT and their weighted mix with dense, as ``BGEM3FlagModel.compute_score`` gives them."""
    import numpy as np
    from FlagEmbedding import BGEM3FlagModel

    from bgeflow.retrieval.spec import EncodingSettings
    from bgeflow.steps.evaluation.families import M3_WEIGHTS, m3_scores

    queries = [q for q, _ in PAIRS]
    passages = [p for _, p in PAIRS]
    candidates = np.array([[0, 2], [1, -1], [2, 0]])
    scores = m3_scores(tiny_m3, queries, passages, candidates, EncodingSettings.of(device="cpu", query_max_len=32,
                                                                                  passage_max_len=32))
    model = BGEM3FlagModel(tiny_m3, use_fp16=False, devices="cpu")
    for qi, row in enumerate(candidates):
        for slot, pid in enumerate(row):
            if pid < 0:
                assert all(scores[m][qi, slot] == -np.inf for m in scores)
                continue
            # One pair per batch: compute_score pads a batch's passages with zero ColBERT vectors.
            reference = model.compute_score([(queries[qi], passages[pid])], batch_size=1, max_query_length=32,
                                            max_passage_length=32, weights_for_different_modes=list(M3_WEIGHTS))
            for mode in ("sparse", "colbert", "colbert+sparse+dense"):
                assert scores[mode][qi, slot] == pytest.approx(reference[mode][0], abs=1e-4)
    assert scores["sparse"][0, 0] > 0 and scores["sparse"][1, 0] > 0  # shared words match lexically


def _eval_set(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    corpus = [{"id": f"d{i}", "text": t} for i, t in enumerate(dict.fromkeys(t for r in _records()
                                                                           for t in (*r["pos"], *r["neg"])))]
    ids = {c["text"]: c["id"] for c in corpus}
    queries = [{"id": f"q{i}", "text": r["query"], "relevant": {ids[r["pos"][0]]: 1}} for i, r in enumerate(_records())]
    (root / "corpus.jsonl").write_text("".join(json.dumps(c) + "\n" for c in corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    return root


def test_evaluation_scores_each_family(tmp_path: Path, tiny_m3: str, tiny_decoder: str, tiny_layerwise: str) -> None:
    """bge-m3: dense plus m3.* metrics; an LLM reranker and a layerwise one scored by their FlagEmbedding classes."""
    from bgeflow.steps.evaluation.evaluate import evaluate
    from bgeflow.steps.evaluation.spec import EvaluateSpec

    spec = EvaluateSpec.of(eval_data=str(_eval_set(tmp_path / "eval")), output=str(tmp_path / "out"),
                           retriever=tiny_m3, reranker=tiny_decoder, base_reranker=tiny_layerwise, rerank_top_k=5,
                           encoding={"device": "cpu", "query_max_len": 32, "passage_max_len": 32},
                           rerank={"max_len": 64})
    metrics = evaluate(spec).metrics["metrics"]
    tuned, base = metrics["finetuned"], metrics["base"]
    for mode in ("sparse", "colbert", "colbert+sparse+dense"):
        assert 0.0 <= tuned[f"m3.{mode}.ndcg@10"] <= 1.0
    assert 0.0 <= tuned["ndcg@10"] <= 1.0 and 0.0 <= tuned["rerank.ndcg@10"] <= 1.0
    assert 0.0 <= base["rerank.ndcg@10"] <= 1.0 and not any(k.startswith("m3.") for k in base)


def test_icl_queries_end_with_the_suffix(tmp_path: Path) -> None:
    from bgeflow.steps.evaluation.families import format_queries
    from bgeflow.steps.training.export import inference_document

    document = inference_document("decoder-icl", {"icl_suffix_str": "\\n<response>"}, max_seq_length=64)
    (tmp_path / "flagembedding.json").write_text(json.dumps(document))
    assert format_queries(tmp_path, ["q1"]) == ["q1\n<response>"]
    assert format_queries(tmp_path / "missing", ["q1"]) == ["q1"]


def test_inference_documents_name_each_familys_class() -> None:
    from bgeflow.steps.training.export import inference_document, instruction_prefix

    llm = {"query_instruction_for_retrieval": "Given a query", "query_instruction_format": "<instruct>{}\\n<query>{}"}
    assert instruction_prefix(llm) == "<instruct>Given a query\n<query>"
    assert instruction_prefix({**llm, "query_instruction_format": "{}: {}!"}) is None  # not a prefix
    assert inference_document("decoder-base", llm, max_seq_length=8)["init"]["query_instruction_format"] == \
        "<instruct>{}\n<query>{}"
    m3 = inference_document("encoder-m3", {"unified_finetuning": True, "colbert_dim": 64}, max_seq_length=8)
    assert m3["class"] == "BGEM3FlagModel" and m3["init"]["colbert_dim"] == 64
    assert inference_document("encoder-m3", {"unified_finetuning": False}, max_seq_length=8)["class"] == "FlagModel"
    assert inference_document("reranker-layerwise", {}, max_seq_length=8)["class"] == "LayerWiseFlagLLMReranker"


# --------------------------------------------------------------------------- slow: each runner trains


TRAIN = ["--max_steps", "3", "--per_device_train_batch_size", "2", "--train_group_size", "2", "--query_max_len", "32",
         "--passage_max_len", "32", "--logging_steps", "1", "--learning_rate", "1e-4"]
SMALL_LORA = ["--use_lora", "True", "--lora_rank", "8", "--lora_alpha", "16", "--target_modules", "q_proj", "v_proj"]


def _load(model_dir: Path) -> Any:
    """The model as a user loads it: ``flagembedding.json``'s class and arguments."""
    import FlagEmbedding

    document = json.loads((model_dir / "flagembedding.json").read_text())
    cls = getattr(FlagEmbedding, document["class"])
    model = cls(str(model_dir), use_fp16=False, devices="cpu", **document["init"])
    if document["class"] == "LayerWiseFlagLLMReranker":
        model.use_fp16 = False  # the class turns fp16 on when both are off; on CPU it runs float32
    return document["class"], model


@pytest.mark.slow
@pytest.mark.parametrize(("model", "kind", "flags", "runner", "cls"), [
    ("tiny_m3", "retriever", ["--unified_finetuning", "True", "--use_self_distill", "True",
                              "--self_distill_start_step", "0"], "encoder-m3", "BGEM3FlagModel"),
    ("tiny_decoder", "retriever", [*SMALL_LORA, "--save_merged_lora_model", "True", "--query_instruction_for_retrieval",
                                   "Given a query", "--query_instruction_format", "<instruct>{}\\n<query>{}"],
     "decoder-base", "FlagLLMModel"),
    ("tiny_decoder", "retriever", ["--runner", "decoder-icl", *SMALL_LORA], "decoder-icl", "FlagICLModel"),
    ("tiny_decoder", "reranker", SMALL_LORA, "reranker-decoder", "FlagLLMReranker"),
    ("tiny_layerwise", "reranker", [*SMALL_LORA, "--start_layer", "1", "--head_multi", "True"], "reranker-layerwise",
     "LayerWiseFlagLLMReranker"),
])
def test_each_runner_trains_and_loads_in_flagembedding(models: Any, family_data: Path, tmp_path: Path, model: str,
                                                        kind: str, flags: list[str], runner: str, cls: str) -> None:
    import numpy as np

    output = tmp_path / "out"
    argv = ["train", kind, "--model", models(model), "--train-data", str(family_data), "--output", str(output),
            "--work-dir", str(tmp_path / "work"), *TRAIN, *flags]
    assert main(argv) == 0
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["runner"] == runner and summary["global_step"] == 3
    assert summary["losses"] and all(math.isfinite(e["loss"]) for e in summary["losses"])
    loaded_as, loaded = _load(output / "model")
    assert loaded_as == cls
    if kind == "reranker":
        assert np.asarray(loaded.compute_score(PAIRS)).shape == (len(PAIRS),)
    elif cls == "BGEM3FlagModel":
        scores = loaded.compute_score(PAIRS, weights_for_different_modes=[0.4, 0.2, 0.4])
        assert {k: len(v) for k, v in scores.items()} == dict.fromkeys(
            ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"], len(PAIRS))
    else:
        queries = loaded.encode_queries([q for q, _ in PAIRS])
        passages = loaded.encode_corpus([p for _, p in PAIRS])
        assert queries.shape == passages.shape == (len(PAIRS), 32)
        assert np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-4)
