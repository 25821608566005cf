"""The compiled ``bge-finetune`` pipeline with every step in a container of its image (kfp.local's
DockerRunner), restricted like the chart's pods, reading and writing through S3.

What kfp.local cannot express, and what stands in for it here:

- one set of ``docker run`` options for every task: the chart's restricted pod (UID/GID 10001,
  read-only root, capabilities dropped, no-new-privileges, /tmp and /cache as tmpfs, /dev/shm in
  memory) translated by ``containers.pods`` from the rendered mine Job, for every step alike;
- the Kubernetes platform config is ignored: the Secret and ConfigMap the pipeline names
  (``secretAsEnv``/``configMapAsEnv``) are resolved here into the runner's environment;
- kfp.local passes a component's command as docker's CMD, behind the image's ENTRYPOINT
  (``bgeflow``); on Kubernetes the command replaces the ENTRYPOINT, so the runner clears it;
- the train-launcher steps run in bgeflow-gpu instead of bgeflow-ops, with
  ``training.backend=local``: with no cluster to submit a PyTorchJob to, the local backend runs
  the job's pods as processes of the launcher's own container, which needs torch. The pods as
  separate containers are ``test_training.py``'s;
- KFP's own bookkeeping (executor input/output) goes through the pipeline root, which kfp.local
  bind-mounts; every step's data goes through S3 (``work_uri``, ``registry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from containers.conftest import BUCKET, TEST_TIMEOUT, S3Service, Seed, load_with_sentence_transformers, store
from containers.engine import Network, create_kwargs, tmpfs_mounts
from containers.pods import PodRun

pytestmark = [pytest.mark.containers, pytest.mark.timeout(TEST_TIMEOUT)]


def pipeline_env(pipeline: dict[str, Any], secrets: dict[str, dict[str, str]],
                 config_maps: dict[str, dict[str, str]]) -> dict[str, str]:
    """The env the pipeline's Kubernetes platform config gives its steps (the same for every step)."""
    env: dict[str, str] = {}
    for executor in pipeline["platforms"]["kubernetes"]["deploymentSpec"]["executors"].values():
        for source, kind, key_field in ((secrets, "secretAsEnv", "secretKey"),
                                        (config_maps, "configMapAsEnv", "configMapKey")):
            for ref in executor.get(kind, []):
                name = ref.get("secretName") or ref.get("configMapName")
                for mapping in ref["keyToEnv"]:
                    value = source.get(name, {}).get(mapping[key_field])
                    if value is None and not ref.get("optional"):
                        raise ValueError(f"{kind} {name}/{mapping[key_field]} is missing")
                    if value is not None:
                        env[mapping["envVar"]] = value
    return env


def docker_runner_args(pod: PodRun, network: Network, env: dict[str, str]) -> dict[str, Any]:
    """kfp.local DockerRunner arguments: the restricted pod's container settings, no image/command."""
    (run,) = pod.containers
    kwargs = create_kwargs(run, tmpfs_mounts(run, pod.volumes))
    for key in ("image", "command", "entrypoint"):
        kwargs.pop(key)
    kwargs = {k: v for k, v in kwargs.items() if v not in (None, [])}
    # Kubernetes semantics: the component's command replaces the image's ENTRYPOINT.
    return {**kwargs, "entrypoint": [], "environment": env, "network": network.name}


def test_pipeline_runs_every_step_in_its_image(pods: dict[str, Any], network: Network, s3: S3Service, seed: Seed,
                                               secrets: dict[str, dict[str, str]], images: Any,
                                               tmp_path: Path) -> None:
    from kfp import local
    from kfp.components import load_component_from_text

    from bgeflow.core.config_file import load_mapping
    from bgeflow.platform.local_run import find_pipeline, local_variant
    from bgeflow.platform.run_spec import CPU_PROFILE, LocalRunSpec

    docs = list(yaml.safe_load_all(find_pipeline().read_text()))
    spec = yaml.safe_load(local_variant(yaml.safe_dump(docs[0])))
    executors = spec["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {images.ops, images.gpu}
    for name, executor in executors.items():
        if name.startswith("exec-train-launcher"):
            assert executor["container"]["image"] == images.ops
            executor["container"]["image"] = images.gpu  # see the module docstring
    env = pipeline_env(docs[1], secrets, {"bgeflow-s3": {"AWS_ENDPOINT_URL": s3.internal_url,
                                                         "AWS_DEFAULT_REGION": "us-east-1"}})
    assert set(env) == {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}

    registry = f"s3://{BUCKET}/kfp-registry"
    # `bgeflow run`'s CPU profile, as a user would run it, with the inputs in S3, one step per model,
    # one process per training pod, and no gate, so that both models are published.
    run = LocalRunSpec.build(
        load_mapping(str(CPU_PROFILE), "run settings"),
        {"data": seed.train, "output": str(tmp_path / "unused"), "max_records": 0,
         "work_uri": f"s3://{BUCKET}/kfp-work", "registry": registry,
         "retriever": {"model": seed.model, "hyperparameters": {"max_steps": 1}},
         "reranker": {"model": seed.reranker, "hyperparameters": {"max_steps": 1}},
         "ingest": {"eval_distractors": 100}, "evaluate": {"gate": ""},
         "training": {"backend": "local", "nproc_per_node": 1}},
        where="the container test's run")
    arguments = run.pipeline_arguments()
    assert arguments["work_uri"].startswith("s3://") and arguments["training"]["backend"] == "local"
    # kfp.local bind-mounts the pipeline root at the same path, and the steps (UID 10001) create
    # their task directories in it: it has to be writable to them, as a KFP launcher's volume is.
    root = tmp_path / "pipeline-root"
    root.mkdir()
    root.chmod(0o777)
    local.init(runner=local.DockerRunner(**docker_runner_args(pods["mine"], network, env)),
               pipeline_root=str(root), raise_on_error=True)
    load_component_from_text(yaml.safe_dump(spec))(**arguments)

    for name in ("bge-retriever", "bge-reranker"):
        latest = store(f"{registry}/{name}").read_text("latest.json")
        assert "version" in latest, (name, latest)
    from bgeflow.steps.publish.registry import fetch_model

    load_with_sentence_transformers(fetch_model(f"{registry}/bge-retriever", tmp_path), tmp_path, download=False)
