"""Fixtures of the real-cluster tests; e2e_cluster.py says what scripts/cluster/e2e.sh provides."""

from __future__ import annotations

import pytest

from e2e.e2e_cluster import S3, Cluster, need


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
