"""`bgeflow run`'s train step on the container backend: 2 containers of bgeflow-gpu, through the Kubeflow SDK.

The retriever block of `bgeflow run`'s defaults (the bundled MiniLM, the CPU profile) with
``training.backend: container`` and 2 nodes, launched as the pipeline's train step launches it
(``launch_training``): the SDK's ``TrainerClient`` on its container backend starts the nodes on a
job network, each runs ``bgeflow train --config /workspace/train_spec.yaml``, and the model comes
back to the local output, where it must load in sentence-transformers.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import EXAMPLE_DATA
from containers.conftest import POD_TIMEOUT, TEST_TIMEOUT, Images, load_with_sentence_transformers

pytestmark = [pytest.mark.containers, pytest.mark.timeout(TEST_TIMEOUT)]

RECORDS = 96
STEPS = 2


def test_bgeflow_run_train_step_trains_on_two_containers(docker_client: Any, images: Images, tmp_path: Path) -> None:
    from bgeflow.cli.run import _defaults
    from bgeflow.platform import run_spec as blocks
    from bgeflow.platform.launcher import PodSettings
    from bgeflow.platform.launcher.train_job import launch_training

    data = tmp_path / "mined.jsonl"  # the example data has negatives: what mining hands the train step
    data.write_text("\n".join(gzip.decompress(EXAMPLE_DATA.read_bytes()).decode().splitlines()[:RECORDS]) + "\n")
    config = blocks.LocalRunSpec.build(*_defaults(), {
        "training": {"backend": "container", "nnodes": 2, "nproc_per_node": 1},
        "retriever": {"hyperparameters": {"max_steps": STEPS, "logging_steps": 1}},
    }, where="test")
    spec = blocks.train_spec("retriever", config.retriever, train_data=str(data), output=str(tmp_path / "out"))
    lines: list[str] = []
    trained = launch_training(spec, backend=config.training.backend, run_id="containers-test", task_name="train-launcher",
                              nnodes=config.training.nnodes, nproc_per_node=config.training.nproc_per_node,
                              timeout=POD_TIMEOUT, pod=PodSettings(image=images.gpu), log_sink=lines.append)

    assert trained.launch.backend == "container"
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert (summary["nnodes"], summary["world_size"], summary["device"]) == (2, 2, "cpu")
    assert summary["global_step"] == STEPS and summary["model_uri"] == trained.model_uri == str(tmp_path / "out" / "model")
    load_with_sentence_transformers(trained.model_uri, tmp_path, download=False)
    # Nothing of the job is left: its containers, its network, its workdir.
    job = trained.launch.name
    assert not docker_client.containers.list(all=True, filters={"label": f"trainer.kubeflow.org/trainjob-name={job}"})
    assert not docker_client.networks.list(names=[f"{job}-net"])
    assert not (Path.home() / ".kubeflow" / "trainer" / "containers" / job).exists()
