"""``bgeflow launch``: submit a training job (a PyTorchJob or a TrainJob) from a terminal and follow it.

The job is the one the pipeline's train-launcher step creates: the training spec (the same
settings as ``bgeflow train``: flags, ``--config FILE``, ``--set KEY=VALUE``, FlagEmbedding's own
flags where FlagEmbedding is installed) is written to ``<output>/train_spec.yaml`` and every pod
runs ``bgeflow train --config <that file>``. The job's name derives from ``--owner`` (default: the
output URI), so running the same command again adopts the job instead of starting a second one.
``--backend`` picks the kind: pytorchjob (Kubeflow Training Operator), trainjob (Kubeflow Trainer v2,
on the runtime the pod settings name, the chart's bgeflow-torch by default), auto (whichever the
cluster serves) or container (the same pods as Docker containers of the gpu image on this machine,
through the Kubeflow SDK's container backend; the output may be a local folder). ``--retrain-spec FILE``
takes the job's nodes, processes per node and timeout from a retrain spec's training block, as the
pipeline's launcher does (the chart's direct mode). ``--dry-run`` writes the spec and prints the job
(valid YAML for ``kubectl apply -f -``) instead of submitting it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from bgeflow.cli._options import add_config_options, add_option_flags, add_spec_options
from bgeflow.cli.train import kind_is_a_word

if TYPE_CHECKING:
    from bgeflow.platform.run_spec import TrainingSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    from bgeflow.core.spec import options
    from bgeflow.platform.launcher.submit import BACKENDS
    from bgeflow.steps.training.spec import TrainSpec

    p = subparsers.add_parser(
        "launch",
        help="submit a training PyTorchJob or TrainJob to Kubernetes (or print it with --dry-run) and wait for it",
        description=__doc__.split("\n\n", 1)[1].replace("\n", " ").replace("``", ""),
        usage="bgeflow launch {retriever,reranker} [options] [FlagEmbedding/TrainingArguments options]",
        allow_abbrev=False,
    )
    add_config_options(p, example="hyperparameters.learning_rate=2e-5")
    # The pods' distributed settings are the job's to give (the operator's env), not the spec's: the job's
    # shape is the two flags below, spelled as `bgeflow train`'s (--nproc_per_node as well).
    distributed = {opt.name: opt for opt in options(TrainSpec) if opt.path[0] == "distributed"}
    add_spec_options(p, TrainSpec, exclude=set(distributed))
    kind_is_a_word(p, "launch")
    job = p.add_argument_group("the job")
    # The run spec's training.backend, without local (processes: `bgeflow train --local-nodes`) and
    # "kubernetes" (pytorchjob's older name).
    job.add_argument("--backend", choices=[b for b in BACKENDS if b not in ("local", "kubernetes")],
                     default="pytorchjob",
                     help="pytorchjob (Training Operator), trainjob (Kubeflow Trainer v2), auto (whichever the "
                     "cluster serves) or container (Docker containers here, one per node); as the run spec's "
                     "training.backend")
    job.add_argument("--pod-settings", default=None, metavar="FILE",
                     help="YAML/JSON of bgeflow.platform.launcher.PodSettings (image, gpus_per_node, tolerations, "
                     "s3_secret, ...); default: the JSON in $BGEFLOW_TRAIN_POD_SETTINGS, as the pipeline's launcher")
    job.add_argument("--image", default=None, help="training image (overrides the pod settings)")
    job.add_argument("--namespace", default=None, help="namespace (default: the pod settings', else the current)")
    job.add_argument("--gpus-per-node", type=int, default=None)
    # Unset: from --retrain-spec's training block, else that block's defaults (one declaration).
    add_option_flags(job, distributed["distributed.nnodes"], dest="nnodes", type=int, default=None,
                     help="pods (PyTorchJob: one Master plus nnodes-1 Workers; default: --retrain-spec's "
                     "training.nnodes, else 1)")
    add_option_flags(job, distributed["distributed.nproc_per_node"], dest="nproc_per_node", type=int, default=None,
                     help="processes per pod, usually its GPUs (default: --retrain-spec's training.nproc_per_node, "
                     "else 1)")
    # Each pod's place in the job (its rank, the master's address and port) is the operator's to give, and local
    # pods are `bgeflow train`'s: taken here only to be refused by name in run(), not handed to FlagEmbedding's
    # parser, whose "not an option" blamed the user's spelling.
    for name in PLACED:
        add_option_flags(job, distributed[f"distributed.{name}"], dest=f"placed_{name}", default=None,
                         help=argparse.SUPPRESS)
    job.add_argument("--owner", default=None, help="identity the job name derives from (default: cli/<output>)")
    job.add_argument("--timeout", type=float, default=None,
                     help="seconds to wait before deleting the job (default: --retrain-spec's training.timeout_s, "
                     "else no limit)")
    job.add_argument("--retrain-spec", default=None, metavar="FILE",
                     help="a retrain spec (the chart's retrain values, as `bgeflow pipeline --spec`): the job's "
                     "nnodes, nproc_per_node and timeout_s come from its training block, as the pipeline's "
                     "launcher takes them (the chart's direct mode); the flags above win")
    job.add_argument("--dry-run", action="store_true",
                     help="write the training spec and print the job's YAML; submit nothing")
    p.set_defaults(func=run, accepts_runner_flags=True)


#: The distributed settings a job gives each pod itself (``distributed.*`` less the job's shape).
PLACED = ("node_rank", "master_addr", "master_port", "local_nodes")


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import json
    import os

    import yaml

    from bgeflow.cli.train import build_spec
    from bgeflow.core.config_file import load_mapping
    from bgeflow.core.errors import ConfigError
    from bgeflow.platform.launcher import POD_SETTINGS_ENV, PodSettings, launch, make_backend
    from bgeflow.platform.launcher.k8s import JOB_KINDS
    from bgeflow.platform.launcher.submit import CLUSTER_BACKENDS
    from bgeflow.platform.launcher.train_job import build_launch_spec
    from bgeflow.steps.training.pod import write_spec

    placed = [name for name in PLACED if getattr(args, f"placed_{name}", None) is not None]
    if "local_nodes" in placed:
        raise ConfigError("--local-nodes runs the pods on this machine: that is `bgeflow train --local-nodes N`; "
                          "a launched job's pods are --nnodes")
    if placed:
        raise ConfigError(f"{', '.join('--' + name.replace('_', '-') for name in placed)}: each pod's place in a "
                          "launched job is the training operator's to give (its env); drop it, the job's shape is "
                          "--nnodes and --nproc-per-node")
    if args.dry_run and args.backend not in JOB_KINDS:  # before anything is written
        raise ConfigError(f"--dry-run prints one kind of job: give --backend {' or '.join(JOB_KINDS)}, "
                          f"not {args.backend}")
    settings: dict = {}
    if args.pod_settings:
        settings = load_mapping(args.pod_settings, "PodSettings fields", flag="--pod-settings")
    elif os.environ.get(POD_SETTINGS_ENV):  # as the pipeline's train launcher (and the chart's direct mode)
        try:
            settings = json.loads(os.environ[POD_SETTINGS_ENV])
        except ValueError as exc:
            raise ConfigError(f"${POD_SETTINGS_ENV} is not JSON: {exc}") from None
        if not isinstance(settings, dict):
            raise ConfigError(f"${POD_SETTINGS_ENV} must hold a JSON object of PodSettings fields")
    for key, value in (("image", args.image), ("namespace", args.namespace), ("gpus_per_node", args.gpus_per_node)):
        if value is not None:
            settings[key] = value
    pod = PodSettings.from_json(json.dumps(settings))  # unknown keys: an error naming them
    namespace = pod.namespace
    if not namespace:
        from bgeflow.platform.launcher.k8s import current_namespace

        namespace = current_namespace()
    spec = build_spec(args)
    shape = _job_shape(args)
    if args.backend in CLUSTER_BACKENDS and "://" not in spec.output:
        raise ConfigError(f"output {spec.output!r} is a local path, which training pods cannot write to: give an "
                          "s3:// URI")
    launch_spec = build_launch_spec(
        spec, owner=args.owner or f"cli/{spec.output}", nnodes=shape.nnodes, nproc_per_node=shape.nproc_per_node,
        pod=dataclasses.replace(pod, namespace=namespace), namespace=namespace,
    )
    # Built before the spec is written: a job that cannot be built (no SDK, a bad setting) writes nothing.
    manifest = JOB_KINDS[args.backend].manifest(launch_spec) if args.dry_run else None
    spec_uri = write_spec(spec)
    print(f"bgeflow launch: training spec written to {spec_uri}", file=sys.stderr)
    if manifest is not None:
        yaml.safe_dump(manifest, sys.stdout, sort_keys=False)
        return 0
    backend = make_backend(args.backend)
    timeout = args.timeout if args.timeout is not None else shape.timeout_s if args.retrain_spec else None
    result = launch(launch_spec, backend, timeout=timeout)
    kind = getattr(backend, "kind", None)
    # stdout is the verb's one JSON document, as every verb's is.
    print(json.dumps({"job": f"{result.namespace}/{result.name}", "kind": kind.kind if kind else backend.name,
                      "adopted": result.adopted, "seconds": round(result.seconds, 1),
                      "model_uri": f"{spec.output.rstrip('/')}/model", "spec_uri": spec_uri},
                     ensure_ascii=False, indent=2))
    return 0


def _job_shape(args: argparse.Namespace) -> TrainingSettings:
    """The run spec's ``TrainingSettings`` of the job: ``--retrain-spec``'s training block (its defaults
    without one), the flags over it.

    Raises:
        ConfigError: the retrain spec is not valid (naming the key), or a flag is below 1.
    """
    from bgeflow.platform.gitops import RetrainSpec
    from bgeflow.platform.run_spec import TrainingSettings

    training = RetrainSpec.load(args.retrain_spec).training if args.retrain_spec else TrainingSettings()
    flags = {"nnodes": args.nnodes, "nproc_per_node": args.nproc_per_node}
    return TrainingSettings.build(training.to_dict(), {k: v for k, v in flags.items() if v is not None},
                                  where="launch", cli=True)
