"""helm lint/template with the real helm, values documentation, schema, labels, hooks, NOTES."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from helm.render import (
    CHART,
    NAMESPACE,
    RELEASE,
    SCENARIOS,
    helm,
    is_test_hook,
    render,
    render_text,
    scenario_args,
)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(scenario: str) -> None:
    proc = helm("lint", "--strict", str(CHART), *scenario_args(scenario))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_is_labelled(scenario: str) -> None:
    for obj in render(scenario):
        labels = obj["metadata"].get("labels", {})
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert key in labels, f"{scenario}: {obj['kind']}/{obj['metadata']['name']} lacks label {key}"


def _leaf_paths(node: object, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, f"{prefix}.{k}" if prefix else k)]
    return [prefix]


def test_every_value_is_documented() -> None:
    """helm-docs style: each key that is a value (not a section) has a `# --` comment above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    pending = False
    for line in lines:
        if line.lstrip().startswith("# --"):
            pending = True
            continue
        match = re.match(r"^(\s*)([A-Za-z0-9_.-]+):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([s for _, s in stack] + [match.group(2)])
        stack.append((indent, match.group(2)))
        if pending:
            documented.add(path)
        pending = False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # A documented map documents its contents (resources, securityContext...).
    undocumented = [p for p in _leaf_paths(values)
                    if not any(p == d or p.startswith(d + ".") for d in documented)]
    assert not undocumented, f"values without a '# --' comment: {undocumented}"


@pytest.mark.parametrize("bad", [
    ["--set", "s3.accessKey=x"],                 # no place for keys in values
    ["--set", "retrain.unknown=1"],
    ["--set", "retrain.training.nnodes=0"],
    ["--set", "direct.retriever.nodes=2"],       # the job's shape is retrain.training's, declared once
    ["--set", "direct.mine.useGpu=true"],        # the GPU search is retrain.mine.use_gpu
    ["--set", "kfp.schedule.cron=daily"],
])
def test_schema_rejects(bad: list[str]) -> None:
    proc = helm("template", RELEASE, str(CHART), *bad)
    assert proc.returncode != 0 and "values don't meet the specifications" in proc.stderr, proc.stderr


@pytest.mark.parametrize(("values", "renders"), [
    ([], False),                                           # values.yaml's own `data: ""`
    (["--set-string", "retrain.data= \\, "], False),       # " , ": no URI once split at commas (UriList)
    (["--set-string", "retrain.data=s3://bkt/raw/"], True),
    (["--set", "retrain.data={s3://bkt/a/,s3://bkt/b/}"], True),
])
def test_retrain_enabled_needs_data(values: list[str], renders: bool) -> None:
    """values.yaml says retrain.data is "required when enabled"; a user's `--set retrain.enabled=true` rendered."""
    proc = helm("template", RELEASE, str(CHART), "--set", "s3.bucket=bkt", "--set", "retrain.enabled=true", *values)
    if renders:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0 and "values don't meet the specifications" in proc.stderr, proc.stderr
        assert "/retrain/data" in proc.stderr, proc.stderr


def test_schema_forbids_additional_properties_everywhere() -> None:
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or 'root'} allows unknown keys"
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}")

    walk(schema, "")


def test_required_settings_fail_clearly() -> None:
    # retrain.data given: without it the schema fails first (test_retrain_enabled_needs_data).
    proc = helm("template", RELEASE, str(CHART), "--set", "retrain.enabled=true", "--set-string",
                "retrain.data=s3://bkt/raw/")
    assert proc.returncode != 0 and "s3.bucket is required" in proc.stderr
    proc = helm("template", RELEASE, str(CHART), "--set", "direct.enabled=true", "--set", "s3.bucket=bkt")
    assert proc.returncode != 0 and "retrain.data is required" in proc.stderr


def _by_kind_name(objs: list[dict]) -> dict[str, dict]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in objs}


def test_hooks_are_argocd_and_flux_safe() -> None:
    objs = _by_kind_name(render("irsa-values"))
    # Install/upgrade hooks; the `helm test` Job (test_helm_test_checks_what_the_values_need) runs only when asked.
    hooks = [o for o in objs.values() if "helm.sh/hook" in o["metadata"].get("annotations", {}) and not is_test_hook(o)]
    assert {o["metadata"]["name"] for o in hooks} == {f"{RELEASE}-pipeline-upload", f"{RELEASE}-retrain-trigger"}
    for hook in hooks:
        ann = hook["metadata"]["annotations"]
        assert ann["helm.sh/hook"] == "post-install,post-upgrade"
        assert ann["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert ann["argocd.argoproj.io/hook"] == "PostSync"
        assert ann["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation,HookSucceeded"
    # Upload runs before the trigger, in Helm (hook weight) and Argo CD (sync wave) alike.
    upload, trigger = objs[f"Job/{RELEASE}-pipeline-upload"], objs[f"Job/{RELEASE}-retrain-trigger"]
    assert int(upload["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        trigger["metadata"]["annotations"]["helm.sh/hook-weight"])
    # The ConfigMap the trigger reads is a plain object, applied before any PostSync hook.
    cm = objs[f"ConfigMap/{RELEASE}-retrain"]
    assert "helm.sh/hook" not in cm["metadata"].get("annotations", {})


def test_trigger_reads_the_rendered_spec_and_hash_follows_it() -> None:
    objs = _by_kind_name(render("irsa-values"))
    cm = objs[f"ConfigMap/{RELEASE}-retrain"]
    spec = yaml.safe_load(cm["data"]["retrain.yaml"])
    assert spec["data"] == "s3://team-search-ml/raw/clicks/"
    assert spec["work_uri"] == "s3://team-search-ml/bgeflow/prod"
    assert "enabled" not in spec
    trigger = objs[f"Job/{RELEASE}-retrain-trigger"]
    pod = trigger["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert args[:2] == ["pipeline", "trigger"] and args[args.index("--spec") + 1] == "/etc/bgeflow/retrain.yaml"
    assert {"name": "retrain-spec", "configMap": {"name": f"{RELEASE}-retrain"}} in pod["volumes"]
    sha = trigger["metadata"]["annotations"]["bgeflow.io/retrain-spec-sha256"]
    assert sha == cm["metadata"]["annotations"]["bgeflow.io/retrain-spec-sha256"]
    changed = _by_kind_name(render("irsa-values", "--set", "retrain.revision=other"))
    assert changed[f"Job/{RELEASE}-retrain-trigger"]["metadata"]["annotations"][
        "bgeflow.io/retrain-spec-sha256"] != sha


def test_schedule_hook_only_when_enabled() -> None:
    default_names = {o["metadata"]["name"] for o in render("default")}
    assert f"{RELEASE}-retrain-schedule" not in default_names
    objs = _by_kind_name(render("recurring-values"))
    args = objs[f"Job/{RELEASE}-retrain-schedule"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["pipeline", "schedule"]
    assert args[args.index("--cron") + 1] == "0 0 2 * * 0"
    assert args[args.index("--experiment") + 1] == "weekly-retrain"


def test_default_render_has_no_training_and_no_kfp_run() -> None:
    kinds = sorted(o["kind"] for o in render("default") if not is_test_hook(o))
    assert kinds == ["ConfigMap", "Job", "NetworkPolicy", "NetworkPolicy", "Role", "RoleBinding", "ServiceAccount"]


def test_kfp_runs_get_s3_settings_by_the_compiled_names() -> None:
    cm = _by_kind_name(render("minio-values"))["ConfigMap/bgeflow-s3"]
    assert cm["data"] == {"AWS_DEFAULT_REGION": "us-east-1",
                          "AWS_ENDPOINT_URL": "http://minio.minio.svc.cluster.local:9000"}
    assert "AWS_ENDPOINT_URL" not in _by_kind_name(render("default"))["ConfigMap/bgeflow-s3"]["data"]
    proc = helm("template", RELEASE, str(CHART), "--set", "s3.existingSecret=other")
    assert proc.returncode != 0 and "Secret named bgeflow-s3" in proc.stderr


def test_direct_training_names_fit_with_the_longest_release() -> None:
    """The launcher Jobs' names are labels (<= 63); the training job each creates is named by the
    launcher's job_name, which leaves room for the operator's <job>-worker-<i> Services."""
    from bgeflow.platform.launcher import LaunchSpec, job_name

    release = "team-search-embeddings-retraining-nightly"  # 41 characters: fullname is cut to 40
    proc = helm("template", release, str(CHART), "-f", str(CHART / "ci" / "direct-values.yaml"),
                "--set", "retrain.training.nnodes=9999")
    assert proc.returncode == 0, proc.stderr
    objs = [d for d in yaml.safe_load_all(proc.stdout) if d and not is_test_hook(d)]
    assert all(len(d["metadata"]["name"]) <= 63 for d in objs if d["kind"] == "Job")  # publish-retriever's too
    jobs = [d for d in objs if d["kind"] == "Job" and d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "launch"]
    assert len(jobs) == 2
    (cm,) = [d for d in objs if d["kind"] == "ConfigMap"]
    assert len(cm["metadata"]["name"]) <= 63
    nnodes = yaml.safe_load(cm["data"]["retrain.yaml"])["training"]["nnodes"]
    for job in jobs:
        assert len(job["metadata"]["name"]) <= 63 and job["metadata"]["name"].startswith(release[:30].rstrip("-"))
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        owner = args[args.index("--owner") + 1]
        assert LaunchSpec(name=job_name(owner, prefix=f"bgeflow-{args[1]}"), command=["x"], owner=owner,
                          nnodes=nnodes).name


def test_direct_mode_objects_and_order() -> None:
    objs = [o for o in render("direct-values") if not is_test_hook(o)]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == ["ConfigMap", *["Job"] * 7, "NetworkPolicy", "NetworkPolicy", "Role", "RoleBinding",
                     "ServiceAccount"]
    names = {o["metadata"]["name"] for o in objs}
    stages = [n.rsplit("-", 2) for n in names if n.count("-") >= 2]
    suffixes = {parts[2] for parts in stages
                if parts[1] in ("ingest", "mine", "retriever", "reranker", "evaluate", "direct")}
    assert len(suffixes) == 1, f"direct objects share one spec hash: {names}"
    digest = suffixes.pop()
    # A changed spec renames every direct object (the spec's ConfigMap too: each generation of Jobs
    # reads its own); an unchanged one renders identical names.
    again = {o["metadata"]["name"] for o in render("direct-values") if not is_test_hook(o)}
    changed = {o["metadata"]["name"] for o in render("direct-values", "--set", "retrain.revision=r2")
               if not is_test_hook(o)}
    assert again == names and len(changed - names) == 8
    by_name = {o["metadata"]["name"]: o for o in objs}
    root = f"s3://bgeflow-data/bgeflow/direct/{digest}"
    for step, name in (("ingest", "ingest"), ("mine", "mine"), ("train-retriever", "retriever"),
                       ("train-reranker", "reranker"), ("evaluate", "evaluate"),
                       ("publish-retriever", "publish-retriever"), ("publish-reranker", "publish-reranker")):
        pod = by_name[f"{RELEASE}-{name}-{digest}"]["spec"]["template"]["spec"]
        # The step's spec is written after the wait (the previous stage done), from this spec's ConfigMap.
        assert [c["name"] for c in pod["initContainers"]] == (["step-spec"] if step == "ingest" else
                                                              ["wait-for-input", "step-spec"])
        assert pod["initContainers"][-1]["args"] == [
            "pipeline", "step-spec", step, "--spec", "/etc/bgeflow/retrain.yaml", "--root", root,
            "--output", f"/spec/{step}.yaml"]
        assert {"name": "retrain-spec", "configMap": {"name": f"{RELEASE}-direct-{digest}"}} in pod["volumes"]
        assert {"name": "step-spec", "mountPath": "/spec", "readOnly": True} in pod["containers"][0]["volumeMounts"]
    mine = by_name[f"{RELEASE}-mine-{digest}"]["spec"]["template"]["spec"]
    assert mine["initContainers"][0]["args"][:4] == ["pipeline", "wait", "--uri", f"{root}/ingest/report.json"]
    assert mine["containers"][0]["args"] == ["mine", "--config", "/spec/mine.yaml"]
    pod = by_name[f"{RELEASE}-retriever-{digest}"]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"][3] == f"{root}/mine/mine_report.json"
    # The job's shape and timeout come from the retrain spec too (retrain.training), not from flags here.
    assert pod["containers"][0]["args"] == [
        "launch", "retriever", "--config", "/spec/train-retriever.yaml", "--retrain-spec", "/etc/bgeflow/retrain.yaml",
        "--backend", "pytorchjob",
        # Each render of a spec launches under one owner, so a retried launcher Job adopts its job.
        "--owner", f"direct/{RELEASE}/{digest}/retriever"]
    # Evaluate once both models are trained; each publish once evaluate's metrics.json (written last) exists.
    assert _waits_for(by_name[f"{RELEASE}-evaluate-{digest}"]) == [
        f"{root}/retriever/train_summary.json", f"{root}/reranker/train_summary.json"]
    assert by_name[f"{RELEASE}-evaluate-{digest}"]["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "evaluate", "--config", "/spec/evaluate.yaml"]
    for model in ("retriever", "reranker"):
        job = by_name[f"{RELEASE}-publish-{model}-{digest}"]
        assert _waits_for(job) == [f"{root}/evaluate/metrics.json"]
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
            "publish", "--config", f"/spec/publish-{model}.yaml"]


def _waits_for(job: dict[str, Any]) -> list[str]:
    """The outputs ``job``'s wait-for-input init container waits for."""
    (wait,) = [c for c in job["spec"]["template"]["spec"]["initContainers"] if c["name"] == "wait-for-input"]
    return [wait["args"][i + 1] for i, arg in enumerate(wait["args"]) if arg == "--uri"]


#: (--set values, the stages whose Jobs render, the outputs evaluate waits for under the direct root)
TRAINED = [
    ([], ["ingest", "mine", "retriever", "reranker", "evaluate", "publish-retriever", "publish-reranker"],
     ["retriever/train_summary.json", "reranker/train_summary.json"]),
    (["retrain.reranker.train=false"], ["ingest", "mine", "retriever", "evaluate", "publish-retriever"],
     ["retriever/train_summary.json"]),
    (["retrain.retriever.train=false"], ["ingest", "mine", "reranker", "evaluate", "publish-reranker"],
     ["reranker/train_summary.json"]),
    # Nothing trained: the base models are evaluated after mining, as the pipeline orders it; nothing published.
    (["retrain.retriever.train=false", "retrain.reranker.train=false"], ["ingest", "mine", "evaluate"],
     ["mine/mine_report.json"]),
]


@pytest.mark.parametrize(("values", "stages", "waits"), TRAINED, ids=["both", "retriever", "reranker", "none"])
def test_direct_mode_evaluates_and_publishes_what_it_trains(values: list[str], stages: list[str],
                                                             waits: list[str]) -> None:
    objs = render("direct-values", *(a for v in values for a in ("--set", v)))
    jobs = {_stage(o): o for o in objs if o["kind"] == "Job" and not is_test_hook(o)}
    assert sorted(jobs) == sorted(stages)
    init = next(c for c in jobs["evaluate"]["spec"]["template"]["spec"]["initContainers"] if c["name"] == "step-spec")
    root = init["args"][init["args"].index("--root") + 1]
    assert _waits_for(jobs["evaluate"]) == [f"{root}/{w}" for w in waits]


def _stage(job: dict[str, Any]) -> str:
    """The direct-mode stage a Job runs: its name between the release and the spec hash."""
    return job["metadata"]["name"].removeprefix(f"{RELEASE}-").rsplit("-", 1)[0]


@pytest.mark.parametrize(("values", "gpu"), [
    ([], False),  # on the CPU, wherever: no GPU node is held for an evaluation
    (["--set-json", 'direct.evaluate.resources={"limits": {"nvidia.com/gpu": "1"}}'], True),
])
def test_evaluate_goes_to_a_gpu_node_only_with_a_gpu(values: list[str], gpu: bool) -> None:
    objs = render("gpu-tolerations-values", *values)
    (job,) = [o for o in objs if o["kind"] == "Job" and not is_test_hook(o) and _stage(o) == "evaluate"]
    pod = job["spec"]["template"]["spec"]
    assert ("nvidia.com/gpu.present" in pod["nodeSelector"]) is gpu  # gpu.nodeSelector over the release's own
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) is gpu
    assert ("nvidia.com/gpu" in pod["containers"][0]["resources"].get("limits", {})) is gpu


#: What the direct-mode tests set in `retrain` (as JSON: a number stays a number).
RETRAIN_JSON = ["retrain.retriever.hyperparameters.learning_rate=3e-05", "retrain.retriever.hyperparameters.max_steps=3",
                "retrain.retriever.query_max_len=48", "retrain.mine.negative_number=20",
                'retrain.ingest={"eval_fraction": 0.2}']


def test_direct_jobs_run_the_retrain_spec(tmp_path: Path) -> None:
    """Every retrain setting reaches the stage that reads it: each Job's init container derives its
    step's spec from the ConfigMap with the pipeline's code, and the Job runs with exactly that."""
    from bgeflow.platform.direct import step_spec
    from bgeflow.platform.gitops import RetrainSpec
    from helm.steps import spec_configmap, step_spec_of

    objs = render("direct-values", *(a for v in RETRAIN_JSON for a in ("--set-json", v)))
    jobs = {_stage(o): o for o in objs if o["kind"] == "Job" and not is_test_hook(o)}
    cm = spec_configmap(objs, jobs["ingest"])
    retrain = yaml.safe_load(cm["data"]["retrain.yaml"])
    assert retrain["retriever"]["hyperparameters"]["max_steps"] == 3 and retrain["mine"]["negative_number"] == 20
    (tmp_path / "retrain.yaml").write_text(cm["data"]["retrain.yaml"])
    run = RetrainSpec.load(tmp_path / "retrain.yaml")
    specs = {}
    for name, step in (("ingest", "ingest"), ("mine", "mine"), ("retriever", "train-retriever"),
                       ("reranker", "train-reranker"), ("evaluate", "evaluate"),
                       ("publish-retriever", "publish-retriever"), ("publish-reranker", "publish-reranker")):
        assert spec_configmap(objs, jobs[name]) == cm  # one spec for every stage
        init = next(c for c in jobs[name]["spec"]["template"]["spec"]["initContainers"] if c["name"] == "step-spec")
        root = init["args"][init["args"].index("--root") + 1]
        specs[step] = step_spec_of(objs, jobs[name], tmp_path / name)
        assert specs[step] == step_spec(step, run, root=root)
    assert specs["ingest"].eval_fraction == 0.2 and specs["ingest"].limits.query_max_len == 48
    assert specs["mine"].negative_number == 20 and specs["mine"].encoding.query_max_len == 48
    assert specs["mine"].use_gpu is True  # direct-values' retrain.mine.use_gpu
    hyperparameters = specs["train-retriever"].hyperparameters
    assert (hyperparameters["learning_rate"], hyperparameters["max_steps"], hyperparameters["query_max_len"]) == (
        3e-5, 3, 48)
    assert hyperparameters["num_train_epochs"] == 2  # direct-values' retrain.retriever.hyperparameters
    assert specs["train-retriever"].train_data == [specs["mine"].output]
    # Evaluate judges the trained models on ingest's split, against the run's registry; publish copies
    # each training output there, unless evaluate's verdict on its own rules failed.
    evaluate = specs["evaluate"]
    assert (evaluate.eval_data, evaluate.registry) == (f"{root}/ingest/eval",
                                                       "s3://bgeflow-data/bgeflow/registry")
    assert evaluate.ingest_split is None  # the split is the judged set: nothing beside it
    assert (evaluate.retriever, evaluate.reranker) == (f"{specs['train-retriever'].output}/model",
                                                       f"{specs['train-reranker'].output}/model")
    for model in ("retriever", "reranker"):
        publish = specs[f"publish-{model}"]
        assert (publish.model, publish.registry) == (specs[f"train-{model}"].output, evaluate.registry)
        assert publish.metrics == f"{evaluate.output}/metrics.json" and not publish.publish_if_gate_failed


def test_direct_evaluate_job_scores_ingests_split_beside_the_runs_eval_set(tmp_path: Path) -> None:
    """With the run's own eval_data, the one evaluate Job judges on it and scores ingest's split beside it:
    the Job runs `bgeflow evaluate --config` on the plan's spec, which says both."""
    from helm.steps import step_spec_of

    objs = render("direct-values", "--set-json", 'retrain.ingest={"eval_fraction": 0.2}',
                  "--set", "retrain.eval_data=s3://bgeflow-data/eval/")
    (job,) = [o for o in objs if o["kind"] == "Job" and not is_test_hook(o) and _stage(o) == "evaluate"]
    init = next(c for c in job["spec"]["template"]["spec"]["initContainers"] if c["name"] == "step-spec")
    root = init["args"][init["args"].index("--root") + 1]
    spec = step_spec_of(objs, job, tmp_path)
    assert (spec.eval_data, spec.ingest_split) == ("s3://bgeflow-data/eval/", f"{root}/ingest/eval")
    assert (tmp_path / "step-spec" / "evaluate.yaml").is_file()
    assert "ingest_split:" in (tmp_path / "step-spec" / "evaluate.yaml").read_text()


def test_direct_extra_args_still_win(tmp_path: Path) -> None:
    from helm.steps import step_spec_of

    objs = render("direct-values", "--set-json", 'direct.mine.extraArgs=["--negative-number", "25"]',
                  "--set", "retrain.mine.negative_number=20")
    (mine,) = [o for o in objs if o["kind"] == "Job" and "-mine-" in o["metadata"]["name"]]
    assert step_spec_of(objs, mine, tmp_path).negative_number == 25


def test_mine_searches_on_the_gpu_only_when_the_spec_says(tmp_path: Path) -> None:
    # retrain.mine.use_gpu, false by default as in a KFP run: a CPU-only cluster's faiss has no GPU.
    from helm.steps import step_spec_of

    def mine_spec(*extra: str) -> Any:
        objs = render("direct-values", *extra)
        (mine,) = [o for o in objs if o["kind"] == "Job" and "-mine-" in o["metadata"]["name"]]
        return step_spec_of(objs, mine, tmp_path / str(len(extra)))

    assert mine_spec().use_gpu is True  # direct-values: a GPU cluster
    assert mine_spec("--set", "retrain.mine.use_gpu=false").use_gpu is False


def test_notes_print_next_commands() -> None:
    proc = helm("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE,
                *scenario_args("irsa-values"))
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert f"kubectl -n {NAMESPACE} logs job/{RELEASE}-pipeline-upload" in notes
    assert "bgeflow pipeline trigger --dry-run" in notes


def test_render_is_deterministic() -> None:
    render_text.cache_clear()
    first = render_text("direct-values")
    render_text.cache_clear()
    assert render_text("direct-values") == first


@pytest.mark.parametrize(("scenario", "args"), [
    ("irsa-values", ["pipeline", "check", "--s3", "s3://team-search-ml/bgeflow/prod", "--kfp-host",
                     "http://ml-pipeline.kubeflow.svc.cluster.local:8888"]),
    ("direct-values", ["pipeline", "check", "--s3", "s3://bgeflow-data/bgeflow", "--api",
                       "kubeflow.org/v1/PyTorchJob"]),
])
def test_helm_test_checks_what_the_values_need(scenario: str, args: list[str]) -> None:
    objs = _by_kind_name(render(scenario))
    job = objs[f"Job/{RELEASE}-check"]
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert not any(k.startswith("argocd.argoproj.io/") for k in job["metadata"]["annotations"])
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["bgeflow"] and container["args"] == args
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)) and "AWS_REGION" in names
    # Only the CRD check reads the API server (discovery): only then does the pod get a token.
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert ("kube-api-token" in mounts) is ("--api" in args) and pod["automountServiceAccountToken"] is False


def test_direct_training_launcher_has_the_memory_bgeflow_launch_needs() -> None:
    """The real cluster OOM-killed the launcher Job at the hook Jobs' 512Mi: `bgeflow launch` checks
    the options with FlagEmbedding's parser, which imports torch. Its limit must hold that footprint,
    measured here, with room to spare."""
    import subprocess
    import sys

    from kubernetes.utils import parse_quantity

    # The peak from /proc (VmHWM), not ru_maxrss: a child's ru_maxrss starts at its parent's peak on
    # Linux, so a pytest process grown large by earlier tests would be measured instead.
    probe = ("from bgeflow.steps.training.runners import runner_for\n"
             "runner_for('retriever').classes()\nimport bgeflow.platform.launcher.submit\n"
             "peak = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
             "print(int(peak.split()[1]) * 1024)")
    footprint = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                   check=True).stdout.split()[-1])
    launchers = [o for o in render("direct-values") if o["kind"] == "Job" and not is_test_hook(o)
                 and o["spec"]["template"]["spec"]["containers"][0]["args"][0] == "launch"]
    assert len(launchers) == 2
    for job in launchers:
        limits = job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert parse_quantity(limits["memory"]) >= 1.5 * footprint, (limits, footprint)
