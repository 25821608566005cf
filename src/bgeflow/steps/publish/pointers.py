"""Moving ``latest.json`` and ``champion.json`` after a version's manifest exists (step 6); promoting by hand."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bgeflow.core.storage import Store
from bgeflow.steps.publish.registry import MANIFEST, VersionInfo, read_manifest, read_pointer
from bgeflow.steps.publish.spec import PublishSpec
from bgeflow.steps.publish.verdict import model_verdict

log = logging.getLogger(__name__)


def write_pointer(store: Store, pointer: str, version: str, manifest_sha256: str) -> None:
    store.write_text(f"{pointer}.json", json.dumps({
        "version": version, "manifest_sha256": manifest_sha256,
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2))


def champion_decision(config: PublishSpec, metrics: dict[str, Any] | None, kind: str) -> tuple[bool, str]:
    """Whether ``config.champion`` promotes a ``kind`` model (its resolved kind) with these ``metrics``.

    ``if-gate-passed`` reads the model's own rules (``verdict.model_verdict``): a failed reranker rule
    does not hold back the retriever. ``always`` promotes even a model published with
    ``--publish-if-gate-failed``: both are a human's explicit choice.
    """
    if config.champion == "never":
        return False, "not asked to promote (--champion never)"
    passed, _ = model_verdict(metrics, kind)
    if config.champion == "always":
        return True, "promoted to champion (--champion always)" + (
            " although its own gate rules failed" if passed is False else "")
    if passed is None:
        return False, f"not promoted: {config.metrics} holds no gate verdict"
    if passed:
        return True, "promoted to champion: its own gate rules passed"
    return False, "not promoted: its own gate rules failed"


def update_pointers(
    store: Store, registry: str, config: PublishSpec, info: VersionInfo, manifest_sha256: str,
    metrics: dict[str, Any] | None,
) -> tuple[bool, bool, list[str]]:
    reasons = []
    latest_target = read_pointer(registry, config.name, "latest")
    current = read_manifest(registry, config.name, latest_target) if latest_target else None
    # Never move latest backwards: a rerun of an older publish leaves a newer latest alone.
    is_latest = latest_target == info.version or current is None or str(current.get("created", "")) <= info.created
    if is_latest and latest_target != info.version:
        write_pointer(store, "latest", info.version, manifest_sha256)
    promote, reason = champion_decision(config, metrics, info.kind)
    reasons.append(reason)
    champion_target = read_pointer(registry, config.name, "champion")
    if promote and champion_target != info.version:
        write_pointer(store, "champion", info.version, manifest_sha256)
    return is_latest, promote or champion_target == info.version, reasons


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` did: the version now champion and the one it replaced (None: there was none)."""

    name: str
    version: str
    uri: str
    previous: str | None
    mlflow: dict[str, Any] | None = None  # the MLflow alias moved too (``mlflow_registry``)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "champion": self.version, "uri": self.uri, "previous": self.previous,
                "changed": self.previous != self.version, "mlflow": self.mlflow}


def promote(registry: str, name: str, ref: str) -> Promotion:
    """Make version (or pointer) ``ref`` of ``name`` the champion, after checking its files are all there.

    Only a complete version can be promoted, and one whose files differ in size from its manifest is
    refused: readers of ``champion`` would download a broken model.

    Raises:
        NotFoundError: ``name`` has no complete version ``ref``.
        ConflictError: the version is of another kind than the name's champion (``registry.require_kind``).
        RegistryError: a file of that version is missing or has another size than its manifest says.
    """
    import hashlib

    from bgeflow.steps.publish.registry import RegistryError, get_version, name_store, require_kind, verify

    info = get_version(registry, name, ref)
    if info.kind:
        require_kind(registry, name, info.kind, f"version {info.version}")
    problems = verify(registry, name, info.version, checksums=False)
    if problems:
        raise RegistryError(f"{info.uri} cannot be promoted: {problems[0]}"
                            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
    if info.manifest.get("gate_passed") is False:
        # Allowed (a person may know better than the rule), but said: a publish never makes such a version the
        # champion by itself, and readers of `champion` get this model from now on.
        log.warning("%s failed its own gate rules (%s) when it was published; promoting it all the same",
                    info.uri, ", ".join(info.manifest.get("gate_rules") or []) or "rules not recorded")
    store = name_store(registry, name)
    previous = read_pointer(registry, name, "champion")
    if previous != info.version:
        manifest_sha = hashlib.sha256(store.read_bytes(f"{info.version}/{MANIFEST}")).hexdigest()
        write_pointer(store, "champion", info.version, manifest_sha)
    from bgeflow.steps.publish import mlflow_registry

    return Promotion(name, info.version, info.uri, previous, mlflow_registry.register(info, champion=True))
