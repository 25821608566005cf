"""FlagEmbedding's fine-tuning runners bgeflow drives, and the argument dataclasses each one parses.

A runner is named once here; ``bgeflow.steps.training.worker`` imports it in each torchrun worker
and the CLI uses its dataclasses to read and check options by name (``HfArgumentParser``, as
FlagEmbedding's own ``__main__`` modules do).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import ConfigError


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


_ENCODER = "FlagEmbedding.finetune.embedder.encoder_only.base"
_RERANKER_ABC = "FlagEmbedding.abc.finetune.reranker"
RUNNERS: dict[str, Runner] = {
    "encoder-base": Runner("encoder-base", "retriever", _ENCODER, "EncoderOnlyEmbedderRunner", (
        f"{_ENCODER}:EncoderOnlyEmbedderModelArguments", f"{_ENCODER}:EncoderOnlyEmbedderDataArguments",
        f"{_ENCODER}:EncoderOnlyEmbedderTrainingArguments")),
    # The same dataclasses FlagEmbedding's reranker ``__main__`` parses.
    "reranker-encoder": Runner("reranker-encoder", "reranker", "FlagEmbedding.finetune.reranker.encoder_only.base",
                               "EncoderOnlyRerankerRunner", (
        f"{_RERANKER_ABC}:AbsRerankerModelArguments", f"{_RERANKER_ABC}:AbsRerankerDataArguments",
        f"{_RERANKER_ABC}:AbsRerankerTrainingArguments")),
}
DEFAULT_RUNNER = {"retriever": "encoder-base", "reranker": "reranker-encoder"}


def runner_for(kind: str) -> Runner:
    return RUNNERS[DEFAULT_RUNNER[kind]]


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


def integral(runner: Runner, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with whole floats given back to the options declared ``int`` (``4.0`` → ``4``).

    JSON numbers passed through KFP (a protobuf Struct) arrive as floats, and transformers refuses
    ``per_device_train_batch_size=4.0``; a fractional value is left for the runner to refuse.
    """
    import typing

    types = option_types(runner)
    out = dict(options)
    for name, value in options.items():
        allowed = set(typing.get_args(types.get(name))) or {types.get(name)}
        if isinstance(value, float) and value.is_integer() and int in allowed and float not in allowed:
            out[name] = int(value)
    return out


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
            close = difflib.get_close_matches(name, sorted(known | set(near)), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
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
