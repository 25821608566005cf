"""The bge-finetune pipeline and its components compile; the IR holds what the cluster needs and no secrets."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from bgeflow.core.spec import Spec
from conftest import REPO

sys.path.insert(0, str(REPO))  # components/ and pipelines/ live at the repository root

from pipelines import bge_finetune
from pipelines.bge_finetune import PipelineOptions, compile_all

COMMITTED = [REPO / "components" / f"{n}.yaml" for n in ("ingest", "mine", "train", "evaluate", "publish")]
COMMITTED.append(REPO / "pipelines" / "bge_finetune.yaml")
OPS = "ghcr.io/bgeflow/bgeflow-ops:"
GPU = "ghcr.io/bgeflow/bgeflow-gpu:"
#: What credentials look like; none may appear in any compiled file.
KEY_MATERIAL = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{20,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(password|passwd|token)\s*[:=]\s*['\"]?[^\s'\"{}]{8,}"),
    re.compile(r"(?i)minioadmin|\"testing\""),
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out_dir=out)
    return out


@pytest.fixture(scope="module")
def ir(compiled: Path) -> tuple[dict, dict]:
    spec, platform = yaml.safe_load_all((compiled / "pipelines" / "bge_finetune.yaml").read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]


def test_committed_yaml_is_not_stale(compiled: Path) -> None:
    for path in COMMITTED:
        fresh = compiled / path.parent.name / path.name
        assert path.exists(), f"{path} is missing: run `make pipelines`"
        assert yaml.safe_load_all(path.read_text()) and list(yaml.safe_load_all(path.read_text())) == list(
            yaml.safe_load_all(fresh.read_text())), f"{path} is stale: run `make pipelines` and commit it"


def test_compiles_are_byte_identical(tmp_path: Path) -> None:
    """Three `make pipelines` gave three md5s: kfp's header printed dict defaults in a per-process order.

    Two processes, as two `make pipelines` runs are: within one process the order repeats.
    """
    import subprocess

    script = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
              "from pipelines.bge_finetune import compile_all; compile_all(out_dir=Path(sys.argv[2]))")
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", script, str(REPO), str(tmp_path / name)], capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    first = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.yaml"))
    assert first == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.yaml")) and first
    for rel in first:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


def test_dag_shape_and_gate(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"ingest", "mine", "train-launcher", "train-launcher-2", "evaluate", "publish", "publish-2"}
    assert tasks["mine"]["dependentTasks"] == ["ingest"]
    for train in ("train-launcher", "train-launcher-2"):  # retriever ∥ reranker: both only after mining
        assert set(tasks[train]["dependentTasks"]) == {"ingest", "mine"}  # ingest: the validation split
    assert set(tasks["evaluate"]["dependentTasks"]) == {"ingest", "train-launcher", "train-launcher-2"}
    # No condition on the whole gate: each publish task reads its own model's verdict from the evaluation.
    for publish, train in (("publish", "train-launcher"), ("publish-2", "train-launcher-2")):
        assert "triggerPolicy" not in tasks[publish]
        assert set(tasks[publish]["dependentTasks"]) == {"evaluate", "ingest", train}
        assert tasks[publish]["inputs"]["artifacts"]["evaluation"]["taskOutputArtifact"]["producerTask"] == "evaluate"
    # The run's own inputs reach the steps that read them.
    assert tasks["mine"]["inputs"]["parameters"]["corpus"]["componentInputParameter"] == "corpus"
    assert tasks["evaluate"]["inputs"]["parameters"]["eval_data"]["componentInputParameter"] == "eval_data"
    kinds = {t["inputs"]["parameters"]["kind"]["runtimeValue"]["constant"] for n, t in tasks.items() if n.startswith("train")}
    assert kinds == {"retriever", "reranker"}


def test_parameters_have_the_seed_defaults(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert "defaultValue" not in params["data"]  # the one required parameter
    retriever, reranker = params["retriever"]["defaultValue"], params["reranker"]["defaultValue"]
    assert retriever["model"] == "BAAI/bge-base-en-v1.5" and reranker["model"] == "BAAI/bge-reranker-base"
    assert params["mine"]["defaultValue"]["range_for_sampling"] == "2-200"
    assert params["mine"]["defaultValue"]["negative_number"] == 15
    assert retriever["query_max_len"] == 64 and retriever["passage_max_len"] == 256 and reranker["max_len"] == 512
    # The hyperparameters default to none given: the seed recipe fills them in where the job is planned.
    assert retriever["hyperparameters"] == {} == reranker["hyperparameters"]
    assert params["evaluate"]["defaultValue"]["gate"] == "ndcg@10>=base+0.01, rerank.ndcg@10>=retriever"
    assert params["mine"]["defaultValue"]["max_score_ratio"] == 0.95
    assert params["corpus"]["defaultValue"] == "" and params["eval_data"]["defaultValue"] == ""
    assert params["publish"]["defaultValue"]["champion"] == "if-gate-passed"


def test_pipeline_parameters_are_the_run_spec_with_its_docs(ir: tuple[dict, dict]) -> None:
    """One parameter per run-spec key, each block's default and description from the spec's declarations."""
    from bgeflow.core.spec import options
    from bgeflow.platform.run_spec import RunSpec, run_defaults

    spec, _ = ir
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(RunSpec.model_fields)
    for name, info in RunSpec.model_fields.items():
        block = info.annotation
        if not (isinstance(block, type) and issubclass(block, Spec)):
            assert params[name]["parameterType"] == "STRING" and params[name]["description"] == info.description
            continue
        assert params[name]["parameterType"] == "STRUCT"
        assert params[name]["defaultValue"] == run_defaults(name)
        for option in options(block):  # every setting of the block is documented in the UI
            assert f"{option.name}: {option.help}" in params[name]["description"].replace("\n", " ")


def test_component_parameters_are_the_blocks_they_read(ir: tuple[dict, dict]) -> None:
    """A component's ``settings`` is its step's run block, with the same defaults and one line per setting."""
    from bgeflow.core.spec import options
    from bgeflow.platform.run_spec import RunSpec, run_defaults

    spec, _ = ir
    for component, block in (("comp-ingest", "ingest"), ("comp-mine", "mine"), ("comp-train-launcher", "training"),
                             ("comp-evaluate", "evaluate"), ("comp-publish", "publish")):
        settings = spec["components"][component]["inputDefinitions"]["parameters"]["settings"]
        described = settings["description"].replace("\n", " ")
        for option in options(RunSpec.model_fields[block].annotation):
            assert f"{option.name}: {option.help}" in described, (component, option.name)
        defaults = run_defaults(block)
        for key, value in defaults.items():
            if not isinstance(value, dict):
                assert f"{key}: " in described and f"default {value!r}" in described, (component, key)


def test_images_commands_and_no_runtime_install(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    executors = spec["deploymentSpec"]["executors"]
    expected = {"exec-ingest": OPS, "exec-mine": GPU, "exec-train-launcher": OPS, "exec-train-launcher-2": OPS,
                "exec-evaluate": GPU, "exec-publish": OPS, "exec-publish-2": OPS}
    assert set(executors) == set(expected)
    from bgeflow import __version__

    for name, prefix in expected.items():
        container = executors[name]["container"]
        assert container["image"] == prefix + __version__
        command = " ".join(container["command"])
        assert "pip install" not in command, f"{name} installs packages at run time"
        assert "kfp.dsl.executor_main" in command
        assert "from bgeflow" in " ".join(container["command"] + container.get("args", []))


def test_resources_gpus_tolerations_timeouts(ir: tuple[dict, dict]) -> None:
    spec, k8s = ir
    executors = spec["deploymentSpec"]["executors"]
    for name in ("exec-mine", "exec-evaluate"):
        resources = executors[name]["container"]["resources"]
        assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
        assert resources["accelerator"]["resourceCount"] == "1"
        assert resources["resourceMemoryRequest"] == "32Gi"
        assert k8s["executors"][name]["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
    for name in ("exec-ingest", "exec-train-launcher", "exec-publish"):
        assert "accelerator" not in executors[name]["container"].get("resources", {})
        assert "tolerations" not in k8s["executors"][name]
    assert k8s["executors"]["exec-ingest"]["activeDeadlineSeconds"] == "7200"
    assert k8s["executors"]["exec-train-launcher"]["activeDeadlineSeconds"] == str(7 * 24 * 3600)


def test_secrets_by_name_only(ir: tuple[dict, dict]) -> None:
    spec, k8s = ir
    for name, executor in k8s["executors"].items():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "bgeflow-s3" and secret["optional"] is True, name
        assert {(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]} == {
            ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"), ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")}
        assert executor["configMapAsEnv"][0]["configMapName"] == "bgeflow-s3"
    # the training pods get the Secret by name through the compiled pod settings
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-train-launcher"]["container"]["env"]}
    pods = json.loads(env["BGEFLOW_TRAIN_POD_SETTINGS"])
    assert pods["s3_secret"] == "bgeflow-s3" and pods["image"].startswith(GPU) and pods["gpus_per_node"] == 1
    # and no run parameter can carry a credential
    params = set(spec["root"]["inputDefinitions"]["parameters"])
    assert not {p for p in params if re.search(r"(?i)secret|password|access_key|token", p)}


def test_caching_off_and_retries(ir: tuple[dict, dict]) -> None:
    spec, _ = ir
    tasks = dict(spec["root"]["dag"]["tasks"])
    for name, task in tasks.items():
        assert task["cachingOptions"] == {}, f"{name} may be cached"  # {} = enableCache false
        assert task["retryPolicy"]["maxRetryCount"] in (2, 3), name
    assert tasks["ingest"]["retryPolicy"]["backoffDuration"] == "30s"
    assert tasks["train-launcher"]["retryPolicy"]["backoffDuration"] == "60s"


def test_no_key_material_in_any_compiled_file(compiled: Path) -> None:
    files = [*COMMITTED, *compiled.rglob("*.yaml")]
    for path in files:
        text = path.read_text()
        for pattern in KEY_MATERIAL:
            assert not pattern.search(text), f"{path} matches {pattern.pattern}"


def test_key_material_patterns_catch_a_leak(tmp_path: Path) -> None:
    """The grep above is real: a credential placed in a parameter default is found."""
    leaky = bge_finetune.build_pipeline(PipelineOptions(train_pods={"service_account": "AKIAABCDEFGHIJKLMNOP"}))
    from kfp import compiler

    compiler.Compiler().compile(leaky, str(tmp_path / "leaky.yaml"))
    text = (tmp_path / "leaky.yaml").read_text()
    assert any(p.search(text) for p in KEY_MATERIAL)


def test_options_change_the_ir_not_the_parameters(tmp_path: Path) -> None:
    options = PipelineOptions(
        s3_secret="team-s3", gpu_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        gpu_tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        image_pull_secrets=["regcred"], gpus_mine=2, train_pods={"cpu": "8", "shm_size": "16Gi"},
    )
    compile_all(options, out_dir=tmp_path)
    spec, platform = yaml.safe_load_all((tmp_path / "pipelines" / "bge_finetune.yaml").read_text())
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-mine"]["nodeSelector"] == {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}}
    assert k8s["exec-mine"]["tolerations"] == [{"effect": "NoSchedule", "key": "dedicated", "operator": "Equal", "value": "gpu"}]
    assert k8s["exec-publish"]["imagePullSecret"] == [{"secretName": "regcred", "secretNameParameter": {"runtimeValue": {"constant": "regcred"}}}]
    assert k8s["exec-ingest"]["secretAsEnv"][0]["secretName"] == "team-s3"
    assert spec["deploymentSpec"]["executors"]["exec-mine"]["container"]["resources"]["accelerator"]["resourceCount"] == "2"
    env = {e["name"]: e["value"] for e in spec["deploymentSpec"]["executors"]["exec-train-launcher-2"]["container"]["env"]}
    from bgeflow.platform.launcher import PodSettings

    pods = PodSettings.from_json(env["BGEFLOW_TRAIN_POD_SETTINGS"])  # what the launcher will read
    assert (pods.cpu, pods.shm_size, pods.s3_secret, pods.image_pull_secrets) == ("8", "16Gi", "team-s3", ["regcred"])
    baseline = yaml.safe_load_all((REPO / "pipelines" / "bge_finetune.yaml").read_text())
    assert next(iter(baseline))["root"]["inputDefinitions"] == spec["root"]["inputDefinitions"]


def test_image_registry_and_tag_are_configurable(tmp_path: Path) -> None:
    import subprocess

    code = ("from components.images import OPS_IMAGE, GPU_IMAGE; print(OPS_IMAGE); print(GPU_IMAGE)")
    env = {"BGEFLOW_IMAGE_REGISTRY": "registry.example.com/ml", "BGEFLOW_IMAGE_TAG": "dev", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["registry.example.com/ml/bgeflow-ops:dev", "registry.example.com/ml/bgeflow-gpu:dev"]
