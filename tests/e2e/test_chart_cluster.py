"""The chart and the kubectl manifests on a real cluster: install, run, upgrade, roll back.

Real: helm against the API server (schemas of the real CRDs, the PodSecurity admission of every
pod, RBAC), the Job controller and the Training Operator running the direct-mode stages in the
bgeflow images (CPU), MinIO as S3. kubectl apply -k of manifests/ into a fresh namespace.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from e2e.e2e_cluster import REPO, S3, Cluster

pytestmark = pytest.mark.cluster

EXAMPLE_DATA = REPO / "src" / "bgeflow" / "examples" / "train.jsonl.gz"
RAW_RECORDS = 300  # enough for ingest's split and mining's candidate pool, minutes on CPU


def wait_for(what: str, check, timeout: float, interval: float = 5.0, diagnose=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s" + (f"\n{diagnose()}" if diagnose else ""))


def namespace_state(cluster: Cluster, namespace: str) -> str:
    out = cluster.kubectl("get", "jobs,pytorchjobs,pods", "-n", namespace, "-o", "wide", check=False).stdout
    events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout
    logs = ""
    for pod in cluster.get_json("pods", "-n", namespace)["items"]:
        if pod["status"].get("phase") == "Failed":
            name = pod["metadata"]["name"]
            logs += f"--- {name}\n" + cluster.kubectl("logs", "-n", namespace, name, "--all-containers", "--tail=40",
                                                     check=False).stdout
    return f"{out}\n{events[-4000:]}\n{logs[-6000:]}"


def test_direct_mode_runs_ingest_mine_train_evaluate_publish(cluster: Cluster, s3: S3) -> None:
    prefix = s3.prefix("direct")
    with gzip.open(EXAMPLE_DATA) as fh:
        lines = fh.readlines()[:RAW_RECORDS]
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}/raw/train.jsonl", Body=b"".join(lines))
    release = "direct"
    # Helm merges maps with the defaults: the GPU request must be nulled, not just left out, or the
    # pods wait forever for an nvidia.com/gpu this node does not have.
    plain = {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}
    cpu = json.dumps({"requests": {**plain["requests"], "nvidia.com/gpu": None},
                      "limits": {**plain["limits"], "nvidia.com/gpu": None}})
    # Every training setting goes in `retrain`, as for a KFP run: each stage derives its step's spec from
    # it (retrain.mine.use_gpu stays false: no GPU here). The lengths and pooling reach mining and training alike.
    hyperparameters = {"max_steps": 3, "per_device_train_batch_size": 4, "train_group_size": 2, "save_steps": 100000}
    values = [
        "kfp.enabled=false", "direct.enabled=true", f"s3.bucket={s3.bucket}", f"s3.prefix={prefix}/out",
        f"s3.endpoint={s3.endpoint}", f"s3.existingSecret={s3.secret}", f"retrain.data=s3://{s3.bucket}/{prefix}/raw/",
        "retrain.retriever.model=bundled:minilm", "retrain.reranker.train=false", "retrain.retriever.pooling=mean",
        "retrain.retriever.query_max_len=24", "retrain.retriever.passage_max_len=64",
        f"image.registry={cluster.registry}", f"image.tag={cluster.version}", "direct.shmSize=256Mi",
        "direct.waitTimeoutSeconds=1500",
    ]
    # Evaluate's and publish's pods wait (in init containers) from install on, holding their requests:
    # small ones, or on this 2-CPU node the training pod finds no CPU to be scheduled on.
    waiting = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "4Gi"}}
    json_values = [f"direct.ingest.resources={json.dumps(plain)}", f"direct.mine.resources={cpu}",
                   f"direct.retriever.resources={cpu}", f"direct.evaluate.resources={json.dumps(waiting)}",
                   f"direct.publish.resources={json.dumps(waiting)}",
                   f"retrain.retriever.hyperparameters={json.dumps(hyperparameters)}"]
    cluster.helm("install", release, "helm/bgeflow", "-n", cluster.namespace,
                 *(a for v in values for a in ("--set", v)), *(a for v in json_values for a in ("--set-json", v)))
    try:
        # The chart's launcher Job creates the PyTorchJob (and requests its GPUs) only once mining is done.
        def launched():
            jobs = cluster.get_json("pytorchjobs", "-n", cluster.namespace, "-l", f"app.kubernetes.io/instance={release}")
            assert len(jobs["items"]) <= 1, jobs
            return jobs["items"][0]["metadata"]["name"] if jobs["items"] else None

        name = wait_for("the launched PyTorchJob", launched, timeout=1500, interval=10,
                        diagnose=lambda: namespace_state(cluster, cluster.namespace))

        def finished():
            job = cluster.get_json("pytorchjob", name, "-n", cluster.namespace)
            done = {c["type"] for c in job.get("status", {}).get("conditions", []) if c["status"] == "True"}
            if "Failed" in done:
                raise AssertionError(f"PyTorchJob {name} failed\n{namespace_state(cluster, cluster.namespace)}")
            return "Succeeded" in done

        wait_for(f"PyTorchJob {name}", finished, timeout=1700, interval=10,
                 diagnose=lambda: namespace_state(cluster, cluster.namespace))
        keys = s3.keys(f"{prefix}/out/")
        for stage_output in ("/ingest/report.json", "/mine/mined.jsonl", "/retriever/train_summary.json"):
            assert any(k.endswith(stage_output) for k in keys), (stage_output, keys)
        assert any("/retriever/model/" in k and k.endswith(".safetensors") for k in keys), keys

        def read(suffix: str) -> str:
            (key,) = [k for k in keys if k.endswith(suffix)]
            return s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read().decode()

        # The retrain settings reached each stage (no flag repeated them): mining encoded as the
        # retriever block says, and the training job ran the block's lengths and hyperparameters.
        mined = json.loads(read("/mine/mine_report.json"))
        assert mined["encoding"]["pooling"] == "mean", mined["encoding"]
        trained = yaml.safe_load(read("/retriever/train_spec.yaml"))
        assert trained["pooling"] == "mean", trained
        assert {k: trained["hyperparameters"][k] for k in hyperparameters} == hyperparameters, trained
        assert (trained["hyperparameters"]["query_max_len"], trained["hyperparameters"]["passage_max_len"]) == (24, 64)
        assert json.loads(read("/retriever/train_summary.json"))["global_step"] == 3

        # Then evaluate (the gate) and the retriever's publish Job; the reranker is not trained: no publish Job.
        def job_done(component: str) -> bool:
            jobs = cluster.get_json("jobs", "-n", cluster.namespace, "-l",
                                    f"app.kubernetes.io/instance={release},app.kubernetes.io/component={component}")
            assert len(jobs["items"]) == 1, jobs
            status = jobs["items"][0].get("status", {})
            if any(c["type"] == "Failed" and c["status"] == "True" for c in status.get("conditions", [])):
                raise AssertionError(f"Job {component} failed\n{namespace_state(cluster, cluster.namespace)}")
            return bool(status.get("succeeded"))

        for component in ("evaluate", "publish-retriever"):
            wait_for(f"the {component} Job", lambda c=component: job_done(c), timeout=1500, interval=10,
                     diagnose=lambda: namespace_state(cluster, cluster.namespace))
        assert not cluster.get_json("jobs", "-n", cluster.namespace, "-l", f"app.kubernetes.io/instance={release},"
                                    "app.kubernetes.io/component=publish-reranker")["items"]
        keys = s3.keys(f"{prefix}/out/")
        assert any(k.endswith("/evaluate/report.md") for k in keys), keys
        metrics = json.loads(read("/evaluate/metrics.json"))
        assert "finetuned" in metrics["metrics"] and "gate" in metrics, metrics.keys()
        # The publish step decided by the retriever's own gate rules, as a KFP run's does: published into
        # the run's registry (<work_uri>/registry), or held back with the failed rules as its reasons.
        from bgeflow.steps.publish.verdict import refusal

        published = json.loads(read("/publish/retriever.json"))
        held_back = refusal(metrics, "retriever")
        versions = [k for k in keys if k.startswith(f"{prefix}/out/registry/bge-retriever/")
                    and k.endswith("/manifest.json")]
        if held_back:
            assert published["published"] is False and published["reasons"] == [held_back], published
            assert not versions, versions
        else:
            assert published["published"] is True and published["version"], published
            assert versions == [f"{prefix}/out/registry/bge-retriever/{published['version']}/manifest.json"], versions
    finally:
        cluster.helm("uninstall", release, "-n", cluster.namespace, "--wait", check=False)


def test_helm_upgrade_and_rollback_keep_the_release_healthy(cluster: Cluster) -> None:
    def status() -> dict:
        return json.loads(cluster.helm("status", cluster.release, "-n", cluster.namespace, "-o", "json").stdout)

    before = status()
    assert before["info"]["status"] == "deployed"
    policies = lambda: cluster.get_json("networkpolicies", "-n", cluster.namespace,  # noqa: E731
                                        "-l", f"app.kubernetes.io/instance={cluster.release}")["items"]
    assert policies(), "the release has no NetworkPolicy to begin with"

    cluster.helm("upgrade", cluster.release, "helm/bgeflow", "-n", cluster.namespace, "--reuse-values",
                 "--set", "networkPolicy.enabled=false", "--set", "podLabels.e2e=upgraded", "--wait", "--timeout", "2m")
    upgraded = status()
    assert upgraded["info"]["status"] == "deployed" and upgraded["version"] == before["version"] + 1
    assert not policies(), "the upgrade kept the NetworkPolicy it disabled"

    cluster.helm("rollback", cluster.release, str(before["version"]), "-n", cluster.namespace, "--wait",
                 "--timeout", "2m")
    rolled = status()
    assert rolled["info"]["status"] == "deployed" and rolled["version"] == before["version"] + 2
    assert policies(), "the rollback did not restore the NetworkPolicy"
    # The launcher's Role survived both: its token still may create PyTorchJobs.
    roles = cluster.get_json("roles", "-n", cluster.namespace, "-l", f"app.kubernetes.io/instance={cluster.release}")
    assert any(r["metadata"]["name"].endswith("-launcher") for r in roles["items"]), roles


def test_kubectl_apply_k_manifests_into_a_fresh_namespace(cluster: Cluster) -> None:
    namespace = f"bgeflow-e2e-k-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp:
        # An overlay, as the kustomization's comment tells users to make: only the namespace changes.
        # (kustomize takes a relative path to the base, never an absolute one.)
        base = os.path.relpath(REPO / "manifests", tmp)
        Path(tmp, "kustomization.yaml").write_text(
            f"apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {namespace}\n"
            f"resources:\n  - {base}\n")
        try:
            done = cluster.kubectl("apply", "-k", tmp)
            assert f"namespace/{namespace} created" in done.stdout, done.stdout
            ns = cluster.get_json("namespace", namespace)
            assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
            jobs = cluster.get_json("jobs", "-n", namespace)["items"]
            assert jobs, "manifests/ made no Job"

            # Each Job's pod is created (admitted by PodSecurity), whatever it then does without KFP.
            def pods_admitted():
                pods = cluster.get_json("pods", "-n", namespace)["items"]
                owners = {ref["name"] for p in pods for ref in p["metadata"].get("ownerReferences", [])}
                return {j["metadata"]["name"] for j in jobs} <= owners

            wait_for("the manifests' Job pods", pods_admitted, timeout=120,
                     diagnose=lambda: namespace_state(cluster, namespace))
            events = cluster.kubectl("get", "events", "-n", namespace, check=False).stdout
            assert "violates PodSecurity" not in events, events
            # Applying again changes nothing (what GitOps does on every sync).
            again = cluster.kubectl("apply", "-k", tmp).stdout
            assert "created" not in again and "configured" not in again, again
        finally:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
