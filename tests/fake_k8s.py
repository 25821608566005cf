"""An in-memory stand-in for the few CustomObjectsApi and CoreV1Api calls the launcher makes.

It behaves like the API server where the launcher depends on it: 409 on a duplicate create,
404 on a missing object, deletes that remove the object, label/field selectors on lists.
Tests drive a job's life by scripting the conditions each successive GET returns.
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


class FakeKubernetes:
    """One object serves as both CustomObjectsApi and CoreV1Api."""

    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[tuple[str, str]] = []
        self.pods: list[V1Pod] = []
        self.events: list[CoreV1Event] = []
        self.logs: dict[str, str] = {}
        # Conditions each successive GET of a job shows (the last one sticks).
        self.script: list[list[str]] = []
        self.on_get: Callable[[], None] | None = None
        self.create_error: ApiException | None = None

    # -- CustomObjectsApi ------------------------------------------------------------------
    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        assert (group, version, plural) == ("kubeflow.org", "v1", "pytorchjobs")
        if self.create_error is not None:
            raise self.create_error
        name = body["metadata"]["name"]
        if (namespace, name) in self.jobs:
            raise api_error(409, "AlreadyExists", f'pytorchjobs.kubeflow.org "{name}" already exists')
        stored = copy.deepcopy(body)
        stored["status"] = {}
        self.jobs[(namespace, name)] = stored
        self.created.append(copy.deepcopy(body))
        return stored

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        if self.on_get is not None:
            self.on_get()
        job = self.jobs.get((namespace, name))
        if job is None:
            raise api_error(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        if self.script:
            types = self.script.pop(0) if len(self.script) > 1 else self.script[0]
            job["status"] = {"conditions": [
                {"type": t, "status": "True", "reason": f"PyTorchJob{t}", "message": f"PyTorchJob {name} is {t.lower()}."}
                for t in types
            ]}
        return copy.deepcopy(job)

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name, body=None):
        if (namespace, name) not in self.jobs:
            raise api_error(404, "NotFound", f'pytorchjobs.kubeflow.org "{name}" not found')
        del self.jobs[(namespace, name)]
        self.deleted.append((namespace, name))
        return {"status": "Success"}

    # -- CoreV1Api -------------------------------------------------------------------------
    def list_namespaced_pod(self, namespace, label_selector=""):
        wanted = dict(part.split("=", 1) for part in label_selector.split(",") if part)
        items = [p for p in self.pods if p.metadata.namespace == namespace
                 and all((p.metadata.labels or {}).get(k) == v for k, v in wanted.items())]
        return V1PodList(items=items)

    def read_namespaced_pod_log(self, name, namespace, container=None, follow=False, _preload_content=True):
        assert container == "pytorch"
        return FakeLogStream(self.logs.get(name, ""))

    def list_namespaced_event(self, namespace, field_selector=""):
        _, _, name = field_selector.partition("involvedObject.name=")
        return CoreV1EventList(items=[e for e in self.events if e.metadata.namespace == namespace
                                      and e.involved_object.name == name])

    # -- helpers for tests -----------------------------------------------------------------
    def add_pod(self, job: str, namespace: str, role: str, index: int, *, phase: str = "Running",
                terminated: tuple[str, int, str] | None = None, waiting: tuple[str, str] | None = None,
                restarts: int = 0) -> V1Pod:
        state = V1ContainerState()
        if terminated:
            reason, code, message = terminated
            state = V1ContainerState(terminated=V1ContainerStateTerminated(reason=reason, exit_code=code, message=message))
        elif waiting:
            state = V1ContainerState(waiting=V1ContainerStateWaiting(reason=waiting[0], message=waiting[1]))
        pod = V1Pod(
            metadata=V1ObjectMeta(name=f"{job}-{role}-{index}", namespace=namespace, labels={
                "training.kubeflow.org/job-name": job, "training.kubeflow.org/replica-type": role,
                "training.kubeflow.org/replica-index": str(index)}),
            status=V1PodStatus(phase=phase, container_statuses=[V1ContainerStatus(
                name="pytorch", image="img", image_id="", ready=phase == "Running", restart_count=restarts, state=state)]),
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
