"""Helpers the verb modules share: ``--config FILE.yaml``.

A settings file holds flag values by name (``--rerank-top-k 50`` is ``rerank-top-k: 50`` or
``rerank_top_k: 50``); flags given on the command line win over the file. A key that names no
flag of the verb is an error naming the key and the file.
"""

from __future__ import annotations

import argparse

#: Namespace entries that are not flags of a verb.
_INTERNAL = {"func", "verb", "config", "s3_endpoint_url", "log_level"}


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="read flag values from a YAML file (keys = flag names without '--'); "
                        "flags on the command line win")


def apply_config_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fill ``args`` from ``args.config`` where the command line left a flag at its default."""
    path = getattr(args, "config", None)
    if not path:
        return args
    from bgeflow.core.config_file import load_mapping

    loaded = load_mapping(path, "flag names to values")
    flags = {a.dest: a for a in parser._actions if a.dest not in _INTERNAL and a.dest != "help"}
    by_name = {opt.lstrip("-").replace("-", "_"): a.dest for a in flags.values() for opt in a.option_strings}
    for key, value in loaded.items():
        dest = by_name.get(str(key).replace("-", "_"))
        if dest is None:
            raise ValueError(f"--config {path}: unknown key {key!r} (not a flag of this command)")
        action = flags[dest]
        if getattr(args, dest) != action.default:
            continue  # given on the command line
        if isinstance(action, argparse._AppendAction) and not isinstance(value, list):
            value = [value]
        if action.type is not None and value is not None:
            try:
                value = [action.type(v) for v in value] if isinstance(value, list) else action.type(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"--config {path}: key {key!r}: {exc}") from exc
        if action.choices is not None and value not in action.choices:
            raise ValueError(f"--config {path}: key {key!r} must be one of {', '.join(map(str, action.choices))}")
        setattr(args, dest, value)
    return args
