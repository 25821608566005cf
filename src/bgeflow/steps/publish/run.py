"""``publish(PublishSpec) -> PublishResult``: the protocol of the package docstring, end to end."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bgeflow import __version__
from bgeflow.core.errors import ConflictError
from bgeflow.core.storage import Store, join_uri, open_store
from bgeflow.steps.publish import mlflow_registry
from bgeflow.steps.publish.card import render_card
from bgeflow.steps.publish.gather import (
    CARD,
    content_hash,
    digest_file,
    gather,
    model_kind,
    read_metrics,
    require_evaluated,
)
from bgeflow.steps.publish.pointers import update_pointers
from bgeflow.steps.publish.registry import (
    MANIFEST,
    MANIFEST_FORMAT,
    VersionInfo,
    list_versions,
    read_manifest,
    require_kind,
)
from bgeflow.steps.publish.spec import PublishSpec
from bgeflow.steps.publish.upload import claim_version, upload_version
from bgeflow.steps.publish.verdict import own_gate, refusal

log = logging.getLogger(__name__)


@dataclass
class PublishResult:
    name: str
    version: str
    uri: str
    content_hash: str
    created: bool  # False: an identical version already existed (idempotent rerun)
    champion: bool  # this version is the champion now
    latest: bool
    files: int
    reasons: list[str] = field(default_factory=list)
    #: the MLflow Model Registry version too, when MLflow is configured (``mlflow_registry``)
    mlflow: dict[str, Any] | None = None
    #: False: held back, its own gate rules failed (see ``PublishSpec.publish_if_gate_failed``); ``reasons`` say why
    published: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def held_back(cls, name: str, reason: str) -> PublishResult:
        """The result of a publish that wrote nothing, for ``reason``."""
        return cls(name, "", "", "", created=False, champion=False, latest=False, files=0, reasons=[reason],
                   published=False)


def publish(config: PublishSpec) -> PublishResult:
    """Publish a model version (see the module docstring for the protocol).

    A model whose own gate rules failed in ``metrics`` (``verdict.refusal``, for the kind it is
    published as) is not published unless ``publish_if_gate_failed``: nothing is read but the
    metrics and the model's ``config.json``, nothing is written, and the result says why.

    Args:
        config: the model, its evidence and the registry.

    Returns:
        The version published (``published`` False: held back, ``reasons`` say why).

    Raises:
        ConflictError: ``version`` already holds other content, or ``name`` is of the other kind
            (``registry.require_kind``).
        ConfigError: ``metrics`` scored another model (``gather.require_evaluated``).
        BgeflowError: a missing or malformed input (model, metrics, configs).
    """
    started = time.monotonic()
    metrics, kind = read_metrics(config), model_kind(config)
    # Before its verdict is read: another model's verdict says nothing about this one.
    require_evaluated(config, metrics, kind)
    registry = config.registry.rstrip("/")
    require_kind(registry, config.name, kind, f"--model {config.model}")
    # Before the model is gathered: a held-back model is never downloaded.
    failed = refusal(metrics, kind) if config.metrics else None
    if failed and not config.publish_if_gate_failed:
        log.info("publish: %s not published: %s (--publish-if-gate-failed, publish_if_gate_failed in a spec, "
                 "publishes it anyway)", config.name, failed)
        return PublishResult.held_back(config.name, failed)
    if failed:
        log.warning("publish: %s: publishing although %s (publish_if_gate_failed)", config.name, failed)
    overridden = [f"published although {failed} (--publish-if-gate-failed)"] if failed else []
    store = open_store(join_uri(registry, config.name))
    with tempfile.TemporaryDirectory(prefix="bgeflow-publish-") as tmp:
        files, facts = gather(config, Path(tmp))
        digest = content_hash(files)
        existing = _existing(registry, config, digest)
        if existing is not None:
            return _unchanged(store, registry, config, existing, digest, facts, overridden)

        created = datetime.now(timezone.utc)
        version = config.version or f"{created:%Y%m%dT%H%M%SZ}-{digest[:8]}"
        card = facts["generated"] / CARD
        card.parent.mkdir(parents=True, exist_ok=True)
        card.write_text(render_card(registry, config.name, version, facts), encoding="utf-8")
        files.append(digest_file(card, CARD))
        # One content per version folder: claimed before its first byte (see upload.claim_version).
        claim_version(store, version, digest)
        done = _existing(registry, config.model_copy(update={"version": version}), digest)
        if done is not None:  # an attempt with this content finished while this one gathered
            return _unchanged(store, registry, config, done, digest, facts, overridden)
        log.info("publish: %d files (%d bytes) to %s", len(files), sum(f.size for f in files),
                 store.url(version))
        upload_version(store, version, files)

        own = own_gate(facts["metrics"], facts["kind"])  # this model's own rules, not the whole run's
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": config.name,
            "version": version,
            "kind": facts["kind"],
            "base_model": facts["base_model"],
            "base_model_id": facts["base_model_id"],
            "created": created.isoformat(timespec="seconds"),
            "content_hash": digest,
            "bgeflow_version": __version__,
            "gate_passed": own["passed"] if own else None,
            "gate_rules": [r.get("rule") for r in own["rules"]] if own else [],
            "files": [f.entry() for f in sorted(files, key=lambda f: f.path)],
        }
        body = json.dumps(manifest, ensure_ascii=False, indent=2)
        try:
            store.write_text(f"{version}/{MANIFEST}", body, if_absent=True)
        except FileExistsError:
            # A concurrent publish of this content wrote it first (other content cannot: the claim).
            other = read_manifest(registry, config.name, version)
            if other is None or other.get("content_hash") != digest:
                raise ConflictError(f"{store.url(version)} was published concurrently with different content") from None
            info = VersionInfo(registry, config.name, version, other)
            return _unchanged(store, registry, config, info, digest, facts, overridden)

    info = VersionInfo(registry, config.name, version, manifest)
    is_latest, is_champion, reasons = update_pointers(
        store, registry, config, info, hashlib.sha256(body.encode()).hexdigest(), facts["metrics"])
    log.info("publish: %s complete in %.1fs", info.uri, time.monotonic() - started)
    return PublishResult(config.name, version, info.uri, digest, True, is_champion, is_latest, len(files),
                         [*overridden, *reasons], mlflow_registry.register(info, champion=is_champion))


def _unchanged(store: Store, registry: str, config: PublishSpec, existing: VersionInfo, digest: str,
               facts: dict[str, Any], overridden: list[str]) -> PublishResult:
    """The result of a publish whose content is already a complete version: pointers only."""
    manifest_sha = hashlib.sha256(store.read_bytes(f"{existing.version}/{MANIFEST}")).hexdigest()
    is_latest, is_champion, reasons = update_pointers(store, registry, config, existing, manifest_sha,
                                                      facts["metrics"])
    log.info("publish: %s already holds this content; nothing uploaded", existing.uri)
    return PublishResult(config.name, existing.version, existing.uri, digest, False, is_champion, is_latest,
                         len(existing.files), ["identical content already published", *overridden, *reasons],
                         mlflow_registry.register(existing, champion=is_champion))


def _existing(registry: str, config: PublishSpec, digest: str) -> VersionInfo | None:
    """The complete version already holding this content; an error if ``--version`` holds other content."""
    if config.version:
        manifest = read_manifest(registry, config.name, config.version)
        if manifest is None:
            return None
        if manifest.get("content_hash") != digest:
            raise ConflictError(
                f"{join_uri(registry, config.name)}/{config.version} is already published with different content "
                f"(content hash {str(manifest.get('content_hash'))[:12]}, this model {digest[:12]}); "
                "choose another --version"
            )
        return VersionInfo(registry, config.name, config.version, manifest)
    for info in reversed(list_versions(registry, config.name)):
        if info.content_hash == digest:
            return info
    return None
