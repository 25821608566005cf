"""GitOps-triggered retraining: resolve a retrain spec, name its run by content, submit it once.

The Helm chart renders ``.Values.retrain`` into a ConfigMap; a post-sync hook Job runs
``bgeflow pipeline trigger --spec <that file>``. The run's display name is a hash of the
*resolved* spec (defaults filled in, keys sorted), so a commit that changes any field yields
exactly one new run and a re-sync of the same commit finds its run and submits nothing.
Argo CD fires PostSync hooks on every sync and Flux re-runs hooks on every upgrade: this
content-addressed name, not the hook machinery, is what makes retraining idempotent.

No kfp import here: the KFP side is behind :class:`bgeflow.platform.kfp_client.KfpClient`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from bgeflow.core.config_file import load_mapping
from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.spec import setting
from bgeflow.platform.run_spec import RunSpec

if TYPE_CHECKING:
    from bgeflow.platform.kfp_client import KfpClient

log = logging.getLogger(__name__)

PIPELINE_NAME = "bge-finetune"
HASH_CHARS = 12
#: Keys of the chart's retrain block that are not run parameters.
CHART_ONLY = ("enabled", "revision")


class RetrainSpec(RunSpec):
    """What to retrain, as written in the chart's ``retrain`` values block: a ``RunSpec`` plus two chart keys.

    ``revision`` is free-form (a ticket, a date, a data snapshot id): it reaches no pipeline
    parameter, but changing it changes the run name, which forces a new run of the same spec.
    """

    enabled: bool = setting(False, "submit a KFP run for this spec on install/upgrade/sync (a re-sync of an "
                            "unchanged spec submits nothing)")
    revision: str = setting("", "free-form label (ticket, date, data snapshot); change it to force a new run of an "
                            "otherwise unchanged spec")

    @classmethod
    def load(cls, path: str | Path) -> RetrainSpec:
        """The spec in a YAML file (the ConfigMap the chart renders).

        Raises:
            NotFoundError: no such file.
            ConfigError: not YAML, not a mapping, or a setting that is unknown or invalid (named).
        """
        # The chart renders the file with Go's YAML encoder: its floats (learning_rate: 2e-05) read as floats.
        values = load_mapping(str(path), "retrain settings", flag="--spec")
        return cls.build(values, where=f"retrain spec {path}")

    def parameters(self) -> dict[str, Any]:
        """The KFP run arguments: every run-spec key, defaults filled in."""
        return {k: v for k, v in self.blocks().items() if k not in CHART_ONLY}

    def resolved(self, *, pipeline_version: str = "", schedule_id: str = "") -> dict[str, Any]:
        """Every field, defaults included: the single input of the run name.

        ``schedule_id`` is set by scheduled triggers only, so each period gets its own run.
        """
        return {
            "pipeline": PIPELINE_NAME,
            "pipeline_version": pipeline_version,
            "parameters": self.parameters(),
            "revision": self.revision,
            "schedule_id": schedule_id,
        }


def canonical_json(value: Any) -> str:
    # Sorted keys and fixed separators: the same spec always serialises to the same bytes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def run_name(spec: RetrainSpec, *, pipeline_version: str = "", schedule_id: str = "") -> str:
    """``bge-finetune-<12 hex>``: stable for an unchanged spec, new for any changed field."""
    resolved = spec.resolved(pipeline_version=pipeline_version, schedule_id=schedule_id)
    digest = hashlib.sha256(canonical_json(resolved).encode("utf-8")).hexdigest()
    return f"{PIPELINE_NAME}-{digest[:HASH_CHARS]}"


def pipeline_inputs(package_path: str | Path) -> set[str]:
    """Input parameter names declared by a compiled KFP pipeline (IR YAML).

    Raises:
        NotFoundError: no file at ``package_path`` (``--package``'s default is the ops image's path).
        ConfigError: not a compiled KFP pipeline.
    """
    try:
        text = Path(package_path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"compiled pipeline {package_path} not found: give --package (in a checkout, "
                            "`make pipelines` writes pipelines/bge_finetune.yaml)") from None
    docs = list(yaml.safe_load_all(text))
    root = next((d for d in docs if isinstance(d, dict) and "root" in d), None)
    if root is None:
        raise ConfigError(f"{package_path}: not a compiled KFP pipeline (no 'root')")
    return set(((root["root"].get("inputDefinitions") or {}).get("parameters") or {}).keys())


def check_parameters(spec: RetrainSpec, package_path: str | Path) -> None:
    """Fail before submitting when the spec names a parameter the pipeline does not declare."""
    declared = pipeline_inputs(package_path)
    unknown = sorted(set(spec.parameters()) - declared)
    if unknown:
        raise ConfigError(
            f"retrain spec passes {unknown}, which pipeline {package_path} does not declare "
            f"(declared: {sorted(declared)})"
        )


@dataclass(frozen=True)
class TriggerResult:
    run_name: str
    run_id: str
    submitted: bool


def trigger(
    client: KfpClient,
    spec: RetrainSpec,
    *,
    package_path: str | Path,
    experiment: str,
    pipeline_version: str,
    schedule_id: str = "",
    service_account: str = "",
) -> TriggerResult:
    """Submit the spec's run unless a run of that name already exists."""
    from bgeflow.platform.kfp_client import ensure_pipeline_version, submit_run_once

    check_parameters(spec, package_path)
    name = run_name(spec, pipeline_version=pipeline_version, schedule_id=schedule_id)
    version = ensure_pipeline_version(client, package_path, PIPELINE_NAME, pipeline_version)
    run_id, submitted = submit_run_once(
        client, experiment=experiment, run_name=name, version=version,
        params=spec.parameters(), service_account=service_account,
    )
    log.info("retrain %s run %s (%s)", "submitted" if submitted else "already exists", name, run_id)
    return TriggerResult(run_name=name, run_id=run_id, submitted=submitted)


SCHEDULE_PREFIX = f"{PIPELINE_NAME}-schedule-"


def schedule_name(spec: RetrainSpec, cron: str, *, pipeline_version: str = "") -> str:
    """Name of the KFP recurring run for ``spec`` on ``cron``: changes with either."""
    if not cron.strip():
        raise ConfigError("schedule: empty cron expression")
    payload = canonical_json({"spec": spec.resolved(pipeline_version=pipeline_version), "cron": cron.strip()})
    return SCHEDULE_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:HASH_CHARS]


def schedule(
    client: KfpClient,
    spec: RetrainSpec,
    *,
    cron: str,
    package_path: str | Path,
    experiment: str,
    pipeline_version: str,
    service_account: str = "",
) -> TriggerResult:
    """Keep one KFP recurring run for the spec; a changed spec or cron replaces it."""
    from bgeflow.platform.kfp_client import ensure_pipeline_version, ensure_recurring_run

    check_parameters(spec, package_path)
    name = schedule_name(spec, cron, pipeline_version=pipeline_version)
    version = ensure_pipeline_version(client, package_path, PIPELINE_NAME, pipeline_version)
    rr_id, created = ensure_recurring_run(
        client, experiment=experiment, name=name, prefix=SCHEDULE_PREFIX, version=version,
        params=spec.parameters(), cron=cron.strip(), service_account=service_account,
    )
    log.info("recurring run %s %s (%s)", name, "created" if created else "unchanged", rr_id)
    return TriggerResult(run_name=name, run_id=rr_id, submitted=created)
