"""``bgeflow publish``: upload a model version to the registry, atomically and idempotently."""

from __future__ import annotations

import argparse
import json

from bgeflow.cli._settings import add_config_option, apply_config_file
from bgeflow.core.storage.s3 import check_reachable as check_s3_reachable


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "publish",
        help="publish a model version (files, metrics, configs, lineage, model card) to the registry",
        description="Upload the model and its metrics, resolved configs, data lineage and a model card to "
        "<registry>/<name>/<version>/ through a staging prefix; verify every object, write manifest.json last "
        "(conditional put), then move the latest (and, if asked, champion) pointer. Publishing the same "
        "content again is a no-op.",
    )
    add_config_option(p)
    p.add_argument("--model", metavar="URI", help="a model directory or a training output holding model/ (required)")
    p.add_argument("--name", help="the model's name in the registry (required)")
    p.add_argument("--registry", metavar="URI", help="registry root: s3://bucket/prefix or a directory (required)")
    p.add_argument("--version", dest="model_version", default=None,
                   help="version name (default: UTC timestamp + 8 hex of the content hash)")
    p.add_argument("--metrics", metavar="URI", help="metrics.json from bgeflow evaluate")
    p.add_argument("--train-config", dest="configs", action="append", default=None, metavar="URI",
                   help="a resolved config to keep with the model (repeatable; default: the training output's "
                   "train_config.yaml and train_summary.json)")
    p.add_argument("--lineage-input", dest="lineage_inputs", action="append", default=None, metavar="URI",
                   help="training/eval data the model came from: its objects' ETag/sha256 and row counts are "
                   "recorded (repeatable)")
    p.add_argument("--set-champion", action="store_true", help="point champion.json at this version")
    p.add_argument("--only-if-gate-passed", action="store_true",
                   help="promote to champion only if --metrics holds a passed quality gate (implies --set-champion)")
    p.add_argument("--kind", choices=("auto", "retriever", "reranker"), default="auto",
                   help="auto (default): reranker when the model has a sequence-classification head")
    p.add_argument("--base-model", default=None, help="recorded in the model card (default: from metrics/configs)")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from bgeflow.steps.publish import PublishConfig, publish

    apply_config_file(args._parser, args)
    champion = "if-gate-passed" if args.only_if_gate_passed else "always" if args.set_champion else "never"
    config = PublishConfig(
        model=args.model, name=args.name, registry=args.registry, version=args.model_version,
        metrics=args.metrics, configs=args.configs or [], lineage_inputs=args.lineage_inputs or [],
        champion=champion, kind=args.kind, base_model=args.base_model,
    )
    check_s3_reachable([config.model, config.registry, config.metrics, *config.configs, *config.lineage_inputs])
    result = publish(config)
    print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0
