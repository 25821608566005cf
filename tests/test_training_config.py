"""TrainConfig, the CLI's flags and seed spellings, the distributed env and the launch checks: no training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bgeflow.cli import build_parser, main
from bgeflow.cli.train import build_config
from bgeflow.steps.training import TrainConfig
from bgeflow.steps.training.config import SEED_DEFAULTS
from bgeflow.steps.training.distributed import Distributed, operator_env, resolve, torchrun_command
from bgeflow.steps.training.pod import check_data, check_launch, fetch_train_data, pod_command, runner_args

BASE = {"model": "bundled:minilm", "train_data": "data.jsonl", "output": "out"}

# The old README's commands, with {gpus} and paths filled in (see the issue).
SEED_RETRIEVER = (
    "--output_dir {out} --model_name_or_path {model} --train_data {data} --learning_rate 1e-5 --fp16 "
    "--num_train_epochs 5 --per_device_train_batch_size 4 --dataloader_drop_last True --normlized True "
    "--temperature 0.02 --query_max_len 64 --passage_max_len 256 --train_group_size 2 --negatives_cross_device "
    "--logging_steps 10 --query_instruction_for_retrieval ''"
)
SEED_RERANKER = (
    "--output_dir {out} --model_name_or_path {model} --train_data {data} --learning_rate 6e-5 --fp16 "
    "--num_train_epochs 5 --per_device_train_batch_size 4 --gradient_accumulation_steps 4 "
    "--dataloader_drop_last True --train_group_size 16 --max_len 512 --weight_decay 0.01 --logging_steps 10"
)


def parse(*argv: str) -> TrainConfig:
    return build_config(build_parser().parse_args(["train", *argv]))


def seed_argv(template: str, **values: str) -> list[str]:
    import shlex

    return shlex.split(template.format(**values))


def test_kind_defaults_are_the_seed_hyperparameters() -> None:
    retriever = TrainConfig(kind="retriever", **BASE)
    assert (retriever.learning_rate, retriever.train_group_size, retriever.query_max_len,
            retriever.passage_max_len, retriever.temperature) == (1e-5, 2, 64, 256, 0.02)
    assert retriever.normalize_embeddings and retriever.use_inbatch_neg and retriever.negatives_cross_device is None
    reranker = TrainConfig(kind="reranker", **BASE)
    assert (reranker.learning_rate, reranker.train_group_size, reranker.max_len,
            reranker.gradient_accumulation_steps, reranker.weight_decay) == (6e-5, 16, 512, 4, 0.01)
    # FlagEmbedding 1.4 truncates a pair to query_max_len + passage_max_len: that sum is the seed's max_len.
    assert reranker.query_max_len + reranker.passage_max_len == 512
    for kind, defaults in SEED_DEFAULTS.items():
        config = TrainConfig(kind=kind, **BASE)  # type: ignore[arg-type]
        assert all(getattr(config, k) == v for k, v in defaults.items())


def test_seed_retriever_flags_parse_to_the_same_config() -> None:
    config = parse("retriever", *seed_argv(SEED_RETRIEVER, out="o", model="m", data="d.jsonl"))
    assert (config.output, config.model, config.train_data) == ("o", "m", "d.jsonl")
    assert config.fp16 and config.normalize_embeddings and config.negatives_cross_device
    assert config.query_instruction_for_retrieval == "" and config.dataloader_drop_last
    assert (config.learning_rate, config.num_train_epochs, config.per_device_train_batch_size) == (1e-5, 5, 4)
    off = parse("retriever", "--model", "m", "--train-data", "d", "--output", "o", "--normlized", "False",
                "--use_inbatch_neg", "False", "--deepspeed", "ds.json", "--gradient_checkpointing")
    assert not off.normalize_embeddings and not off.use_inbatch_neg
    assert off.deepspeed == "ds.json" and off.gradient_checkpointing


def test_seed_reranker_flags_parse() -> None:
    config = parse("reranker", *seed_argv(SEED_RERANKER, out="o", model="m", data="d.jsonl"))
    assert (config.train_group_size, config.max_len, config.weight_decay, config.gradient_accumulation_steps,
            config.learning_rate) == (16, 512, 0.01, 4, 6e-5)


@pytest.mark.parametrize("kind,argv", [
    ("retriever", ["--temperature", "0.05", "--pooling", "mean", "--nproc-per-node", "2", "--local-nodes", "2",
                   "--query-instruction-for-retrieval", "Represent: ", "--extra-arg", "lr_scheduler_type=cosine",
                   "--save-total-limit", "2", "--runner-args", "--warmup_steps", "3"]),
    ("reranker", ["--max-len", "128", "--bf16", "--allow-repeated-negatives", "--use-cpu"]),
])
def test_to_cli_args_round_trips(kind: str, argv: list[str]) -> None:
    config = parse(kind, "--model", "m", "--train-data", "s3://b/d.jsonl", "--output", "s3://b/o", *argv)
    again = parse(kind, *config.to_cli_args())
    assert again == config
    assert config.extra_args[-2:] == ["--warmup_steps", "3"] if kind == "retriever" else not config.extra_args


def test_yaml_config_and_flags_override(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("kind: retriever\nmodel: m\ntrain-data: d.jsonl\noutput: o\nnormlized: false\n"
                    "learning_rate: 2.0e-5\n", encoding="utf-8")
    config = parse("retriever", "--config", str(path), "--learning-rate", "3e-5")
    assert config.learning_rate == 3e-5 and not config.normalize_embeddings
    assert TrainConfig.from_yaml(config.to_dict()) == config
    (tmp_path / "bad.yaml").write_text("kind: retriever\nmodel: m\nlearnin_rate: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown train option 'learnin_rate'"):
        TrainConfig.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="kind 'retriever' but 'reranker'"):
        parse("reranker", "--config", str(path))


def test_env_values_are_never_baked_into_the_pod_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PET_NNODES", "3")
    monkeypatch.setenv("PET_NODE_RANK", "1")
    config = TrainConfig(kind="retriever", **BASE, local_nodes=2, nproc_per_node=2)
    command = pod_command(config)
    assert command[1:5] == ["-m", "bgeflow", "train", "retriever"]
    for flag in ("--nnodes", "--node-rank", "--nproc-per-node", "--local-nodes", "--master-port"):
        assert flag not in command


@pytest.mark.parametrize("kwargs,message", [
    ({"fp16": True, "use_cpu": True}, "--fp16 needs a CUDA GPU"),
    ({"fp16": True, "bf16": True}, "exclude each other"),
    ({"negatives_cross_device": True, "use_inbatch_neg": False}, "drop one of them"),
    ({"local_nodes": 2, "nnodes": 2}, "excludes --nnodes"),
    ({"node_rank": 2, "nnodes": 2}, "below --nnodes"),
    ({"train_group_size": 0}, "--train-group-size must be >= 1"),
    ({"max_steps": 0}, "--max-steps"),
    ({"pooling": "max"}, "--pooling must be one of"),
    ({"max_len": 128}, "reranker option"),
    ({"extra_args": ["--output_dir", "x"]}, "bgeflow sets --output_dir itself"),
    ({"extra_args": ["--learning_rate", "1"]}, "use bgeflow's --learning-rate"),
])
def test_invalid_combinations_fail_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(kind="retriever", **{**BASE, **kwargs})


def test_reranker_refuses_retriever_only_options() -> None:
    with pytest.raises(ValueError, match="--temperature: retriever only"):
        TrainConfig(kind="reranker", **BASE, temperature=0.05)
    with pytest.raises(ValueError, match="must be >= 2"):
        TrainConfig(kind="reranker", **BASE, train_group_size=1)


def one_node(nproc: int = 1, nnodes: int = 1) -> Distributed:
    return Distributed(nnodes=nnodes, node_rank=0, nproc_per_node=nproc, master_addr="127.0.0.1", master_port=29500)


def test_launch_checks_need_the_world() -> None:
    config = TrainConfig(kind="retriever", **BASE, negatives_cross_device=True)
    with pytest.raises(ValueError, match="this job has one process"):
        check_launch(config, one_node(), gpus=0)
    assert check_launch(config, one_node(2), gpus=0) is True
    with pytest.raises(ValueError, match="drop --fp16 to train in fp32 on CPU"):
        check_launch(TrainConfig(kind="reranker", **BASE, fp16=True), one_node(), gpus=0)
    assert check_launch(TrainConfig(kind="reranker", **BASE, fp16=True), one_node(), gpus=1) is False
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        check_launch(TrainConfig(kind="reranker", **BASE), one_node(2), gpus=1)


def test_seed_fp16_on_cpu_fails_before_launch_through_the_cli(tmp_path: Path, toy_data: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = seed_argv(SEED_RETRIEVER, out=str(tmp_path / "o"), model="bundled:minilm", data=str(toy_data))
    assert main(["train", "retriever", *argv, "--nproc_per_node", "2"]) == 2
    err = capsys.readouterr().err
    assert "--fp16 needs a CUDA GPU" in err and "drop --fp16" in err
    assert not (tmp_path / "o").exists()


def test_data_checks(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    rows = [{"query": f"q{i}", "pos": ["p"], "neg": [f"n{j}" for j in range(3 if i else 1)]} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = TrainConfig(kind="retriever", **{**BASE, "train_data": str(data)}, train_group_size=4)
    stats = fetch_train_data(config, tmp_path / "scratch" / "train.jsonl")
    assert (stats.records, stats.min_negatives, stats.short_records) == (4, 1, 1)
    with pytest.raises(ValueError, match=rf"1 of 4 records have fewer \(min 1, first at {data}:1\).*"
                                         "lower --train-group-size to 2"):
        check_data(config, stats, one_node())
    repeating = TrainConfig(kind="retriever", **{**BASE, "train_data": str(data)}, train_group_size=4,
                            allow_repeated_negatives=True)
    check_data(repeating, stats, one_node())
    with pytest.raises(ValueError, match="fill no batch of 4 × 2"):
        check_data(repeating, stats, one_node(2))
    rows[2]["neg"] = []
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{data}:3.*needs >= 1 negative"):
        fetch_train_data(config, tmp_path / "scratch" / "train.jsonl")
    kd = TrainConfig(kind="retriever", **{**BASE, "train_data": str(data)}, knowledge_distillation=True)
    with pytest.raises(ValueError, match=rf"{data}:1: --knowledge-distillation needs pos_scores"):
        fetch_train_data(kd, tmp_path / "scratch" / "train.jsonl")


def test_operator_env_and_its_resolution() -> None:
    env = operator_env(node_rank=1, nnodes=2, nproc_per_node=4, master_addr="job-master-0", master_port=23456)
    assert env["WORLD_SIZE"] == "8" and env["RANK"] == "1" and env["PET_NODE_RANK"] == "1"
    assert env["PET_MASTER_ADDR"] == env["MASTER_ADDR"] == "job-master-0" and env["MASTER_PORT"] == "23456"
    config = TrainConfig(kind="retriever", **BASE)
    dist = resolve(config, env)
    assert (dist.nnodes, dist.node_rank, dist.nproc_per_node, dist.world_size) == (2, 1, 4, 8)
    assert (dist.master_addr, dist.master_port, dist.port_is_default) == ("job-master-0", 23456, False)
    # Flags win over the env.
    flagged = resolve(TrainConfig(kind="retriever", **BASE, nproc_per_node=1, master_port=1234), env)
    assert (flagged.nproc_per_node, flagged.master_port, flagged.nnodes) == (1, 1234, 2)
    # An operator without nprocPerNode: WORLD_SIZE = replicas, RANK = replica index.
    old = resolve(config, {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"})
    assert (old.nnodes, old.node_rank, old.nproc_per_node) == (3, 2, 1)
    alone = resolve(config, {}, gpu_count=lambda: 2)
    assert (alone.nnodes, alone.nproc_per_node, alone.port_is_default) == (1, 2, True)
    with pytest.raises(ValueError, match="elastic"):
        resolve(config, {"PET_NNODES": "1:3"})


def test_torchrun_command_and_runner_args(tmp_path: Path) -> None:
    env = operator_env(node_rank=1, nnodes=2, nproc_per_node=2, master_addr="10.0.0.1", master_port=23456)
    dist = resolve(TrainConfig(kind="retriever", **BASE), env)
    cmd = torchrun_command(dist, "bgeflow.steps.training.worker", ["--kind", "retriever"])
    assert Path(cmd[0]).name == "torchrun"
    joined = " ".join(cmd)
    assert ("--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 23456 --nproc_per_node 2 "
            "-m bgeflow.steps.training.worker --kind retriever") in joined
    assert "--standalone" in torchrun_command(resolve(TrainConfig(kind="retriever", **BASE), {}), "m", [])

    config = TrainConfig(kind="retriever", **BASE, gradient_checkpointing=True, extra_args=["--warmup_steps", "2"])
    cpu = runner_args(config, model_path="/m", data=tmp_path / "d.jsonl", run_dir=tmp_path / "run", use_cpu=True,
                      dist=dist, pooling="mean", resume=None, deepspeed=None)
    text = " ".join(cpu)
    for expected in ("--use_cpu True --ddp_backend gloo", "--negatives_cross_device True", "--temperature 0.02",
                     "--sentence_pooling_method mean", "--normalize_embeddings True", "--gradient_checkpointing True",
                     "--train_group_size 2", "--query_max_len 64", "--passage_max_len 256", "--report_to none",
                     f"--cache_path {tmp_path / 'datasets-cache'}"):
        assert expected in text
    assert cpu[-2:] == ["--warmup_steps", "2"]
    gpu = runner_args(TrainConfig(kind="reranker", **BASE, fp16=True), model_path="/m", data=tmp_path / "d.jsonl",
                      run_dir=tmp_path / "run", use_cpu=False, dist=dist, pooling="", resume=tmp_path / "ck",
                      deepspeed="/ds.json")
    text = " ".join(gpu)
    assert "--ddp_backend nccl" in text and "--use_cpu" not in text and "--fp16 True" in text
    assert f"--resume_from_checkpoint {tmp_path / 'ck'}" in text and "--deepspeed /ds.json" in text
    assert "--max_len 512 " in text + " " and "--temperature" not in text
