"""``bgeflow train retriever|reranker``: fine-tune with FlagEmbedding under torchrun.

Every TrainConfig field is a flag in bgeflow's spelling and FlagEmbedding's (``--learning-rate``,
``--learning_rate``), plus the old README's (``--normlized``, ``--model_name_or_path``,
``--output_dir``). Flags override ``--config FILE``. Runner options bgeflow has no field for go
through ``--extra-arg KEY=VALUE`` or after ``--runner-args``. Inside a PyTorchJob pod the job's shape comes
from the operator's env; ``--local-nodes N`` runs N such pods here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import Any

from bgeflow.cli import add_seed_alias


def _value_type(hint: Any) -> tuple[Any, tuple[str, ...] | None]:
    """The argparse ``type`` and ``choices`` of a field, from its annotation (``int | None`` → int)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    if typing.get_origin(hint) is typing.Literal:
        return str, typing.get_args(hint)
    return hint, None


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.training.config import TrainConfig, parse_bool

    p = subparsers.add_parser(
        "train",
        help="fine-tune a retriever or reranker with FlagEmbedding (torchrun; PyTorchJob-ready)",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
    )
    p.add_argument("kind", choices=("retriever", "reranker"))
    p.add_argument("--config", default=None, metavar="YAML", help="a TrainConfig YAML file (path or s3:// URI)")
    p.add_argument("--extra-arg", dest="extra_arg", action="append", default=[], metavar="KEY=VALUE",
                   help="another FlagEmbedding/transformers option, e.g. lr_scheduler_type=cosine; repeatable")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name in ("kind", "extra_args"):
            continue
        kind, choices = _value_type(hints[f.name])
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata.get("help")}
        if kind is bool:
            # The seed writes both "--fp16" and "--dataloader_drop_last True".
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar="BOOL")
        else:
            kwargs.update(type=kind, metavar=f.name.upper())
        if choices:
            kwargs["choices"] = choices
        add_seed_alias(p, "--" + f.name.replace("_", "-"), *f.metadata.get("aliases", ()), **kwargs)
    p.add_argument("--runner-args", dest="passthrough", nargs=argparse.REMAINDER, default=[],
                   metavar="OPTION", help="last: everything after it goes to FlagEmbedding's runner as it is")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    from bgeflow.steps.training.config import TrainConfig, extra_arg_tokens

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {name: value for name, value in vars(args).items() if name in fields and name != "kind"}
    extra = extra_arg_tokens(args.extra_arg) + list(args.passthrough)
    if extra:
        given["extra_args"] = extra  # like every flag, replaces the config file's value
    return TrainConfig.from_yaml(args.config or {}, kind=args.kind, **given)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.training import train

    config = build_config(args)
    result = train(config)
    print(json.dumps({"model_uri": result.model_uri, "output_uri": result.output_uri,
                      "global_step": result.global_step, "resumed_from": result.resumed_from,
                      "train_loss": result.train_loss, "world_size": result.world_size,
                      "seconds": round(result.seconds, 1)}, ensure_ascii=False, indent=2))
    return 0
