"""Fixtures of the real-cluster tests; e2e_cluster.py says what scripts/cluster/e2e.sh provides."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from e2e.e2e_cluster import S3, Cluster, need, require_trainjob, trainjob_runtime


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return Cluster(
        admin_kubeconfig=need("BGEFLOW_E2E_ADMIN_KUBECONFIG"), namespace=need("BGEFLOW_E2E_NAMESPACE"),
        release=need("BGEFLOW_E2E_RELEASE"), service_account=need("BGEFLOW_E2E_SERVICE_ACCOUNT"),
        ops_image=need("BGEFLOW_E2E_IMAGE"), gpu_image=need("BGEFLOW_E2E_GPU_IMAGE"),
        registry=need("BGEFLOW_E2E_REGISTRY"), version=need("BGEFLOW_E2E_VERSION"),
    )


@pytest.fixture(scope="session")
def s3() -> S3:
    need("AWS_ACCESS_KEY_ID")
    return S3(endpoint=need("BGEFLOW_E2E_S3_ENDPOINT"), host_endpoint=need("BGEFLOW_E2E_S3_HOST_ENDPOINT"),
              bucket=need("BGEFLOW_E2E_S3_BUCKET"), secret=need("BGEFLOW_E2E_S3_SECRET"))


@pytest.fixture(scope="module")
def trainjob_runtime_name(cluster: Cluster, s3: S3) -> Iterator[str]:
    """The chart's TrainingRuntime, renamed, with the chart's trainjobs rule for the launcher
    (``e2e_cluster.trainjob_runtime``); skipped where the cluster or this venv cannot run TrainJobs.
    Per module, so the extra rule is gone before test_rbac.py asks what the chart alone grants."""
    require_trainjob(cluster)
    with trainjob_runtime(cluster, s3) as name:
        yield name
