"""The launcher's contract against a real cluster, for each kind of job (opt-in: ``pytest -m cluster``).

Every test runs for both backends of ``JOB_KINDS`` (ids ``pytorchjob``, ``trainjob``): create, stream node
0's log, adopt the running job on retry, report a failure's exit code, time out → delete, SIGTERM →
delete, and the job's pods (and a TrainJob's JobSet) go with it.

- pytorchjob: needs KUBECONFIG pointing at a cluster where the PyTorchJob CRD and the Training Operator run
  (the ``e2e-kind`` workflow builds one with kind). The pods run a tiny command in an image the cluster can
  pull (``BGEFLOW_E2E_IMAGE``, default python:3.11-slim) under the launcher's own restricted pod template.
- trainjob: needs what ``make e2e`` (scripts/cluster/e2e.sh) provides besides (BGEFLOW_E2E_*: the
  admin kubeconfig, the release, S3) and Kubeflow Trainer v2 with JobSet; skipped otherwise, with the
  reason. The TrainJob names the chart's TrainingRuntime (``helm template``, applied renamed:
  ``trainjob_runtime_name``), which owns the pod: the same tiny command runs in the runtime's image
  (the chart's bgeflow-gpu, which the cluster has) under its restricted securityContext, and a failed
  node restarts the whole JobSet ``failurePolicy.maxRestarts`` (2) times before the TrainJob fails.

No GPU is needed: this checks what the launcher itself does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

pytestmark = pytest.mark.cluster

if not os.environ.get("KUBECONFIG"):
    pytest.skip("KUBECONFIG is not set: no cluster to test against", allow_module_level=True)

from bgeflow.platform.launcher import LaunchSpec, PodSettings, job_name, launch  # noqa: E402
from bgeflow.platform.launcher.k8s import JOB_KINDS, KubernetesBackend  # noqa: E402

NAMESPACE = os.environ.get("BGEFLOW_E2E_NAMESPACE", "default")
IMAGE = os.environ.get("BGEFLOW_E2E_IMAGE", "python:3.11-slim")
SLEEP = ["python", "-c", "import time; time.sleep(600)"]


@dataclass(frozen=True)
class Backend:
    """One kind of job as these tests run it."""

    kind: str  # the key of JOB_KINDS
    # What the controller injects, as node 0 sees it (proof the job's shape reached the pods), and what it
    # prints for 2 nodes of 1 process.
    env: tuple[str, str, str]
    shown: str
    # Objects the job's controller makes under the job's own name, which must go with it (kubectl
    # resource names; read as cluster-admin: the launcher's token may not).
    children: tuple[str, ...] = ()

    @property
    def show_env(self) -> str:
        return f"import os; print('bgeflow-e2e', *(os.environ.get(k) for k in {self.env!r}))"


BACKENDS = [
    # The Training Operator: PET_* for torchrun and WORLD_SIZE (pods).
    Backend("pytorchjob", ("PET_NNODES", "PET_NODE_RANK", "WORLD_SIZE"), "bgeflow-e2e 2 0 2"),
    # Trainer v2's torch plugin: PET_* only, PET_NPROC_PER_NODE from the TrainJob's numProcPerNode.
    Backend("trainjob", ("PET_NNODES", "PET_NODE_RANK", "PET_NPROC_PER_NODE"), "bgeflow-e2e 2 0 1",
            children=("jobsets.jobset.x-k8s.io",)),
]


@dataclass
class Jobs:
    """This test's jobs on one backend; each is deleted when the test ends, whatever happened."""

    case: Backend
    runtime: str | None = None  # trainjob: the TrainingRuntime the jobs name
    cluster: Any = None  # trainjob: e2e_cluster.Cluster (cluster-admin), to see the JobSet
    made: list[tuple[LaunchSpec, KubernetesBackend]] = field(default_factory=list)

    def make(self, command: list[str], *, nnodes: int = 2, owner: str | None = None,
             backoff: int = 0) -> tuple[LaunchSpec, KubernetesBackend, list[str]]:
        owner = owner or f"e2e-{uuid.uuid4().hex[:8]}/train-launcher"
        lines: list[str] = []
        # PyTorchJob: the launcher's pod template (image, restart policy, backoff limit, TTL, /dev/shm). TrainJob:
        # the runtime's, but for the memory (resourcesPerNode).
        runtime = {"runtime": self.runtime} if self.runtime else {}
        spec = LaunchSpec(
            name=job_name(owner, prefix="bgeflow-e2e"), command=command, owner=owner, namespace=NAMESPACE,
            nnodes=nnodes, nproc_per_node=1,
            pod=PodSettings(image=IMAGE, shm_size="64Mi", memory="256Mi", restart_policy="Never", backoff_limit=backoff,
                            ttl_seconds_after_finished=600, **runtime),
        )
        backend = KubernetesBackend.from_environment(JOB_KINDS[self.case.kind], poll_interval=2, log_sink=lines.append)
        self.made.append((spec, backend))
        return spec, backend, lines

    def left(self, spec: LaunchSpec, backend: KubernetesBackend) -> list[str]:
        """What is left of the job: itself, its pods (the launcher's token may list them), its children."""
        found = [f"{backend.kind.kind}/{spec.name}"] if backend._get(spec) is not None else []
        pods = backend.core.list_namespaced_pod(spec.namespace, label_selector=backend.kind.pods(spec)).items
        found += [f"pod/{p.metadata.name}" for p in pods]
        for resource in self.case.children:
            done = self.cluster.kubectl("get", resource, spec.name, "-n", spec.namespace, check=False)
            if done.returncode == 0 or "NotFound" not in done.stderr:
                found.append(f"{resource}/{spec.name}: {done.stdout.strip()[:200]}{done.stderr.strip()[:200]}")
        return found

    def await_gone(self, spec: LaunchSpec, backend: KubernetesBackend, within: float = 150) -> None:
        """The job is gone within ``within`` seconds, and with it its pods and the children its controller
        made (foreground deletion: the job goes last; the pods take their grace period, 30 s)."""
        deadline = time.monotonic() + within
        while (left := self.left(spec, backend)) and time.monotonic() < deadline:
            time.sleep(2)
        assert left == [], f"still there {within:.0f}s after the launcher deleted {spec.ref}: {left}"


@pytest.fixture(params=BACKENDS, ids=[b.kind for b in BACKENDS])
def jobs(request: pytest.FixtureRequest) -> Iterator[Jobs]:
    case: Backend = request.param
    made = Jobs(case)
    if case.kind == "trainjob":  # skipped here, with the reason, where the cluster has no Trainer v2
        made.runtime = request.getfixturevalue("trainjob_runtime_name")
        made.cluster = request.getfixturevalue("cluster")
    yield made
    for spec, backend in made.made:
        backend.cancel(spec)


def test_success_streams_node0_log(jobs: Jobs) -> None:
    spec, backend, lines = jobs.make(["python", "-c", jobs.case.show_env])
    result = launch(spec, backend, timeout=600)
    assert result.adopted is False
    assert any(jobs.case.shown in line for line in lines), lines


def test_retry_adopts_the_running_job(jobs: Jobs) -> None:
    spec, backend, _ = jobs.make(["python", "-c", "import time; time.sleep(20); print('done')"], nnodes=1)
    assert backend.submit(spec) is False  # first attempt; its launcher "dies" here
    again, backend2, _ = jobs.make(spec.command, nnodes=1, owner=spec.owner)
    result = launch(again, backend2, timeout=600)
    assert result.adopted is True


def test_failure_reports_the_exit_code(jobs: Jobs) -> None:
    spec, backend, _ = jobs.make(["python", "-c", "import sys; print('boom'); sys.exit(7)"], nnodes=1)
    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    assert f"{backend.kind.kind} {NAMESPACE}/{spec.name} failed" in str(info.value)
    assert "exit code 7" in str(info.value)


def test_timeout_deletes_the_job(jobs: Jobs) -> None:
    spec, backend, _ = jobs.make(SLEEP, nnodes=1)
    with pytest.raises(TimeoutError, match=f"{backend.kind.kind} {NAMESPACE}/{spec.name} did not finish"):
        launch(spec, backend, timeout=30)
    job = backend._get(spec)
    assert job is None or job["metadata"].get("deletionTimestamp")  # deleted before the launcher returned
    jobs.await_gone(spec, backend)


def test_sigterm_deletes_the_job(jobs: Jobs) -> None:
    spec, backend, _ = jobs.make(SLEEP, nnodes=1)
    timer = threading.Timer(15, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(RuntimeError, match="cancelled; the job was deleted"):
            launch(spec, backend, timeout=600)
    finally:
        timer.cancel()  # a launch that failed early must not leave a SIGTERM armed for pytest itself
    jobs.await_gone(spec, backend)
