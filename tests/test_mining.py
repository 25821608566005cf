"""``bgeflow mine`` with the bundled MiniLM: rank window, exclusions, filters, teacher, seed flags."""

from __future__ import annotations

import json
import math
import random
import shutil
import string
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bgeflow.cli import main
from bgeflow.steps.mining import MineSpec, mine, parse_size
from bgeflow.steps.mining.select import Filters, RankWindow, choose

FAST = {"pooling": "mean", "query_max_len": 32, "passage_max_len": 32, "batch_size": 32}


def _docstring_records() -> list[dict[str, Any]]:
    """Realistic, deterministic pairs: "what does X do" → the first line of X's docstring."""
    import json as json_mod
    import os.path

    rows = []
    for module in (math, string, os.path, json_mod, random):
        for name in sorted(dir(module)):
            doc = (getattr(getattr(module, name), "__doc__", None) or "").strip().splitlines()
            if name.startswith("_") or not doc or len(doc[0]) < 25 or not callable(getattr(module, name)):
                continue
            rows.append({"query": f"what does {module.__name__}.{name} do", "pos": [doc[0].strip()]})
    seen: set[str] = set()
    unique = []
    for row in rows:
        if row["pos"][0] not in seen:
            seen.add(row["pos"][0])
            unique.append(row)
    rng = random.Random(0)
    for i, row in enumerate(unique):
        row["neg"] = [unique[(i + rng.randrange(1, len(unique))) % len(unique)]["pos"][0]]
    return unique[:60]


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    rows = _docstring_records()
    assert len(rows) >= 40
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def train_file(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    return _write(tmp_path / "train.jsonl", records)


def _mine(minilm_path: str, inputs: Path | str, output: Path | str, work: Path, **kw: Any) -> Any:
    settings = {**FAST, **kw}
    return mine(MineSpec.of(model=minilm_path, inputs=[str(inputs)], output=str(output), work_dir=str(work), **settings))


# ------------------------------------------------------------------ selection rules (no model)


def test_rank_window_is_zero_based_half_open() -> None:
    hits = np.arange(10, dtype=np.int64) + 100  # pool id 100 is rank 0, 101 rank 1, ...
    scores = np.linspace(0.9, 0.0, 10, dtype=np.float32)
    choice = choose(hits, scores, window=RankWindow.parse("2-5"), excluded=np.array([103]), reference_score=None,
                    filters=Filters(), number=10, pool_size=110, rng=random.Random(0))
    assert choice.ids[:2] == [102, 104]  # ranks 2 and 4; rank 3 is a positive; rank 5 is outside
    assert choice.removed["positive_or_query"] == 1
    assert choice.filled == 8 and not set(choice.ids[2:]) & {102, 103, 104}
    assert len(set(choice.ids)) == 10


def test_filters_remove_in_order_and_never_come_back_as_fill() -> None:
    hits = np.arange(6, dtype=np.int64)
    scores = np.array([0.99, 0.9, 0.7, 0.5, 0.2, 0.05], dtype=np.float32)
    choice = choose(hits, scores, window=RankWindow(0, 6), excluded=np.array([], dtype=np.int64),
                    reference_score=0.8, filters=Filters(max_score_ratio=0.95, max_score=0.6, min_score=0.1),
                    number=6, pool_size=6, rng=random.Random(0))
    assert dict(choice.removed) == {"max_score_ratio": 2, "max_score": 1, "min_score": 1}
    assert {rule: [round(x, 4) for x in scores] for rule, scores in choice.removed_scores.items()} == {
        "max_score_ratio": [0.99, 0.9], "max_score": [0.7], "min_score": [0.05]}
    assert choice.ids == [3, 4]  # nothing else in the pool may be used as fill
    assert choice.filled == 0


def test_text_pool_dedupes_on_disk_in_first_seen_order(tmp_path: Path) -> None:
    from bgeflow.steps.mining.pool import TextPool, text_hash

    pool = TextPool.build(["b", "a", "b", "", "  ", "multi\nline", "中文", "a"], tmp_path / "pool.jsonl")
    assert len(pool) == 4 and list(pool) == ["b", "a", "multi\nline", "中文"]
    assert pool[1:3] == ["a", "multi\nline"] and pool[-1] == "中文"
    assert pool.index_of(np.array([text_hash("中文"), text_hash("absent"), text_hash("b")])).tolist() == [3, -1, 0]
    with pytest.raises(IndexError):
        pool[4]
    pool.close()


def test_range_and_size_parsing() -> None:
    assert RankWindow.parse("2-200") == RankWindow(2, 200)
    for bad in ("200-2", "abc", "5", "-1-3", "3-3"):
        with pytest.raises(ValueError, match=r"2-200|start < end"):
            RankWindow.parse(bad)
    assert parse_size("512MB") == 512_000_000 and parse_size("2GiB") == 2 * 1024**3 and parse_size("100") == 100
    assert parse_size("1.5k") == 1500 and parse_size(None) is None
    with pytest.raises(ValueError, match="a size like 512MB"):
        parse_size("lots")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("negative_number", 0, "negative_number: Input should be greater than or equal to 1"),
     ("range_for_sampling", "9-3", "range_for_sampling: needs 0 <= start < end"),
     ("max_memory", "12 parsecs", "max_memory: must be a size"), ("output", "out/", "output: must name a .jsonl"),
     ("output", "out.csv", ".jsonl"), ("pooling", "max", "encoding.pooling"), ("min_score", 0.9, "below max_score")],
)
def test_config_errors_name_the_setting(field: str, value: Any, message: str) -> None:
    kwargs: dict[str, Any] = {"model": "m", "inputs": ["in.jsonl"], "output": "out.jsonl", "max_score": 0.5}
    kwargs[field] = value
    with pytest.raises(ValueError, match=message):
        MineSpec.of(**kwargs)


# ------------------------------------------------------------------ end to end with MiniLM


def test_exact_ranks_on_a_known_pool(minilm_path: str, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    from bgeflow.retrieval.encoder import Encoder

    rows = records[:12]
    out = tmp_path / "mined.jsonl"
    result = _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w",
                   range_for_sampling="1-5", negative_number=4)
    # The pool is every pos and neg text, first occurrence first; rank it independently.
    pool: list[str] = []
    for row in rows:
        for text in row["pos"] + row["neg"]:
            if text not in pool:
                pool.append(text)
    enc = Encoder(minilm_path, **FAST)
    scores = enc.encode_queries([r["query"] for r in rows]) @ enc.encode_passages(pool).T
    assert result.report["pool_size"] == len(pool)
    for row, mined, q_scores in zip(rows, _read(out), scores, strict=True):
        ranking = [pool[j] for j in np.argsort(-q_scores, kind="stable")]
        expected = [t for t in ranking[1:5] if t not in row["pos"] and t != row["query"]]
        assert mined["neg"][: len(expected)] == expected
        assert len(mined["neg"]) == 4
        assert not set(mined["neg"][len(expected) :]) & set(ranking[:5])  # fill comes from outside the window


def test_positives_and_query_never_negatives(minilm_path: str, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    rows = [dict(r) for r in records[:20]]
    # Plant each query's own text in the pool, and give some rows several positives.
    rows[0] = {**rows[0], "neg": [*rows[0]["neg"], rows[1]["query"], rows[2]["query"]]}
    rows[3] = {**rows[3], "pos": [*rows[3]["pos"], rows[4]["pos"][0], rows[5]["pos"][0]]}
    out = tmp_path / "mined.jsonl"
    result = _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w",
                   range_for_sampling="0-30", negative_number=10)
    mined = _read(out)
    assert len(mined) == len(rows)
    for row, got in zip(rows, mined, strict=True):
        assert len(got["neg"]) == 10 and len(set(got["neg"])) == 10
        assert not set(got["neg"]) & set(row["pos"])
        assert row["query"] not in got["neg"]
    # Rank 0 is usually the query's own positive: the report counts those removals.
    assert result.report["filtered"]["positive_or_query"] >= len(rows) // 2


def test_a_query_on_two_lines_keeps_both_positives_out_of_its_negatives(minilm_path: str, tmp_path: Path) -> None:
    """The issue's case: the same query twice with different positives; line 2's positive (its top hit)
    must not become a negative of line 1, as ``mine --help`` promises and ingest's merge does."""
    query = "where do giant pandas live"
    rows = [{"query": query, "pos": ["Giant pandas live in the mountain forests of central China."],
             "neg": ["Penguins live in the southern hemisphere."]},
            {"query": query, "pos": ["The giant panda's habitat is bamboo forest in Sichuan."],
             "neg": ["Camels cross deserts."]},
            *({"query": f"unrelated question {i}", "pos": [f"Unrelated answer about topic {i}."],
               "neg": [f"Another unrelated text {i}."]} for i in range(6))]
    out = tmp_path / "mined.jsonl"
    _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w", range_for_sampling="0-30",
          negative_number=30)
    mined = _read(out)
    both = {rows[0]["pos"][0], rows[1]["pos"][0]}
    assert not both & set(mined[0]["neg"]) and not both & set(mined[1]["neg"])
    assert mined[0]["pos"] == rows[0]["pos"] and mined[1]["pos"] == rows[1]["pos"]  # each line keeps its own


def test_a_query_in_two_files_and_an_external_pool(minilm_path: str, tmp_path: Path) -> None:
    """A second input of the kind: the two lines in two files, mined from a separate candidate pool."""
    query = "who wrote the origin of species"
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "a.jsonl", [{"query": query, "pos": ["Charles Darwin wrote On the Origin of Species."]},
                              {"query": "what is a comet", "pos": ["A comet is an icy small body."]}])
    _write(data / "b.jsonl", [{"query": query, "pos": ["Darwin published the Origin of Species in 1859."]}])
    pool = _write(tmp_path / "pool.jsonl", [{"text": t} for t in (
        "Charles Darwin wrote On the Origin of Species.", "Darwin published the Origin of Species in 1859.",
        "Alfred Russel Wallace also proposed natural selection.", "A comet is an icy small body.",
        "Gregor Mendel studied pea plants.", "The Beagle voyage lasted five years.")])
    out = tmp_path / "mined.jsonl"
    mine(MineSpec.of(model=minilm_path, inputs=[str(data)], output=str(out), work_dir=str(tmp_path / "w"),
                     candidate_pool=[str(pool)], range_for_sampling="0-6", negative_number=6, **FAST))
    mined = [row for row in _read(out) if row["query"] == query]
    positives = {"Charles Darwin wrote On the Origin of Species.", "Darwin published the Origin of Species in 1859."}
    assert len(mined) == 2 and all(not positives & set(row["neg"]) for row in mined)


def test_a_teacher_without_a_trained_head_is_refused(minilm_path: str, train_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's case: ``--teacher-reranker bundled:minilm`` (a bi-encoder) scored with a random head."""
    argv = ["mine", "--model", minilm_path, "--input", str(train_file), "--output", str(tmp_path / "m.jsonl"),
            "--teacher-reranker", "bundled:minilm", "--query-max-len", "32", "--passage-max-len", "32"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "reranker bundled:minilm has no trained sequence-classification head" in err
    assert "classifier.bias, classifier.weight" in err
    assert not (tmp_path / "m.jsonl").exists()


def test_a_random_bert_without_a_head_is_refused_as_a_teacher(minilm_path: str, train_file: Path,
                                                              tmp_path: Path) -> None:
    """A second input of the kind: a small BERT checkpoint saved without any head (a bare encoder)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bgeflow.core.errors import ConfigError
    from bgeflow.retrieval.encoder import CrossEncoderScorer

    bare = tmp_path / "bare-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(bare)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(bare)
    with pytest.raises(ConfigError, match="no trained sequence-classification head"):
        CrossEncoderScorer(str(bare))
    with pytest.raises(ConfigError, match="no trained sequence-classification head"):
        mine(MineSpec.of(model="bundled:minilm", inputs=[str(train_file)], output=str(tmp_path / "m.jsonl"),
                         teacher={"model": str(bare)}, **FAST))


def test_filter_removes_planted_near_duplicate(minilm_path: str, tmp_path: Path) -> None:
    positive = "The quick brown fox jumps over the lazy dog near the river bank."
    near_duplicate = "The quick brown fox jumped over the lazy dog near the river bank."
    rows = [
        {"query": "a fox jumping over a dog", "pos": [positive], "neg": ["Stock markets fell sharply on Monday."]},
        {"query": "interest rates", "pos": ["The central bank raised interest rates again."],
         "neg": [near_duplicate, "A recipe for sourdough bread with a crisp crust.", "Rain is expected tomorrow."]},
    ]
    inputs = _write(tmp_path / "in.jsonl", rows)
    plain = _mine(minilm_path, inputs, tmp_path / "plain.jsonl", tmp_path / "w", range_for_sampling="0-10",
                  negative_number=2)
    assert near_duplicate in _read(tmp_path / "plain.jsonl")[0]["neg"]
    assert plain.report["filtered"]["max_score_ratio"] == 0

    filtered = _mine(minilm_path, inputs, tmp_path / "filtered.jsonl", tmp_path / "w", range_for_sampling="0-10",
                     negative_number=2, max_score_ratio=0.95)
    assert near_duplicate not in _read(tmp_path / "filtered.jsonl")[0]["neg"]
    assert filtered.report["filtered"]["max_score_ratio"] >= 1
    assert filtered.report["filters"]["max_score_ratio"] == 0.95
    # The histograms count the same scores: what each filter removed, the positives, the mined negatives.
    histograms = filtered.report["histograms"]
    assert sum(histograms["counts"]["max_score_ratio"]) == filtered.report["filtered"]["max_score_ratio"]
    assert sum(histograms["counts"]["positive"]) == 2
    mined = sum(len(r["neg"]) for r in _read(tmp_path / "filtered.jsonl")) - filtered.report["random_fill_negatives"]
    assert sum(histograms["counts"]["mined_negative"]) == mined
    assert len(histograms["edges"]) == len(histograms["counts"]["positive"]) + 1
    assert (tmp_path / "filtered.score_histogram.png").read_bytes()[:4] == b"\x89PNG"  # named after its output

    absolute = _mine(minilm_path, inputs, tmp_path / "abs.jsonl", tmp_path / "w", range_for_sampling="0-10",
                     negative_number=2, max_score=0.5, min_score=0.0)
    # MiniLM scores the near-duplicate ~0.67 and the sourdough recipe ~-0.04 for this query.
    assert near_duplicate not in _read(tmp_path / "abs.jsonl")[0]["neg"]
    assert absolute.report["filtered"]["max_score"] >= 1 and absolute.report["filtered"]["min_score"] >= 1


def test_deterministic_for_a_seed(minilm_path: str, train_file: Path, tmp_path: Path) -> None:
    def run(seed: int, name: str) -> str:
        _mine(minilm_path, train_file, tmp_path / name, tmp_path / "w", range_for_sampling="2-40",
              negative_number=5, seed=seed)
        return (tmp_path / name).read_text()

    first = run(7, "a.jsonl")
    assert run(7, "b.jsonl") == first
    assert run(8, "c.jsonl") != first


def test_output_keeps_every_input_field_and_report(minilm_path: str, tmp_path: Path,
                                                   records: list[dict[str, Any]]) -> None:
    rows = [dict(r) for r in records[:8]]
    rows[0] = {**rows[0], "id": "q-0", "prompt": "Represent this: ", "type": "normal", "pos_scores": [1.0],
               "neg_scores": [0.1], "source": {"file": "a", "line": 3}}
    out = tmp_path / "sub" / "mined.jsonl"
    result = _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w", negative_number=3)
    first = _read(out)[0]
    assert first["id"] == "q-0" and first["prompt"] == "Represent this: " and first["type"] == "normal"
    assert first["source"] == {"file": "a", "line": 3} and first["pos_scores"] == [1.0]
    assert "neg_scores" not in first  # the old scores described other negatives
    report = json.loads((tmp_path / "sub" / "mine_report.json").read_text())
    assert report == json.loads(json.dumps(result.report))
    assert report["rows"] == 8 and report["negatives_per_row"] == {"mean": 3.0, "min": 3, "max": 3}
    assert report["scores"]["positive"]["count"] == 8 and report["scores"]["mined_negative"]["count"] > 0
    assert report["scores"]["positive"]["p50"] > report["scores"]["mined_negative"]["p50"]
    assert set(report["filtered"]) == {"positive_or_query", "max_score_ratio", "max_score", "min_score"}


def test_report_names_the_encoder_arithmetic(minilm_path: str, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    result = _mine(minilm_path, _write(tmp_path / "in.jsonl", records[:4]), tmp_path / "mined.jsonl", tmp_path / "w",
                   negative_number=2, precision="bf16", batch_tokens=512)
    encoding = json.loads((tmp_path / "mine_report.json").read_text())["encoding"]
    assert encoding == result.report["encoding"]
    assert {k: encoding[k] for k in ("backend", "device", "precision", "precision_requested", "batch_tokens")} == {
        "backend": "torch", "device": "cpu", "precision": "bf16", "precision_requested": "bf16", "batch_tokens": 512}
    assert encoding["attention"] in ("sdpa", "eager")


def test_short_rows_are_filled_and_counted(minilm_path: str, tmp_path: Path) -> None:
    rows = [{"query": f"question {i}", "pos": [f"answer number {i}"], "neg": [f"distractor {i}"]} for i in range(3)]
    out = tmp_path / "mined.jsonl"
    result = _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w",
                   range_for_sampling="0-2", negative_number=4)
    # Pool of 6: one positive per row is banned, so 5 are available and every row needs the fill.
    assert [len(r["neg"]) for r in _read(out)] == [4, 4, 4]
    assert result.report["rows_short_of_negatives"] == 3 and result.report["random_fill_negatives"] > 0
    tight = _mine(minilm_path, _write(tmp_path / "in.jsonl", rows), out, tmp_path / "w",
                  range_for_sampling="0-2", negative_number=9)
    assert tight.report["rows_still_short_after_fill"] == 3
    assert [len(r["neg"]) for r in _read(out)] == [5, 5, 5]


def test_default_work_dir_is_removed_after_success(minilm_path: str, tmp_path: Path) -> None:
    rows = [{"query": f"question {i}", "pos": [f"answer number {i}"], "neg": [f"distractor {i}"]} for i in range(3)]
    config = MineSpec.of(model=minilm_path, inputs=[str(_write(tmp_path / "in.jsonl", rows))],
                        output=str(tmp_path / "mined.jsonl"), negative_number=2, **FAST)
    work = config.default_work_dir()
    assert str(work).startswith(tempfile.gettempdir())
    result = mine(config)
    assert result.report["encoding"]["work_dir"] == str(work) and not work.exists()
    assert len(_read(tmp_path / "mined.jsonl")) == 3


@pytest.mark.parametrize(("case", "kept"), [
    ("a model that does not load", False),
    ("a pool with no text", False),
    ("search fails after the pool is encoded", True),  # a rerun resumes from the encoded chunks
])
def test_a_failed_mine_keeps_its_default_work_dir_only_when_a_rerun_resumes_from_it(
        minilm_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, kept: bool) -> None:
    from bgeflow.core.errors import BgeflowError

    rows = [{"query": f"question {i} {case}", "pos": [f"answer number {i}"], "neg": [f"distractor {i}"]}
            for i in range(3)]
    model = str(tmp_path / "no-model") if "model" in case else minilm_path
    extra: dict[str, Any] = {}
    if "no text" in case:
        extra["candidate_pool"] = str(_write(tmp_path / "pool.jsonl", [{"text": ""}]))
    if "search" in case:
        def broken(*_args: Any, **_kw: Any) -> Any:
            raise BgeflowError("search failed")

        monkeypatch.setattr("bgeflow.retrieval.search.search", broken)
    config = MineSpec.of(model=model, inputs=[str(_write(tmp_path / "in.jsonl", rows))],
                         output=str(tmp_path / "mined.jsonl"), negative_number=2, **FAST, **extra)
    work = config.default_work_dir()
    with pytest.raises(BgeflowError):
        mine(config)
    assert work.exists() == kept, case
    if kept:
        shutil.rmtree(work)


def test_candidate_pool_and_s3(minilm_path: str, s3_bucket: str, tmp_path: Path, records: list[dict[str, Any]]) -> None:
    from bgeflow.core.storage import open_store

    store = open_store(f"s3://{s3_bucket}")
    rows = records[:10]
    corpus = [{"id": f"c{i}", "text": r["pos"][0]} for i, r in enumerate(records[5:40])]
    store.write_text("in/train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    store.write_text("corpus/part-0.jsonl", "".join(json.dumps(c) + "\n" for c in corpus))
    result = _mine(minilm_path, f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out/mined.jsonl", tmp_path / "w",
                   candidate_pool=[f"s3://{s3_bucket}/corpus"], range_for_sampling="0-8", negative_number=5)
    assert result.report_uri == f"s3://{s3_bucket}/out/mine_report.json"
    assert json.loads(store.read_text("out/mine_report.json"))["pool_size"] == len(corpus)
    mined = [json.loads(line) for line in store.read_text("out/mined.jsonl").splitlines()]
    texts = {c["text"] for c in corpus}
    for row, got in zip(rows, mined, strict=True):
        assert set(got["neg"]) <= texts and not set(got["neg"]) & set(row["pos"]) and len(got["neg"]) == 5
    # Positives outside the pool are encoded on their own for the scores.
    assert result.report["scores"]["positive"]["count"] == 10

    store.write_text("bad/corpus.jsonl", '{"text": "fine"}\n{"id": 3}\n')
    with pytest.raises(ValueError, match=r"bad/corpus.jsonl:2 \[text\]"):
        _mine(minilm_path, f"s3://{s3_bucket}/in/", tmp_path / "x.jsonl", tmp_path / "w",
              candidate_pool=[f"s3://{s3_bucket}/bad/corpus.jsonl"])


def test_models_from_s3(minilm_path: str, tiny_reranker: str, s3_bucket: str, tmp_path: Path,
                        records: list[dict[str, Any]]) -> None:
    """The retriever and the teacher as s3:// model directories (a pod without hub access has only S3):
    downloaded into the work dir, with the same result as the local copies."""
    from bgeflow.core.storage import open_store

    store = open_store(f"s3://{s3_bucket}")
    store.upload_dir(minilm_path, "models/minilm")
    store.upload_dir(tiny_reranker, "models/reranker")
    inputs = _write(tmp_path / "in.jsonl", records[:6])
    local = _mine(minilm_path, inputs, tmp_path / "local.jsonl", tmp_path / "w1", negative_number=3,
                  teacher_reranker=tiny_reranker, teacher_max_len=64)
    remote = _mine(f"s3://{s3_bucket}/models/minilm", inputs, tmp_path / "remote.jsonl", tmp_path / "w2",
                   negative_number=3, teacher_reranker=f"s3://{s3_bucket}/models/reranker", teacher_max_len=64)
    assert remote.report["encoding"]["model"] == f"s3://{s3_bucket}/models/minilm"
    assert _read(tmp_path / "remote.jsonl") == _read(tmp_path / "local.jsonl") and local.records == remote.records


def test_teacher_scores_and_flagembedding_dataset(minilm_path: str, tiny_reranker: str, tmp_path: Path,
                                                  records: list[dict[str, Any]]) -> None:
    from FlagEmbedding.abc.finetune.embedder import AbsEmbedderDataArguments, AbsEmbedderTrainDataset
    from transformers import AutoTokenizer

    from bgeflow.retrieval.encoder import CrossEncoderScorer

    out = tmp_path / "mined.jsonl"
    # fp32 on both sides: in bf16 (what "auto" picks on CPUs that have it) a pair's score moves by one bf16
    # step (~2e-4 here) with the other pairs of its batch, and mining batches all pairs where this scores a row.
    _mine(minilm_path, _write(tmp_path / "in.jsonl", records[:6]), out, tmp_path / "w", negative_number=3,
          teacher_reranker=tiny_reranker, teacher_max_len=64, precision="fp32")
    mined = _read(out)
    scorer = CrossEncoderScorer(tiny_reranker, max_len=64, precision="fp32")
    for row in mined:
        assert len(row["pos_scores"]) == len(row["pos"]) and len(row["neg_scores"]) == len(row["neg"]) == 3
        expected = scorer.score([(row["query"], t) for t in row["pos"] + row["neg"]])
        np.testing.assert_allclose(row["pos_scores"] + row["neg_scores"], expected, atol=1e-4)

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    for distill in (False, True):
        args = AbsEmbedderDataArguments(train_data=[str(out)], train_group_size=4, knowledge_distillation=distill,
                                        cache_path=str(tmp_path / "hf-cache"))
        dataset = AbsEmbedderTrainDataset(args, tokenizer)
        assert len(dataset) == 6
        query, passages, teacher = dataset[0]
        assert query == mined[0]["query"] and len(passages) == 4
        assert (teacher is not None and len(teacher) == 4) if distill else teacher is None


# ------------------------------------------------------------------ CLI: the seed's flags


def test_seed_command_runs_with_only_the_entry_point_changed(minilm_path: str, train_file: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "seed_minedHN.jsonl"
    code = main([
        "mine", "--model_name_or_path", minilm_path, "--input_file", str(train_file), "--output_file", str(out),
        "--range_for_sampling", "2-30", "--negative_number", "7", "--query_instruction_for_retrieval", "",
        "--pooling", "mean", "--query_max_len", "32", "--passage_max_len", "32", "--work_dir", str(tmp_path / "w"),
    ])
    assert code == 0
    seed_run = out.read_text()
    assert all(len(r["neg"]) == 7 for r in _read(out))
    # The bgeflow spellings give the same result.
    code = main([
        "mine", "--model", minilm_path, "--input", str(train_file), "--output", str(tmp_path / "new.jsonl"),
        "--range-for-sampling", "2-30", "--negative-number", "7", "--query-instruction", "",
        "--pooling", "mean", "--query-max-len", "32", "--passage-max-len", "32", "--work-dir", str(tmp_path / "w"),
    ])
    assert code == 0 and (tmp_path / "new.jsonl").read_text() == seed_run


def test_candidate_pool_seed_alias_parses() -> None:
    from bgeflow.cli import build_parser
    from bgeflow.cli._options import spec_from_args

    args = build_parser().parse_args([
        "mine", "--model_name_or_path", "m", "--input_file", "i.jsonl", "--output_file", "o.jsonl",
        "--candidate_pool", "pool.jsonl", "--use_gpu_for_searching", "--negative_number", "15",
        "--teacher-reranker", "t",
    ])
    spec = spec_from_args(MineSpec, args)
    assert spec.candidate_pool == ["pool.jsonl"] and spec.use_gpu and spec.negative_number == 15
    assert spec.model == "m" and spec.inputs == ["i.jsonl"] and spec.teacher.model == "t"


def test_use_gpu_without_gpu_is_a_clear_error(train_file: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import faiss

    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is present")
    # A model that does not exist proves the check comes before any loading or encoding.
    code = main(["mine", "--model", "/nonexistent/model", "--input", str(train_file),
                 "--output", str(tmp_path / "o.jsonl"), "--use_gpu_for_searching"])
    err = capsys.readouterr().err
    assert code == 2 and "--use-gpu" in err and "faiss" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_bad_input_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q", "pos": ["p"]}\n{"query": "q2", "pos": []}\n')
    code = main(["mine", "--model", "bundled:minilm", "--input", str(bad), "--output", str(tmp_path / "o.jsonl")])
    assert code == 2 and f"{bad}:2" in capsys.readouterr().err


@pytest.mark.parametrize(("inputs", "pool", "output", "flag"), [
    (["d/train.jsonl"], None, "d/train.jsonl", "--input"),
    (["d/train.jsonl"], None, "./d/../d/train.jsonl", "--input"),  # another spelling of the same path
    (["d/train.jsonl"], None, "file://{tmp}/d/train.jsonl", "--input"),
    (["d/train.jsonl"], None, "link.jsonl", "--input"),  # a symlink to the input
    (["d/other.jsonl", "d"], None, "d/train.jsonl", "--input"),  # a file of an input prefix
    (["d/other.jsonl"], ["d/train.jsonl"], "d/train.jsonl", "--candidate-pool"),
])
def test_output_that_is_an_input_is_refused_before_any_work(
        inputs: list[str], pool: list[str] | None, output: str, flag: str, tmp_path: Path,
        records: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A user's `mine --output` named one of its `--input` files: the source data was overwritten without a word."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    source = _write(tmp_path / "d" / "train.jsonl", records[:3])
    _write(tmp_path / "d" / "other.jsonl", records[3:6])
    (tmp_path / "link.jsonl").symlink_to(source)
    before = source.read_bytes()
    # A model that does not exist proves the check comes before any loading or encoding.
    argv = ["mine", "--model", "/nonexistent/model", "--output", output.format(tmp=tmp_path)]
    argv += [a for uri in inputs for a in ("--input", uri)] + [a for uri in pool or [] for a in ("--candidate-pool", uri)]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"is the {flag} file " in err and "train.jsonl" in err and "give --output another file" in err
    assert source.read_bytes() == before


def _readme_mine_outputs() -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("**What `mine` writes**")
    return readme[start:readme.index("\n\n", start)]


def _mine_help() -> str:
    from bgeflow.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return " ".join(sub.choices["mine"].description.split())


@pytest.mark.parametrize("place", [_readme_mine_outputs, _mine_help], ids=["README", "mine --help"])
def test_every_file_mine_writes_is_documented_with_its_outputs(place: Any, minilm_path: str, tmp_path: Path,
                                                               records: list[dict[str, Any]]) -> None:
    """Each file a mining run leaves beside its output is named where mine's outputs are documented."""
    out = tmp_path / "out"
    _mine(minilm_path, _write(tmp_path / "in.jsonl", records[:20]), out / "mined.jsonl", tmp_path / "work",
          range_for_sampling="0-10", negative_number=2, max_score_ratio=0.95)
    written = sorted(p.name for p in out.iterdir() if p.name != "mined.jsonl")  # the output is named by --output
    assert "score_histogram.png" in written
    text = place()
    assert [name for name in written if name not in text] == [], text


def test_two_outputs_in_one_folder_keep_their_own_reports(minilm_path: str, tmp_path: Path,
                                                          records: list[dict[str, Any]]) -> None:
    """The seed recipe's a_minedHN.jsonl and b_minedHN.jsonl in one folder: neither report replaces the other's,
    and each names its own output; ``mined.jsonl`` keeps ``mine_report.json`` (the pipeline's completion marker)."""
    out = tmp_path / "out"
    data = _write(tmp_path / "in.jsonl", records[:12])
    for name, number in (("a_minedHN.jsonl", 2), ("b_minedHN.jsonl", 3), ("mined.jsonl", 1)):
        result = _mine(minilm_path, data, out / name, tmp_path / "work", range_for_sampling="0-10",
                       negative_number=number)
        assert result.report_uri == str(out / ("mine_report.json" if name == "mined.jsonl" else
                                               f"{name.removesuffix('.jsonl')}.mine_report.json"))
    for stem, number in (("a_minedHN", 2), ("b_minedHN", 3)):
        report = json.loads((out / f"{stem}.mine_report.json").read_text())
        assert report["output"] == str(out / f"{stem}.jsonl") and report["negatives_per_row"]["max"] == number
        assert (out / f"{stem}.score_histogram.png").exists()
    assert json.loads((out / "mine_report.json").read_text())["output"] == str(out / "mined.jsonl")
    assert (out / "score_histogram.png").exists()
    assert MineSpec.of(model="m", inputs=["x"], output="s3://b/p/x.jsonl.gz").report_uri == "s3://b/p/x.mine_report.json"


def test_the_readme_explains_the_score_histogram_as_it_is_drawn() -> None:
    """Its axes, its bins and every series it can draw (the filters' removals too), as the plot names them."""
    from bgeflow.steps.mining.histogram import _LABELS, BINS

    text = " ".join(_readme_mine_outputs().split())
    assert f"{BINS} bins" in text and "x axis" in text and "y axis" in text and "share of its own count" in text
    assert [label for label in _LABELS.values() if label not in text] == [], text
