"""Idempotent KFP operations used by the chart's hook Jobs: upload, submit-once, schedule.

Every operation looks before it writes, so running a hook twice (Argo CD re-sync, Helm retry,
a Job pod restarted after a crash) changes nothing the second time. The KFP API is reached
through the small :class:`KfpClient` protocol: :class:`RealKfpClient` wraps ``kfp.Client``
(imported lazily, so ``bgeflow --help`` never loads kfp); tests pass a fake.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bgeflow.core.errors import ConfigError, NotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    name: str


@dataclass(frozen=True)
class RecurringRun:
    id: str
    name: str


class KfpClient(Protocol):
    """The slice of the KFP v2 API bgeflow needs. ``find_*`` return None when absent."""

    def find_pipeline(self, name: str) -> str | None: ...

    def create_pipeline(self, package_path: str, name: str) -> str: ...

    def find_pipeline_version(self, pipeline_id: str, version_name: str) -> str | None: ...

    def create_pipeline_version(self, package_path: str, pipeline_id: str, version_name: str) -> str: ...

    def ensure_experiment(self, name: str) -> str: ...

    def find_run(self, experiment_id: str, run_name: str) -> str | None: ...

    def create_run(
        self, experiment_id: str, run_name: str, version: PipelineVersion, params: Mapping[str, Any],
        service_account: str,
    ) -> str: ...

    def list_recurring_runs(self, experiment_id: str) -> list[RecurringRun]: ...

    def create_recurring_run(
        self, experiment_id: str, name: str, version: PipelineVersion, params: Mapping[str, Any],
        cron: str, service_account: str,
    ) -> str: ...

    def delete_recurring_run(self, recurring_run_id: str) -> None: ...


def ensure_pipeline_version(
    client: KfpClient, package_path: str | Path, pipeline_name: str, version_name: str
) -> PipelineVersion:
    """Register ``package_path`` as ``pipeline_name``/``version_name`` unless that version exists."""
    if not version_name:
        raise ConfigError(f"pipeline {pipeline_name}: empty version name")
    package = str(package_path)
    if not Path(package).is_file():
        raise NotFoundError(f"pipeline package {package} not found")
    pipeline_id = client.find_pipeline(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.create_pipeline(package, pipeline_name)
        log.info("created pipeline %s (%s)", pipeline_name, pipeline_id)
    version_id = client.find_pipeline_version(pipeline_id, version_name)
    if version_id is None:
        version_id = client.create_pipeline_version(package, pipeline_id, version_name)
        log.info("uploaded pipeline %s version %s (%s)", pipeline_name, version_name, version_id)
    else:
        log.info("pipeline %s version %s already registered (%s)", pipeline_name, version_name, version_id)
    return PipelineVersion(pipeline_id=pipeline_id, version_id=version_id, name=version_name)


def submit_run_once(
    client: KfpClient, *, experiment: str, run_name: str, version: PipelineVersion,
    params: Mapping[str, Any], service_account: str = "",
) -> tuple[str, bool]:
    """Create the run unless one with this display name exists; returns (run id, submitted)."""
    experiment_id = client.ensure_experiment(experiment)
    existing = client.find_run(experiment_id, run_name)
    if existing is not None:
        return existing, False
    return client.create_run(experiment_id, run_name, version, params, service_account), True


def ensure_recurring_run(
    client: KfpClient, *, experiment: str, name: str, prefix: str, version: PipelineVersion,
    params: Mapping[str, Any], cron: str, service_account: str = "",
) -> tuple[str, bool]:
    """Keep exactly one recurring run named ``name`` among those starting with ``prefix``.

    ``name`` carries a hash of everything that defines the schedule, so an unchanged spec
    finds its recurring run and a changed one replaces the old (deleted) with a new one.
    """
    if not name.startswith(prefix):
        raise ConfigError(f"recurring run {name} does not start with its prefix {prefix}")
    experiment_id = client.ensure_experiment(experiment)
    current: str | None = None
    for rr in client.list_recurring_runs(experiment_id):
        if rr.name == name:
            current = rr.id
        elif rr.name.startswith(prefix):
            client.delete_recurring_run(rr.id)
            log.info("deleted superseded recurring run %s (%s)", rr.name, rr.id)
    if current is not None:
        return current, False
    return client.create_recurring_run(experiment_id, name, version, params, cron, service_account), True


def _name_filter(key: str, value: str) -> str:
    # KFP v2beta1 filter: a JSON predicate list.
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})


class RealKfpClient:
    """:class:`KfpClient` over ``kfp.Client`` (KFP API v2beta1).

    ``namespace`` is the Kubeflow profile namespace on multi-user installs ("" on standalone
    KFP). In-cluster auth: kfp reads the projected ServiceAccount token named by
    ``KF_PIPELINES_SA_TOKEN_PATH``, which the chart mounts.
    """

    def __init__(self, host: str, namespace: str = "") -> None:
        import kfp

        if not host:
            raise ConfigError("KFP host is empty (set --kfp-host or $KFP_HOST)")
        self.namespace = namespace or None
        self._kfp = kfp.Client(host=host, namespace=namespace or "kubeflow")

    def find_pipeline(self, name: str) -> str | None:
        return self._kfp.get_pipeline_id(name)

    def create_pipeline(self, package_path: str, name: str) -> str:
        return self._kfp.upload_pipeline(package_path, pipeline_name=name).pipeline_id

    def find_pipeline_version(self, pipeline_id: str, version_name: str) -> str | None:
        resp = self._kfp.list_pipeline_versions(
            pipeline_id, page_size=1, filter=_name_filter("display_name", version_name)
        )
        versions = resp.pipeline_versions or []
        return versions[0].pipeline_version_id if versions else None

    def create_pipeline_version(self, package_path: str, pipeline_id: str, version_name: str) -> str:
        return self._kfp.upload_pipeline_version(
            package_path, pipeline_version_name=version_name, pipeline_id=pipeline_id
        ).pipeline_version_id

    def ensure_experiment(self, name: str) -> str:
        resp = self._kfp.list_experiments(
            page_size=1, namespace=self.namespace, filter=_name_filter("display_name", name)
        )
        if resp.experiments:
            return resp.experiments[0].experiment_id
        return self._kfp.create_experiment(name, namespace=self.namespace).experiment_id

    def find_run(self, experiment_id: str, run_name: str) -> str | None:
        resp = self._kfp.list_runs(
            page_size=1, experiment_id=experiment_id, filter=_name_filter("display_name", run_name)
        )
        return resp.runs[0].run_id if resp.runs else None

    def create_run(
        self, experiment_id: str, run_name: str, version: PipelineVersion, params: Mapping[str, Any],
        service_account: str,
    ) -> str:
        return self._kfp.run_pipeline(
            experiment_id, run_name, params=dict(params), pipeline_id=version.pipeline_id,
            version_id=version.version_id, service_account=service_account or None,
        ).run_id

    def list_recurring_runs(self, experiment_id: str) -> list[RecurringRun]:
        found: list[RecurringRun] = []
        token = ""
        while True:
            resp = self._kfp.list_recurring_runs(page_token=token, page_size=100, experiment_id=experiment_id)
            found += [RecurringRun(r.recurring_run_id, r.display_name) for r in resp.recurring_runs or []]
            token = resp.next_page_token or ""
            if not token:
                return found

    def create_recurring_run(
        self, experiment_id: str, name: str, version: PipelineVersion, params: Mapping[str, Any],
        cron: str, service_account: str,
    ) -> str:
        return self._kfp.create_recurring_run(
            experiment_id, name, cron_expression=cron, max_concurrency=1, no_catchup=True,
            params=dict(params), pipeline_id=version.pipeline_id, version_id=version.version_id,
            service_account=service_account or None,
        ).recurring_run_id

    def delete_recurring_run(self, recurring_run_id: str) -> None:
        self._kfp.delete_recurring_run(recurring_run_id)
