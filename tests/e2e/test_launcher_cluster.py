"""The launcher against a real cluster with the Kubeflow Training Operator (opt-in: ``pytest -m cluster``).

Needs KUBECONFIG pointing at a cluster where the PyTorchJob CRD and the operator run (the
``e2e-kind`` workflow builds one with kind). The pods run a tiny command in an image the cluster
can pull (``BGEFLOW_E2E_IMAGE``, default python:3.11-slim), so no GPU and no bgeflow image are needed
to check what the launcher itself does: create, adopt on retry, wait, report failures, time out,
delete on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.cluster

if not os.environ.get("KUBECONFIG"):
    pytest.skip("KUBECONFIG is not set: no cluster to test against", allow_module_level=True)

from bgeflow.platform.launcher import LaunchSpec, PodSettings, job_name, launch  # noqa: E402
from bgeflow.platform.launcher.k8s import JOB_KINDS, KubernetesBackend  # noqa: E402

NAMESPACE = os.environ.get("BGEFLOW_E2E_NAMESPACE", "default")
IMAGE = os.environ.get("BGEFLOW_E2E_IMAGE", "python:3.11-slim")
# What the operator injects, as the pod sees it: proof the job's shape reached every replica.
SHOW_ENV = "import os; print('bgeflow-e2e', *(os.environ.get(k) for k in ('PET_NNODES', 'PET_NODE_RANK', 'WORLD_SIZE')))"


def make(command: list[str], *, nnodes: int = 2, owner: str | None = None, backoff: int = 0) -> tuple[LaunchSpec, KubernetesBackend, list[str]]:
    owner = owner or f"e2e-{uuid.uuid4().hex[:8]}/train-launcher"
    lines: list[str] = []
    spec = LaunchSpec(
        name=job_name(owner, prefix="bgeflow-e2e"), command=command, owner=owner, namespace=NAMESPACE,
        nnodes=nnodes, nproc_per_node=1,
        pod=PodSettings(image=IMAGE, shm_size="64Mi", memory="256Mi", restart_policy="Never", backoff_limit=backoff,
                        ttl_seconds_after_finished=600),
    )
    backend = KubernetesBackend.from_environment(JOB_KINDS["pytorchjob"], poll_interval=2, log_sink=lines.append)
    return spec, backend, lines


@pytest.fixture(autouse=True)
def _cleanup(request: pytest.FixtureRequest):
    made: list[tuple[LaunchSpec, KubernetesBackend]] = []
    request.node.made = made
    yield
    for spec, backend in made:
        backend.cancel(spec)


def test_success_streams_the_master_log(request: pytest.FixtureRequest) -> None:
    spec, backend, lines = make(["python", "-c", SHOW_ENV])
    request.node.made.append((spec, backend))
    result = launch(spec, backend, timeout=600)
    assert result.adopted is False
    assert any("bgeflow-e2e 2 0 2" in line for line in lines), lines


def test_retry_adopts_the_running_job(request: pytest.FixtureRequest) -> None:
    spec, backend, _ = make(["python", "-c", "import time; time.sleep(20); print('done')"], nnodes=1)
    request.node.made.append((spec, backend))
    assert backend.submit(spec) is False  # first attempt; its launcher "dies" here
    again, backend2, _ = make(spec.command, nnodes=1, owner=spec.owner)
    result = launch(again, backend2, timeout=600)
    assert result.adopted is True


def test_failure_reports_the_exit_code(request: pytest.FixtureRequest) -> None:
    spec, backend, _ = make(["python", "-c", "import sys; print('boom'); sys.exit(7)"], nnodes=1)
    request.node.made.append((spec, backend))
    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    assert f"PyTorchJob {NAMESPACE}/{spec.name} failed" in str(info.value)
    assert "exit code 7" in str(info.value)


def test_timeout_deletes_the_job(request: pytest.FixtureRequest) -> None:
    spec, backend, _ = make(["python", "-c", "import time; time.sleep(600)"], nnodes=1)
    request.node.made.append((spec, backend))
    with pytest.raises(TimeoutError, match=f"PyTorchJob {NAMESPACE}/{spec.name} did not finish"):
        launch(spec, backend, timeout=30)
    assert backend._get(spec) is None or backend._get(spec)["metadata"].get("deletionTimestamp")


def test_sigterm_deletes_the_job(request: pytest.FixtureRequest) -> None:
    spec, backend, _ = make(["python", "-c", "import time; time.sleep(600)"], nnodes=1)
    request.node.made.append((spec, backend))
    timer = threading.Timer(15, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(RuntimeError, match="cancelled; the job was deleted"):
            launch(spec, backend, timeout=600)
    finally:
        timer.cancel()  # a launch that failed early must not leave a SIGTERM armed for pytest itself
    deadline = time.monotonic() + 120
    while backend._get(spec) is not None and time.monotonic() < deadline:
        time.sleep(2)
    assert backend._get(spec) is None
