"""FlagEmbedding's fine-tuning runners bgeflow drives, and the argument dataclasses each one parses.

A runner is named once here; ``bgeflow.steps.training.worker`` imports it in each torchrun worker
and the CLI uses its dataclasses to read and check options by name (``HfArgumentParser``, as
FlagEmbedding's own ``__main__`` modules do).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from bgeflow.core.errors import ConfigError, did_you_mean

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runner:
    """Where a runner and its three argument dataclasses (model, data, training) live."""

    name: str
    kind: str  # "retriever" | "reranker"
    module: str
    runner: str
    arguments: tuple[str, str, str]  # "module:Class" of the model, data and training arguments

    def classes(self) -> tuple[type, type, type, type]:
        """``(model args, data args, training args, runner)`` classes (imports FlagEmbedding)."""
        loaded = []
        for ref in (*self.arguments, f"{self.module}:{self.runner}"):
            module, _, name = ref.partition(":")
            loaded.append(getattr(importlib.import_module(module), name))
        return tuple(loaded)  # type: ignore[return-value]


def options_checkable() -> bool:
    """Whether runner options can be checked by name here: FlagEmbedding is installed.

    The ops image (the pipeline's train launcher, direct mode's step-spec init containers) has no
    FlagEmbedding; there the names go unchecked, and the training pods (the gpu image) check them
    before torchrun starts.
    """
    import importlib.util

    return importlib.util.find_spec("FlagEmbedding") is not None


_EMBEDDER = "FlagEmbedding.finetune.embedder"
_RERANKER = "FlagEmbedding.finetune.reranker"
_EMBEDDER_ABC = "FlagEmbedding.abc.finetune.embedder"
_RERANKER_ABC = "FlagEmbedding.abc.finetune.reranker"


def _runner(name: str, kind: str, module: str, runner: str, model: str, data: str, training: str) -> Runner:
    return Runner(name, kind, module, runner, (model, data, training))


#: Every runner, with the three dataclasses its own ``__main__`` parses (FlagEmbedding 1.4).
RUNNERS: dict[str, Runner] = {r.name: r for r in (
    _runner("encoder-base", "retriever", f"{_EMBEDDER}.encoder_only.base", "EncoderOnlyEmbedderRunner",
            f"{_EMBEDDER}.encoder_only.base:EncoderOnlyEmbedderModelArguments",
            f"{_EMBEDDER}.encoder_only.base:EncoderOnlyEmbedderDataArguments",
            f"{_EMBEDDER}.encoder_only.base:EncoderOnlyEmbedderTrainingArguments"),
    _runner("encoder-m3", "retriever", f"{_EMBEDDER}.encoder_only.m3", "EncoderOnlyEmbedderM3Runner",
            f"{_EMBEDDER}.encoder_only.m3:EncoderOnlyEmbedderM3ModelArguments",
            f"{_EMBEDDER}.encoder_only.m3:EncoderOnlyEmbedderM3DataArguments",
            f"{_EMBEDDER}.encoder_only.m3:EncoderOnlyEmbedderM3TrainingArguments"),
    _runner("decoder-base", "retriever", f"{_EMBEDDER}.decoder_only.base", "DecoderOnlyEmbedderRunner",
            f"{_EMBEDDER}.decoder_only.base:DecoderOnlyEmbedderModelArguments",
            f"{_EMBEDDER}.decoder_only.base:DecoderOnlyEmbedderDataArguments",
            f"{_EMBEDDER}.decoder_only.base:DecoderOnlyEmbedderTrainingArguments"),
    _runner("decoder-icl", "retriever", f"{_EMBEDDER}.decoder_only.icl", "DecoderOnlyEmbedderICLRunner",
            f"{_EMBEDDER}.decoder_only.icl:DecoderOnlyEmbedderICLModelArguments",
            f"{_EMBEDDER}.decoder_only.icl:DecoderOnlyEmbedderICLDataArguments",
            f"{_EMBEDDER}.decoder_only.icl:DecoderOnlyEmbedderICLTrainingArguments"),
    _runner("reranker-encoder", "reranker", f"{_RERANKER}.encoder_only.base", "EncoderOnlyRerankerRunner",
            f"{_RERANKER_ABC}:AbsRerankerModelArguments", f"{_RERANKER_ABC}:AbsRerankerDataArguments",
            f"{_RERANKER_ABC}:AbsRerankerTrainingArguments"),
    _runner("reranker-decoder", "reranker", f"{_RERANKER}.decoder_only.base", "DecoderOnlyRerankerRunner",
            f"{_RERANKER}.decoder_only.base:RerankerModelArguments", f"{_RERANKER_ABC}:AbsRerankerDataArguments",
            f"{_RERANKER_ABC}:AbsRerankerTrainingArguments"),
    _runner("reranker-layerwise", "reranker", f"{_RERANKER}.decoder_only.layerwise", "DecoderOnlyRerankerRunner",
            f"{_RERANKER}.decoder_only.layerwise:RerankerModelArguments",
            f"{_RERANKER_ABC}:AbsRerankerDataArguments", f"{_RERANKER_ABC}:AbsRerankerTrainingArguments"),
)}
#: ``TrainSpec.runner``'s values: ``auto`` (from the base model) or a runner by name.
RunnerChoice = Literal["auto", "encoder-base", "encoder-m3", "decoder-base", "decoder-icl", "reranker-encoder",
                       "reranker-decoder", "reranker-layerwise"]
DEFAULT_RUNNER = {"retriever": "encoder-base", "reranker": "reranker-encoder"}
#: The runner ``auto`` picks for each model family (``bgeflow.retrieval.families``).
FAMILY_RUNNER: dict[str, str] = {"encoder": "encoder-base", "m3": "encoder-m3", "llm": "decoder-base",
                                 "reranker": "reranker-encoder", "llm-reranker": "reranker-decoder",
                                 "layerwise-reranker": "reranker-layerwise"}
#: Runners that train LoRA adapters (``use_lora``) and save them instead of the whole model.
LORA_RUNNERS = frozenset({"decoder-base", "decoder-icl", "reranker-decoder", "reranker-layerwise"})


def runner_for(kind: str) -> Runner:
    """The runner of ``kind`` for encoder models (bge-*-v1.5, bge-reranker-base/large/v2-m3)."""
    return RUNNERS[DEFAULT_RUNNER[kind]]


def select_runner(kind: str, requested: str, model: str) -> Runner:
    """The runner that trains ``model`` (a local folder or hub name) as a ``kind``.

    ``requested`` ``auto`` reads the model's config and files (``bgeflow.retrieval.families``); a
    model that cannot be read here (an ``s3://`` URI, a hub name offline and not cached) gets the
    kind's encoder runner (logged): the pods, which fetch the model, choose again.

    Raises:
        ConfigError: ``requested`` names a runner of the other kind, or no runner.
    """
    if requested != "auto":
        runner = RUNNERS.get(requested)
        if runner is None or runner.kind != kind:
            names = ", ".join(n for n, r in RUNNERS.items() if r.kind == kind)
            raise ConfigError(f"runner {requested!r} does not train a {kind}: choose auto, {names}")
        return runner
    from bgeflow.retrieval.families import family_of

    found = family_of(kind, model)
    if found is None:
        # Debug, not a warning: a launcher may not reach a model its pods will, and an option of another
        # runner is refused naming that runner (check_names).
        log.debug("cannot read model %s's config here: using the %s runner (pass --runner to choose)",
                  model, DEFAULT_RUNNER[kind])
        return runner_for(kind)
    return RUNNERS[FAMILY_RUNNER[found]]


#: ``model_type`` values of the layerwise runner: building the score heads from a causal LM's, or reusing
#: those of a layerwise reranker.
LAYERWISE_MODEL_TYPES = ("from_raw_model", "from_finetuned_model")


def runner_options(runner: Runner, options: dict[str, Any], model: str) -> dict[str, Any]:
    """``options`` with what the runner needs and FlagEmbedding leaves to its example scripts (or DeepSpeed).

    The decoder reranker trains an LLM only with ``model_type`` ``decoder`` (its dataclass defaults
    to ``encoder``, which builds cross-encoder inputs); the layerwise one reads ``model_type`` as
    ``from_finetuned_model`` (``model`` already has layerwise heads) or ``from_raw_model``.

    Raises:
        ConfigError: a ``model_type`` the runner cannot train with, ``decoder-icl`` without
            ``same_dataset_within_batch``, or ``raw_peft`` (an adapter merged into the base before
            training: bgeflow's export could not rebuild that base).
    """
    out = dict(options)
    if runner.name == "reranker-decoder":
        if out.setdefault("model_type", "decoder") == "encoder":
            raise ConfigError("reranker-decoder: model_type encoder makes cross-encoder inputs for an LLM; drop it "
                              "(bgeflow sets model_type decoder) or use --runner reranker-encoder")
    elif runner.name == "reranker-layerwise":
        from bgeflow.retrieval.families import inspect_model, is_layerwise

        facts = inspect_model(model)
        layerwise = facts is not None and is_layerwise(facts.config)
        model_type = out.setdefault("model_type", LAYERWISE_MODEL_TYPES[1] if layerwise else LAYERWISE_MODEL_TYPES[0])
        if model_type not in LAYERWISE_MODEL_TYPES:
            raise ConfigError(f"reranker-layerwise: model_type {model_type!r} must be one of "
                              f"{', '.join(LAYERWISE_MODEL_TYPES)} (default: from the base model's config)")
    elif runner.name == "decoder-icl" and not out.get("same_dataset_within_batch", True):
        raise ConfigError("decoder-icl: FlagEmbedding's ICL runner trains only with same_dataset_within_batch True")
    if out.get("gradient_checkpointing") and out.get("gradient_checkpointing_kwargs") is None:
        # torchrun wraps FlagEmbedding's model (not a PreTrainedModel) in DDP with find_unused_parameters,
        # which reentrant checkpointing breaks ("Expected to mark a variable ready only once").
        out["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    if out.get("raw_peft"):
        raise ConfigError(f"{runner.name}: raw_peft is not supported (bgeflow's export merges the trained adapter "
                          "into the base model): merge that adapter into the base model first")
    return out


def register_layerwise_config() -> None:
    """Let transformers' ``AutoConfig`` read ``model_type: minicpm`` with FlagEmbedding's own config class.

    The layerwise runner builds FlagEmbedding's ``LayerWiseMiniCPMForCausalLM`` but reads the config
    through ``AutoConfig``, which knows no ``minicpm`` without the hub's remote code (and offline,
    or for a local model without that code, none is there).
    """
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if LayerWiseMiniCPMConfig.model_type not in CONFIG_MAPPING:
        AutoConfig.register(LayerWiseMiniCPMConfig.model_type, LayerWiseMiniCPMConfig)


def hf_parser(runner: Runner) -> Any:
    """The ``HfArgumentParser`` over the runner's three argument dataclasses."""
    from transformers import HfArgumentParser

    return HfArgumentParser(runner.classes()[:3])


def option_names(runner: Runner) -> set[str]:
    """Every option the runner's dataclasses accept."""
    return set(option_types(runner))


def option_types(runner: Runner) -> dict[str, Any]:
    """Each option's declared type (``int``, ``float | None``, ``list[int]``, ...)."""
    import typing

    types: dict[str, Any] = {}
    for cls in runner.classes()[:3]:
        hints = typing.get_type_hints(cls)
        types.update({f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init})
    return types


def typed(runner: Runner, options: dict[str, Any], *, where: str) -> dict[str, Any]:
    """``options`` with each value given the type its dataclass field declares, as a command line would.

    Loosely typed sources hand the runner values it would take from argv but not from ``parse_dict``:
    Helm's ``--set`` keeps ``3e-5`` a string (its parser types only ints and booleans), quoted YAML and
    ``--set-string`` give ``"true"``, and JSON numbers passed through KFP (a protobuf Struct) arrive as
    floats, which transformers refuses for ``per_device_train_batch_size=4.0``. So, for an option
    declared ``int``, ``float`` or ``bool`` (optional or not) and not also ``str``:

    - a string is parsed as ``HfArgumentParser`` parses that option's flag (``bool``: transformers'
      ``string_to_bool``: yes/no, true/false, t/f, y/n, 1/0);
    - a whole float is given back as an ``int`` where ``float`` is not allowed (``4.0`` → ``4``); a
      fractional one is left for the runner to refuse.

    Raises:
        ConfigError: a string that is not a value of the option's type, naming ``where`` and the option.
    """
    import typing
    from argparse import ArgumentTypeError

    from transformers.hf_argparser import string_to_bool

    types = option_types(runner)
    out = dict(options)
    for name, value in options.items():
        allowed = set(typing.get_args(types.get(name))) or {types.get(name)}
        if isinstance(value, float) and value.is_integer() and int in allowed and float not in allowed:
            out[name] = int(value)
        elif isinstance(value, str) and str not in allowed:
            parse = next((t for t in (bool, int, float) if t in allowed), None)
            if parse is None:
                continue  # an enum, a list, a path: the runner's own dataclass reads the text
            try:
                out[name] = string_to_bool(value) if parse is bool else parse(value.strip())
            except (ValueError, ArgumentTypeError):
                raise ConfigError(f"{where}: {name} {value!r} is not {_TYPE_WORDS[parse]}") from None
    return out


_TYPE_WORDS = {bool: "a boolean (true/false)", int: "an integer", float: "a number"}


def check_names(runner: Runner, names: Iterable[str], *, managed: Iterable[str] = (), where: str,
                near: Iterable[str] = ()) -> None:
    """Refuse options the runner does not know, and those bgeflow sets itself.

    ``near``: other names a typo may have meant (bgeflow's own settings), offered with the runner's.

    Raises:
        ConfigError: naming the option and the closest known ones.
    """
    known = option_names(runner)
    owned = set(managed)
    for name in names:
        if name in owned:
            raise ConfigError(f"{where}: {name} is set by bgeflow itself")
        if name not in known:
            # An option of another runner of the kind: the base model chose this one (or could not be read).
            others = [r.name for r in RUNNERS.values() if r.kind == runner.kind and r != runner
                      and name in option_names(r)]
            hint = (f"; it is one of the {', '.join(others)} runner's: pass --runner {others[0]}" if others
                    else did_you_mean(name, sorted(known | set(near))))
            raise ConfigError(f"{where}: {name} is not an option of FlagEmbedding's {runner.name} runner "
                              f"or transformers' TrainingArguments{hint}")


def parse_flags(runner: Runner, tokens: list[str], *, where: str) -> dict[str, Any]:
    """The options named by command-line ``tokens`` (``--learning_rate 2e-5 --fp16``), typed by the
    runner's ``HfArgumentParser``; only those given, never the dataclasses' defaults.

    Raises:
        ConfigError: a token the parser does not know, or a value it cannot read.
    """
    import argparse

    parser = hf_parser(runner)
    parser.allow_abbrev = False  # --learning_rat is a typo to name, not learning_rate
    for action in parser._actions:
        action.required = False
        action.default = argparse.SUPPRESS

    def refuse(message: str) -> None:
        raise ConfigError(f"{where}: {message}")

    parser.error = refuse  # type: ignore[method-assign]
    given, unknown = parser.parse_known_args(tokens)
    if unknown:
        flag = next((t for t in unknown if t.startswith("--")), unknown[0])
        check_names(runner, [flag.lstrip("-").split("=", 1)[0].replace("-", "_")], where=where)
        raise ConfigError(f"{where}: unexpected {flag!r}")
    return vars(given)
