"""A run's own inputs (a corpus to mine from, an eval set) and the per-model gate that guards publishing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bgeflow.platform import kfp_steps
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.local_run import RunSummary, format_summary
from bgeflow.steps.evaluation.gate import check_gate, parse_gate
from bgeflow.steps.publish import registry
from test_publish import make_training_output


@dataclass
class Artifact:
    """What a KFP component body sees of an artifact: a path and its metadata."""

    path: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mining_draws_negatives_from_the_runs_corpus(tmp_path: Path) -> None:
    """The pipeline's mine task, given the run's corpus, takes every negative from it and none from the data."""
    records = [{"query": f"how do I {verb} a file", "pos": [f"Use the {verb} command to {verb} a file."],
                "neg": [f"Training text {i} about cooking."]} for i, verb in enumerate(("copy", "move", "delete"))]
    train = _jsonl(tmp_path / "ingest" / "train.jsonl", records)
    corpus_texts = [f"Corpus passage {i}: the {w} tool handles files." for i, w in enumerate(
        ("cp", "mv", "rm", "ln", "cat", "touch", "chmod", "chown", "stat", "find"))]
    half = len(corpus_texts) // 2
    first = _jsonl(tmp_path / "corpus" / "a.jsonl", [{"text": t} for t in corpus_texts[:half]])
    second = _jsonl(tmp_path / "corpus" / "b.jsonl", [{"text": t} for t in corpus_texts[half:]])
    mined = Artifact(str(tmp_path / "mined"))
    Path(mined.path).mkdir()
    kfp_steps.mine_step(
        dataset=Artifact(str(tmp_path / "ingest"), {"train": str(train)}),
        settings={"range_for_sampling": "0-10", "negative_number": 4, "max_score_ratio": None},
        retriever={"model": "bundled:minilm", "query_max_len": 16, "passage_max_len": 32},
        corpus=f"{first},{second}", mined=mined, work_uri="", run_id="")
    out = [json.loads(line) for line in Path(mined.metadata["uri"]).read_text().splitlines()]
    assert len(out) == 3
    for row in out:
        assert len(row["neg"]) == 4 and set(row["neg"]) <= set(corpus_texts)
    report = json.loads((Path(mined.metadata["uri"]).parent / "mine_report.json").read_text())
    assert report["pool_size"] == len(corpus_texts) and report["pool_source"] == [str(first), str(second)]


def test_beir_layout_is_an_eval_set(tmp_path: Path) -> None:
    from bgeflow.steps.evaluation.evalset import load_eval_set, resolve_eval_uris

    root = tmp_path / "beir"
    _jsonl(root / "corpus.jsonl", [{"_id": "d1", "title": "ls", "text": "list directory contents"},
                                   {"_id": "d2", "title": "", "text": "copy files"}])
    _jsonl(root / "queries.jsonl", [{"_id": "q1", "text": "show files"}, {"_id": "q2", "text": "duplicate a file"}])
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\n")
    evalset = load_eval_set(resolve_eval_uris(str(root), None, None, None))
    assert evalset.uris["qrels"].endswith("qrels/test.tsv")
    assert [q.id for q in evalset.queries] == ["q1"] and evalset.qrels == {"q1": {"d1": 1}}
    assert evalset.corpus_texts[0] == "ls list directory contents"  # BEIR's title goes in front
    (root / "qrels" / "test.tsv").unlink()
    (root / "qrels" / "dev2.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(ValueError, match=r"qrels/ holds dev2\.tsv, train\.tsv; name the split"):
        resolve_eval_uris(str(root), None, None, None)


def test_run_spec_declares_corpus_and_eval_data_once(tmp_path: Path) -> None:
    spec = blocks.LocalRunSpec.build({"data": "d.jsonl", "corpus": "a.jsonl, s3://b/corpus/", "eval_data": "ev/"})
    assert spec.corpus == ["a.jsonl", "s3://b/corpus/"]
    arguments = spec.pipeline_arguments()
    assert arguments["corpus"] == "a.jsonl,s3://b/corpus/" and arguments["eval_data"] == "ev/"
    mine = blocks.mine_spec(spec.mine, spec.retriever, inputs=["t.jsonl"], output=str(tmp_path / "m.jsonl"),
                            corpus=spec.corpus)
    assert mine.candidate_pool == ["a.jsonl", "s3://b/corpus/"] and mine.max_score_ratio == 0.95
    assert blocks.mine_spec(spec.mine, spec.retriever, inputs=["t.jsonl"], output="m.jsonl").candidate_pool is None


def test_run_without_a_reranker_is_not_judged_on_reranker_rules() -> None:
    run = blocks.RunSpec.build({"data": "d.jsonl"})
    assert run.evaluate.gate == "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"
    alone = blocks.evaluate_spec(run.evaluate, run.retriever, run.reranker, eval_data="e", split="", output="o",
                                 finetuned_retriever="r", finetuned_reranker=None, registry="")
    assert alone.gate == "ndcg@10>=base+0.01"
    both = blocks.evaluate_spec(run.evaluate, run.retriever, run.reranker, eval_data="e", split="", output="o",
                                finetuned_retriever="r", finetuned_reranker="k", registry="")
    assert both.gate == run.evaluate.gate


def _evaluation(tmp_path: Path, reranker_ndcg: float) -> Artifact:
    columns = {"base": {"ndcg@10": 0.60}, "finetuned": {"ndcg@10": 0.68, "rerank.ndcg@10": reranker_ndcg},
               "retriever": {"rerank.ndcg@10": 0.66}}
    rules = parse_gate("ndcg@10>=base+0.01, rerank.ndcg@10>=retriever")
    document = {"metrics": columns, "gate": check_gate(rules, columns, "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"),
                "models": {}}
    path = tmp_path / f"metrics-{reranker_ndcg}.json"
    path.write_text(json.dumps(document))
    return Artifact(str(tmp_path), {"metrics": str(path)})


@pytest.mark.parametrize("reranker_ndcg", [0.48, 0.70])
def test_each_model_is_published_only_when_its_own_rules_pass(tmp_path: Path, reranker_ndcg: float) -> None:
    reg = str(tmp_path / "registry")
    evaluation = _evaluation(tmp_path, reranker_ndcg)
    dataset = Artifact(str(tmp_path), {"train": ""})
    done = {}
    for kind in ("retriever", "reranker"):
        out = make_training_output(tmp_path / kind, seed=len(kind), reranker=kind == "reranker")
        published = Artifact(str(tmp_path / f"published-{kind}"))
        version = kfp_steps.publish_step(
            model=Artifact(str(out / "model"), {"trained": True, "output": str(out)}), evaluation=evaluation,
            dataset=dataset, kind=kind, model_settings={"model": "bundled:minilm"},
            settings={"champion": "if-gate-passed"}, registry=reg, published=published, work_uri="")
        done[kind] = (version, published.metadata)
    version, meta = done["retriever"]
    assert version and meta["champion"] is True  # its own rule passed: the reranker's failure holds nothing back
    assert registry.get_version(reg, "bge-retriever", "champion").version == version
    version, meta = done["reranker"]
    if reranker_ndcg < 0.66:
        assert version == "" and not registry.list_versions(reg, "bge-reranker")
        assert meta["skipped"] == "its gate rules failed: rerank.ndcg@10 0.4800 is not >= retriever 0.6600"
    else:
        assert version and registry.get_version(reg, "bge-reranker", "champion").version == version


def test_summary_says_which_model_was_held_back_and_why() -> None:
    columns = {"base": {"ndcg@10": 0.60, "rerank.ndcg@10": 0.45}, "finetuned": {"ndcg@10": 0.68, "rerank.ndcg@10": 0.48},
               "retriever": {"rerank.ndcg@10": 0.66}}
    gate = check_gate(parse_gate("ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"), columns,
                      "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever")
    reason = "its gate rules failed: rerank.ndcg@10 0.4800 is not >= retriever 0.6600"
    summary = RunSummary(output="o", pipeline_root="r", seconds=1.0, metrics=columns, gate=gate,
                         models={"retriever": {"trained": True, "uri": "m1", "base_model": "b"},
                                 "reranker": {"trained": True, "uri": "m2", "base_model": "b"}},
                         published={"retriever": {"uri": "reg/bge-retriever/v1", "champion": True}},
                         skipped={"reranker": reason}, eval_queries=40, rerank_top_k=5,
                         warnings=["the eval set has 40 queries: one query moves a mean metric by up to 0.025"])
    text = format_summary(summary)
    assert "  eval set: 40 queries (the gate judges these)" in text.splitlines()
    assert "  rerank.* reorder the retriever's top 5: at k >= 5 they count those 5 only" in text.splitlines()
    assert next(line for line in text.splitlines() if line.startswith("  metric ")).split() == [
        "metric", "base", "fine-tuned", "delta", "not", "reranked"]  # nothing else beside the column headers
    assert "  WARNING: the eval set has 40 queries: one query moves a mean metric by up to 0.025" in text
    assert f"NOT published: {reason}" in text
    assert text.splitlines()[1] == "  step logs: r/logs"  # where each step's full log is
    assert "retriever: passed" in text and "reranker: FAILED, not published" in text
    assert "rerank.ndcg@10        0.4500      0.4800   +0.0300        0.6600" in text
