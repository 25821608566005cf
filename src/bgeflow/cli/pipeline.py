"""``bgeflow pipeline``: KFP operations run by the Helm chart's hook Jobs (and by hand).

- ``upload``: register the compiled pipeline as a version named by the package version.
- ``trigger``: submit the retrain spec's run unless a run of that (content-hashed) name exists.
- ``schedule``: keep one KFP recurring run for the retrain spec.
- ``wait``: block until step outputs exist (orders the chart's direct-mode Jobs).
- ``step-spec``: one direct-mode step's spec, derived from the retrain spec (``platform.direct``).
- ``check``: S3, KFP and the CRDs a release needs (the chart's ``helm test``; ``cluster_check``).

Every subcommand is idempotent (``check`` and ``step-spec`` only read); kfp is imported only when one runs.
"""

from __future__ import annotations

import argparse
import json
import os

from bgeflow import __version__

DEFAULT_PACKAGE = "/opt/bgeflow/pipelines/bge_finetune.yaml"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="KFP pipeline upload, GitOps retrain trigger and schedule, direct-mode step specs (used by the Helm chart)",
        description="Idempotent KFP operations: running any of them twice changes nothing the second time.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    kfp_parent = argparse.ArgumentParser(add_help=False)
    kfp_parent.add_argument("--kfp-host", default=os.environ.get("KFP_HOST", ""),
                            help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888 (default: $KFP_HOST)")
    kfp_parent.add_argument("--kfp-namespace", default=os.environ.get("KFP_NAMESPACE", ""),
                            help="Kubeflow profile namespace on multi-user KFP (default: $KFP_NAMESPACE)")
    kfp_parent.add_argument("--package", default=DEFAULT_PACKAGE,
                            help=f"compiled pipeline YAML (default: {DEFAULT_PACKAGE}, as in the ops image)")
    kfp_parent.add_argument("--version", dest="pipeline_version", default=__version__,
                            help=f"pipeline version name (default: the package version, {__version__})")

    spec_parent = argparse.ArgumentParser(add_help=False)
    spec_parent.add_argument("--spec", required=True, help="retrain spec YAML (the chart's retrain values)")
    spec_parent.add_argument("--experiment", required=True, help="KFP experiment the runs go to")
    spec_parent.add_argument("--service-account", default="",
                             help="Kubernetes ServiceAccount the run's pods use (default: KFP's)")

    up = sub.add_parser("upload", parents=[kfp_parent], help="register the pipeline version if absent")
    up.set_defaults(func=_upload)

    tr = sub.add_parser("trigger", parents=[kfp_parent, spec_parent],
                        help="submit the spec's run unless a run with its hashed name exists")
    tr.add_argument("--schedule-id", default="", help="period id mixed into the run name (scheduled triggers)")
    tr.add_argument("--dry-run", action="store_true", help="print the resolved spec and run name; no KFP call")
    tr.set_defaults(func=_trigger)

    sc = sub.add_parser("schedule", parents=[kfp_parent, spec_parent],
                        help="create/replace the KFP recurring run for the spec")
    sc.add_argument("--cron", required=True, help="KFP cron expression (6 fields, seconds first)")
    sc.set_defaults(func=_schedule)

    ck = sub.add_parser("check", help="check what a release needs: S3, KFP, CRDs (the chart's helm test)",
                        description="Every check runs; one line each, as JSON; exit 1 when any fails.")
    ck.add_argument("--s3", dest="s3_uris", action="append", default=[], metavar="URI",
                    help="an s3:// prefix that must answer and list (repeatable)")
    ck.add_argument("--kfp-host", default="", help="a KFP API whose health endpoint must answer")
    ck.add_argument("--kfp-namespace", default=os.environ.get("KFP_NAMESPACE", ""),
                    help="Kubeflow profile namespace on multi-user KFP (default: $KFP_NAMESPACE)")
    ck.add_argument("--api", dest="apis", action="append", default=[], metavar="GROUP/VERSION/KIND",
                    help="a kind the API server must serve, e.g. kubeflow.org/v1/PyTorchJob (repeatable)")
    ck.set_defaults(func=_check)

    wt = sub.add_parser("wait", help="wait until every URI exists (s3:// or local)")
    wt.add_argument("--uri", dest="uris", action="append", required=True, help="repeatable")
    wt.add_argument("--timeout", type=float, default=6 * 3600, help="seconds (default 6h)")
    wt.add_argument("--interval", type=float, default=30, help="seconds between checks (default 30)")
    wt.set_defaults(func=_wait)

    from bgeflow.platform.direct import STEPS

    ss = sub.add_parser(
        "step-spec", help="write one direct-mode step's spec, derived from the retrain spec",
        description="Turn the retrain spec into STEP's spec (as the KFP pipeline's component for that step "
        "does), with the inputs and outputs of the chart's direct mode under --root, and write it as YAML "
        "for `bgeflow ingest|mine|evaluate|publish --config FILE` or `bgeflow launch KIND --config FILE`.")
    ss.add_argument("step", choices=STEPS, metavar="STEP", help=f"one of {', '.join(STEPS)}")
    ss.add_argument("--spec", required=True, help="retrain spec YAML (the chart's retrain values)")
    ss.add_argument("--root", required=True, metavar="URI",
                    help="where the direct-mode steps read and write (s3://bucket/prefix/direct/<hash>)")
    ss.add_argument("--output", required=True, metavar="FILE", help="the step's spec (YAML) to write")
    ss.set_defaults(func=_step_spec)


def _client(args: argparse.Namespace):
    from bgeflow.platform.kfp_client import RealKfpClient

    return RealKfpClient(args.kfp_host, args.kfp_namespace)


def _spec(args: argparse.Namespace):
    from bgeflow.platform.gitops import RetrainSpec

    return RetrainSpec.load(args.spec)


def _print(payload: dict) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True))


def _upload(args: argparse.Namespace) -> int:
    from bgeflow.platform.gitops import PIPELINE_NAME
    from bgeflow.platform.kfp_client import ensure_pipeline_version

    version = ensure_pipeline_version(_client(args), args.package, PIPELINE_NAME, args.pipeline_version)
    _print({"pipeline": PIPELINE_NAME, "pipeline_id": version.pipeline_id, "version": version.name,
            "version_id": version.version_id})
    return 0


def _trigger(args: argparse.Namespace) -> int:
    from bgeflow.platform.gitops import check_parameters, run_name, trigger

    spec = _spec(args)
    if args.dry_run:
        check_parameters(spec, args.package)
        _print({"run_name": run_name(spec, pipeline_version=args.pipeline_version, schedule_id=args.schedule_id),
                "resolved": spec.resolved(pipeline_version=args.pipeline_version, schedule_id=args.schedule_id)})
        return 0
    result = trigger(_client(args), spec, package_path=args.package, experiment=args.experiment,
                     pipeline_version=args.pipeline_version, schedule_id=args.schedule_id,
                     service_account=args.service_account)
    _print({"run_name": result.run_name, "run_id": result.run_id, "submitted": result.submitted})
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from bgeflow.platform.gitops import schedule

    result = schedule(_client(args), _spec(args), cron=args.cron, package_path=args.package,
                      experiment=args.experiment, pipeline_version=args.pipeline_version,
                      service_account=args.service_account)
    _print({"recurring_run": result.run_name, "id": result.run_id, "created": result.submitted})
    return 0


def _check(args: argparse.Namespace) -> int:
    from bgeflow.core.errors import ConfigError, StepFailed
    from bgeflow.platform.cluster_check import check_api, check_kfp, check_s3

    if not (args.s3_uris or args.kfp_host or args.apis):
        raise ConfigError("nothing to check: give --s3, --kfp-host or --api")
    checks = [check_s3(uri) for uri in args.s3_uris]
    if args.kfp_host:
        checks.append(check_kfp(args.kfp_host, args.kfp_namespace))
    try:
        checks += [check_api(ref) for ref in args.apis]
    except ValueError as exc:
        raise ConfigError(f"--api {exc}") from None
    _print({"checks": [c.to_dict() for c in checks], "ok": all(c.ok for c in checks)})
    failed = [c for c in checks if not c.ok]
    if failed:
        raise StepFailed(f"{len(failed)} of {len(checks)} check(s) failed; first: {failed[0].name}: {failed[0].detail}")
    return 0


def _wait(args: argparse.Namespace) -> int:
    import logging
    import time

    from bgeflow.core.storage import open_store

    deadline = time.monotonic() + args.timeout
    pending = list(args.uris)
    while True:
        pending = [uri for uri in pending if not open_store(uri).exists()]
        if not pending:
            return 0
        if time.monotonic() >= deadline:
            raise TimeoutError(f"after {args.timeout:.0f}s these outputs are still missing: {pending}")
        logging.getLogger("bgeflow").info("waiting for %s", pending)
        time.sleep(args.interval)


def _step_spec(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bgeflow.platform.direct import spec_document, step_spec

    spec = step_spec(args.step, _spec(args), root=args.root)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(spec_document(spec), encoding="utf-8")
    # The settings in the log too: `kubectl logs -c step-spec` shows what the step runs with.
    _print({"step": args.step, "spec": str(output), "settings": spec.changed()})
    return 0
