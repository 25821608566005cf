"""An in-memory stand-in for the few CustomObjectsApi and CoreV1Api calls the launcher makes.

It behaves like the API server where the launcher depends on it: 409 on a duplicate create,
404 on a missing object, deletes that remove the object, label/field selectors on lists, API
discovery. Tests drive a job's life by scripting the conditions each successive GET returns.
One fake serves one kind of job: a PyTorchJob (pods labelled as the Training Operator labels them)
or a TrainJob (pods labelled as Kubeflow Trainer v2's JobSet labels them).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kubernetes.client import (
    CoreV1Event,
    CoreV1EventList,
    V1APIResource,
    V1APIResourceList,
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1ObjectReference,
    V1Pod,
    V1PodList,
    V1PodStatus,
)
from kubernetes.client.rest import ApiException


def api_error(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason=reason)
    exc.body = json.dumps({"kind": "Status", "message": message, "reason": reason, "code": status})
    return exc


class FakeLogStream:
    def __init__(self, text: str) -> None:
        self.text = text.encode()
        self.released = False

    def stream(self, amt: int | None = None, decode_content: bool | None = None):
        for i in range(0, len(self.text), 7):  # small chunks: lines arrive split across reads
            yield self.text[i : i + 7]

    def release_conn(self) -> None:
        self.released = True


#: (group, version, plural, kind, the training container) of each kind of job.
KINDS = {
    "pytorchjobs": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", "pytorch"),
    "trainjobs": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", "node"),
}


class FakeKubernetes:
    """One object serves as both CustomObjectsApi and CoreV1Api."""

    def __init__(self, plural: str = "pytorchjobs", served: tuple[str, ...] = ("pytorchjobs", "trainjobs")) -> None:
        self.group, self.version, self.plural, self.kind, self.container = KINDS[plural]
        self.served = served
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.pods: list[V1Pod] = []
        self.events: list[CoreV1Event] = []
        self.logs: dict[str, str] = {}
        # What each successive GET of a job shows (the last one sticks): the types of its true conditions,
        # or a whole status as the controller writes it.
        self.script: list[list[str] | dict[str, Any]] = []
        self.on_get: Callable[[], None] | None = None
        self.create_error: ApiException | None = None

    # -- CustomObjectsApi ------------------------------------------------------------------
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self._check(group, version, plural)
        assert body["kind"] == self.kind and body["apiVersion"] == f"{group}/{version}"
        if self.create_error is not None:
            raise self.create_error
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise api_error(409, "AlreadyExists", f'{plural}.{group} "{name}" already exists')
        stored = copy.deepcopy(body)
        stored["status"] = {}
        self.jobs[(namespace, name)] = stored
        self.created.append(copy.deepcopy(body))
        return stored

    def _check(self, group: str, version: str, plural: str) -> None:
        assert (group, version, plural) == (self.group, self.version, self.plural), (group, version, plural)

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self._check(group, version, plural)
        if self.on_get is not None:
            self.on_get()
        job = self.jobs.get((namespace, name))
        if job is None:
            raise api_error(404, "NotFound", f'{plural}.{group} "{name}" not found')
        if self.script:
            shown = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            job["status"] = copy.deepcopy(shown) if isinstance(shown, dict) else {"conditions": [
                {"type": t, "status": "True", "reason": f"{self.kind}{t}", "message": f"{self.kind} {name} is {t.lower()}."}
                for t in shown
            ]}
        return copy.deepcopy(job)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body=None):
        self._check(group, version, plural)
        if (namespace, name) not in self.jobs:
            raise api_error(404, "NotFound", f'{plural}.{group} "{name}" not found')
        del self.jobs[(namespace, name)]
        self.deleted.append((namespace, name))
        return {"status": "Success"}

    def get_api_resources(self, group, version):
        served = [KINDS[p] for p in self.served if KINDS[p][:2] == (group, version)]
        if not served:
            raise api_error(404, "NotFound", "the server could not find the requested resource")
        return V1APIResourceList(group_version=f"{group}/{version}", resources=[
            V1APIResource(name=plural, kind=kind, namespaced=True, singular_name=kind.lower(), verbs=["create", "get"])
            for _, _, plural, kind, _ in served])

    # -- CoreV1Api -------------------------------------------------------------------------
    def list_namespaced_pod(self, namespace, label_selector=""):
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        items = [p for p in self.pods if p.metadata.namespace == namespace
                 and all((p.metadata.labels or {}).get(k) == v for k, v in wanted.items())]
        return V1PodList(items=items)

    def read_namespaced_pod_log(self, name, namespace, container=None, follow=False, _preload_content=True):
        assert container == self.container
        return FakeLogStream(self.logs.get(name, ""))

    def list_namespaced_event(self, namespace, field_selector=""):
        _, _, name = field_selector.partition("involvedObject.name=")
        return CoreV1EventList(items=[e for e in self.events if e.metadata.namespace == namespace
                                      and e.involved_object.name == name])

    # -- helpers for tests -----------------------------------------------------------------
    def add_pod(self, job: str, namespace: str, role: str, index: int, *, phase: str = "Running",
                terminated: tuple[str, int, str] | None = None, waiting: tuple[str, str] | None = None,
                restarts: int = 0) -> V1Pod:
        """A pod of ``job``: a PyTorchJob's ``<job>-<role>-<index>``, a TrainJob's node ``index`` (``role``
        is then the replicated job, "node"), labelled as their controllers label them."""
        state = V1ContainerState()
        if terminated:
            reason, code, message = terminated
            state = V1ContainerState(terminated=V1ContainerStateTerminated(reason=reason, exit_code=code, message=message))
        elif waiting:
            state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting[0], message=waiting[1]))
        if self.plural == "pytorchjobs":
            name = f"{job}-{role}-{index}"
            labels = {"training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": role,
                      "training.kubeflow.org/replica-index": str(index)}
        else:  # JobSet <job>, replicated job <role>, Job <job>-<role>-0, indexed pod <job>-<role>-0-<index>-<random>
            name = f"{job}-{role}-0-{index}-x7k2q"
            labels = {"jobset.sigs.k8s.io/jobset-name": job, "jobset.sigs.k8s.io/replicatedjob-name": role,
                      "batch.kubernetes.io/job-completion-index": str(index),
                      "trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}
        pod = V1Pod(
            metadata=V1ObjectMeta(name=name, namespace=namespace, labels=labels),
            status=V1PodStatus(phase=phase, container_statuses=[V1ContainerStatus(
                name=self.container, image="img", image_id="", ready=phase == "Running", restart_count=restarts, state=state)]),
        )
        self.pods.append(pod)
        return pod

    def add_event(self, namespace: str, kind: str, name: str, reason: str, message: str, minute: int,
                  type_: str = "Warning") -> None:
        self.events.append(CoreV1Event(
            metadata=V1ObjectMeta(name=f"{name}.{minute}", namespace=namespace),
            involved_object=V1ObjectReference(kind=kind, name=name, namespace=namespace),
            reason=reason, message=message, type=type_,
            last_timestamp=datetime(2025, 1, 1, 12, minute, tzinfo=timezone.utc),
        ))
