"""``bgeflow evaluate`` end to end on a tiny eval set with the bundled MiniLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bgeflow.cli import main
from bgeflow.retrieval.pooling import resolve_pooling
from bgeflow.steps.evaluation import EvaluateSpec, compute_metrics, evaluate
from bgeflow.steps.evaluation.evaluate import few_queries
from bgeflow.steps.evaluation.gate import parse_gate

TOPICS = {
    "panda": ["The giant panda is a bear native to south central China.",
              "Pandas eat bamboo almost exclusively, up to 14 kilograms a day.",
              "Red pandas are not closely related to giant pandas."],
    "python": ["Python is a high-level, general-purpose programming language.",
               "Python's standard library includes modules for json, csv and sqlite.",
               "Guido van Rossum began working on Python in the late 1980s."],
    "paris": ["Paris is the capital and largest city of France.",
              "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
              "The Louvre in Paris is the world's most-visited museum."],
    "coffee": ["Coffee is brewed from roasted coffee beans.",
               "Espresso is made by forcing hot water through finely ground coffee.",
               "Caffeine in coffee is a central nervous system stimulant."],
    "volcano": ["A volcano is a rupture in the crust of a planet.",
                "Mount Vesuvius erupted in 79 AD and buried Pompeii.",
                "Lava is molten rock expelled by a volcano during an eruption."],
    "chess": ["Chess is a board game for two players.",
              "The queen is the most powerful piece in chess.",
              "Garry Kasparov was world chess champion from 1985 to 2000."],
}
QUERIES = [
    ("q1", "what do pandas eat?", {"panda-1": 2, "panda-0": 1}),
    ("q2", "who created the python language", {"python-2": 1}),
    ("q3", "famous museum in France's capital", {"paris-2": 1, "paris-0": 1}),
    ("q4", "how is espresso made", {"coffee-1": 1}),
    ("q5", "which eruption destroyed Pompeii", {"volcano-1": 1}),
    ("q6", "strongest chess piece", {"chess-1": 1}),
]
# fp32: the retrieval numbers are compared with the shared encoder's to 1e-6 (bf16 could swap near-ties).
FAST = {"query_max_len": 16, "passage_max_len": 32, "batch_size": 32, "rerank_max_len": 48, "precision": "fp32"}


def write_eval_dir(root: Path) -> Path:
    """``root`` made as an eval folder (corpus.jsonl + queries.jsonl) of ``TOPICS`` and ``QUERIES``."""
    root.mkdir()
    with open(root / "corpus.jsonl", "w") as fh:
        for topic, texts in TOPICS.items():
            for i, text in enumerate(texts):
                fh.write(json.dumps({"id": f"{topic}-{i}", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh:
        for query_id, text, relevant in QUERIES:
            fh.write(json.dumps({"id": query_id, "text": text, "relevant": relevant}) + "\n")
    return root


@pytest.fixture(scope="session")
def eval_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_eval_dir(tmp_path_factory.mktemp("evalset") / "eval")


def _count_loads(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[str]:
    made: list[str] = []
    original = getattr(module, name)

    def counting(model: str, *args: object, **kwargs: object) -> object:
        made.append(model)
        return original(model, *args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return made


def test_pooling_comes_from_the_sentence_transformers_config(minilm_path: str, tiny_reranker: str) -> None:
    assert resolve_pooling("auto", minilm_path) == "mean"
    assert resolve_pooling("auto", tiny_reranker) == "cls"  # no pooling config: the BERT family convention


def test_evaluate_retrievers_and_rerankers(
    minilm_path: str, tiny_reranker: str, eval_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bgeflow.retrieval.encoder as encoder_module
    import bgeflow.retrieval.loaders as loaders

    encoders = _count_loads(monkeypatch, loaders, "load_retriever")
    scorers = _count_loads(monkeypatch, loaders, "load_reranker")
    result = evaluate(EvaluateSpec.of(
        output=str(tmp_path / "out"), eval_data=str(eval_dir), base_retriever="bundled:minilm", retriever=minilm_path,
        base_reranker=tiny_reranker, reranker=tiny_reranker, rerank_top_k=3,
        gate="ndcg@10>=base; recall@3>=0; rerank.ndcg@10>=base; ndcg@10>=champion+0.5", **FAST,
    ))
    # The same weights fill both columns: encoded once, scored once.
    assert len(encoders) == 1 and len(scorers) == 1

    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc == json.loads(json.dumps(result.metrics))
    assert result.gate_passed and doc["gate"]["passed"]
    # The smallest margin over a reference (champion+0.5) exceeds one query's swing: no warning.
    assert doc["warnings"] == [] and "Warning" not in (tmp_path / "out" / "report.md").read_text()
    # The default gate's +0.01 on a handful of queries: one query decides it, and the report says so.
    small = evaluate(EvaluateSpec.of(output=str(tmp_path / "small"), eval_data=str(eval_dir),
                                     base_retriever="bundled:minilm", retriever=minilm_path,
                                     gate="ndcg@10>=base+0.01", **FAST))
    queries = small.metrics["eval_set"]["queries"]
    assert queries < 100 and small.metrics["warnings"] == [few_queries(queries, parse_gate("ndcg@10>=base+0.01"))]
    assert f"> **Warning:** the eval set has {queries} queries" in (tmp_path / "small" / "report.md").read_text()
    # Rules a run left out of the gate: the report showing the shorter gate says which and why.
    noted = evaluate(EvaluateSpec.of(output=str(tmp_path / "noted"), eval_data=str(eval_dir),
                                     base_retriever="bundled:minilm", retriever=minilm_path, gate="recall@3>=0",
                                     gate_note="gate rule(s) rerank.ndcg@10>=retriever left out: why", **FAST))
    assert "gate rule(s) rerank.ndcg@10>=retriever left out: why" in noted.metrics["warnings"]
    assert "> **Warning:** gate rule(s) rerank.ndcg@10>=retriever left out" in (
        tmp_path / "noted" / "report.md").read_text()
    assert "no champion" in doc["gate"]["rules"][3]["reason"]
    assert doc["eval_set"]["corpus"] == 18 and doc["eval_set"]["queries"] == 6
    assert list(doc["metrics"]) == ["base", "finetuned", "retriever"]
    # "retriever": not reranking, i.e. the fine-tuned retriever's own order of the same top 3, rerank. names.
    assert set(doc["metrics"]["retriever"]) == {f"rerank.{m}" for m in ("ndcg@10", "mrr@10", "recall@1", "recall@10",
                                                                       "recall@100", "map@100", "recall@3")}
    assert doc["metrics"]["retriever"]["rerank.recall@100"] == pytest.approx(doc["metrics"]["finetuned"]["recall@3"])
    tuned = doc["metrics"]["finetuned"]
    assert set(tuned) == {"ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100", "recall@3",
                          *(f"rerank.{m}" for m in ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100",
                                                    "map@100", "recall@3"))}
    assert all(v == 0.0 for v in doc["deltas"]["finetuned-base"].values())
    # Reranking only reorders the top 3: what it finds at any depth is what the retriever found in 3.
    assert tuned["rerank.recall@100"] == pytest.approx(tuned["recall@3"])
    assert tuned["rerank.recall@3"] == pytest.approx(tuned["recall@3"])
    assert doc["models"]["finetuned"]["pooling"] == "mean"
    assert doc["models"]["finetuned"]["precision"] == "fp32" and doc["settings"]["precision"] == "fp32"
    assert doc["models"]["finetuned_reranker"]["role"] == "reranker"

    # The retrieval numbers are what the shared encoder plus a brute-force ranking give.
    encoder = encoder_module.Encoder(minilm_path, pooling="mean", query_max_len=16, passage_max_len=32,
                                     precision="fp32")
    ids = [f"{t}-{i}" for t, texts in TOPICS.items() for i in range(len(texts))]
    passages = encoder.encode_passages([text for texts in TOPICS.values() for text in texts])
    queries = encoder.encode_queries([text for _, text, _ in QUERIES])
    order = np.argsort(-(queries @ passages.T), axis=1, kind="stable")
    rankings = {q[0]: [ids[j] for j in row] for q, row in zip(QUERIES, order, strict=True)}
    expected = compute_metrics(rankings, {q[0]: q[2] for q in QUERIES}, list(tuned)[:7])
    for metric, value in expected.items():
        assert tuned[metric] == pytest.approx(value, abs=1e-6), metric
    assert tuned["mrr@10"] > 0.5  # MiniLM finds these easy topics

    report = (tmp_path / "out" / "report.md").read_text()
    assert "| metric | base | fine-tuned | not reranked | Δ vs base |" in report and "`rerank.ndcg@10`" in report
    assert (tmp_path / "out" / "deltas.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Per-query run files, as trec_eval-style readers parse them: the retriever's ranking is the one scored.
    from ir_datasets.formats import TrecScoredDocs
    from ir_datasets.util import StringFile

    runs = {p.stem: p for p in (tmp_path / "out" / "runs").iterdir()}
    assert set(runs) == {"base", "finetuned", "base_reranker", "finetuned_reranker"}
    parsed = list(TrecScoredDocs(StringFile(runs["finetuned"].read_text())).scoreddocs_iter())
    from_file: dict[str, list[str]] = {}
    for doc in parsed:  # written best first, so file order is the ranking
        from_file.setdefault(doc.query_id, []).append(doc.doc_id)
    assert from_file == {q: r[:18] for q, r in rankings.items()}
    assert compute_metrics(from_file, {q[0]: q[2] for q in QUERIES}, ["ndcg@10"])["ndcg@10"] == \
        pytest.approx(tuned["ndcg@10"], abs=1e-6)
    reranked = [line.split() for line in runs["finetuned_reranker"].read_text().splitlines()]
    assert len(reranked) == 6 * 3 and all(row[1] == "Q0" and row[5] == "finetuned_reranker" for row in reranked)


def test_cli_champion_from_registry_and_fail_on_gate(
    minilm_path: str, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bgeflow.steps.publish import PublishSpec, publish

    reg = str(tmp_path / "registry")
    published = publish(PublishSpec.of(model=minilm_path, name="minilm", registry=reg, champion="always"))
    args = ["evaluate", "--eval-data", str(eval_dir), "--retriever", "bundled:minilm", "--base-retriever",
            "bundled:minilm", "--registry", reg, "--name", "minilm", "--output", str(tmp_path / "out"),
            "--query-max-len", "16", "--passage-max-len", "32",
            "--gate", "ndcg@10>=champion; mrr@10 > base + 0.5"]
    assert main([*args, "--fail-on-gate"]) == 3
    captured = capsys.readouterr()
    assert "quality gate failed: mrr@10" in captured.err
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert doc["models"]["champion"]["registry_version"] == published.version
    assert doc["metrics"]["champion"] == pytest.approx(doc["metrics"]["finetuned"])
    champion_rule, base_rule = doc["gate"]["rules"]
    assert champion_rule["passed"] and champion_rule["reference"] == pytest.approx(champion_rule["value"])
    assert not base_rule["passed"] and not doc["gate"]["passed"]
    assert "Δ vs champion" in (tmp_path / "out" / "report.md").read_text()
    # Without --fail-on-gate the verdict is reported and the exit status stays 0.
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["gate"]["passed"] is False


def test_explicit_files_and_tsv_qrels(eval_dir: Path, tmp_path: Path) -> None:
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\tpanda-1\t1\nq4\tcoffee-1\t1\n")
    result = evaluate(EvaluateSpec.of(
        output=str(tmp_path / "out"), corpus=str(eval_dir / "corpus.jsonl"), queries=str(eval_dir / "queries.jsonl"),
        qrels=str(qrels), retriever="bundled:minilm", pooling="mean", gate="ndcg@10>=champion",
        registry=str(tmp_path / "registry"), name="never-published", **FAST,  # a first run: no champion yet
    ))
    assert result.gate_passed and "no champion" in result.metrics["gate"]["rules"][0]["reason"]
    assert result.metrics["eval_set"]["queries"] == 2  # only the judged queries
    assert result.metrics["eval_set"]["judgements"] == 2
    assert list(result.metrics["metrics"]) == ["finetuned"] and result.metrics["deltas"] == {}


def _one_error_line(capsys: pytest.CaptureFixture[str], outcome: str = "error") -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"bgeflow evaluate: {outcome}: ")
    return lines[0]


def test_cli_unknown_config_key(eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "eval.yaml"
    settings.write_text(f"eval-data: {eval_dir}\nretriever: bundled:minilm\noutput: {tmp_path}/o\ntop_k: 5\n")
    assert main(["evaluate", "--config", str(settings)]) == 2
    line = _one_error_line(capsys)
    assert "unknown setting 'top_k'" in line and str(settings) in line


def test_cli_config_values_and_flag_precedence(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "eval.yaml"
    settings.write_text("retriever: bundled:minilm\noutput: out\neval_data: /nowhere\nrerank-top-k: 0\n")
    assert main(["evaluate", "--config", str(settings)]) == 2  # the file's value is validated
    assert "rerank_top_k (--rerank-top-k): Input should be greater than 0" in _one_error_line(capsys)
    assert main(["evaluate", "--config", str(settings), "--rerank-top-k", "5"]) == 2  # the flag wins
    assert "--eval-data /nowhere: no such file or prefix" in _one_error_line(capsys)


def test_cli_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-eval"
    assert main(["evaluate", "--eval-data", str(missing), "--retriever", "bundled:minilm", "--output",
                 str(tmp_path / "o")]) == 2
    assert str(missing) in _one_error_line(capsys)
    empty = tmp_path / "empty-eval"
    empty.mkdir()
    (empty / "corpus.jsonl").write_text('{"id": "d1", "text": "x"}\n')
    assert main(["evaluate", "--eval-data", str(empty), "--retriever", "bundled:minilm", "--output",
                 str(tmp_path / "o")]) == 2
    assert "no queries.jsonl" in _one_error_line(capsys)


def test_cli_bad_data_names_file_and_line(eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"id": "q1", "text": "pandas", "relevant": {"panda-0": 1}}\n'
                       '{"id": "q2", "text": "ghost", "relevant": {"nope": 1}}\n')
    assert main(["evaluate", "--corpus", str(eval_dir / "corpus.jsonl"), "--queries", str(queries),
                 "--retriever", "bundled:minilm", "--output", str(tmp_path / "o")]) == 2
    assert "relevant document 'nope' is not in the corpus" in _one_error_line(capsys)
    queries.write_text('{"id": "q1", "text": "pandas"}\n')
    assert main(["evaluate", "--corpus", str(eval_dir / "corpus.jsonl"), "--queries", str(queries),
                 "--retriever", "bundled:minilm", "--output", str(tmp_path / "o")]) == 2
    assert f"{queries}:1: field 'relevant' is missing" in _one_error_line(capsys)


def test_cli_bad_gate(eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--eval-data", str(eval_dir), "--retriever", "bundled:minilm", "--output",
                 str(tmp_path / "o"), "--gate", "ndcg@10 => base"]) == 2
    assert "gate rule 1 ('ndcg@10 => base') at column 9" in _one_error_line(capsys)
    assert main(["evaluate", "--eval-data", str(eval_dir), "--retriever", "bundled:minilm", "--output",
                 str(tmp_path / "o"), "--gate", "rerank.ndcg@10>=base"]) == 2
    assert "needs reranker metrics: give reranker" in _one_error_line(capsys)


def test_cli_unreachable_s3(eval_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # restored after the test
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    started = time.monotonic()
    assert main(["--s3-endpoint-url", "http://127.0.0.1:1", "evaluate", "--eval-data", "s3://evals/eval",
                 "--retriever", "bundled:minilm", "--output", "s3://evals/out"]) == 1
    line = _one_error_line(capsys, "failed")
    assert "cannot reach S3 endpoint http://127.0.0.1:1" in line
    assert time.monotonic() - started < 20


def test_evaluate_on_s3(eval_dir: Path, s3_bucket: str) -> None:
    from bgeflow.core.storage import open_store

    store = open_store(f"s3://{s3_bucket}/ingest")
    store.upload_dir(eval_dir, "eval")
    result = evaluate(EvaluateSpec.of(output=f"s3://{s3_bucket}/eval-out", eval_data=store.url("eval"),
                                 retriever="bundled:minilm", **FAST))
    out = open_store(result.output_uri)
    assert {o.key for o in out.list()} == {"metrics.json", "report.md", "deltas.png", "runs/finetuned.trec"}
    assert json.loads(out.read_text("metrics.json"))["eval_set"]["uris"]["corpus"] == store.url("eval/corpus.jsonl")


def test_the_delta_plot_legend_reads_fine_tuned_minus_reference() -> None:
    from bgeflow.steps.evaluation.report import delta_label

    assert delta_label("finetuned-base") == "fine-tuned − base"
    assert delta_label("finetuned-champion") == "fine-tuned − champion"


def test_a_trec_run_refuses_ids_with_whitespace() -> None:
    from bgeflow.core.errors import DataError
    from bgeflow.steps.evaluation.evaluate import trec_run

    assert trec_run({"q1": [("d1", 0.5), ("d2", 0.25)]}, "base") == "q1 Q0 d1 1 0.500000 base\nq1 Q0 d2 2 0.250000 base\n"
    with pytest.raises(DataError, match="'doc 7' holds whitespace"):
        trec_run({"q1": [("doc 7", 0.5)]}, "base")


def test_compare_two_evaluations_query_by_query(eval_dir: Path, minilm_path: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.steps.evaluation.compare import compare
    from bgeflow.steps.evaluation.metrics import query_metric

    # The same model read with CLS instead of its mean pooling: rankings differ on some queries.
    a = evaluate(EvaluateSpec.of(output=str(tmp_path / "a"), eval_data=str(eval_dir), retriever=minilm_path, **FAST))
    b = evaluate(EvaluateSpec.of(output=str(tmp_path / "b"), eval_data=str(eval_dir), retriever=minilm_path,
                                 pooling="cls", **FAST))
    doc = compare(a.output_uri, b.output_uri, metric="ndcg@10", top=2)
    tuned_a, tuned_b = a.metrics["metrics"]["finetuned"], b.metrics["metrics"]["finetuned"]
    assert doc["metrics"]["ndcg@10"] == {"a": tuned_a["ndcg@10"], "b": tuned_b["ndcg@10"],
                                         "delta": tuned_b["ndcg@10"] - tuned_a["ndcg@10"]}
    per_query = doc["per_query"]
    assert doc["same_eval_set"] and per_query["queries"] == 6 and per_query["only_in_one_run"] == 0
    assert per_query["better"] + per_query["worse"] + per_query["same"] == 6
    # The per-query deltas average to the difference of the means.
    qrels = {q[0]: q[2] for q in QUERIES}
    runs = [{line.split()[0]: [] for line in (tmp_path / x / "runs" / "finetuned.trec").read_text().splitlines()}
            for x in ("a", "b")]
    for run, x in zip(runs, ("a", "b"), strict=True):
        for line in (tmp_path / x / "runs" / "finetuned.trec").read_text().splitlines():
            run[line.split()[0]].append(line.split()[2])
    deltas = [query_metric("ndcg@10", runs[1][q], qrels[q]) - query_metric("ndcg@10", runs[0][q], qrels[q])
              for q in qrels]
    assert sum(deltas) / len(deltas) == pytest.approx(doc["metrics"]["ndcg@10"]["delta"], abs=1e-6)
    assert len(per_query["most_improved"]) <= 2 and all(e["delta"] > 0 for e in per_query["most_improved"])
    assert all(e["delta"] < 0 and e["query"] for e in per_query["most_degraded"])

    assert main(["compare", a.output_uri, b.output_uri, "--column", "champion"]) == 2
    assert "--column champion: " in (err := capsys.readouterr().err) and "its columns: finetuned)" in err
    assert main(["compare", a.output_uri, str(tmp_path / "nothing")]) == 2
    assert "not a bgeflow evaluate output" in capsys.readouterr().err
    assert main(["compare", a.output_uri, b.output_uri, "--top", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["per_query"]["queries"] == 6


def test_evaluating_again_into_an_output_leaves_none_of_the_earlier_files(
        minilm_path: str, tiny_reranker: str, eval_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's case: base and reranker columns once, the retriever alone next; compare finds no stale run."""
    from bgeflow.core.errors import ConfigError
    from bgeflow.steps.evaluation.compare import compare

    out = tmp_path / "ev"
    evaluate(EvaluateSpec.of(output=str(out), eval_data=str(eval_dir), ingest_split=str(eval_dir),
                             base_retriever="bundled:minilm", retriever=minilm_path, reranker=tiny_reranker,
                             rerank_top_k=3, **FAST))
    assert {p.name for p in (out / "runs").iterdir()} == {"base.trec", "finetuned.trec", "finetuned_reranker.trec"}
    (out / "notes.txt").write_text("the user's own")  # not evaluate's: it stays
    evaluate(EvaluateSpec.of(output=str(out), eval_data=str(eval_dir), retriever=minilm_path, **FAST))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "deltas.png", "metrics.json", "notes.txt", "report.md", "runs/finetuned.trec"]
    # A column metrics.json does not list is refused, naming those it does (a stale file cannot answer).
    (out / "runs" / "finetuned_reranker.trec").write_text("q1 Q0 panda-1 1 1.0 finetuned_reranker\n")
    with pytest.raises(ConfigError, match=r"--column finetuned_reranker: .*ev/metrics.json lists no such column "
                                          r"\(its columns: finetuned\)"):
        compare(str(out), str(out), column="finetuned_reranker")
    assert main(["compare", str(out), str(out), "--column", "finetuned_reranker"]) == 2
    assert "lists no such column" in capsys.readouterr().err


def _evaluation_output(folder: Path, queries: dict[str, str], column: str = "finetuned") -> str:
    """A bgeflow evaluate output by hand: an eval set of ``queries`` (id → relevant doc), its metrics.json
    and a run file ranking each query's relevant document first."""
    (folder / "eval").mkdir(parents=True)
    docs = sorted(set(queries.values()))
    (folder / "eval" / "corpus.jsonl").write_text("".join(json.dumps({"id": d, "text": d}) + "\n" for d in docs))
    (folder / "eval" / "queries.jsonl").write_text("".join(
        json.dumps({"id": q, "text": f"query {q}", "relevant": [d]}) + "\n" for q, d in queries.items()))
    uris = {"corpus": str(folder / "eval" / "corpus.jsonl"), "queries": str(folder / "eval" / "queries.jsonl")}
    (folder / "runs").mkdir()
    (folder / "runs" / f"{column}.trec").write_text("".join(f"{q} Q0 {d} 1 1.0 {column}\n" for q, d in queries.items()))
    (folder / "metrics.json").write_text(json.dumps({"eval_set": {"uris": uris}, "metrics": {column: {"ndcg@10": 1.0}}}))
    return str(folder)


def test_compare_on_different_eval_sets_warns_and_counts_alike_both_ways(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Two evaluations with no query in common: 3 + 2 queries are in one run only, whichever comes first
    (A's judgements alone gave 3 one way and 2 the other), and the user is told the sets differ."""
    from bgeflow.steps.evaluation.compare import compare

    a = _evaluation_output(tmp_path / "a", {"q1": "d1", "q2": "d2", "q3": "d3"})
    b = _evaluation_output(tmp_path / "b", {"x1": "e1", "x2": "e2"})
    with caplog.at_level("WARNING", logger="bgeflow.steps.evaluation.compare"):
        both = [compare(a, b), compare(b, a)]
    assert [d["per_query"]["only_in_one_run"] for d in both] == [5, 5]
    assert [d["per_query"]["queries"] for d in both] == [0, 0] and not any(d["same_eval_set"] for d in both)
    assert sum("different eval sets" in r.getMessage() for r in caplog.records) == 2
    caplog.clear()
    assert compare(a, a)["same_eval_set"] and not caplog.records


def test_compare_judges_the_eval_set_by_its_files_not_by_how_the_path_is_spelled(
        minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The user's cases: the same files named relative then absolute are one set; other files written to
    the same path are another; a different rerank_top_k makes rerank.* metrics incomparable."""
    import hashlib

    from bgeflow.steps.evaluation.compare import compare

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "bgeflow.steps.evaluation.compare"]

    write_eval_dir(tmp_path / "eval")
    monkeypatch.chdir(tmp_path)
    relative = evaluate(EvaluateSpec.of(output="rel", eval_data="eval", retriever=minilm_path, **FAST))
    absolute = evaluate(EvaluateSpec.of(output=str(tmp_path / "abs"), eval_data=str(tmp_path / "eval"),
                                        retriever=minilm_path, **FAST))
    recorded = relative.metrics["eval_set"]
    assert recorded["uris"] == {"corpus": str(tmp_path / "eval" / "corpus.jsonl"),
                                "queries": str(tmp_path / "eval" / "queries.jsonl")}
    digest = hashlib.sha256(f"\t{hashlib.sha256((tmp_path / 'eval' / 'queries.jsonl').read_bytes()).hexdigest()}"
                            .encode()).hexdigest()
    assert recorded["sha256"]["queries"] == digest and set(recorded["sha256"]) == {"corpus", "queries"}
    with caplog.at_level("WARNING", logger="bgeflow.steps.evaluation.compare"):
        assert compare(str(tmp_path / "rel"), str(tmp_path / "abs"))["same_eval_set"]
    assert warned() == []

    # Another eval set written over the same path: the URIs are equal, the sets are not.
    lines = (tmp_path / "eval" / "queries.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "eval" / "queries.jsonl").write_text("".join(lines[:4]))
    rewritten = evaluate(EvaluateSpec.of(output=str(tmp_path / "new"), eval_data=str(tmp_path / "eval"),
                                         retriever=minilm_path, **FAST))
    assert rewritten.metrics["eval_set"]["uris"] == absolute.metrics["eval_set"]["uris"]
    with caplog.at_level("WARNING", logger="bgeflow.steps.evaluation.compare"):
        assert not compare(str(tmp_path / "abs"), str(tmp_path / "new"))["same_eval_set"]
    assert len(warned()) == 1 and "were evaluated on different eval sets" in warned()[0]

    # Reranked to different depths: said, since rerank.* metrics then measure different things.
    caplog.clear()
    for folder, k in (("rel", 3), ("abs", 100)):
        document = json.loads((tmp_path / folder / "metrics.json").read_text())
        (tmp_path / folder / "metrics.json").write_text(json.dumps({**document, "rerank_top_k": k}))
    with caplog.at_level("WARNING", logger="bgeflow.steps.evaluation.compare"):
        compare(str(tmp_path / "rel"), str(tmp_path / "abs"))
    assert warned() == [
        f"{tmp_path / 'rel'} reranked each query's top 3 candidates and {tmp_path / 'abs'} the top 100: their "
        "rerank.* metrics (and reranker columns) are not comparable"]


@pytest.mark.parametrize(("queries", "gate", "warned"), [
    (1, "ndcg@10>=base+0.01", "the eval set has 1 query: one query moves a mean metric by up to 1, more than the "
                              "gate's margin 0.01, so one query decides the verdict; hold out at least 100 queries"),
    (99, "ndcg@10>=base+0.01", "99 queries"),
    (100, "ndcg@10>=base+0.01", None),  # 1/100 is the margin itself: a rule can still need two queries to flip
    (30, "ndcg@10>=base+0.05, recall@10>=0.5", None),  # the smallest margin over a reference is 0.05 > 1/30
    (30, "ndcg@10>=base+0.1, rerank.ndcg@10>=retriever+0.02", "more than the gate's margin 0.02"),
    # No margin anywhere: the rules are named, no margin is made up.
    (50, "ndcg@10>=0.5", "the gate rule ndcg@10>=0.5 has no margin, so one query can flip the verdict"),
    (50, "ndcg@10>=base, rerank.ndcg@10>=retriever",
     "the gate rules ndcg@10>=base, rerank.ndcg@10>=retriever have no margin"),
    (100, "ndcg@10>=base", None),
    (1, "", None),  # no gate: no verdict for one query to decide
    (0, "ndcg@10>=base+0.01", None),
])
def test_an_eval_set_too_small_for_the_gate_is_named(queries: int, gate: str, warned: str | None) -> None:
    warning = few_queries(queries, parse_gate(gate))
    if warned is None:
        assert warning is None
    else:
        assert warning is not None and warned in warning
        # A margin is quoted only where the gate has one.
        assert ("margin 0.01" in warning) is ("+0.01" in gate)


def test_evaluate_help_shows_the_gate_grammar_parse_gate_reads(capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.steps.evaluation.gate import GRAMMAR

    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    shown = capsys.readouterr().out
    assert all(f"  {line}" in shown for line in GRAMMAR.splitlines())
    assert '"retriever"' in GRAMMAR.splitlines()[-1] and parse_gate("rerank.ndcg@10>=retriever")


def _write_mismatched_eval_dir(root: Path) -> Path:
    """``QUERIES`` judged against the next topic's passages: an eval set MiniLM scores badly on."""
    write_eval_dir(root)
    topics = list(TOPICS)
    with open(root / "queries.jsonl", "w") as fh:
        for n, (query_id, text, relevant) in enumerate(QUERIES):
            other = topics[(n + 1) % len(topics)]
            fh.write(json.dumps({"id": f"split-{query_id}", "text": text,
                                 "relevant": {f"{other}-{doc.rpartition('-')[2]}": g for doc, g in relevant.items()}})
                     + "\n")
    return root


#: (how it is run, the gate, the reranker or not): the gate passes on the judged set only.
BESIDE_CASES = {
    "library, retriever": ("library", "ndcg@10>=0.6, ndcg@10>=champion", False),
    "bgeflow evaluate by hand, with a reranker": ("cli", "ndcg@10>=0.6, recall@10>=base", True),
}


@pytest.mark.parametrize("case", BESIDE_CASES)
def test_ingest_split_is_scored_beside_and_never_gated(case: str, minilm_path: str, tiny_reranker: str,
                                                       eval_dir: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from bgeflow.steps.evaluation.gate import check_gate
    via, gate, with_reranker = BESIDE_CASES[case]
    split = _write_mismatched_eval_dir(tmp_path / "split")
    out = tmp_path / "out"
    beside_dir = out / "ingest-split"  # the name KFP runs' metrics carry (ingest-split.<column>.<metric>)
    settings = {"output": str(out), "eval_data": str(eval_dir), "ingest_split": str(split), "gate": gate,
                "retriever": minilm_path, "base_retriever": "bundled:minilm", "champion": minilm_path,
                "rerank_top_k": 3, "fail_on_gate": True, **FAST,
                **({"reranker": tiny_reranker} if with_reranker else {})}
    if via == "cli":
        config = tmp_path / "evaluate.yaml"
        config.write_text(json.dumps(settings))
        assert main(["evaluate", "--config", str(config)]) == 0, capsys.readouterr().err  # --fail-on-gate: passed
        doc = json.loads((out / "metrics.json").read_text())
        assert json.loads(capsys.readouterr().out)["outputs"]["ingest_split"] == str(beside_dir / "metrics.json")
    else:
        result = evaluate(EvaluateSpec.of(**settings))
        doc = json.loads((out / "metrics.json").read_text())
        assert doc == json.loads(json.dumps(result.metrics)) and result.gate_passed
        assert result.outputs["ingest_split"] == str(beside_dir / "metrics.json")

    beside = json.loads((beside_dir / "metrics.json").read_text())
    # The same models, the same columns, on the other set; no champion there, and no verdict.
    assert beside["eval_set"]["uris"]["queries"] == str(split / "queries.jsonl")
    assert beside["eval_set"]["queries"] == 6 and beside["gate"] is None
    columns = ["base", "finetuned", *(["retriever"] if with_reranker else [])]
    assert list(beside["metrics"]) == columns and list(doc["metrics"]) == [*columns[:2], "champion", *columns[2:]]
    assert set(beside["metrics"]["finetuned"]) == set(doc["metrics"]["finetuned"])
    assert "champion" not in beside["models"] and "finetuned-champion" not in beside["deltas"]
    assert doc["ingest_split"]["metrics"] == beside["metrics"]
    assert {p.name for p in (beside_dir / "runs").iterdir()} == {
        f"{c}.trec" for c in ("base", "finetuned", *(["finetuned_reranker"] if with_reranker else []))}
    # The gate judged the eval set alone: on the split's numbers it would have failed.
    assert doc["gate"]["passed"] is True and doc["gate"]["expression"] == gate
    assert beside["metrics"]["finetuned"]["ndcg@10"] < 0.6 <= doc["metrics"]["finetuned"]["ndcg@10"]
    assert check_gate(parse_gate(gate), beside["metrics"])["passed"] is False
    # The main report shows both, the split's section saying it is not gated.
    report = (out / "report.md").read_text()
    section = report[report.index("## Ingest's split"):]
    assert "not gated" in section and "ingest-split/metrics.json" in section
    assert f"| `ndcg@10` | {beside['metrics']['base']['ndcg@10']:.4f} | " \
           f"{beside['metrics']['finetuned']['ndcg@10']:.4f} |" in section
    assert "Not gated" in (beside_dir / "report.md").read_text()
