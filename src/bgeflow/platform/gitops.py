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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from bgeflow.platform.kfp_client import KfpClient

log = logging.getLogger(__name__)

PIPELINE_NAME = "bge-finetune"
HASH_CHARS = 12
# KFP pipeline input name for each structured spec field. Hyperparameters are passed through
# under their own (pipeline) names, so a new pipeline knob needs no change here.
_FIELD_PARAMS = {
    ("data", "train"): "train_data",
    ("retriever", "baseModel"): "retriever_model",
    ("reranker", "baseModel"): "reranker_model",
    ("retriever", "enabled"): "train_retriever",
    ("reranker", "enabled"): "train_reranker",
}
# Top-level spec keys; ``output`` is filled by the chart from s3.bucket/s3.prefix.
_TOP_PARAMS = {"output": "work_uri"}


@dataclass(frozen=True)
class RetrainSpec:
    """What to retrain, as written in the chart's ``retrain`` values block.

    ``revision`` is free-form (a ticket, a date, a data snapshot id): it reaches no pipeline
    parameter, but changing it changes the run name, which forces a new run of the same spec.
    ``schedule_id`` is set by scheduled triggers only, so each period gets its own run.
    """

    train_data: str
    retriever_model: str = "BAAI/bge-base-en-v1.5"
    reranker_model: str = "BAAI/bge-reranker-base"
    train_retriever: bool = True
    train_reranker: bool = True
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    work_uri: str = ""
    revision: str = ""
    pipeline_version: str = ""
    schedule_id: str = ""

    def __post_init__(self) -> None:
        if not self.train_data:
            raise ValueError("retrain spec: data.train (the raw training data URI) is empty")
        if not (self.train_retriever or self.train_reranker):
            raise ValueError("retrain spec: retriever.enabled and reranker.enabled are both false")
        for name in ("retriever_model", "reranker_model"):
            if not getattr(self, name):
                raise ValueError(f"retrain spec: {name} is empty")
        if not isinstance(self.hyperparameters, Mapping):
            raise ValueError("retrain spec: hyperparameters must be a mapping of pipeline parameters")
        clash = set(self.hyperparameters) & {*_FIELD_PARAMS.values(), *_TOP_PARAMS.values()}
        if clash:
            raise ValueError(f"retrain spec: hyperparameters repeat structured fields {sorted(clash)}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], **overrides: Any) -> RetrainSpec:
        """Build from the chart's camelCase ``retrain`` block (the ConfigMap's content)."""
        known = {"enabled", "data", "retriever", "reranker", "hyperparameters", "revision", *_TOP_PARAMS}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"retrain spec: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        kwargs: dict[str, Any] = {}
        for (section, key), param in _FIELD_PARAMS.items():
            value = (values.get(section) or {}).get(key)
            if value is not None:
                kwargs[param] = value
        for key, param in _TOP_PARAMS.items():
            if values.get(key):
                kwargs[param] = str(values[key])
        kwargs["hyperparameters"] = dict(values.get("hyperparameters") or {})
        kwargs["revision"] = str(values.get("revision") or "")
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | Path, **overrides: Any) -> RetrainSpec:
        return cls.load_text(Path(path).read_text(encoding="utf-8"), source=str(path), **overrides)

    @classmethod
    def load_text(cls, text: str, source: str = "<text>", **overrides: Any) -> RetrainSpec:
        values = yaml.safe_load(text) or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"retrain spec {source}: expected a mapping, got {type(values).__name__}")
        return cls.from_values(values, **overrides)

    def resolved(self) -> dict[str, Any]:
        """Every field, defaults included: the single input of the run name."""
        return {
            "pipeline": PIPELINE_NAME,
            "pipeline_version": self.pipeline_version,
            "parameters": self.parameters(),
            "revision": self.revision,
            "schedule_id": self.schedule_id,
        }

    def parameters(self) -> dict[str, Any]:
        """The KFP run arguments."""
        params: dict[str, Any] = {name: getattr(self, name) for name in _FIELD_PARAMS.values()}
        # Optional top-level values go in only when set, so a pipeline without them still runs.
        params.update({p: getattr(self, p) for p in _TOP_PARAMS.values() if getattr(self, p)})
        params.update(self.hyperparameters)
        return params


def canonical_json(value: Any) -> str:
    # Sorted keys and fixed separators: the same spec always serialises to the same bytes.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def run_name(spec: RetrainSpec) -> str:
    """``bge-finetune-<12 hex>``: stable for an unchanged spec, new for any changed field."""
    digest = hashlib.sha256(canonical_json(spec.resolved()).encode("utf-8")).hexdigest()
    return f"{PIPELINE_NAME}-{digest[:HASH_CHARS]}"


def pipeline_inputs(package_path: str | Path) -> set[str]:
    """Input parameter names declared by a compiled KFP pipeline (IR YAML)."""
    docs = list(yaml.safe_load_all(Path(package_path).read_text(encoding="utf-8")))
    root = next((d for d in docs if isinstance(d, dict) and "root" in d), None)
    if root is None:
        raise ValueError(f"{package_path}: not a compiled KFP pipeline (no 'root')")
    return set(((root["root"].get("inputDefinitions") or {}).get("parameters") or {}).keys())


def check_parameters(spec: RetrainSpec, package_path: str | Path) -> None:
    """Fail before submitting when the spec names a parameter the pipeline does not declare."""
    declared = pipeline_inputs(package_path)
    unknown = sorted(set(spec.parameters()) - declared)
    if unknown:
        raise ValueError(
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
    service_account: str = "",
) -> TriggerResult:
    """Submit the spec's run unless a run of that name already exists."""
    from bgeflow.platform.kfp_client import ensure_pipeline_version, submit_run_once

    check_parameters(spec, package_path)
    name = run_name(spec)
    version = ensure_pipeline_version(client, package_path, PIPELINE_NAME, spec.pipeline_version)
    run_id, submitted = submit_run_once(
        client, experiment=experiment, run_name=name, version=version,
        params=spec.parameters(), service_account=service_account,
    )
    log.info("retrain %s run %s (%s)", "submitted" if submitted else "already exists", name, run_id)
    return TriggerResult(run_name=name, run_id=run_id, submitted=submitted)


SCHEDULE_PREFIX = f"{PIPELINE_NAME}-schedule-"


def schedule_name(spec: RetrainSpec, cron: str) -> str:
    """Name of the KFP recurring run for ``spec`` on ``cron``: changes with either."""
    if not cron.strip():
        raise ValueError("schedule: empty cron expression")
    payload = canonical_json({"spec": spec.resolved(), "cron": cron.strip()})
    return SCHEDULE_PREFIX + hashlib.sha256(payload.encode("utf-8")).hexdigest()[:HASH_CHARS]


def schedule(
    client: KfpClient,
    spec: RetrainSpec,
    *,
    cron: str,
    package_path: str | Path,
    experiment: str,
    service_account: str = "",
) -> TriggerResult:
    """Keep one KFP recurring run for the spec; a changed spec or cron replaces it."""
    from bgeflow.platform.kfp_client import ensure_pipeline_version, ensure_recurring_run

    check_parameters(spec, package_path)
    name = schedule_name(spec, cron)
    version = ensure_pipeline_version(client, package_path, PIPELINE_NAME, spec.pipeline_version)
    rr_id, created = ensure_recurring_run(
        client, experiment=experiment, name=name, prefix=SCHEDULE_PREFIX, version=version,
        params=spec.parameters(), cron=cron.strip(), service_account=service_account,
    )
    log.info("recurring run %s %s (%s)", name, "created" if created else "unchanged", rr_id)
    return TriggerResult(run_name=name, run_id=rr_id, submitted=created)
