"""TrainSpec, the CLI's flags and seed spellings, FlagEmbedding's own options, the distributed env and
the launch checks: no training."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bgeflow.cli import build_parser, main
from bgeflow.cli.train import build_spec
from bgeflow.core.errors import ConfigError, DataError
from bgeflow.steps.training import TrainSpec, recipes, tracking
from bgeflow.steps.training.distributed import Distributed, operator_env, resolve, torchrun_command
from bgeflow.steps.training.pod import (
    check_data,
    check_launch,
    fetch_train_data,
    pod_command,
    resolved_options,
    runner_arguments,
    write_spec,
)

BASE: dict[str, Any] = {"model": "bundled:minilm", "train_data": "data.jsonl", "output": "out"}

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


def parse(*argv: str) -> TrainSpec:
    parser = build_parser()
    args, unknown = parser.parse_known_args(["train", *argv])
    args.runner_flags = unknown
    return build_spec(args)


def seed_argv(template: str, **values: str) -> list[str]:
    return shlex.split(template.format(**values))


def test_kind_defaults_are_the_seed_recipe() -> None:
    retriever = TrainSpec.of(kind="retriever", **BASE).resolved_hyperparameters()
    assert (retriever["learning_rate"], retriever["train_group_size"], retriever["query_max_len"],
            retriever["passage_max_len"], retriever["temperature"]) == (1e-5, 2, 64, 256, 0.02)
    assert retriever["normalize_embeddings"] and "negatives_cross_device" not in retriever  # decided by the job
    reranker = TrainSpec.of(kind="reranker", **BASE).resolved_hyperparameters()
    assert (reranker["learning_rate"], reranker["train_group_size"], reranker["max_len"],
            reranker["gradient_accumulation_steps"], reranker["weight_decay"]) == (6e-5, 16, 512, 4, 0.01)
    # FlagEmbedding 1.4 truncates a pair to query_max_len + passage_max_len: that sum is the seed's max_len.
    assert reranker["query_max_len"] + reranker["passage_max_len"] == 512
    for kind, recipe in recipes.SEED.items():
        options = TrainSpec.of(kind=kind, **BASE).resolved_hyperparameters()
        assert all(options[k] == v for k, v in recipe.items())


def test_seed_retriever_command_parses_with_only_the_entry_point_changed() -> None:
    spec = parse("retriever", *seed_argv(SEED_RETRIEVER, out="o", model="m", data="d.jsonl"))
    assert (spec.output, spec.model, spec.train_data) == ("o", "m", ["d.jsonl"])
    options = spec.resolved_hyperparameters()
    assert options["fp16"] and options["normalize_embeddings"] and options["negatives_cross_device"]
    assert options["query_instruction_for_retrieval"] == "" and options["dataloader_drop_last"]
    assert (options["learning_rate"], options["num_train_epochs"], options["per_device_train_batch_size"]) == (
        1e-5, 5, 4)
    off = parse("retriever", "--model", "m", "--train-data", "d", "--output", "o", "--normlized", "False",
                "--use_inbatch_neg", "False", "--deepspeed", "ds.json", "--gradient_checkpointing")
    assert not off.hyperparameters["normalize_embeddings"] and not off.use_inbatch_neg
    assert off.hyperparameters["deepspeed"] == "ds.json" and off.hyperparameters["gradient_checkpointing"]


def test_seed_reranker_command_parses() -> None:
    options = parse("reranker", *seed_argv(SEED_RERANKER, out="o", model="m", data="d.jsonl")).resolved_hyperparameters()
    assert (options["train_group_size"], options["max_len"], options["weight_decay"],
            options["gradient_accumulation_steps"], options["learning_rate"]) == (16, 512, 0.01, 4, 6e-5)


def _readme_train_commands() -> dict[str, list[str]]:
    """Each ``bgeflow train <kind>`` command of the README's "From FlagEmbedding's recipe" block."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    text = readme.split("## From FlagEmbedding's recipe", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [c for c in text.replace("\\\n", " ").splitlines() if c.startswith("bgeflow train ")]
    return {shlex.split(c)[2]: shlex.split(c)[3:] for c in commands}


@pytest.mark.parametrize(("kind", "repeats"), [("retriever", False), ("reranker", True)])
def test_the_readme_seed_commands_parse_and_say_what_they_need(kind: str, repeats: bool) -> None:
    """The README's reranker command trains on the toy data (7 negatives, a group of 16) as
    FlagEmbedding's does: it asks for repeated negatives, which bgeflow refuses unless asked."""
    argv = _readme_train_commands()[kind]
    spec = parse(kind, *argv)
    assert spec.allow_repeated_negatives == repeats
    assert spec.resolved_hyperparameters()["train_group_size"] == (16 if repeats else 2)


def test_any_flagembedding_or_trainingarguments_option_is_accepted_by_name() -> None:
    spec = parse("retriever", "--model", "m", "--train_data", "d", "--output", "o", "--lr_scheduler_type", "cosine",
                 "--warmup_steps", "5", "--report_to", "none", "--use_mrl", "--mrl_dims", "64", "128")
    assert spec.hyperparameters == {"lr_scheduler_type": "cosine", "warmup_steps": 5, "report_to": "none",
                                    "use_mrl": True, "mrl_dims": [64, 128]}
    resolved_options(spec)  # every name is one of the runner's dataclasses' fields
    with pytest.raises(ConfigError, match=r"learnin_rate is not an option.*did you mean learning_rate"):
        parse("retriever", "--model", "m", "--train_data", "d", "--output", "o", "--learnin_rate", "1")
    with pytest.raises(ConfigError, match="invalid choice: 'cosin'"):
        parse("retriever", "--model", "m", "--train_data", "d", "--output", "o", "--lr_scheduler_type", "cosin")
    with pytest.raises(ConfigError, match="temperature is not an option of FlagEmbedding's reranker-encoder"):
        resolved_options(TrainSpec.of(kind="reranker", **BASE, temperature=0.05))


MISSPELLED_RUNNER_FLAGS = [
    ("--learning_rat", "learning_rate"),  # a prefix: argparse would have taken it as learning_rate
    ("--learnin_rate", "learning_rate"),
    ("--num_train_epoch", "num_train_epochs"),
    ("--temperatur", "temperature"),
]


@pytest.mark.parametrize(("flag", "meant"), MISSPELLED_RUNNER_FLAGS)
def test_a_misspelled_or_shortened_runner_flag_is_refused_by_name(flag: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=rf"{flag[2:]} is not an option of FlagEmbedding's .*; did you mean {meant}\b"):
        parse("retriever", "--model", "m", "--train_data", "d", "--output", "o", flag, "3")


def test_spec_document_round_trips_and_files_merge_under_flags(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("kind: retriever\nmodel: m\ntrain-data: d.jsonl\noutput: o\nnormlized: false\n"
                    "learning_rate: 2.0e-5\n", encoding="utf-8")
    spec = parse("--config", str(path), "--learning_rate", "3e-5")
    assert spec.kind == "retriever" and spec.hyperparameters == {"normalize_embeddings": False, "learning_rate": 3e-5}
    assert TrainSpec.build(spec.to_dict()) == spec
    (tmp_path / "bad.yaml").write_text("kind: retriever\nmodel: m\ntrain_data: d\noutput: o\nallow_repeated: 1\n")
    # An unknown key is a runner option, checked by name, and refused naming the file it is in.
    with pytest.raises(ConfigError, match=rf"^--config {tmp_path / 'bad.yaml'}: allow_repeated is not an option.*"
                                          r"allow_repeated_negatives"):
        parse("--config", str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match=r"allow_repeated is not an option.*allow_repeated_negatives"):
        resolved_options(TrainSpec.of(kind="retriever", **BASE, allow_repeated=1))  # a spec from elsewhere
    (tmp_path / "any.yaml").write_text("kind: retriever\nmodel: m\ntrain_data: d\noutput: o\nlearning_rate: 1e-5\n")
    assert parse("reranker", "--config", str(tmp_path / "any.yaml")).kind == "reranker"  # the command line wins
    with pytest.raises(ConfigError, match=rf"^--config {path}: normalize_embeddings is not an option of "
                                          "FlagEmbedding's reranker-encoder runner"):
        parse("reranker", "--config", str(path))  # a retriever's option, refused before any training


def test_without_flagembedding_file_options_are_left_to_the_pods(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's train launcher runs `bgeflow launch --config` in the ops image, which has no
    FlagEmbedding: its options are taken as written, and the training pods check them."""
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "FlagEmbedding" else found(name, *a, **k))
    for name in [m for m in sys.modules if m == "FlagEmbedding" or m.startswith("FlagEmbedding.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "FlagEmbedding", None)  # `import FlagEmbedding...` fails, as in that image
    path = tmp_path / "train.yaml"
    path.write_text("kind: retriever\nmodel: m\ntrain_data: d\noutput: o\nhyperparameters:\n"
                    "  learning_rate: 1.0e-5\n  max_steps: 3\n", encoding="utf-8")
    spec = parse("--config", str(path))
    assert spec.hyperparameters == {"learning_rate": 1e-5, "max_steps": 3}


@pytest.mark.parametrize(("written", "value"), [
    ("2e-5", 2e-5),  # as people and FlagEmbedding's docs write it (YAML 1.1: a string)
    ("3e-05", 3e-5),  # as Go's YAML encoder (Helm's toYaml) writes it
    ("1E-4", 1e-4),
    ("2.0e-5", 2e-5),  # YAML 1.1's own float form
    ("0.00002", 2e-5),
])
def test_exponent_floats_read_as_numbers_in_config_files_and_set(tmp_path: Path, written: str, value: float) -> None:
    """A learning rate read as the string "2e-5" reached FlagEmbedding's dataclasses as it was and failed in
    the optimiser: every settings file and --set value is read the one way, YAML 1.2's floats."""
    path = tmp_path / "train.yaml"
    path.write_text(f"kind: retriever\nmodel: m\ntrain_data: d\noutput: o\nlearning_rate: {written}\n"
                    f"hyperparameters:\n  weight_decay: {written}\n", encoding="utf-8")
    from_file = parse("--config", str(path))
    assert from_file.hyperparameters == {"learning_rate": value, "weight_decay": value}
    assert parse("--config", str(path), "--set", f"warmup_ratio={written}").hyperparameters["warmup_ratio"] == value


@pytest.mark.parametrize(("given", "expected"), [
    ({"learning_rate": "3e-5"}, {"learning_rate": 3e-5}),  # Helm's --set keeps exponent floats as text
    ({"num_train_epochs": "2"}, {"num_train_epochs": 2.0}),
    ({"max_steps": "3", "per_device_train_batch_size": 4.0}, {"max_steps": 3, "per_device_train_batch_size": 4}),
    ({"fp16": "false", "negatives_cross_device": "True"}, {"fp16": False, "negatives_cross_device": True}),
    ({"lr_scheduler_type": "cosine", "report_to": "none"}, {"lr_scheduler_type": "cosine", "report_to": "none"}),
])
def test_text_values_get_the_type_the_runner_declares(given: dict[str, Any], expected: dict[str, Any]) -> None:
    """Values from loosely typed sources (Helm's --set, quoted YAML, KFP's Struct) reach the runner typed as
    its flags would be: "3e-5" failed in the optimiser, and "false" is a true string."""
    options = resolved_options(TrainSpec.of(kind="retriever", **BASE, hyperparameters=given))
    assert {k: options[k] for k in expected} == expected
    assert all(type(options[k]) is type(v) for k, v in expected.items())


@pytest.mark.parametrize(("given", "message"), [
    ({"learning_rate": "3e-5x"}, "learning_rate '3e-5x' is not a number"),
    ({"max_steps": "ten"}, "max_steps 'ten' is not an integer"),
    ({"fp16": "maybe"}, "fp16 'maybe' is not a boolean"),
])
def test_text_that_is_not_of_the_options_type_is_refused_by_name(given: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=f"train retriever hyperparameters .*: {message}"):
        resolved_options(TrainSpec.of(kind="retriever", **BASE, hyperparameters=given))


def test_the_pod_command_is_one_document(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PET_NNODES", "3")
    spec = TrainSpec.of(kind="retriever", **{**BASE, "output": str(tmp_path / "out")}, local_nodes=2,
                        nproc_per_node=2, learning_rate=2e-5)
    uri = write_spec(spec)
    assert pod_command(uri) == ["bgeflow", "train", "--config", uri]
    document = yaml.safe_load(Path(uri).read_text())
    assert document["hyperparameters"] == {"learning_rate": 2e-5}
    assert all(v is None for v in document["distributed"].values())  # the job's shape comes from each pod's env
    assert parse("--config", uri).model_copy(update={"distributed": spec.distributed}) == spec


@pytest.mark.parametrize("settings,message", [
    ({"local_nodes": 2, "nnodes": 2}, "excludes nnodes"),
    ({"node_rank": 2, "nnodes": 2}, "below nnodes"),
    ({"pooling": "max"}, "pooling"),
    ({"output_dir": "x", "hyperparameters": {"output_dir": "y"}}, "output_dir: set by bgeflow"),
    ({"hyperparameters": {"sentence_pooling_method": "cls"}}, "sentence_pooling_method: set by bgeflow"),
    ({"nproc_per_node": 0}, "nproc_per_node"),
])
def test_invalid_settings_fail_with_a_clear_message(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainSpec.build({"kind": "retriever", **BASE, **settings})


def test_reranker_refuses_retriever_only_settings() -> None:
    with pytest.raises(ConfigError, match="pooling: retriever options"):
        TrainSpec.of(kind="reranker", **BASE, pooling="mean")
    with pytest.raises(ConfigError, match="exceed max_len 128"):
        TrainSpec.of(kind="reranker", **BASE, max_len=128, query_max_len=64, passage_max_len=100)


def one_node(nproc: int = 1, nnodes: int = 1) -> Distributed:
    return Distributed(nnodes=nnodes, node_rank=0, nproc_per_node=nproc, master_addr="127.0.0.1", master_port=29500)


def test_launch_checks_need_the_world() -> None:
    cross = {"negatives_cross_device": True}
    with pytest.raises(ConfigError, match="this job has one process"):
        check_launch(cross, one_node(), gpus=0)
    assert check_launch(cross, one_node(2), gpus=0) is True
    with pytest.raises(ConfigError, match="drop --fp16 to train in fp32 on CPU"):
        check_launch({"fp16": True}, one_node(), gpus=0)
    assert check_launch({"fp16": True}, one_node(), gpus=1) is False
    with pytest.raises(ConfigError, match="only 1 CUDA device"):
        check_launch({}, one_node(2), gpus=1)


def _shape(nproc: int, nnodes: int = 1, rank: int = 0, master: str = "127.0.0.1") -> Distributed:
    return Distributed(nnodes=nnodes, node_rank=rank, nproc_per_node=nproc, master_addr=master, master_port=29500)


OVERSUBSCRIPTION = [
    # (shape, use_cpu, cores, the warning's start or None)
    (_shape(8), True, 2, "nproc_per_node 8 (--nproc-per-node) starts 8 training processes on this machine's 2 CPU "
                         "core(s)"),
    (_shape(2), True, 2, None),  # a process per core: fits
    (_shape(8), False, 2, None),  # GPUs: check_launch counts the processes against them
    # --local-nodes: all pods on this machine (master on loopback); node 0 counts them all, once.
    (_shape(2, nnodes=2), True, 2, "2 local nodes × nproc_per_node 2 (--local-nodes, --nproc-per-node) start 4 "
                                   "training processes"),
    (_shape(2, nnodes=2, rank=1), True, 2, None),
    (_shape(2, nnodes=2, master="localhost"), True, 2, "2 local nodes × nproc_per_node 2"),
    # A PyTorchJob pod: the other nodes are other machines; this one counts its own processes.
    (_shape(2, nnodes=4, master="job-master-0"), True, 2, None),
    (_shape(4, nnodes=4, rank=3, master="job-master-0"), True, 2, "nproc_per_node 4 (--nproc-per-node) starts 4"),
]


@pytest.mark.parametrize(("dist", "use_cpu", "cores", "expected"), OVERSUBSCRIPTION)
def test_more_cpu_processes_than_cores_is_questioned_not_refused(dist: Distributed, use_cpu: bool, cores: int,
                                                                 expected: str | None) -> None:
    from bgeflow.steps.training.local import oversubscription

    said = oversubscription(dist, use_cpu=use_cpu, cores=cores)
    if expected is None:
        assert said is None
        return
    assert said is not None and said.startswith(expected), said
    assert "no more samples per second than 2 would" in said and "lower it to at most 2" in said  # why, what to do


def test_the_cpu_oversubscription_warning_comes_before_launch_through_the_cli(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: ``bgeflow train ... --nproc_per_node 8`` on 2 cores, no GPU: warned, then launched."""
    import bgeflow.steps.training.local as local
    import bgeflow.steps.training.pod as pod

    events: list[str] = []
    # raising=False: where cpu_cores is missing (before the check existed) the assertions below say what is wrong.
    monkeypatch.setattr(local, "cpu_cores", lambda: 2, raising=False)
    monkeypatch.setattr(pod, "_cuda_devices", lambda: 0)
    # torchrun "fails" once it is reached: the test needs the launch's place among the events, not a model.
    monkeypatch.setattr(pod, "_run_child", lambda cmd, env=None: events.append("launched") or 1)
    monkeypatch.setattr(pod.log, "warning", lambda msg, *a: events.append(msg % a if a else msg))
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"query": f"q{i}", "pos": [f"p{i}"], "neg": [f"n{i}-{j}" for j in range(3)]})
                            + "\n" for i in range(32)), encoding="utf-8")
    main(["train", "retriever", "--model", "bundled:minilm", "--train_data", str(data), "--output", str(tmp_path / "o"),
          "--work-dir", str(tmp_path / "w"), "--nproc_per_node", "8", "--per_device_train_batch_size", "1",
          "--train_group_size", "2"])
    warned = [e for e in events if "training processes" in e]
    assert len(warned) == 1 and events.index(warned[0]) < events.index("launched"), events
    assert warned[0].startswith("nproc_per_node 8 (--nproc-per-node) starts 8 training processes on this machine's "
                                "2 CPU core(s)")


TORCHRUN_ENV = [
    # (nproc, environ, expected): torchrun's OMP_NUM_THREADS banner never shows, and its value stays.
    (1, {}, {}),  # one process: no banner; the libraries choose
    (2, {}, {"OMP_NUM_THREADS": "1"}),  # torchrun's own value, said by bgeflow
    (2, {"OMP_NUM_THREADS": "3"}, {}),  # the user's stays
]


@pytest.mark.parametrize(("nproc", "environ", "expected"), TORCHRUN_ENV)
def test_torchrun_gets_its_thread_count_from_bgeflow(nproc: int, environ: dict[str, str],
                                                     expected: dict[str, str]) -> None:
    from bgeflow.steps.training.pod import torchrun_env

    assert torchrun_env(_shape(nproc), environ) == expected


def test_seed_fp16_on_cpu_fails_before_launch_through_the_cli(tmp_path: Path, toy_data: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = seed_argv(SEED_RETRIEVER, out=str(tmp_path / "o"), model="bundled:minilm", data=str(toy_data))
    assert main(["train", "retriever", *argv, "--nproc_per_node", "2"]) == 2
    err = capsys.readouterr().err
    assert "fp16 needs a CUDA GPU" in err and "drop --fp16" in err
    assert not (tmp_path / "o").exists()


def test_data_checks(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    rows = [{"query": f"q{i}", "pos": ["p"], "neg": [f"n{j}" for j in range(3 if i else 1)]} for i in range(4)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = TrainSpec.of(kind="retriever", **{**BASE, "train_data": str(data)}, train_group_size=4)
    options = spec.resolved_hyperparameters()
    stats = fetch_train_data(spec, options, tmp_path / "scratch" / "train.jsonl")
    assert (stats.records, stats.min_negatives, stats.short_records) == (4, 1, 1)
    with pytest.raises(DataError, match=rf"1 of 4 records have fewer \(min 1, first at {data}:1\).*"
                                        "lower --train_group_size to 2"):
        check_data(spec, options, stats, one_node())
    repeating = spec.model_copy(update={"allow_repeated_negatives": True})
    check_data(repeating, options, stats, one_node())
    with pytest.raises(DataError, match="fill no batch of 4 × 2"):
        check_data(repeating, options, stats, one_node(2))
    rows[2]["neg"] = []
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{data}:3.*needs >= 1 negative"):
        fetch_train_data(spec, options, tmp_path / "scratch" / "train.jsonl")
    with pytest.raises(DataError, match=rf"{data}:1: knowledge_distillation needs pos_scores"):
        fetch_train_data(spec, {**options, "knowledge_distillation": True}, tmp_path / "scratch" / "train.jsonl")


@pytest.mark.parametrize(("record", "says", "hint"), [
    ({"query": "q", "pos": ["p"], "neg": []}, r"\[neg\]", True),
    ({"query": "q", "pos": "p", "neg": ["n"]}, r"\[pos\]: expected a list of strings", False),
    ({"query": "", "pos": ["p"], "neg": ["n"]}, r"\[query\]", False),
], ids=["no-negatives", "pos-a-string", "empty-query"])
def test_a_bad_training_line_gets_the_mining_hint_only_when_negatives_are_missing(
        tmp_path: Path, record: dict, says: str, hint: bool) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(record) + "\n", encoding="utf-8")
    spec = TrainSpec.of(kind="retriever", **{**BASE, "train_data": str(data)})
    with pytest.raises(DataError, match=rf"{data}:1 {says}") as caught:
        fetch_train_data(spec, spec.resolved_hyperparameters(), tmp_path / "scratch" / "train.jsonl")
    assert ("bgeflow mine" in str(caught.value)) is hint, caught.value


def test_operator_env_and_its_resolution() -> None:
    env = operator_env(node_rank=1, nnodes=2, nproc_per_node=4, master_addr="job-master-0", master_port=23456)
    assert env["WORLD_SIZE"] == "8" and env["RANK"] == "1" and env["PET_NODE_RANK"] == "1"
    assert env["PET_MASTER_ADDR"] == env["MASTER_ADDR"] == "job-master-0" and env["MASTER_PORT"] == "23456"
    shape = TrainSpec.of(kind="retriever", **BASE).distributed
    dist = resolve(shape, env)
    assert (dist.nnodes, dist.node_rank, dist.nproc_per_node, dist.world_size) == (2, 1, 4, 8)
    assert (dist.master_addr, dist.master_port, dist.port_is_default) == ("job-master-0", 23456, False)
    # Flags win over the env.
    flagged = resolve(TrainSpec.of(kind="retriever", **BASE, nproc_per_node=1, master_port=1234).distributed, env)
    assert (flagged.nproc_per_node, flagged.master_port, flagged.nnodes) == (1, 1234, 2)
    # An operator without nprocPerNode: WORLD_SIZE = replicas, RANK = replica index.
    old = resolve(shape, {"WORLD_SIZE": "3", "RANK": "2", "MASTER_ADDR": "m", "MASTER_PORT": "1"})
    assert (old.nnodes, old.node_rank, old.nproc_per_node) == (3, 2, 1)
    alone = resolve(shape, {}, gpu_count=lambda: 2)
    assert (alone.nnodes, alone.nproc_per_node, alone.port_is_default) == (1, 2, True)
    with pytest.raises(ConfigError, match="elastic"):
        resolve(shape, {"PET_NNODES": "1:3"})


def test_torchrun_command_and_runner_arguments(tmp_path: Path) -> None:
    env = operator_env(node_rank=1, nnodes=2, nproc_per_node=2, master_addr="10.0.0.1", master_port=23456)
    spec = TrainSpec.of(kind="retriever", **BASE, gradient_checkpointing=True, warmup_steps=2)
    dist = resolve(spec.distributed, env)
    cmd = torchrun_command(dist, "bgeflow.steps.training.worker", ["--kind", "retriever"])
    assert Path(cmd[0]).name == "torchrun"
    assert ("--nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 23456 --nproc_per_node 2 "
            "-m bgeflow.steps.training.worker --kind retriever") in " ".join(cmd)
    assert "--standalone" in torchrun_command(resolve(spec.distributed, {}), "m", [])

    cpu = runner_arguments(spec, spec.resolved_hyperparameters(), model_path="/m", data=tmp_path / "d.jsonl",
                           run_dir=tmp_path / "run", use_cpu=True, dist=dist, pooling="mean", resume=None,
                           deepspeed=None)
    assert cpu | {"use_cpu": True, "ddp_backend": "gloo", "negatives_cross_device": True, "temperature": 0.02,
                  "sentence_pooling_method": "mean", "normalize_embeddings": True, "gradient_checkpointing": True,
                  "train_group_size": 2, "query_max_len": 64, "passage_max_len": 256,
                  # the trackers installed here (TensorBoard when it is), events beside the run's scratch
                  **tracking.runner_settings({}, str(tmp_path / "events")),
                  "warmup_steps": 2, "cache_path": str(tmp_path / "datasets-cache"), "model_name_or_path": "/m",
                  "train_data": [str(tmp_path / "d.jsonl")], "output_dir": str(tmp_path / "run")} == cpu
    reranker = TrainSpec.of(kind="reranker", **BASE, fp16=True)
    gpu = runner_arguments(reranker, reranker.resolved_hyperparameters(), model_path="/m",
                           data=tmp_path / "d.jsonl", run_dir=tmp_path / "run", use_cpu=False, dist=dist, pooling="",
                           resume=tmp_path / "ck", deepspeed="/ds.json")
    assert gpu["ddp_backend"] == "nccl" and gpu["use_cpu"] is False and gpu["fp16"] is True
    assert gpu["resume_from_checkpoint"] == str(tmp_path / "ck") and gpu["deepspeed"] == "/ds.json"
    assert gpu["max_len"] == 512 and "temperature" not in gpu and "sentence_pooling_method" not in gpu


def test_the_runner_reads_the_arguments_as_flagembedding_does(tmp_path: Path) -> None:
    """``HfArgumentParser.parse_dict`` over the runner's dataclasses: the values arrive typed and checked."""
    from transformers import HfArgumentParser

    from bgeflow.steps.training.runners import runner_for

    spec = TrainSpec.of(kind="retriever", **BASE, lr_scheduler_type="cosine", warmup_steps=5)
    (tmp_path / "d.jsonl").write_text("")  # FlagEmbedding checks the data files exist
    args = runner_arguments(spec, resolved_options(spec), model_path="/m", data=tmp_path / "d.jsonl",
                            run_dir=tmp_path / "run", use_cpu=True, dist=one_node(), pooling="mean", resume=None,
                            deepspeed=None)
    args.pop("ddp_backend")  # outside torchrun a gloo backend would make accelerate start a process group
    model_args, data_args, training_args = HfArgumentParser(runner_for("retriever").classes()[:3]).parse_dict(args)
    assert training_args.sentence_pooling_method == "mean" and data_args.query_max_len == 64 and model_args.model_name_or_path == "/m"
    assert training_args.lr_scheduler_type == "cosine" and training_args.warmup_steps == 5
    assert training_args.use_cpu and not training_args.negatives_cross_device


def test_train_help_of_a_kind_lists_that_kinds_settings_only(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, shown, hidden in ((["train", "reranker", "--help"], [], ["--pooling", "--validation-steps", "--kind"]),
                                (["train", "retriever", "-h"], ["--pooling", "--validation-steps"], ["--kind"]),
                                (["train", "--help"], ["--pooling", "--kind"], [])):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        text = capsys.readouterr().out
        assert "--model MODEL" in text and "--output URI" in text, argv
        assert all(flag in text for flag in shown) and not any(flag in text for flag in hidden), argv
