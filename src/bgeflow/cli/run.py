"""``bgeflow run``: the whole retrain on this machine, through the same pipeline the cluster runs.

ingest → mine → train retriever and reranker → evaluate → gate → publish, executed by kfp.local
from the compiled ``bge-finetune`` pipeline, training as local processes with the training
operator's env. Defaults: the shipped example data and the bundled MiniLM as base for both
models (with internet you would use BAAI/bge-base-en-v1.5 and BAAI/bge-reranker-base), a local
registry under --output, 2 training processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.cli.train import _value_type
    from bgeflow.platform.run_config import RunConfig
    from bgeflow.steps.training.config import parse_bool

    p = subparsers.add_parser(
        "run",
        help="the whole retrain here (ingest → mine → train → evaluate → gate → publish) via kfp.local",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " "),
    )
    p.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="run options as YAML (keys = the flags below, plus retriever:/reranker: train options)")
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        kind, _ = _value_type(hints[f.name])
        if kind not in (str, int, float, bool):
            continue  # mappings (retriever, reranker) come from --config or --retriever-arg/--reranker-arg
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "metavar": f.name.upper()}
        kwargs["type"] = parse_bool if kind is bool else kind
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    for kind in ("retriever", "reranker"):
        p.add_argument(f"--{kind}-arg", dest=f"{kind}_args", action="append", default=[], metavar="KEY=VALUE",
                       help=f"a {kind} train option (TrainConfig field), e.g. num_train_epochs=2; repeatable")
    p.add_argument("--check", action="store_true", help="only validate the config, data, models and S3; run nothing")
    p.set_defaults(func=run)


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["lr=2e-5", "fp16=true"]`` → ``{"lr": 2e-05, "fp16": True}`` (numbers as numbers, YAML otherwise)."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        value: Any
        for convert in (int, float):  # YAML 1.1 reads "2e-5" as a string
            try:
                value = convert(text)
                break
            except ValueError:
                continue
        else:
            value = yaml.safe_load(text)
        out[key.replace("-", "_")] = value
    return out


def build_config(args: argparse.Namespace) -> Any:
    from bgeflow.platform.run_config import RunConfig

    known = {f.name for f in dataclasses.fields(RunConfig)}
    flags = {k: v for k, v in vars(args).items() if k in known}
    config = RunConfig.from_yaml(args.config, **flags) if args.config else RunConfig(**flags)
    for kind in ("retriever", "reranker"):
        getattr(config, kind).update(key_values(getattr(args, f"{kind}_args"), f"--{kind}-arg"))
    return config


def run(args: argparse.Namespace) -> int:
    from bgeflow.platform import local_run as local_pipeline

    config = build_config(args)
    pipeline = local_pipeline.preflight(config)
    print(f"bgeflow run: checks passed; pipeline {pipeline}", file=sys.stderr)
    if args.check:
        return 0
    summary = local_pipeline.run(config, pipeline)
    print(local_pipeline.format_summary(summary))
    return 0
