"""Recast the pod templates inside training jobs as Pods, so that checkov judges them.

checkov knows the core workload kinds (Pod, Job, Deployment, ...) and skips custom resources: the
pods of a PyTorchJob (``spec.pytorchReplicaSpecs.*.template``) or of a Kubeflow Trainer runtime
(``...replicatedJobs[].template.spec.template``) were never scanned. For every rendered file in
a folder this writes ``pods-<file>``: one Pod per pod template found in a custom resource.

``--launcher`` also renders the PyTorchJob that bgeflow's own launcher submits (with the pod
settings the compiled pipeline gives it, one node and three), since that one is built in Python
and appears in no chart.

Usage: python scripts/pod_templates.py OUT_DIR [--launcher]
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: What checkov asks of long-running pods but not of Jobs (it skips these checks for Job templates);
#: a recast training pod is a batch pod: nothing serves, so nothing can be probed.
BATCH_ONLY_SKIPS = {
    "checkov.io/skip1": "CKV_K8S_8=a batch training pod (recast from a job): no server to probe for liveness",
    "checkov.io/skip2": "CKV_K8S_9=a batch training pod (recast from a job): no server to probe for readiness",
}

#: Kinds checkov reads itself: their templates need no recasting.
CORE_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController", "Job",
              "CronJob", "PodTemplate"}


def _is_pod_template(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("spec"), dict) and "containers" in value["spec"]


def pod_templates(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, template)`` for every pod template (a ``template`` with ``spec.containers``) in a resource."""
    stack: list[tuple[str, Any]] = [("", document.get("spec"))]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, inner in value.items():
                where = f"{path}.{key}" if path else key
                if key == "template" and _is_pod_template(inner):
                    yield where, inner
                else:
                    stack.append((where, inner))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", inner) for i, inner in enumerate(value))


def as_pods(documents: list[Any]) -> list[dict[str, Any]]:
    """A Pod for each pod template inside the custom resources among ``documents``."""
    pods = []
    for document in documents:
        if not isinstance(document, dict) or document.get("kind") in CORE_KINDS or "kind" not in document:
            continue
        meta = document.get("metadata") or {}
        for path, template in sorted(pod_templates(document), key=lambda item: item[0]):
            name = f"{meta.get('name', 'unnamed')}-{path}".lower()
            name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")[:253]
            pod_meta = {**(template.get("metadata") or {}), "name": name}
            if meta.get("namespace"):
                pod_meta["namespace"] = meta["namespace"]
            annotations = dict(pod_meta.get("annotations") or {})
            annotations["bgeflow.dev/recast-from"] = f"{document['kind']}/{meta.get('name')}:{path}"
            annotations.update(BATCH_ONLY_SKIPS)
            pod_meta["annotations"] = annotations
            pods.append({"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template["spec"]})
    return pods


def launcher_jobs() -> list[dict[str, Any]]:
    """The PyTorchJobs bgeflow's launcher submits, with the compiled pipeline's training pod settings."""
    from pipelines.bge_finetune import PipelineOptions

    from bgeflow.platform.launcher.pytorchjob import build_pytorchjob, to_manifest
    from bgeflow.platform.launcher.spec import LaunchSpec, PodSettings, job_name

    settings = PodSettings.from_json(PipelineOptions().train_pod_settings())
    owner = "scan/train-retriever"
    return [to_manifest(build_pytorchjob(LaunchSpec(name=job_name(owner), command=["bgeflow", "train"], owner=owner,
                                                    namespace="bgeflow", nnodes=nnodes, nproc_per_node=1,
                                                    env={"AWS_ENDPOINT_URL": "http://minio:9000"}, pod=settings)))
            for nnodes in (1, 3)]


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    if "--launcher" in argv[1:]:
        (out / "launcher-pytorchjob.yaml").write_text(yaml.safe_dump_all(launcher_jobs(), sort_keys=False))
    for path in sorted(out.glob("*.yaml")):
        if path.name.startswith("pods-"):
            continue
        pods = as_pods(list(yaml.safe_load_all(path.read_text())))
        if pods:
            (out / f"pods-{path.name}").write_text(yaml.safe_dump_all(pods, sort_keys=False))
            print(f"{path.name}: {len(pods)} pod template(s) recast as Pods", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
