"""Token limits above a model's positions are refused by every verb that tokenizes, before any work.

One check (``bgeflow.core.models.check_token_limits``) in mine, train (before torchrun) and
evaluate; and a training process that fails for a reason a rerun repeats is never told to resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgeflow.cli import main
from bgeflow.core.errors import ConfigError, StepFailed

LONG = " ".join(["tokens"] * 900)  # ~900 tokens: past MiniLM's 512 positions


def _data(path: Path, n: int = 8) -> Path:
    rows = [{"query": f"query {i}", "pos": [f"positive {i} {LONG}"], "neg": [f"negative {i} {LONG}"] * 3}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def no_launch(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """torchrun replaced by a recorder: the tests assert it is never reached."""
    import bgeflow.steps.training.pod as pod

    launched: list[list[str]] = []
    monkeypatch.setattr(pod, "_run_child", lambda cmd, env=None: launched.append(cmd) or 0)
    return launched


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if ": error: " in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_reranker_max_len_above_the_positions_is_refused_before_torchrun(
    tmp_path: Path, no_launch: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's case: ``train reranker --max_len 1024`` on MiniLM (512 positions)."""
    argv = ["train", "reranker", "--model", "bundled:minilm", "--train_data", str(_data(tmp_path / "d.jsonl")),
            "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--max_len", "1024",
            "--train_group_size", "2"]
    assert main(argv) == 2
    line = _one_error(capsys)
    assert ("max_len (a pair: query_max_len 256 + passage_max_len 768) 1024 exceeds the 512 token positions of "
            "model bundled:minilm: set it to at most 512") in line
    assert "rerun" not in line and no_launch == []


def test_retriever_passage_max_len_above_the_positions_is_refused_before_torchrun(
    tmp_path: Path, no_launch: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "retriever", "--model", "bundled:minilm", "--train_data", str(_data(tmp_path / "d.jsonl")),
            "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"), "--passage_max_len", "1024"]
    assert main(argv) == 2
    assert "passage_max_len 1024 exceeds the 512 token positions of model bundled:minilm" in _one_error(capsys)
    assert no_launch == []


def test_local_pods_are_not_started_either(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bgeflow.steps.training.pod as pod
    from bgeflow.steps.training import TrainSpec, train

    started: list[object] = []
    monkeypatch.setattr(pod, "run_local_pods", lambda *a, **k: started.append(a) or 0)
    spec = TrainSpec.of(kind="retriever", model="bundled:minilm", train_data=str(_data(tmp_path / "d.jsonl")),
                        output=str(tmp_path / "out"), local_nodes=2, query_max_len=600)
    with pytest.raises(ConfigError, match="query_max_len 600 exceeds the 512 token positions"):
        train(spec)
    assert started == []


def test_mine_and_its_teacher_refuse_limits_above_the_positions(tmp_path: Path, tiny_reranker: str) -> None:
    from bgeflow.steps.mining import MineSpec, mine

    data = str(_data(tmp_path / "d.jsonl"))
    out = str(tmp_path / "mined.jsonl")
    with pytest.raises(ConfigError, match="passage_max_len 1024 exceeds the 512 token positions"):
        mine(MineSpec.of(model="bundled:minilm", inputs=[data], output=out, passage_max_len=1024))
    with pytest.raises(ConfigError, match="teacher max_len 2048 exceeds the 512 token positions"):
        mine(MineSpec.of(model="bundled:minilm", inputs=[data], output=out, teacher={"model": tiny_reranker,
                                                                                     "max_len": 2048}))
    assert not (tmp_path / "mined.jsonl").exists()


def test_evaluate_refuses_limits_above_the_positions(tmp_path: Path, tiny_reranker: str) -> None:
    from bgeflow.steps.evaluation import EvaluateSpec, evaluate

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "corpus.jsonl").write_text('{"id": "d1", "text": "a passage"}\n')
    (tmp_path / "eval" / "queries.jsonl").write_text('{"id": "q1", "text": "a query", "relevant": {"d1": 1}}\n')
    common = {"output": str(tmp_path / "o"), "eval_data": str(tmp_path / "eval"), "retriever": "bundled:minilm"}
    with pytest.raises(ConfigError, match="passage_max_len 1024 exceeds the 512 token positions"):
        evaluate(EvaluateSpec.of(**common, passage_max_len=1024))
    with pytest.raises(ConfigError, match="rerank max_len 1024 exceeds the 512 token positions"):
        evaluate(EvaluateSpec.of(**common, reranker=tiny_reranker, rerank_max_len=1024))


def test_positions_count_what_a_token_can_use(tmp_path: Path, minilm_path: str) -> None:
    from bgeflow.core.models import check_token_limits, model_max_tokens

    assert model_max_tokens(minilm_path) == 512
    # RoBERTa/XLM-R number positions after the padding index: 514 embeddings hold 512 tokens.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "xlm-roberta", "max_position_embeddings": 514,
                                                      "pad_token_id": 1}))
    assert model_max_tokens(tmp_path) == 512
    with pytest.raises(ConfigError, match="passage_max_len 513 exceeds the 512 token positions of model m"):
        check_token_limits(tmp_path, {"query_max_len": 64, "passage_max_len": 513}, model="m", where="x")
    check_token_limits(tmp_path, {"passage_max_len": 512}, model="m", where="x")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))  # no absolute positions: no limit
    assert model_max_tokens(tmp_path) is None


# --------------------------------------------------------------------------- what a failed run advises


def test_a_deterministic_worker_failure_never_advises_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The worker records what ended it; an error of the settings is reported as such, exit 2."""
    import bgeflow.steps.training.pod as pod
    from bgeflow.steps.training import worker

    def child(cmd: list[str], env: dict[str, str] | None = None) -> int:
        args = cmd[cmd.index("bgeflow.steps.training.worker") + 1:]
        options = Path(args[args.index("--runner-args") + 1])
        # What a setting FlagEmbedding's parser refuses looks like, in the real worker (in this process:
        # without the gloo backend, which would need torchrun's process group).
        given = {k: v for k, v in json.loads(options.read_text()).items() if k != "ddp_backend"}
        options.write_text(json.dumps({**given, "no_such_option": 1}))
        with pytest.raises(ValueError, match="no_such_option"):
            worker.main(args)
        return 1

    monkeypatch.setattr(pod, "_run_child", child)
    argv = ["train", "retriever", "--model", "bundled:minilm", "--train_data", str(_data(tmp_path / "d.jsonl")),
            "--output", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    assert main(argv) == 2
    line = _one_error(capsys)
    assert "training failed on node 0: rank 0 raised ValueError" in line and "no_such_option" in line
    assert "A rerun fails the same way" in line and "resume" not in line


def test_failure_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bgeflow.steps.training.pod import failure_error
    from bgeflow.steps.training.worker import record_failure

    # The crash: a sequence longer than the position table.
    record_failure(tmp_path, RuntimeError("The size of tensor a (905) must match the size of tensor b (512) at "
                                          "non-singleton dimension 1"))
    error = failure_error(0, 1, tmp_path, "s3://b/out")
    assert isinstance(error, ConfigError) and "resume" not in str(error) and "905" in str(error)
    # A transient fault: resuming is the advice.
    record_failure(tmp_path, ConnectionError("connection reset by peer"))
    error = failure_error(0, 1, tmp_path, "s3://b/out")
    assert isinstance(error, StepFailed) and "resume from the newest complete checkpoint in s3://b/out/checkpoints" \
        in str(error)
    # One rank's own error, the other's collective failing because of it: the cause is named.
    monkeypatch.setenv("RANK", "1")
    record_failure(tmp_path, KeyError("passage"))
    error = failure_error(0, 1, tmp_path, "s3://b/out")
    assert isinstance(error, ConfigError) and "rank 1 raised KeyError" in str(error)
    # Killed without a record (OOM killer, lost node): a crash.
    for path in tmp_path.glob("failure-rank*.json"):
        path.unlink()
    error = failure_error(0, -9, tmp_path, "s3://b/out")
    assert isinstance(error, StepFailed) and "torchrun exited with -9" in str(error)
