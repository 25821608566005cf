"""The Kubernetes backend: a PyTorchJob or a TrainJob through the API server (CustomObjectsApi + CoreV1Api).

One contract for both kinds of job (``JobKind``: what differs is the object, its pods' labels, the
training container's name and the condition that means success):

- submit: create; on 409 AlreadyExists adopt the job when its owner annotation matches (a
  retried KFP task computes the same name), refuse otherwise; a job found failed ends the retry
  with its reason (never re-run: a persistent crash would run once per KFP retry); a job found
  being deleted (an earlier attempt's, deleted when it timed out: foreground deletion keeps it until
  its pods are gone) is waited out and created anew, never adopted;
- wait: poll the job's conditions, stream node 0's log (the PyTorchJob's master) into ours, and on failure or
  timeout report each pod's termination/waiting reason and the recent Events;
- cancel: delete the job (its pods go with it).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bgeflow.core.errors import StepFailed
from bgeflow.platform.launcher import pytorchjob, trainjob
from bgeflow.platform.launcher.backends import JobBackend, log_to_stderr
from bgeflow.platform.launcher.spec import OWNER_ANNOTATION, LaunchSpec

log = logging.getLogger(__name__)
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
RECENT_EVENTS = 10
#: How long a submit waits for a job of its name that is being deleted to be gone (foreground deletion:
#: until its pods have stopped, their grace period included).
DELETION_WAIT = 300.0
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


def current_namespace(default: str = "default") -> str:
    """The namespace this pod runs in (the launcher's), else ``default``."""
    try:
        with open(SA_NAMESPACE_FILE) as fh:
            return fh.read().strip() or default
    except OSError:
        return default


def _api_message(exc: Any) -> str:
    import json

    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


def _conditions(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = (job.get("status") or {}).get("conditions") or []
    return {c.get("type"): c for c in found if c.get("status") == "True"}


def _never_running(job: dict[str, Any]) -> bool:
    return False  # the kind has a Running condition of its own


def _trainjob_running(job: dict[str, Any]) -> bool:
    """Trainer v2 sets no Running condition (only Suspended, Complete, Failed): a TrainJob runs when
    the JobSet's "node" replicated job is ready, i.e. all its pods run (``status.jobsStatus``: Trainer's
    copy of the JobSet's ``replicatedJobsStatus``)."""
    jobs = (job.get("status") or {}).get("jobsStatus") or []
    return any(j.get("name") == trainjob.REPLICATED_JOB and (j.get("ready") or 0) > 0 for j in jobs)


@dataclass(frozen=True)
class JobKind:
    """What the backend needs to know of one kind of training job."""

    kind: str
    group: str
    version: str
    plural: str
    manifest: Callable[[LaunchSpec], dict[str, Any]]
    container: str  # the training container of every pod: the one whose log is streamed
    pods: Callable[[LaunchSpec], str]  # label selector of every pod of the job
    node0: Callable[[LaunchSpec], str]  # label selector of node 0 (the PyTorchJob's master)
    succeeded: str  # the condition type of a finished job; "Failed" means failed for both
    states: tuple[str, ...]  # condition types worth logging, the most telling first
    # Whether a job with none of ``states`` runs (a kind without a Running condition says so elsewhere).
    running: Callable[[dict[str, Any]], bool] = _never_running

    def state(self, job: dict[str, Any]) -> str:
        """The job's state as the launcher logs and reports it: the most telling true condition of
        ``states``, else Running or Pending."""
        conditions = _conditions(job)
        found = next((t for t in self.states if t in conditions), None)
        return found or ("Running" if self.running(job) else "Pending")


def _pytorchjob_manifest(spec: LaunchSpec) -> dict[str, Any]:
    return pytorchjob.to_manifest(pytorchjob.build_pytorchjob(spec))


def _trainjob_manifest(spec: LaunchSpec) -> dict[str, Any]:
    return trainjob.to_manifest(trainjob.build_trainjob(spec))


PYTORCHJOB = JobKind(
    kind=pytorchjob.KIND, group=pytorchjob.GROUP, version=pytorchjob.VERSION, plural=pytorchjob.PLURAL,
    manifest=_pytorchjob_manifest, container=pytorchjob.CONTAINER_NAME,
    pods=lambda spec: f"{JOB_NAME_LABEL}={spec.name}",
    # An elastic job has no master: node 0 is worker 0.
    node0=lambda spec: (f"{JOB_NAME_LABEL}={spec.name},{REPLICA_TYPE_LABEL}={'worker' if spec.pod.elastic else 'master'},"
                        f"{REPLICA_INDEX_LABEL}=0"),
    succeeded="Succeeded", states=("Succeeded", "Failed", "Restarting", "Running", "Suspended", "Created"),
)
# Trainer v2 runs a TrainJob as a JobSet of the same name; the runtime's "node" replicated job is
# one indexed Job whose completion index is the node rank.
TRAINJOB = JobKind(
    kind=trainjob.KIND, group=trainjob.GROUP, version=trainjob.VERSION, plural=trainjob.PLURAL,
    manifest=_trainjob_manifest, container=trainjob.CONTAINER_NAME,
    pods=lambda spec: f"{JOBSET_NAME_LABEL}={spec.name}",
    node0=lambda spec: (f"{JOBSET_NAME_LABEL}={spec.name},{REPLICATED_JOB_LABEL}={trainjob.REPLICATED_JOB},"
                        f"{JOB_INDEX_LABEL}=0"),
    succeeded="Complete", states=("Complete", "Failed", "Suspended", "Created"), running=_trainjob_running,
)
JOB_KINDS = {"pytorchjob": PYTORCHJOB, "trainjob": TRAINJOB}


#: Event messages that mean an object a job's controller creates was refused for good, so the job can
#: never start: an admission webhook's validation ("admission webhook ... denied the request", e.g.
#: JobSet's name-length check, seen on the real cluster as TrainJobResourcesCreationFailed) or the
#: PodSecurity admission plugin. Transient refusals (a webhook not reachable, a quota) read differently
#: and are waited out.
REFUSED = re.compile(r"denied the request|violates PodSecurity")


class KubernetesBackend(JobBackend):
    """Submits, follows and deletes one ``JobKind`` of training job (a PyTorchJob by default)."""

    def __init__(
        self,
        custom_api: Any,
        core_api: Any,
        *,
        kind: JobKind = PYTORCHJOB,
        poll_interval: float = 10.0,
        log_sink: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.custom = custom_api
        self.core = core_api
        self.kind = kind
        self.name = kind.kind.lower()
        self.poll_interval = poll_interval
        self.log_sink = log_sink or log_to_stderr
        self.clock = clock
        self.sleep = sleep
        self._followers: dict[tuple[str, int], threading.Thread] = {}

    @classmethod
    def from_environment(cls, kind: JobKind | None = None, **kwargs: Any) -> KubernetesBackend:
        """In-cluster credentials (the launcher pod's service account), else the kubeconfig;
        ``kind`` None: whichever kind the cluster serves (``detect_kind``)."""
        from kubernetes import client

        load_config()
        custom = client.CustomObjectsApi()
        return cls(custom, client.CoreV1Api(), kind=kind or detect_kind(custom), **kwargs)

    def _api(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.custom, f"{verb}_namespaced_custom_object")(
            self.kind.group, self.kind.version, *args, **kwargs)

    # -- the job ----------------------------------------------------------------------------

    def _get(self, spec: LaunchSpec) -> dict[str, Any] | None:
        from kubernetes.client.rest import ApiException

        try:
            return self._api("get", spec.namespace, self.kind.plural, spec.name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StepFailed(f"reading {self.kind.kind} {spec.ref} failed: {exc.status} {_api_message(exc)}") from exc

    def _create(self, spec: LaunchSpec, manifest: dict[str, Any]) -> bool:
        """Create the job; False where a job of its name exists already (409 AlreadyExists)."""
        from kubernetes.client.rest import ApiException

        try:
            self._api("create", spec.namespace, self.kind.plural, manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise StepFailed(f"creating {self.kind.kind} {spec.ref} failed: {exc.status} {_api_message(exc)}") from exc
        log.info("created %s %s", self.kind.kind, spec.ref)
        return True

    def submit(self, spec: LaunchSpec) -> bool:
        manifest = self.kind.manifest(spec)
        if self._create(spec, manifest):
            return False
        existing = self._get(spec)
        if existing is not None and (existing.get("metadata") or {}).get("deletionTimestamp"):
            # An earlier attempt's job, deleted when it timed out (or by a user, to train again): adopting
            # it would end in "deleted before it finished". Foreground deletion keeps it until its pods
            # have stopped; then this attempt's job can take the name.
            log.info("%s %s is being deleted; waiting for it to be gone", self.kind.kind, spec.ref)
            self._await_gone(spec)
            existing = None
        if existing is None:  # deleted between our create and get, or waited out: create again, once
            if self._create(spec, manifest):
                return False
            raise StepFailed(f"{self.kind.kind} {spec.ref} was created again by someone else while this attempt "
                             "waited to create it; refusing to adopt it")
        owner = ((existing.get("metadata") or {}).get("annotations") or {}).get(OWNER_ANNOTATION)
        if owner != spec.owner:
            raise StepFailed(
                f"{self.kind.kind} {spec.ref} already exists and belongs to {owner or 'someone else'!r}, not {spec.owner!r}; "
                "refusing to adopt it"
            )
        failed = _conditions(existing).get("Failed")
        if failed is not None:
            # A retry after the job failed. The job already used its own restarts (backoffLimit,
            # maxRestarts): running it again would only repeat a persistent crash once per KFP
            # retry. Its reason ends this attempt too; only a launcher-side error (the launcher pod
            # lost, an API error) leaves a job for a retry to adopt.
            raise StepFailed(self._failure(spec, failed, "(found by a retry; not run again: delete it to train again)"))
        log.info("adopted %s %s (created by an earlier attempt of %s)", self.kind.kind, spec.ref, spec.owner)
        return True

    def _await_gone(self, spec: LaunchSpec, limit: float = DELETION_WAIT) -> None:
        deadline = self.clock() + limit
        while self._get(spec) is not None:
            if self.clock() >= deadline:
                raise StepFailed(f"{self.kind.kind} {spec.ref} is still being deleted after {limit:.0f}s; "
                                 "retry when it is gone" + self.diagnose(spec))
            self.sleep(self.poll_interval)

    def cancel(self, spec: LaunchSpec) -> None:
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.rest import ApiException

        try:
            self._api("delete", spec.namespace, self.kind.plural, spec.name,
                      body=V1DeleteOptions(propagation_policy="Foreground"))
            log.info("deleted %s %s", self.kind.kind, spec.ref)
        except ApiException as exc:
            if exc.status != 404:
                raise StepFailed(f"deleting {self.kind.kind} {spec.ref} failed: {exc.status} {_api_message(exc)}") from exc

    def wait(self, spec: LaunchSpec, timeout: float | None) -> None:
        deadline = None if timeout is None else self.clock() + timeout
        last_state = None
        while True:
            job = self._get(spec)
            if job is None:
                raise StepFailed(f"{self.kind.kind} {spec.ref} was deleted before it finished")
            conditions = _conditions(job)
            state = self.kind.state(job)
            if state != last_state:
                log.info("%s %s: %s", self.kind.kind, spec.ref, state)
                last_state = state
            self._follow_node0(spec)
            if state == self.kind.succeeded:
                self._drain_logs()
                return
            if state == "Failed":
                self._drain_logs()
                raise StepFailed(self._failure(spec, conditions["Failed"]))
            if state not in (self.kind.succeeded, "Running") and (refusal := self._refusal(spec)):
                # The controller would retry the same object forever; waiting only runs out the timeout.
                details = self.diagnose(spec)
                self.cancel(spec)
                raise StepFailed(f"{self.kind.kind} {spec.ref} cannot start: {refusal}; deleted it" + details)
            if deadline is not None and self.clock() >= deadline:
                details = self.diagnose(spec)
                self.cancel(spec)  # a timed-out job must not keep holding GPUs
                raise TimeoutError(
                    f"{self.kind.kind} {spec.ref} did not finish within {timeout:.0f}s (last state: {state}); deleted it"
                    + details
                )
            self.sleep(self.poll_interval)

    def _refusal(self, spec: LaunchSpec) -> str | None:
        """The newest Warning event on the job saying that an object its controller needs was refused for
        good (``REFUSED``): e.g. JobSet's webhook denying a TrainJob's JobSet, PodSecurity refusing a pod."""
        try:
            events = self.core.list_namespaced_event(spec.namespace, field_selector=f"involvedObject.name={spec.name}").items
        except Exception as exc:  # diagnostics only: the wait goes on and the timeout still applies
            log.debug("cannot list the events of %s: %s", spec.ref, exc)
            return None
        refused = [e for e in events if e.type == "Warning" and REFUSED.search(e.message or "")]
        if not refused:
            return None
        event = max(refused, key=_event_time)
        return f"{event.reason}: {event.message}"

    def _failure(self, spec: LaunchSpec, condition: dict[str, Any], note: str = "") -> str:
        return (f"{self.kind.kind} {spec.ref} failed: {condition.get('reason', '')}: {condition.get('message', '')}"
                + (f" {note}" if note else "") + self.diagnose(spec))

    # -- logs -------------------------------------------------------------------------------

    def _node0_pod(self, spec: LaunchSpec) -> Any | None:
        pods = self.core.list_namespaced_pod(spec.namespace, label_selector=self.kind.node0(spec)).items
        return pods[0] if pods else None

    def _follow_node0(self, spec: LaunchSpec) -> None:
        """Start streaming node 0's training container log once it runs (again, after a restart)."""
        pod = self._node0_pod(spec)
        if pod is None or pod.status is None or pod.status.phase not in ("Running", "Succeeded", "Failed"):
            return
        statuses = [s for s in (pod.status.container_statuses or []) if s.name == self.kind.container]
        restarts = statuses[0].restart_count if statuses else 0
        key = (pod.metadata.name, restarts or 0)
        if key in self._followers:
            return
        thread = threading.Thread(
            target=self._stream_log, args=(spec.namespace, pod.metadata.name), daemon=True,
            name=f"log-{pod.metadata.name}",
        )
        self._followers[key] = thread
        thread.start()

    def _stream_log(self, namespace: str, pod: str) -> None:
        try:
            resp = self.core.read_namespaced_pod_log(
                pod, namespace, container=self.kind.container, follow=True, _preload_content=False
            )
        except Exception as exc:  # the log is a courtesy; never fail the launch over it
            log.debug("cannot stream the log of pod %s/%s: %s", namespace, pod, exc)
            return
        pending = b""
        try:
            for chunk in resp.stream():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.log_sink(f"[{pod}] {line.decode('utf-8', 'replace')}")
            if pending:
                self.log_sink(f"[{pod}] {pending.decode('utf-8', 'replace')}")
        except Exception as exc:
            log.debug("log stream of pod %s/%s ended: %s", namespace, pod, exc)
        finally:
            resp.release_conn()

    def _drain_logs(self, timeout: float = 10.0) -> None:
        for thread in self._followers.values():
            thread.join(timeout)

    # -- diagnostics ------------------------------------------------------------------------

    def diagnose(self, spec: LaunchSpec) -> str:
        """Each pod's state and the job's and pods' most recent Events, as message lines."""
        lines: list[str] = []
        try:
            pods = self.core.list_namespaced_pod(spec.namespace, label_selector=self.kind.pods(spec)).items
        except Exception as exc:
            return f"\n  (could not list the pods of {spec.ref}: {exc})"
        for pod in pods:
            lines.extend(_pod_reasons(pod))
        involved = [spec.name] + [p.metadata.name for p in pods]
        events = []
        for name in involved:
            try:
                events += self.core.list_namespaced_event(
                    spec.namespace, field_selector=f"involvedObject.name={name}"
                ).items
            except Exception as exc:
                lines.append(f"(could not list the events of {spec.namespace}/{name}: {exc})")
        events.sort(key=_event_time)
        lines.extend(_operator_reported_exits(events, pods))
        for event in events[-RECENT_EVENTS:]:
            obj = event.involved_object
            lines.append(f"event {event.type} {obj.kind}/{obj.name} {event.reason}: {event.message}")
        return "".join(f"\n  {line}" for line in lines)


def detect_kind(discovery: Any) -> JobKind:
    """The kind of job the cluster runs: a TrainJob where Kubeflow Trainer v2 is installed, else a
    PyTorchJob where the Training Operator is; asked of API discovery (no RBAC rule needed: every
    authenticated user may read it).

    Raises:
        ConfigError: neither CRD is served (say which backend to use, or install one).
        StepFailed: discovery itself failed (an API error, retried by the caller's task).
    """
    from kubernetes.client.rest import ApiException

    from bgeflow.core.errors import ConfigError

    for kind in (TRAINJOB, PYTORCHJOB):  # Trainer v2 first: it is the maintained line
        try:
            resources = discovery.get_api_resources(kind.group, kind.version)
        except ApiException as exc:
            if exc.status == 404:
                continue
            raise StepFailed(f"asking the API server whether it serves {kind.plural}.{kind.group} failed: "
                             f"{exc.status} {_api_message(exc)}") from exc
        if any(r.name == kind.plural for r in (resources.resources if resources else None) or []):
            log.info("training backend auto: the cluster serves %s.%s", kind.plural, kind.group)
            return kind
    raise ConfigError("training backend auto: the cluster serves neither trainjobs.trainer.kubeflow.org "
                      "(Kubeflow Trainer v2) nor pytorchjobs.kubeflow.org (Training Operator); install one, "
                      "or set training.backend to local")


def load_config() -> None:
    """In-cluster credentials (the launcher pod's service account), else the kubeconfig."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _pod_reasons(pod: Any) -> list[str]:
    name = pod.metadata.name
    status = pod.status
    if status is None:
        return [f"pod {name}: no status yet"]
    out = [f"pod {name}: {status.phase}" + (f" ({status.reason}: {status.message})" if status.reason else "")]
    for cs in status.container_statuses or []:
        for label, state in (("now", cs.state), ("last", cs.last_state)):
            if state is None:
                continue
            if state.terminated is not None:
                t = state.terminated
                out.append(f"pod {name} container {cs.name} ({label}): {t.reason} exit code {t.exit_code}"
                           + (f": {t.message.strip()}" if t.message else ""))
            elif state.waiting is not None and state.waiting.reason:
                w = state.waiting
                out.append(f"pod {name} container {cs.name} ({label}): waiting {w.reason}"
                           + (f": {w.message}" if w.message else ""))
    return out


# The Training Operator's event for a container that exited non-zero (pkg/core/job.go). When a
# job fails by its backoff limit the operator deletes every pod at once, the failed ones too,
# whatever cleanPodPolicy says (v1.9), and may already have made a new pod of the same name: this
# event is then all that is left of the exit code.
_OPERATOR_EXIT = re.compile(r"^Error pod (\S+) container (\S+) exitCode: (-?\d+) terminated message: ?(.*)$", re.S)


def _operator_reported_exits(events: list[Any], pods: list[Any]) -> list[str]:
    """Exit codes the operator's events report that no listed pod's status still shows."""
    shown = {(p.metadata.name, cs.name, str(state.terminated.exit_code))
             for p in pods for cs in ((p.status and p.status.container_statuses) or [])
             for state in (cs.state, cs.last_state) if state is not None and state.terminated is not None}
    out: list[str] = []
    for event in events:
        match = _OPERATOR_EXIT.match(event.message or "")
        if not match or (match[1], match[2], match[3]) in shown:
            continue
        line = f"pod {match[1]} container {match[2]} (operator's event; pod deleted): {event.reason} exit code {match[3]}" + (
            f": {match[4].strip()}" if match[4].strip() else "")
        if line not in out:
            out.append(line)
    return out


def _event_time(event: Any) -> float:
    for stamp in (event.last_timestamp, event.event_time, event.first_timestamp,
                  getattr(event.metadata, "creation_timestamp", None)):
        if stamp is not None:
            return stamp.timestamp()
    return 0.0
