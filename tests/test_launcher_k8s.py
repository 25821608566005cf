"""The Kubernetes backend against an in-memory API: create, adopt, wait, logs, failures, timeout, SIGTERM."""

from __future__ import annotations

import os
import signal

import pytest

from bgeflow.platform.launcher import LaunchSpec, PodSettings, job_name, launch
from bgeflow.platform.launcher.k8s import KubernetesBackend
from fake_k8s import FakeKubernetes, api_error

NS = "ml"
OWNER = "run-42/train-retriever"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def make(api: FakeKubernetes, owner: str = OWNER, **pod: object) -> tuple[LaunchSpec, KubernetesBackend, list[str]]:
    spec = LaunchSpec(name=job_name(owner), command=["bgeflow", "train", "retriever"], owner=owner, namespace=NS,
                      nnodes=2, pod=PodSettings(image="ghcr.io/bgeflow/bgeflow-gpu:0.1.0", **pod))
    clock = FakeClock()
    lines: list[str] = []
    backend = KubernetesBackend(api, api, poll_interval=5, log_sink=lines.append, clock=clock, sleep=clock.sleep)
    return spec, backend, lines


def test_create_wait_success_streams_master_log() -> None:
    api = FakeKubernetes()
    spec, backend, lines = make(api)
    api.script = [["Created"], ["Created", "Running"], ["Created", "Running"], ["Succeeded"]]
    api.add_pod(spec.name, NS, "master", 0, phase="Running")
    api.add_pod(spec.name, NS, "worker", 0, phase="Running")
    api.logs[f"{spec.name}-master-0"] = "step 1 loss 2.0\nstep 2 loss 1.5\ndone"
    api.logs[f"{spec.name}-worker-0"] = "worker noise"

    result = launch(spec, backend, timeout=600)

    assert result.adopted is False and result.backend == "kubernetes"
    assert len(api.created) == 1 and api.created[0]["metadata"]["name"] == spec.name
    assert lines == [f"[{spec.name}-master-0] step 1 loss 2.0", f"[{spec.name}-master-0] step 2 loss 1.5",
                     f"[{spec.name}-master-0] done"]
    assert api.deleted == []


def test_retry_adopts_the_existing_job() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Running"]]
    backend.submit(spec)  # the first attempt, then the pod died
    api.script = [["Running"], ["Succeeded"]]
    result = launch(spec, make(api)[1], timeout=600)
    assert result.adopted is True
    assert len(api.created) == 1 and len(api.jobs) == 1


def test_adopting_someone_elses_job_is_refused() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    backend.submit(spec)
    api.jobs[(NS, spec.name)]["metadata"]["annotations"]["bgeflow.dev/owner"] = "run-7/other"
    with pytest.raises(RuntimeError, match=rf"PyTorchJob {NS}/{spec.name} already exists and belongs to 'run-7/other'"):
        backend.submit(spec)


def test_a_failed_job_found_on_retry_is_replaced() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    backend.submit(spec)
    api.script = [["Failed"]]
    # the first GET (in submit) shows Failed; afterwards the job is gone until recreated
    assert backend.submit(spec) is False
    assert api.deleted == [(NS, spec.name)] and len(api.created) == 2


def test_failure_reports_pod_reasons_and_recent_events() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Running"], ["Failed"]]
    master = api.add_pod(spec.name, NS, "master", 0, phase="Failed", terminated=("OOMKilled", 137, ""))
    api.add_pod(spec.name, NS, "worker", 0, phase="Failed", terminated=("Error", 1, "CUDA error: out of memory\n"))
    for minute in range(12):
        api.add_event(NS, "Pod", master.metadata.name, f"Reason{minute}", f"message {minute}", minute)
    api.add_event(NS, "PyTorchJob", spec.name, "JobFailed", "PyTorchJob ml/x has failed", 30)

    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    message = str(info.value)
    assert message.startswith(f"PyTorchJob {NS}/{spec.name} failed: PyTorchJobFailed")
    assert f"pod {spec.name}-master-0 container pytorch (now): OOMKilled exit code 137" in message
    assert "Error exit code 1: CUDA error: out of memory" in message
    assert "event Warning PyTorchJob/" in message and "JobFailed" in message
    assert "Reason11" in message and "Reason2:" not in message  # only the most recent events


def test_failure_after_the_operator_deleted_the_pods_reports_exit_codes_from_its_events() -> None:
    """What the real Training Operator (v1.9) does on a backoff-limit failure: it deletes every pod,
    failed ones included, so the exit code survives only in its events (texts as it writes them)."""
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Running"], ["Failed"]]
    pod = f"{spec.name}-master-0"
    api.add_event(NS, "PyTorchJob", spec.name, "Error",
                  f"Error pod {pod} container pytorch exitCode: 7 terminated message: ", 1)
    api.add_event(NS, "PyTorchJob", spec.name, "ExitedWithCode", f"Pod: {NS}.{pod} exited with code 7", 2, "Normal")
    api.add_event(NS, "PyTorchJob", spec.name, "SuccessfulDeletePod", f"Deleted pod: {pod}", 3, "Normal")
    # ... and, as seen on the cluster, it may already have made a new pod of the same name.
    api.add_pod(spec.name, NS, "master", 0, phase="Pending", waiting=("ContainerCreating", ""))
    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    message = str(info.value)
    assert f"pod {pod} container pytorch (operator's event; pod deleted): Error exit code 7" in message
    assert message.count("exit code 7") == 1, message


def test_timeout_deletes_the_job_and_says_why() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Created"]]
    api.add_pod(spec.name, NS, "master", 0, phase="Pending", waiting=("ImagePullBackOff", "Back-off pulling image"))
    with pytest.raises(TimeoutError) as info:
        launch(spec, backend, timeout=60)
    message = str(info.value)
    assert f"PyTorchJob {NS}/{spec.name} did not finish within 60s (last state: Created); deleted it" in message
    assert "waiting ImagePullBackOff: Back-off pulling image" in message
    assert api.deleted == [(NS, spec.name)]


def test_job_deleted_while_waiting() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Running"]]
    api.on_get = lambda: api.jobs.clear() if api.script == [["Running"]] and api.created else None
    backend.submit(spec)
    with pytest.raises(RuntimeError, match=f"PyTorchJob {NS}/{spec.name} was deleted before it finished"):
        backend.wait(spec, 60)


def test_api_errors_name_the_job() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.create_error = api_error(403, "Forbidden", 'pytorchjobs.kubeflow.org is forbidden: User "x" cannot create')
    with pytest.raises(RuntimeError, match=rf"creating PyTorchJob {NS}/{spec.name} failed: 403 .*forbidden"):
        launch(spec, backend)


def test_sigterm_deletes_the_job() -> None:
    api = FakeKubernetes()
    spec, backend, _ = make(api)
    api.script = [["Running"]]
    polls = []

    def terminate_on_third_poll() -> None:
        polls.append(1)
        if len(polls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what KFP does when the run is terminated

    api.on_get = terminate_on_third_poll
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match=f"training job {NS}/{spec.name} cancelled; the job was deleted"):
        launch(spec, backend, timeout=600)
    assert api.deleted == [(NS, spec.name)] and not api.jobs
    assert signal.getsignal(signal.SIGTERM) is before
