"""A verb's flags, derived from its spec: one way to build every command line.

``add_spec_options(parser, Spec)`` adds one flag per scalar setting (nested blocks flattened),
FlagEmbedding's underscore spellings and declared aliases included, help text and default from
the declaration. ``add_config_options`` adds the two generic ways in: ``--config FILE`` (YAML,
keys = setting or flag names; repeatable, later files win) and ``--set KEY=VALUE`` (a dotted
setting path, the value read as YAML). ``spec_from_args`` merges, in this order, the verb's own
defaults, the config files, the ``--set`` values and the flags, and validates the result.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar

from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import Option, Spec, deep_merge, options, value_kind

S = TypeVar("S", bound=Spec)

#: Prefix of the argparse ``dest`` of spec flags: ``spec:encoder.query_max_len``.
DEST = "spec:"


def parse_bool(text: str | bool) -> bool:
    """``True/False``, ``yes/no``, ``1/0``, ``on/off`` (the seed commands write ``--x True``)."""
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {text!r}")


def parse_value(text: str) -> Any:
    """A ``--set`` value read as YAML, as a ``--config`` file's values are (``2e-5`` a float, ``true``,
    ``[a, b]``); text that is not YAML stays text."""
    import yaml

    from bgeflow.core.config_file import load_yaml

    try:
        return load_yaml(text)
    except yaml.YAMLError:
        return text


def _lookup(mapping: Mapping[str, Any], path: Sequence[str]) -> Any:
    for name in path:
        if not isinstance(mapping, Mapping) or name not in mapping:
            return _MISSING
        mapping = mapping[name]
    return mapping


_MISSING = object()


def _help(opt: Option, defaults: Mapping[str, Any]) -> str:
    text = opt.help.rstrip(".")
    shown = _lookup(defaults, opt.path)
    default = opt.default if shown is _MISSING else shown
    if opt.required and shown is _MISSING:
        suffix = "required"
    elif default in (None, "", [], {}):
        suffix = ""
    else:
        suffix = f"default: {default}"
    if opt.cli.unit:
        suffix = f"{opt.cli.unit}; {suffix}" if suffix else opt.cli.unit
    return (f"{text} ({suffix})" if suffix else text).replace("%", "%%")


def add_spec_options(parser: argparse.ArgumentParser | Any, cls: type[Spec], *, exclude: Iterable[str] = (),
                     group_titles: Mapping[str, str] | None = None,
                     defaults: Mapping[str, Any] | None = None) -> list[Option]:
    """Add a flag for every scalar, boolean, choice and list setting of ``cls``; returns them.

    ``exclude``: dotted setting names the verb provides otherwise (e.g. as a positional).
    ``group_titles``: argument-group titles by top-level block name (nested specs get one each).
    ``defaults``: the verb's own defaults where they differ from the spec's (shown in the help).
    """
    skip = set(exclude)
    for action in parser._actions:  # add_config_options' --set: an example of these settings
        if getattr(action, "example_pending", False):
            action.help, action.example_pending = _set_help(set_example(cls)), False
    groups: dict[str, Any] = {}
    added = []
    # Required settings (the verb's inputs and outputs) first: they are what a reader looks for.
    for opt in sorted(options(cls), key=lambda o: not o.required):
        kind, detail = value_kind(opt.annotation)
        if opt.name in skip or opt.cli.hidden or kind == "other":
            continue
        target = parser
        if len(opt.path) > 1:
            block = opt.path[0]
            if block not in groups:
                title = (group_titles or {}).get(block) or cls.model_fields[block].description or block
                groups[block] = parser.add_argument_group(title)
            target = groups[block]
        kwargs: dict[str, Any] = {"dest": DEST + opt.name, "default": argparse.SUPPRESS, "help": _help(opt, defaults or {}),
                                  "metavar": opt.cli.metavar or opt.flag.lstrip("-").replace("-", "_").upper()}
        if kind == "bool":
            kwargs.update(nargs="?", const=True, type=parse_bool, metavar=opt.cli.metavar or "BOOL")
        elif kind == "choice":
            kwargs.update(choices=detail, type=type(detail[0]), metavar=opt.cli.metavar or "{" + ",".join(map(str, detail)) + "}")
        elif kind == "list":
            kwargs.update(action="append", type=detail)
        else:
            kwargs["type"] = detail
        add_option_flags(target, opt, **kwargs)
        if kind == "bool":
            negative = "--no-" + opt.flag.removeprefix("--")
            target.add_argument(negative, dest=DEST + opt.name, action="store_const", const=False,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        added.append(opt)
    return added


def add_option_flags(target: argparse.ArgumentParser | Any, opt: Option, **kwargs: Any) -> None:
    """Add every spelling of ``opt`` to ``target`` with ``kwargs``: its flags shown, the rest hidden.

    ``opt.spellings`` are what the setting answers to everywhere (``--nproc-per-node`` and FlagEmbedding's
    or torchrun's ``--nproc_per_node``); a verb that declares a setting's flag itself (``launch``'s job
    shape, ``dest`` of its own) takes them from here so it accepts what ``add_spec_options`` gives others.
    """
    target.add_argument(*opt.flags, **kwargs)
    hidden = [s for s in opt.spellings if s not in opt.flags]
    if hidden:  # FlagEmbedding's underscore spellings work, without doubling every help line
        target.add_argument(*hidden, **{**kwargs, "help": argparse.SUPPRESS})


def add_config_options(parser: argparse.ArgumentParser, *, example: str | None = None) -> None:
    """``--config FILE`` and ``--set KEY=VALUE``.

    ``example``: the ``--set`` help's example; by default ``add_spec_options`` puts in one of the settings
    it adds (``set_example``), so that each verb's example is one of its own settings.
    """
    parser.add_argument("--config", dest="config_files", action="append", default=[], metavar="FILE",
                        help="settings as YAML (a path or s3:// URI; keys = setting or flag names); "
                        "repeatable, later files and any flag win")
    action = parser.add_argument("--set", dest="set_values", action="append", default=[], metavar="KEY=VALUE",
                                 help=_set_help(example or "NAME=VALUE"))
    action.example_pending = example is None  # type: ignore[attr-defined]


def _set_help(example: str) -> str:
    return (f"one setting by its dotted name, the value read as YAML (e.g. --set {example}); "
            "repeatable, wins over --config").replace("%", "%%")


def set_example(cls: type[Spec]) -> str:
    """``NAME=VALUE`` of a real setting of ``cls`` at its default: a nested one if any (it shows the dots)."""
    candidates = [opt for opt in options(cls) if not opt.cli.hidden and value_kind(opt.annotation)[0] in
                  ("scalar", "bool", "choice") and opt.default not in (None, "") and not opt.required]
    opt = next((o for o in candidates if len(o.path) > 1), candidates[0])
    value = str(opt.default).lower() if isinstance(opt.default, bool) else opt.default
    return f"{opt.name}={value}"


def given(ns: argparse.Namespace) -> dict[str, Any]:
    """The spec flags present on the command line, as a nested mapping."""
    out: dict[str, Any] = {}
    for dest, value in vars(ns).items():
        if dest.startswith(DEST):
            out = deep_merge(out, _nest(dest[len(DEST):].split("."), value))
    return out


def set_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` → ``{"a": {"b": 1}, "c": "x"}``.

    Raises:
        ConfigError: a pair without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE, got {pair!r}")
        out = deep_merge(out, _nest(key.strip().split("."), parse_value(text)))
    return out


def config_layers(ns: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """``(where, mapping)`` for each ``--config`` file, then the ``--set`` values."""
    from bgeflow.core.config_file import load_mapping

    layers = [(f"--config {path}", load_mapping(path, "settings")) for path in getattr(ns, "config_files", [])]
    if getattr(ns, "set_values", None):
        layers.append(("--set", set_values(ns.set_values)))
    return layers


def spec_from_args(cls: type[S], ns: argparse.Namespace, *, base: Sequence[Mapping[str, Any]] = (),
                   extra: Mapping[str, Any] | None = None, where: str = "settings") -> S:
    """Validate ``base`` layers, then config files, ``--set``, the flags and ``extra`` into ``cls``.

    Each file is normalised on its own so that an unknown key names the file it is in, and a value
    that does not validate names the file (or ``--set``) it came from.

    Raises:
        ConfigError: naming the file or flag and the setting at fault.
    """
    layers: list[Mapping[str, Any]] = list(base)
    sources = [""] * len(layers)
    for source, mapping in config_layers(ns):
        layers.append(cls.canonical(mapping, where=source))
        sources.append(source)
    # The flags name themselves (``negative_number (--negative-number)``): no source of their own.
    layers += [given(ns), dict(extra or {})]
    return cls.build(*layers, where=where, cli=True, sources=[*sources, "", ""])


def _nest(path: Sequence[str], value: Any) -> dict[str, Any]:
    for name in reversed(path[1:]):
        value = {name: value}
    return {path[0]: value}
