"""The chart's README (generated from the values' `# --` comments) and its Artifact Hub annotations."""

from __future__ import annotations

import yaml

from bgeflow.platform.chart_docs import README, render_readme, value_docs
from helm.render import CHART


def test_the_readme_is_current() -> None:
    expected = render_readme((CHART / "Chart.yaml").read_text(), (CHART / "values.yaml").read_text())
    assert (CHART / README).read_text() == expected, (
        "helm/bgeflow/README.md is stale: run `make chart-docs` (python -m bgeflow.platform.chart_docs)")


def test_every_documented_value_is_a_row_with_its_type_and_default() -> None:
    docs = {d.key: d for d in value_docs((CHART / "values.yaml").read_text())}
    assert docs["s3.prefix"].type == "string" and docs["s3.prefix"].default == "bgeflow"
    assert docs["rbac.create"].type == "bool" and docs["imagePullSecrets"].type == "list"
    readme = (CHART / README).read_text()
    for key in docs:
        assert f"\n| {key} | " in readme, key


def test_comment_rules() -> None:
    text = ("# -- first line\n# and its continuation | with a pipe\nsection:\n  # -- inner\n  value: 3\n\n"
            "# -- detached\n\nafter_blank: 1\nundocumented: x\n")
    docs = value_docs(text)
    assert [(d.key, d.type, d.default, d.description) for d in docs] == [
        ("section", "object", {"value": 3}, "first line and its continuation | with a pipe"),
        ("section.value", "int", 3, "inner")]
    assert "| section | object | `{\"value\": 3}` | first line and its continuation \\| with a pipe |" in \
        render_readme("name: c\nversion: 1.0.0\nappVersion: '1'\n", text)


def test_artifact_hub_annotations_are_in_their_parsed_format() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    annotations = chart["annotations"]
    crds = yaml.safe_load(annotations["artifacthub.io/crds"])
    # The chart installs neither: one of the two, as retrain.training.backend says.
    assert [(c["kind"], c["version"], c["name"]) for c in crds] == [
        ("PyTorchJob", "v1", "pytorchjobs.kubeflow.org"), ("TrainJob", "v1alpha1", "trainjobs.trainer.kubeflow.org")]
    assert all(c["displayName"] and c["description"] for c in crds)
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    assert {i["name"] for i in images} == {"bgeflow-ops", "bgeflow-gpu"}
    # The images a release runs are tagged with the appVersion: a version bump must move these too.
    assert all(i["image"].endswith(f":{chart['appVersion']}") for i in images)
    assert [link["name"] for link in yaml.safe_load(annotations["artifacthub.io/links"])] == ["source"]
