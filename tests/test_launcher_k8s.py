"""The Kubernetes backend against an in-memory API: create, adopt, wait, logs, failures, timeout, SIGTERM.

Every contract test runs for both kinds of job: a PyTorchJob (Training Operator) and a TrainJob
(Kubeflow Trainer v2, whose builder needs the Kubeflow SDK's models: skipped where it is absent).
"""

from __future__ import annotations

import importlib.util
import os
import signal
from dataclasses import dataclass

import pytest

from bgeflow.platform.launcher import LaunchSpec, PodSettings, job_name, launch
from bgeflow.platform.launcher.k8s import PYTORCHJOB, TRAINJOB, JobKind, KubernetesBackend, detect_kind
from fake_k8s import FakeKubernetes, api_error

NS = "ml"
OWNER = "run-42/train-retriever"
HAS_TRAINER_SDK = importlib.util.find_spec("kubeflow_trainer_api") is not None


@dataclass(frozen=True)
class Flavor:
    """One kind of job as these tests drive it: its fake, its conditions, its pods."""

    kind: JobKind
    plural: str
    running: tuple[str, ...]  # the conditions of a running job
    node: str  # role of node 0's pod: the PyTorchJob's Master, the TrainJob's "node" replicated job
    other: tuple[str, int]  # (role, index) of a second node


PYTORCH = Flavor(PYTORCHJOB, "pytorchjobs", ("Created", "Running"), "master", ("worker", 0))
# A TrainJob has no Running condition: Trainer v2 sets Created, then Complete or Failed.
TRAIN = Flavor(TRAINJOB, "trainjobs", ("Created",), "node", ("node", 1))


@pytest.fixture(params=[
    PYTORCH,
    pytest.param(TRAIN, marks=pytest.mark.skipif(
        not HAS_TRAINER_SDK, reason="the TrainJob builder needs the Kubeflow SDK (pip install 'bgeflow[kfp]')")),
], ids=["pytorchjob", "trainjob"])
def flavor(request: pytest.FixtureRequest) -> Flavor:
    return request.param


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
    kind = PYTORCHJOB if api.plural == "pytorchjobs" else TRAINJOB
    backend = KubernetesBackend(api, api, kind=kind, poll_interval=5, log_sink=lines.append, clock=clock,
                                sleep=clock.sleep)
    return spec, backend, lines


def test_create_wait_success_streams_node0_log(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, lines = make(api)
    api.script = [["Created"], list(flavor.running), list(flavor.running), [flavor.kind.succeeded]]
    node0 = api.add_pod(spec.name, NS, flavor.node, 0, phase="Running").metadata.name
    other = api.add_pod(spec.name, NS, *flavor.other, phase="Running").metadata.name
    api.logs[node0] = "step 1 loss 2.0\nstep 2 loss 1.5\ndone"
    api.logs[other] = "worker noise"

    result = launch(spec, backend, timeout=600)

    assert result.adopted is False and result.backend == flavor.kind.kind.lower()
    assert len(api.created) == 1 and api.created[0]["metadata"]["name"] == spec.name
    assert api.created[0]["kind"] == flavor.kind.kind
    assert lines == [f"[{node0}] step 1 loss 2.0", f"[{node0}] step 2 loss 1.5", f"[{node0}] done"]
    assert api.deleted == []


def test_node0_log_goes_to_stderr_by_default(flavor: Flavor, capsys: pytest.CaptureFixture[str]) -> None:
    # Found on the real cluster: the streamed log went to stdout, so `bgeflow launch | jq` broke.
    api = FakeKubernetes(flavor.plural)
    spec, _, _ = make(api)
    clock = FakeClock()
    backend = KubernetesBackend(api, api, kind=flavor.kind, poll_interval=5, clock=clock, sleep=clock.sleep)
    api.script = [["Created"], list(flavor.running), [flavor.kind.succeeded]]
    node0 = api.add_pod(spec.name, NS, flavor.node, 0, phase="Running").metadata.name
    api.logs[node0] = "step 1 loss 2.0"

    launch(spec, backend, timeout=600)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"[{node0}] step 1 loss 2.0" in captured.err.splitlines()


def test_retry_adopts_the_existing_job(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [list(flavor.running)]
    backend.submit(spec)  # the first attempt, then the pod died
    api.script = [list(flavor.running), [flavor.kind.succeeded]]
    result = launch(spec, make(api)[1], timeout=600)
    assert result.adopted is True
    assert len(api.created) == 1 and len(api.jobs) == 1


def test_adopting_someone_elses_job_is_refused(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    backend.submit(spec)
    api.jobs[(NS, spec.name)]["metadata"]["annotations"]["bgeflow.dev/owner"] = "run-7/other"
    with pytest.raises(RuntimeError, match=rf"{flavor.kind.kind} {NS}/{spec.name} already exists and belongs to "
                                           r"'run-7/other'"):
        backend.submit(spec)


def test_a_failed_job_found_on_retry_ends_the_task_without_a_rerun(flavor: Flavor) -> None:
    """A retried task that finds its job failed reports the job's reason; it never trains again."""
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    backend.submit(spec)
    api.script = [["Failed"]]
    api.add_pod(spec.name, NS, flavor.node, 0, phase="Failed", terminated=("Error", 3, "bad batch"))
    with pytest.raises(RuntimeError) as info:
        backend.submit(spec)
    message = str(info.value)
    assert message.startswith(f"{flavor.kind.kind} {NS}/{spec.name} failed: {flavor.kind.kind}Failed: ")
    assert "(found by a retry; not run again: delete it to train again)" in message
    assert "Error exit code 3: bad batch" in message
    assert api.deleted == [] and len(api.created) == 1


def test_kfp_retries_of_a_persistent_failure_train_once(flavor: Flavor) -> None:
    """Three attempts of the task (KFP's retries) against a job whose training keeps crashing: one job,
    trained once (its own restarts aside), and every attempt ends with the job's reason."""
    api = FakeKubernetes(flavor.plural)
    api.script = [list(flavor.running), ["Failed"]]
    errors = []
    for _attempt in range(3):
        spec, backend, _ = make(api)
        with pytest.raises(RuntimeError) as info:
            launch(spec, backend, timeout=600)
        errors.append(str(info.value))
    assert len(api.created) == 1 and api.deleted == []
    assert all(e.startswith(f"{flavor.kind.kind} {NS}/{spec.name} failed: {flavor.kind.kind}Failed") for e in errors)


def test_failure_reports_pod_reasons_and_recent_events(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [list(flavor.running), ["Failed"]]
    node0 = api.add_pod(spec.name, NS, flavor.node, 0, phase="Failed", terminated=("OOMKilled", 137, ""))
    api.add_pod(spec.name, NS, *flavor.other, phase="Failed", terminated=("Error", 1, "CUDA error: out of memory\n"))
    for minute in range(12):
        api.add_event(NS, "Pod", node0.metadata.name, f"Reason{minute}", f"message {minute}", minute)
    api.add_event(NS, flavor.kind.kind, spec.name, "JobFailed", f"{flavor.kind.kind} ml/x has failed", 30)

    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    message = str(info.value)
    assert message.startswith(f"{flavor.kind.kind} {NS}/{spec.name} failed: {flavor.kind.kind}Failed")
    assert (f"pod {node0.metadata.name} container {flavor.kind.container} (now): OOMKilled exit code 137"
            in message)
    assert "Error exit code 1: CUDA error: out of memory" in message
    assert f"event Warning {flavor.kind.kind}/" in message and "JobFailed" in message
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


def _condition(type_: str, reason: str, message: str, status: str = "True") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": "2026-11-30T20:00:00Z"}


def _node_jobs(**counts: int) -> list[dict]:
    """A TrainJob's ``status.jobsStatus`` as Trainer v2.1 copies it from the JobSet's replicatedJobsStatus."""
    return [{"name": "node", **{k: counts.get(k, 0) for k in ("ready", "succeeded", "failed", "active", "suspended")}}]


# Statuses as Trainer v2.1.0 writes them (conditions: JobSet's Completed/Failed renamed, its own Suspended;
# no Created or Running condition) and as Training Operator v1.9 writes a PyTorchJob's.
FAILED_TRAINJOB = {
    "conditions": [_condition("Failed", "ReachedMaxRestarts", "jobset failed due to reaching max number of restarts "
                              "(first failed job: {name}-node-0)")],
    "jobsStatus": _node_jobs(failed=1),
}


@pytest.mark.parametrize(("kind", "status", "state"), [
    (TRAINJOB, {}, "Pending"),  # not reconciled yet
    (TRAINJOB, {"jobsStatus": _node_jobs(active=1)}, "Pending"),  # pods scheduled or pulling
    (TRAINJOB, {"jobsStatus": _node_jobs(active=1, ready=1)}, "Running"),  # every pod of the node job ready
    (TRAINJOB, {"jobsStatus": [{"name": "dataset-initializer", "ready": 1, "succeeded": 0, "failed": 0, "active": 1,
                                "suspended": 0}, *_node_jobs()]}, "Pending"),  # an initializer is not the training
    (TRAINJOB, {"conditions": [_condition("Suspended", "Suspended", "TrainJob is suspended")],
                "jobsStatus": _node_jobs(suspended=1)}, "Suspended"),
    (TRAINJOB, {"conditions": [_condition("Suspended", "Resumed", "TrainJob is resumed", "False")],
                "jobsStatus": _node_jobs(active=1, ready=1)}, "Running"),
    (TRAINJOB, {"conditions": [_condition("Complete", "AllJobsCompleted", "jobset completed successfully")],
                "jobsStatus": _node_jobs(succeeded=1)}, "Complete"),
    (TRAINJOB, FAILED_TRAINJOB, "Failed"),
    (PYTORCHJOB, {"conditions": [_condition("Created", "PyTorchJobCreated", "created")]}, "Created"),
    (PYTORCHJOB, {"conditions": [_condition("Created", "PyTorchJobCreated", "created"),
                                 _condition("Running", "PyTorchJobRunning", "running")]}, "Running"),
    (PYTORCHJOB, {"conditions": [_condition("Created", "PyTorchJobCreated", "created"),
                                 _condition("Running", "PyTorchJobRunning", "running", "False"),
                                 _condition("Failed", "PyTorchJobFailed", "failed")]}, "Failed"),
], ids=lambda v: None if isinstance(v, dict) else str(getattr(v, "kind", v)))
def test_the_state_of_a_job(kind: JobKind, status: dict, state: str) -> None:
    assert kind.state({"status": status}) == state


@pytest.mark.skipif(not HAS_TRAINER_SDK, reason="the TrainJob builder needs the Kubeflow SDK")
def test_a_running_trainjob_that_times_out_says_it_ran() -> None:
    """Trainer v2 has no Running condition: the timeout names the state of the JobSet's pods, not Pending."""
    api = FakeKubernetes("trainjobs")
    spec, backend, _ = make(api)
    api.script = [{"jobsStatus": _node_jobs(active=1, ready=1)}]
    api.add_pod(spec.name, NS, "node", 0, phase="Running")
    with pytest.raises(TimeoutError, match=r"did not finish within 60s \(last state: Running\); deleted it"):
        launch(spec, backend, timeout=60)
    assert api.deleted == [(NS, spec.name)]


@pytest.mark.skipif(not HAS_TRAINER_SDK, reason="the TrainJob builder needs the Kubeflow SDK")
@pytest.mark.parametrize(("failed_node", "nnodes"), [(0, 1), (1, 2)])
def test_a_failed_trainjob_reports_the_exit_code_jobset_left(failed_node: int, nnodes: int) -> None:
    """What JobSet v0.10 leaves of a TrainJob that ran out of restarts: the last attempt's failed Job and its
    failed pod (the Job controller deleted the node that still ran); the restarts as events on the JobSet,
    which has the TrainJob's name."""
    api = FakeKubernetes("trainjobs")
    spec, backend, _ = make(api)
    failed = {**FAILED_TRAINJOB, "conditions": [{**c, "message": c["message"].format(name=spec.name)}
                                                for c in FAILED_TRAINJOB["conditions"]]}
    api.script = [{"jobsStatus": _node_jobs(active=1, ready=1)}, {"jobsStatus": _node_jobs(active=1)}, failed]
    pod = api.add_pod(spec.name, NS, "node", failed_node, phase="Failed", terminated=("Error", 7, ""))
    for minute in (1, 2):
        api.add_event(NS, "JobSet", spec.name, "RestartJobSetFailurePolicyAction",
                      f"applying RestartJobSet failure policy action (first failed job: {spec.name}-node-0)", minute)
    with pytest.raises(RuntimeError) as info:
        launch(spec, backend, timeout=600)
    message = str(info.value)
    assert message.startswith(f"TrainJob {NS}/{spec.name} failed: ReachedMaxRestarts: jobset failed due to reaching "
                              f"max number of restarts (first failed job: {spec.name}-node-0)")
    assert f"pod {pod.metadata.name} container node (now): Error exit code 7" in message
    assert f"event Warning JobSet/{spec.name} RestartJobSetFailurePolicyAction" in message
    assert api.deleted == []  # a failed job stays, for its logs; the retry that finds it does not rerun it


@pytest.mark.parametrize(("gets_until_gone", "adopted"), [
    (0, None),  # gone by the time of the GET after the 409: created again
    (3, None),  # foreground deletion: gone once its pods have stopped
    (10_000, "still being deleted"),
])
def test_a_retry_never_adopts_a_job_being_deleted(flavor: Flavor, gets_until_gone: int, adopted: str | None) -> None:
    """A retry of a task whose earlier attempt timed out (and so deleted its job) finds the job still there,
    deletionTimestamp set; adopting it would end in "deleted before it finished"."""
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    backend.submit(spec)
    api.jobs[(NS, spec.name)]["metadata"]["deletionTimestamp"] = "2026-11-30T20:00:00Z"
    gets = []

    def collect() -> None:
        gets.append(1)
        if len(gets) > gets_until_gone and (NS, spec.name) in api.jobs and len(api.created) == 1:
            del api.jobs[(NS, spec.name)]  # the garbage collector, once the pods are gone
            api.script = [list(flavor.running), [flavor.kind.succeeded]]

    api.on_get = collect
    if adopted is not None:
        with pytest.raises(RuntimeError, match=rf"{flavor.kind.kind} {NS}/{spec.name} is {adopted} after 300s"):
            make(api)[1].submit(spec)
        assert len(api.created) == 1
        return
    result = launch(spec, make(api)[1], timeout=600)
    assert result.adopted is False
    assert len(api.created) == 2 and api.jobs[(NS, spec.name)]["metadata"].get("deletionTimestamp") is None


@pytest.mark.parametrize(("reason", "message", "fails"), [
    # As Trainer v2 reported it on the real cluster for a 51-character TrainJob name:
    ("TrainJobResourcesCreationFailed", 'TrainJob resources reconciliation failed: admission webhook "vjobset.kb.io" '
     'denied the request: spec.replicatedJobs[0].name: Invalid value: "x-node-0": JobSet name is too long', True),
    ("FailedCreate", 'pods "x-master-0" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true',
     True),
    # A webhook that is not reachable yet, or a quota, may pass on the controller's next try: waited out.
    ("TrainJobResourcesCreationFailed", 'failed calling webhook "vjobset.kb.io": connect: connection refused', False),
    ("FailedCreate", 'pods "x-master-0" is forbidden: exceeded quota: gpus', False),
])
def test_a_refused_job_ends_at_once_and_is_deleted(flavor: Flavor, reason: str, message: str, fails: bool) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [["Created"], ["Created"], [flavor.kind.succeeded]]
    api.add_event(NS, flavor.kind.kind, spec.name, reason, message, 1)
    if not fails:
        assert launch(spec, backend, timeout=600).adopted is False
        return
    with pytest.raises(RuntimeError, match=rf"{flavor.kind.kind} {NS}/{spec.name} cannot start: {reason}: ") as info:
        launch(spec, backend, timeout=600)
    assert message in str(info.value)
    assert api.deleted == [(NS, spec.name)]


def test_timeout_deletes_the_job_and_says_why(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [["Created"]]
    api.add_pod(spec.name, NS, flavor.node, 0, phase="Pending", waiting=("ImagePullBackOff", "Back-off pulling image"))
    with pytest.raises(TimeoutError) as info:
        launch(spec, backend, timeout=60)
    message = str(info.value)
    assert (f"{flavor.kind.kind} {NS}/{spec.name} did not finish within 60s (last state: Created); deleted it"
            in message)
    assert "waiting ImagePullBackOff: Back-off pulling image" in message
    assert api.deleted == [(NS, spec.name)]


def test_job_deleted_while_waiting(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [list(flavor.running)]
    api.on_get = lambda: api.jobs.clear() if api.script == [list(flavor.running)] and api.created else None
    backend.submit(spec)
    with pytest.raises(RuntimeError, match=f"{flavor.kind.kind} {NS}/{spec.name} was deleted before it finished"):
        backend.wait(spec, 60)


def test_api_errors_name_the_job(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.create_error = api_error(403, "Forbidden", f'{flavor.plural} is forbidden: User "x" cannot create')
    with pytest.raises(RuntimeError, match=rf"creating {flavor.kind.kind} {NS}/{spec.name} failed: 403 .*forbidden"):
        launch(spec, backend)


def test_sigterm_deletes_the_job(flavor: Flavor) -> None:
    api = FakeKubernetes(flavor.plural)
    spec, backend, _ = make(api)
    api.script = [list(flavor.running)]
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


@pytest.mark.parametrize(("served", "expected"), [
    (("pytorchjobs", "trainjobs"), "TrainJob"),  # both: Trainer v2, the maintained line
    (("trainjobs",), "TrainJob"),
    (("pytorchjobs",), "PyTorchJob"),
    ((), None),
])
def test_auto_picks_the_kind_the_cluster_serves(served: tuple[str, ...], expected: str | None) -> None:
    api = FakeKubernetes(served=served)
    if expected is None:
        with pytest.raises(ValueError, match=r"serves neither trainjobs.trainer.kubeflow.org .* nor pytorchjobs"):
            detect_kind(api)
    else:
        assert detect_kind(api).kind == expected


def test_auto_reports_a_failed_discovery() -> None:
    api = FakeKubernetes()

    def broken(group: str, version: str) -> None:
        raise api_error(503, "ServiceUnavailable", "the server is currently unable to handle the request")

    api.get_api_resources = broken
    with pytest.raises(RuntimeError, match=r"serves trainjobs.trainer.kubeflow.org failed: 503 the server is"):
        detect_kind(api)
