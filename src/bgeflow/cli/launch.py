"""``bgeflow launch``: submit ``bgeflow train <kind>`` as a PyTorchJob from a terminal and follow it.

The job is the one the pipeline's train-launcher step creates; its name derives from ``--owner``
(default: the output URI), so running the same command again adopts the job instead of starting
a second one. ``--dry-run`` prints the PyTorchJob instead of submitting it.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "launch",
        help="submit a training PyTorchJob to Kubernetes (or print it with --dry-run) and wait for it",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " "),
    )
    p.add_argument("kind", choices=("retriever", "reranker"))
    p.add_argument("--model", required=True, help="base model (hub name, s3:// or a path inside the image)")
    p.add_argument("--train-data", required=True, help="training JSONL the pods read (s3://...)")
    p.add_argument("--output", required=True, help="where the pods write model/ and the summary (s3://...)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="a TrainConfig option, e.g. learning_rate=2e-5; repeatable")
    p.add_argument("--pod-settings", default=None, metavar="FILE",
                   help="YAML/JSON of bgeflow.platform.launcher.PodSettings (image, gpus_per_node, tolerations, s3_secret, ...)")
    p.add_argument("--image", default=None, help="training image (overrides the pod settings)")
    p.add_argument("--namespace", default=None, help="namespace (default: the pod settings', else the current)")
    p.add_argument("--gpus-per-node", type=int, default=None)
    p.add_argument("--nnodes", type=int, default=1, help="pods: one Master plus nnodes-1 Workers")
    p.add_argument("--nproc-per-node", type=int, default=1, help="processes per pod (usually its GPUs)")
    p.add_argument("--owner", default=None, help="identity the job name derives from (default: cli/<output>)")
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait before deleting the job")
    p.add_argument("--dry-run", action="store_true", help="print the PyTorchJob YAML; submit nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    import yaml

    from bgeflow.cli.run import key_values
    from bgeflow.core.config_file import load_mapping
    from bgeflow.platform.launcher import PodSettings, launch, make_backend
    from bgeflow.platform.launcher.train_job import build_train_spec

    settings: dict = {}
    if args.pod_settings:
        settings = load_mapping(args.pod_settings, "PodSettings fields", flag="--pod-settings")
    for key, value in (("image", args.image), ("namespace", args.namespace), ("gpus_per_node", args.gpus_per_node)):
        if value is not None:
            settings[key] = value
    pod = PodSettings.from_json(json.dumps(settings))  # unknown keys: an error naming them
    options = key_values(args.options, "--set")
    namespace = pod.namespace
    if not namespace:
        from bgeflow.platform.launcher.k8s import current_namespace

        namespace = current_namespace()
    spec = build_train_spec(
        kind=args.kind, model=args.model, train_data=args.train_data, output=args.output, hyperparameters=options,
        owner=args.owner or f"cli/{args.output}", nnodes=args.nnodes, nproc_per_node=args.nproc_per_node,
        pod=dataclasses.replace(pod, namespace=namespace), namespace=namespace,
    )
    if args.dry_run:
        from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest

        yaml.safe_dump(to_manifest(build_pytorchjob(spec)), sys.stdout, sort_keys=False)
        return 0
    result = launch(spec, make_backend("kubernetes"), timeout=args.timeout)
    verb = "adopted" if result.adopted else "created"
    print(f"PyTorchJob {result.namespace}/{result.name} ({verb}) succeeded in {result.seconds:.0f}s; "
          f"model at {args.output.rstrip('/')}/model")
    return 0
