"""``bgeflow run``: the whole retrain on this machine, through the same pipeline the cluster runs.

ingest → mine → train retriever and reranker → evaluate → gate → publish, executed by kfp.local
from the compiled ``bge-finetune`` pipeline, training as local processes with the training
operator's env. Settings: the run spec (the pipeline's parameters; ``--config FILE`` or one flag
per setting, ``--<block>-<name>``), over defaults sized for a 2-core CPU (the shipped example
data, the bundled MiniLM as base of both models; with internet and a GPU you would use
BAAI/bge-base-en-v1.5 and BAAI/bge-reranker-base). A partial block in a config file merges over
those defaults; the profile's demo size gives way to yours (your data is used whole unless you set
max_records; a model given num_train_epochs trains that long, not the profile's max_steps). Progress is one line per step on stderr (each step's full log in the run's logs/
folder); the summary goes to stdout on a terminal, and piped, stdout is the summary as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.platform.run_spec import LocalRunSpec

    p = subparsers.add_parser(
        "run",
        help="the whole retrain here (ingest → mine → train → evaluate → gate → publish) via kfp.local",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
        allow_abbrev=False,
    )
    add_config_options(p, example="retriever.learning_rate=2e-5")
    add_spec_options(p, LocalRunSpec, defaults=LocalRunSpec.build(*_defaults()).to_dict())
    p.add_argument("--check", action="store_true", help="only validate the settings, data, models and S3; run nothing")
    p.set_defaults(func=run)


def _defaults() -> list[dict[str, Any]]:
    """``bgeflow run``'s own defaults: the example data, then the CPU profile."""
    from bgeflow.core.config_file import load_mapping
    from bgeflow.platform.run_spec import CPU_PROFILE, EXAMPLE_DATA, LocalRunSpec

    return [{"data": EXAMPLE_DATA}, LocalRunSpec.canonical(load_mapping(str(CPU_PROFILE), "run settings"),
                                                          where=str(CPU_PROFILE))]


#: The CPU profile's settings that size the demo rather than choose a recipe, each with the user settings that
#: lift it: given their own data, every record is used; given a model's num_train_epochs, it trains that long
#: (transformers lets max_steps win over epochs, so the profile's 12 steps would silently cap the user's epochs).
DEMO_SIZE: dict[tuple[str, ...], tuple[tuple[str, ...], ...]] = {
    ("max_records",): (("data",), ("max_records",)),
    **{(kind, "hyperparameters", "max_steps"): ((kind, "hyperparameters", "num_train_epochs"),
                                               (kind, "hyperparameters", "max_steps"))
       for kind in ("retriever", "reranker")},
}


def _lookup(mapping: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(mapping, dict) or name not in mapping:
            return None
        mapping = mapping[name]
    return mapping


def demo_limits(profile: dict[str, Any], user: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the profile less the demo-size settings the user's layers lift, the limits still in force)``.

    ``profile``: the CPU profile as one canonical mapping; ``user``: the user's canonical layers (config
    files, ``--set``, flags). A limit in force is keyed by its dotted name (``retriever.max_steps``).
    """
    import copy

    kept = copy.deepcopy(profile)
    in_force: dict[str, Any] = {}
    for path, lifted_by in DEMO_SIZE.items():
        value = _lookup(kept, path)
        if value is None:
            continue
        if any(_lookup(layer, other) is not None for layer in user for other in lifted_by):
            del _lookup(kept, path[:-1])[path[-1]]
        else:
            in_force[".".join(p for p in path if p != "hyperparameters")] = value
    return kept, in_force


def _user_layers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from bgeflow.cli._options import config_layers, given
    from bgeflow.platform.run_spec import LocalRunSpec

    return [LocalRunSpec.canonical(mapping, where=source) for source, mapping in config_layers(args)] + [given(args)]


def _spec_and_limits(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The run's spec (the example data, the CPU profile less the demo limits the user lifts, then files,
    ``--set`` and flags) and the demo limits still in force (``demo_limits``)."""
    from bgeflow.platform.run_spec import LocalRunSpec

    example, profile = _defaults()
    profile, in_force = demo_limits(profile, _user_layers(args))
    return spec_from_args(LocalRunSpec, args, base=[example, profile], where=""), in_force


def build_spec(args: argparse.Namespace) -> object:
    """The run's spec (``_spec_and_limits``)."""
    return _spec_and_limits(args)[0]


def run(args: argparse.Namespace) -> int:
    from bgeflow.platform import local_run

    spec, in_force = _spec_and_limits(args)
    pipeline = local_run.preflight(spec)
    print(f"bgeflow run: checks passed; pipeline {pipeline}", file=sys.stderr)
    if in_force:  # said before minutes of work: a user's own recipe must not meet the demo's size unawares
        print("bgeflow run: demo limits in force (the CPU profile): "
              + ", ".join(f"{name} {value}" for name, value in in_force.items())
              + "; your own data lifts max_records, a model's num_train_epochs (or max_steps) its max_steps",
              file=sys.stderr)
    if args.check:
        if not sys.stdout.isatty():  # piped, stdout is one JSON document, as after a run
            output = str(Path(spec.output.removeprefix("file://")).resolve())
            print(json.dumps({"status": "ok", "checked": True, "pipeline": str(pipeline), "output": output}))
        return 0
    summary = local_run.run(spec, pipeline)
    text = local_run.format_summary(summary)
    if sys.stdout.isatty():
        print(text)
    else:
        # Piped, stdout is for programs: one JSON document (run_summary.json's, on one line); people
        # still read the summary, on stderr.
        print(text, file=sys.stderr)
        print(json.dumps(summary.to_dict(), ensure_ascii=False))
    return 0
