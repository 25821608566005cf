"""What ``helm test`` checks after an install: S3 reachable, KFP answering, the CRDs the values need served.

``bgeflow pipeline check`` runs these in the chart's test Job (``templates/tests/``), with the
release's own ServiceAccount, S3 settings and KFP endpoint, so a failure names what the release
cannot reach before the first retrain does. Each check is one line; every check runs, and the
command fails when any did.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Check:
    """One check's outcome: what was checked, whether it holds, and what was seen."""

    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


def check_s3(uri: str) -> Check:
    """The bucket answers (one short attempt, as ``bgeflow run`` checks it) and the prefix can be listed."""
    from bgeflow.core.errors import BgeflowError, StepFailed
    from bgeflow.core.storage import open_store
    from bgeflow.core.storage.s3 import check_reachable

    try:
        check_reachable([uri])
        listed = open_store(uri).list()
    except (BgeflowError, StepFailed) as exc:
        return Check(f"s3 {uri}", False, str(exc))
    return Check(f"s3 {uri}", True, f"reachable; {len(listed)} object(s) under the prefix")


def _kfp_healthz(host: str, namespace: str) -> str:
    import kfp

    response = kfp.Client(host=host, namespace=namespace or "kubeflow").get_kfp_healthz(sleep_duration=2)
    return f"KFP {getattr(response, 'commit_sha', '') or 'healthy'}"


def check_kfp(host: str, namespace: str = "", probe: Callable[[str, str], str] | None = None) -> Check:
    """KFP's API answers its health endpoint (``probe``: that call, ``kfp.Client``'s by default)."""
    try:
        seen = (probe or _kfp_healthz)(host, namespace)
    except Exception as exc:  # any failure to reach or authenticate is the finding itself
        return Check(f"kfp {host}", False, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    return Check(f"kfp {host}", True, seen)


def _served_kinds(group_version: str) -> list[str]:
    """The kinds the API server serves under ``group/version`` (discovery, which every account may read)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    found = client.ApiClient().call_api(f"/apis/{group_version}", "GET", response_type="object",
                                        auth_settings=["BearerToken"], _return_http_data_only=True)
    return [str(r.get("kind")) for r in (found or {}).get("resources", []) if "/" not in str(r.get("name", ""))]


def check_api(kind_ref: str, discover: Callable[[str], list[str]] | None = None) -> Check:
    """``group/version/Kind`` (``kubeflow.org/v1/PyTorchJob``) is served: its CRD is installed.

    ``discover``: the kinds served under a ``group/version`` (default: the API server's discovery).

    Raises:
        ValueError: ``kind_ref`` is not ``group/version/Kind``.
    """
    group_version, _, kind = kind_ref.rpartition("/")
    if group_version.count("/") != 1 or not kind:
        raise ValueError(f"{kind_ref!r}: expected group/version/Kind, e.g. kubeflow.org/v1/PyTorchJob")
    try:
        kinds = (discover or _served_kinds)(group_version)
    except Exception as exc:  # a 404 here is the usual finding: the group is not served at all
        status = getattr(exc, "status", None)
        said = f"{group_version} is not served (HTTP 404): install its CRDs" if status == 404 else \
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return Check(f"api {kind_ref}", False, said)
    if kind not in kinds:
        return Check(f"api {kind_ref}", False, f"{group_version} serves {', '.join(sorted(kinds)) or 'no kinds'}, "
                     f"not {kind}: install its CRD")
    return Check(f"api {kind_ref}", True, "served")
