"""manifests/ is the chart rendered with default values (fails when stale); GitOps examples render."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from helm.render import CHART, RELEASE, REPO, helm, tool

MANIFESTS = REPO / "manifests"


def test_rendered_manifests_are_current(tmp_path: Path) -> None:
    fresh = tmp_path / "bgeflow.yaml"
    subprocess.run(["bash", str(REPO / "scripts" / "render-manifests.sh"), str(fresh)], check=True)
    committed = (MANIFESTS / "bgeflow.yaml").read_text()
    assert committed == fresh.read_text(), "manifests/bgeflow.yaml is stale: run `make manifests`"


def test_kustomization_builds_with_real_kubectl() -> None:
    proc = subprocess.run([tool("kubectl"), "kustomize", str(MANIFESTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert {o["kind"] for o in objs} == {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Job", "ConfigMap", "NetworkPolicy"}
    ns = next(o for o in objs if o["kind"] == "Namespace")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "bgeflow", obj["metadata"]["name"]


def _gitops_docs() -> dict[str, dict]:
    docs = {}
    for path in sorted((MANIFESTS / "gitops").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    return docs


def _renders(values: dict, tmp_path: Path, name: str) -> None:
    f = tmp_path / f"{name}.yaml"
    f.write_text(yaml.safe_dump(values))
    proc = helm("template", RELEASE, str(CHART), "-f", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "retrain-trigger" in proc.stdout


def test_argocd_application_points_at_the_chart(tmp_path: Path) -> None:
    app = _gitops_docs()["Application"]
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert (REPO / source["path"] / "Chart.yaml").exists()
    _renders(source["helm"]["valuesObject"], tmp_path, "argocd")


def test_flux_helmrelease_points_at_the_chart(tmp_path: Path) -> None:
    docs = _gitops_docs()
    release, repo = docs["HelmRelease"], docs["GitRepository"]
    assert release["apiVersion"] == "helm.toolkit.fluxcd.io/v2"
    chart = release["spec"]["chart"]["spec"]
    assert chart["sourceRef"]["name"] == repo["metadata"]["name"] and chart["sourceRef"]["kind"] == "GitRepository"
    assert (REPO / chart["chart"] / "Chart.yaml").exists()
    _renders(release["spec"]["values"], tmp_path, "flux")
