"""``bgeflow publish``: upload a model version to the registry, atomically and idempotently."""

from __future__ import annotations

import argparse
import json

from bgeflow.cli._options import add_config_options, add_spec_options, spec_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.steps.publish import PublishSpec

    p = subparsers.add_parser(
        "publish",
        help="publish a model version (files, metrics, configs, lineage, model card) to the registry",
        description="Upload the model and its metrics, resolved configs, data lineage and a model card to "
        "<registry>/<name>/<version>/ through a staging prefix; verify every object, write manifest.json last "
        "(conditional put), then move the latest (and, if asked, champion) pointer. Publishing the same "
        "content again is a no-op. A model whose own gate rules failed in --metrics is not published: nothing is "
        "written, latest stays where it was, the reason goes to stderr and the exit status is 0 "
        "(--publish-if-gate-failed publishes it anyway).",
        allow_abbrev=False,
    )
    add_config_options(p)
    add_spec_options(p, PublishSpec)
    # A switch of earlier versions, kept as a shorthand of --champion.
    p.add_argument("--set-champion", dest="champion_shorthand", action="store_const", const="always",
                   help="same as --champion always")
    # Removed: it only decided the champion, yet read as "publish only if the gate passed" (now the default).
    p.add_argument("--only-if-gate-passed", dest="removed_flag", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=run, champion_shorthand=None)


def run(args: argparse.Namespace) -> int:
    from bgeflow.core.errors import ConfigError
    from bgeflow.core.storage.s3 import check_reachable
    from bgeflow.steps.publish import PublishSpec, publish

    if args.removed_flag:
        raise ConfigError("--only-if-gate-passed was removed: a model whose own gate rules failed is not published "
                          "at all now (the default); for the champion pointer alone use --champion if-gate-passed")
    extra = {"champion": args.champion_shorthand} if args.champion_shorthand else None
    spec = spec_from_args(PublishSpec, args, extra=extra, where="")
    check_reachable([spec.model, spec.registry, spec.metrics, spec.report, *spec.configs, *spec.lineage_inputs])
    result = publish(spec)
    document = json.dumps(result.to_dict(), ensure_ascii=False, indent=2)
    print(document)
    if spec.report:  # where a run without KFP's artifact metadata keeps what its publish did
        from bgeflow.core.storage import open_store

        open_store(spec.report).write_text("", document + "\n")
    # Held back by its own gate rules, the step did its job and exits 0 (the chart's direct-mode Job relies on
    # it); the step's own log line says why, once.
    return 0
