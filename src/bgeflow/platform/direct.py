"""The chart's direct mode (no KFP): where its stages read and write, and each stage's spec.

The direct-mode Jobs (``helm/bgeflow/templates/direct/``) run ingest → mine → the training
launchers under one root, ``<s3 root>/direct/<hash>``. Each Job's init container runs
``bgeflow pipeline step-spec STEP``, which turns the chart's retrain spec into that step's spec
with ``bgeflow.platform.run_spec`` (the functions the KFP components call), and the Job's main
container runs the step with ``--config`` on it: a retrain setting means the same in KFP,
``bgeflow run`` and direct mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import Spec
from bgeflow.core.storage import join_uri
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.run_spec import RunSpec
from bgeflow.steps.ingest.spec import EVAL_CORPUS_FILE, TRAIN_FILE

#: The stages of direct mode, in order; the chart's Jobs name them so.
STEPS = ("ingest", "mine", "train-retriever", "train-reranker")
#: The mined training data, under ``<root>/mine/`` (mine_report.json goes beside it).
MINED_FILE = "mined.jsonl"


@dataclass(frozen=True)
class DirectLayout:
    """Where the direct-mode stages of one spec read and write; the chart's Jobs wait on these paths.

    Attributes:
        root: ``<s3 root>/direct/<hash>`` (the chart's ``bgeflow.directRoot``).
    """

    root: str

    @property
    def ingest(self) -> str:
        """Ingest's output folder (train.jsonl, eval/, report.json)."""
        return join_uri(self.root, "ingest")

    @property
    def train_split(self) -> str:
        """Ingest's training split, mining's input."""
        return join_uri(self.ingest, TRAIN_FILE)

    @property
    def eval_split(self) -> str:
        """Ingest's held-out split (corpus.jsonl, queries.jsonl): what training validates on."""
        return join_uri(self.ingest, EVAL_CORPUS_FILE.rpartition("/")[0])

    @property
    def mined(self) -> str:
        """Mining's output, the training data of both models."""
        return join_uri(self.root, f"mine/{MINED_FILE}")

    def model_output(self, kind: str) -> str:
        """The training output (model/, checkpoints, summary) of ``kind`` (retriever or reranker)."""
        return join_uri(self.root, kind)


def step_spec(step: str, run: RunSpec, *, root: str) -> Spec:
    """The spec of direct-mode stage ``step`` for ``run``, its inputs and outputs under ``root``.

    The whole run is planned first (every stage it runs, and the negatives each trained model
    needs from mining, as ``bgeflow run`` checks them), so a bad setting fails the first stage's
    Job, not a later one after hours of work.

    Args:
        step: one of ``STEPS``.
        run: the retrain spec (the chart's ``retrain`` values).
        root: URI under which the stages read and write (``DirectLayout``).

    Returns:
        An ``IngestSpec``, ``MineSpec`` or ``TrainSpec``, as ``bgeflow ingest|mine|launch --config`` reads it.

    Raises:
        ConfigError: an unknown step, a model its block does not train (``<kind>.train: false``),
            or a setting the step refuses (named by its retrain-spec key).
    """
    if step not in STEPS:
        raise ConfigError(f"unknown direct-mode step {step!r}; one of {', '.join(STEPS)}")
    plan = direct_plan(run, root=root)
    if step not in plan:
        raise ConfigError(f"{step}: {step.removeprefix('train-')}.train is false: this run does not train it")
    return plan[step]


def direct_plan(run: RunSpec, *, root: str) -> dict[str, Spec]:
    """Every stage ``run`` runs in direct mode, by step name (a model with ``train: false`` has none).

    Args:
        run: the retrain spec.
        root: URI under which the stages read and write (``DirectLayout``).

    Returns:
        Step name (``STEPS``) → its spec, in stage order.

    Raises:
        ConfigError: a setting a step refuses, or a trained model's ``train_group_size`` that
            needs more negatives than mining gives (``run_spec.check_negatives``).
    """
    layout = DirectLayout(root)
    plan: dict[str, Spec] = {
        "ingest": blocks.ingest_spec(run.ingest, run.retriever, inputs=run.data, output=layout.ingest),
        "mine": blocks.mine_spec(run.mine, run.retriever, inputs=[layout.train_split], output=layout.mined,
                                 corpus=run.corpus, reranker=run.reranker),
    }
    # Ingest writes eval/ whenever it holds queries out; the pipeline validates on the same split.
    validation = layout.eval_split if run.ingest.eval_fraction > 0 else None
    for kind, block in (("retriever", run.retriever), ("reranker", run.reranker)):
        if block.train:
            plan[f"train-{kind}"] = blocks.train_spec(kind, block, train_data=layout.mined,
                                                      output=layout.model_output(kind), validation_data=validation)
    blocks.check_negatives(run)
    return plan


def spec_document(spec: Spec) -> str:
    """``spec`` as the YAML a step's ``--config`` reads back into the same spec.

    Only what differs from the step's defaults: the defaults (some read from the environment, such
    as ``BGEFLOW_S3_MAX_WORKERS``) are the ones of the container that runs the step.

    Args:
        spec: a step's spec (``step_spec``).

    Returns:
        The YAML document.
    """
    return yaml.safe_dump(spec.changed(), sort_keys=False, allow_unicode=True)
