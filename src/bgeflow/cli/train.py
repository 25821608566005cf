"""``bgeflow train [retriever|reranker]``: fine-tune with FlagEmbedding under torchrun.

FlagEmbedding's README commands (torchrun) run with only the entry point changed: bgeflow's own settings
(``--model``/``--model_name_or_path``, ``--train_data``, ``--output``/``--output_dir``,
``--nproc_per_node``, ...) are flags below, and *every other* FlagEmbedding or transformers
``TrainingArguments`` option is accepted by its own name (``--learning_rate 1e-5 --fp16
--lr_scheduler_type cosine --report_to tensorboard``), read and checked by the runner's own
``HfArgumentParser``. The runner follows the base model (bge-m3: ``encoder-m3``, an LLM:
``decoder-base`` or ``reranker-decoder``, a layerwise reranker: ``reranker-layerwise``) unless
``--runner`` names one, so ``--unified_finetuning True`` or ``--use_lora True --lora_rank 8`` work
as in FlagEmbedding's scripts. ``--config FILE`` takes a whole training spec (what ``bgeflow launch`` writes
next to the output; the kind may come from it). Inside a PyTorchJob pod the job's shape comes from
the operator's env; ``--local-nodes N`` runs N such pods here.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.training.spec import TrainSpec

    p = subparsers.add_parser(
        "train",
        help="fine-tune a retriever or reranker with FlagEmbedding (torchrun; PyTorchJob-ready)",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
        usage="bgeflow train {retriever,reranker} [options] [FlagEmbedding/TrainingArguments options]",
        allow_abbrev=False,
    )
    add_config_options(p, example="hyperparameters.learning_rate=2e-5")
    add_spec_options(p, TrainSpec)
    kind_is_a_word(p, "train")
    p.set_defaults(func=run, accepts_runner_flags=True)


def kind_is_a_word(parser: argparse.ArgumentParser, verb: str) -> None:
    """Say in ``--kind``'s help what the usage shows: the kind is the word after the verb (or this flag,
    or the config's ``kind``)."""
    from bgeflow.cli._options import DEST

    action = next(a for a in parser._actions if a.dest == DEST + "kind")
    action.help = (f"{action.help.removesuffix(' (required)')}: given as the word after `bgeflow {verb}` "
                   "(see usage), this flag or the config's kind (required)")


#: Settings of one kind only (``TrainSpec`` refuses them for the other): left out of the other's help.
KIND_ONLY = {"retriever": ("pooling", "use_inbatch_neg", "validation")}


def kind_help(argv: list[str]) -> str | None:
    """The help of ``bgeflow train <kind> --help``: that kind's settings only; None for any other command line.

    The kind is a word before the options, not an argparse positional (an optional positional would
    swallow the values of FlagEmbedding's options), so argparse alone cannot tell the kinds' helps apart.
    """
    from bgeflow.core.spec import options
    from bgeflow.steps.training.spec import KINDS, TrainSpec

    if len(argv) < 2 or argv[0] != "train" or argv[1] not in KINDS or not {"-h", "--help"} & set(argv[2:]):
        return None
    kind = argv[1]
    foreign = {name for other, names in KIND_ONLY.items() if other != kind for name in names}
    parser = argparse.ArgumentParser(
        prog=f"bgeflow train {kind}", allow_abbrev=False,
        usage=f"bgeflow train {kind} [options] [FlagEmbedding/TrainingArguments options]",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""))
    add_config_options(parser, example="hyperparameters.learning_rate=2e-5")
    add_spec_options(parser, TrainSpec,
                     exclude=["kind", *(o.name for o in options(TrainSpec) if o.path[0] in foreign)])
    return parser.format_help()


def build_spec(args: argparse.Namespace) -> Any:
    """The ``TrainSpec`` of a command line: files, ``--set``, bgeflow's flags, then the runner's flags.

    The runner's flags (anything bgeflow does not declare) are read by the runner's own
    ``HfArgumentParser``, which needs FlagEmbedding installed; ``--set hyperparameters.NAME=VALUE``
    works without it.

    Raises:
        ConfigError: an unknown or malformed setting, naming it.
    """
    from bgeflow.core.errors import ConfigError
    from bgeflow.steps.training.spec import KINDS, LEGACY_OPTIONS, TrainSpec

    tokens = list(getattr(args, "runner_flags", []))
    # The kind as the seed writes it, a word before the options. Not an argparse positional: with
    # options argparse does not know, an optional positional would swallow their values.
    kind = {"kind": tokens.pop(0)} if tokens and tokens[0] in KINDS else {}
    if not kind and tokens and not tokens[0].startswith("-"):
        # A mistyped kind (`train retreiver`) was reported as "kind: Field required": name the word instead.
        from bgeflow.core.errors import did_you_mean

        hint = did_you_mean(tokens[0], KINDS) or f" (one of {', '.join(KINDS)})"
        raise ConfigError(f"unknown kind {tokens[0]!r}{hint}")
    try:
        spec = spec_from_args(TrainSpec, args, extra=kind, where="")
    except ConfigError:
        # `--train-dat x` leaves train_data missing: name the flag nobody knows, not what it left out.
        _refuse_unknown(args, tokens, kind.get("kind"))
        raise
    _check_file_options(args, spec)
    if not tokens:
        return spec
    for i, token in enumerate(tokens):  # the spellings of FlagEmbedding's earlier README
        name, sep, value = token.lstrip("-").partition("=")
        if token.startswith("--") and name in LEGACY_OPTIONS:
            tokens[i] = f"--{LEGACY_OPTIONS[name]}{sep}{value}"
    from bgeflow.steps.training.runners import parse_flags

    # The base model chooses the runner (or --runner does), and so which options exist.
    runner = spec.chosen_runner()
    options = parse_flags(runner, tokens, where=f"train {spec.kind} ({runner.name} runner)")
    return spec_from_args(TrainSpec, args, extra={**kind, "hyperparameters": options}, where="")


def _refuse_unknown(args: argparse.Namespace, tokens: list[str], kind: str | None) -> None:
    """Refuse the first of ``tokens`` that is neither bgeflow's flag nor an option of a runner of ``kind``.

    Raises:
        ConfigError: ``unrecognized argument --x; did you mean --y?`` (bgeflow's flags and the runners'
            options offered alike).
    """
    from bgeflow.cli import unrecognized
    from bgeflow.core.errors import ConfigError
    from bgeflow.steps.training.runners import RUNNERS, option_names
    from bgeflow.steps.training.spec import LEGACY_OPTIONS

    try:
        known = {name for runner in RUNNERS.values() if kind in (None, runner.kind) for name in option_names(runner)}
    except ImportError:  # no FlagEmbedding here: only a near miss of bgeflow's own flags is sure to be a typo
        known = None
    for token in tokens:
        name = token.lstrip("-").split("=", 1)[0].replace("-", "_")
        if not token.startswith("--") or name in LEGACY_OPTIONS or (known is not None and name in known):
            continue
        parser = getattr(args, "verb_parser", None) or _parser(args.verb)
        message = unrecognized(parser, [token], also=[f"--{n}" for n in sorted(known or ())])
        if known is not None or "did you mean" in message:
            raise ConfigError(message)


def _check_file_options(args: argparse.Namespace, spec: Any) -> None:
    """Check the runner options each ``--config`` file (and ``--set``) gives, naming the file of an unknown one.

    Only where FlagEmbedding is installed: the names are its dataclasses' fields. The pipeline's train
    launcher runs in the ops image, which has none; the training pods check there, before torchrun.

    Raises:
        ConfigError: ``--config FILE: NAME is not an option of FlagEmbedding's ... runner; did you mean ...?``
    """
    from bgeflow.cli._options import config_layers
    from bgeflow.steps.training.runners import check_names, options_checkable
    from bgeflow.steps.training.spec import MANAGED, TrainSpec

    if not options_checkable():
        return

    layers = [(where, TrainSpec.canonical(mapping, where=where).get("hyperparameters") or {})
              for where, mapping in config_layers(args)]
    if any(names for _, names in layers):
        runner = spec.chosen_runner()
        for where, names in layers:
            check_names(runner, TrainSpec._option_names(names), managed=MANAGED, where=where,
                        near=TrainSpec.model_fields)


def _parser(verb: str) -> argparse.ArgumentParser:
    from bgeflow.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.training import train

    result = train(build_spec(args))
    print(json.dumps({"model_uri": result.model_uri, "output_uri": result.output_uri,
                      "global_step": result.global_step, "resumed_from": result.resumed_from,
                      "train_loss": result.train_loss, "world_size": result.world_size,
                      "seconds": round(result.seconds, 1)}, ensure_ascii=False, indent=2))
    return 0
