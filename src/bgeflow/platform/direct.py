"""The chart's direct mode (no KFP): where its stages read and write, and each stage's spec.

The direct-mode Jobs (``helm/bgeflow/templates/direct/``) run ingest → mine → the training
launchers → evaluate (and the gate) → publish of each trained model, under one root,
``<s3 root>/direct/<hash>``; the registry is the run's, as in a KFP run. Each Job's init container
runs ``bgeflow pipeline step-spec STEP``, which turns the chart's retrain spec into that step's spec
with ``bgeflow.platform.run_spec`` (the functions the KFP components call), and the Job's main
container runs the step with ``--config`` on it: a retrain setting means the same in KFP,
``bgeflow run`` and direct mode. The publish step itself holds back a model whose own gate rules
failed (``bgeflow publish``'s default, pinned by ``run_spec.publish_spec``), as in a KFP run.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import Spec
from bgeflow.core.storage import join_uri
from bgeflow.platform import run_spec as blocks
from bgeflow.platform.kfp_io import registry_uri
from bgeflow.platform.run_spec import RunSpec
from bgeflow.steps.evaluation.evaluate import METRICS_FILE
from bgeflow.steps.ingest.spec import EVAL_CORPUS_FILE, TRAIN_FILE
from bgeflow.steps.training.pod import MODEL_DIR, SUMMARY_FILE

#: The models a run trains, evaluates and publishes.
KINDS = ("retriever", "reranker")
#: The stages of direct mode, in order; the chart's Jobs name them so.
STEPS = ("ingest", "mine", *(f"train-{kind}" for kind in KINDS), "evaluate", *(f"publish-{kind}" for kind in KINDS))
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

    def trained_model(self, kind: str) -> str:
        """The fine-tuned model of ``kind``, as the launcher reports it to a KFP run (``TrainLaunch.model_uri``)."""
        return join_uri(self.model_output(kind), MODEL_DIR)

    def trained(self, kind: str) -> str:
        """The file a training job of ``kind`` writes last (``train_summary.json``): its model is complete."""
        return join_uri(self.model_output(kind), SUMMARY_FILE)

    @property
    def evaluation(self) -> str:
        """Evaluate's output folder (metrics.json, report.md, deltas.png)."""
        return join_uri(self.root, "evaluate")

    @property
    def metrics(self) -> str:
        """Evaluate's ``metrics.json``, written last: the gate verdicts publish decides by."""
        return join_uri(self.evaluation, METRICS_FILE)

    def published(self, kind: str) -> str:
        """What the publish of ``kind`` did (``bgeflow publish``'s result: the version, or why not)."""
        return join_uri(self.root, f"publish/{kind}.json")


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
        An ``IngestSpec``, ``MineSpec``, ``TrainSpec``, ``EvaluateSpec`` or ``PublishSpec``, as
        ``bgeflow ingest|mine|launch|evaluate|publish --config`` reads it.

    Raises:
        ConfigError: an unknown step, a model its block does not train (``<kind>.train: false``: no
            training, no publish), or a setting the step refuses (named by its retrain-spec key).
    """
    if step not in STEPS:
        raise ConfigError(f"unknown direct-mode step {step!r}; one of {', '.join(STEPS)}")
    plan = direct_plan(run, root=root)
    if step not in plan:
        kind = step.partition("-")[2]
        raise ConfigError(f"{step}: {kind}.train is false: this run does not train it")
    return plan[step]


def direct_plan(run: RunSpec, *, root: str) -> dict[str, Spec]:
    """Every stage ``run`` runs in direct mode, by step name (a model with ``train: false`` has none).

    Args:
        run: the retrain spec.
        root: URI under which the stages read and write (``DirectLayout``).

    Returns:
        Step name (``STEPS``) → its spec, in stage order.

    Raises:
        ConfigError: no registry (nor work_uri) for a run that trains, a setting a step refuses, a
            trained model's hyperparameter its runner does not know (``run_spec.check_hyperparameters``),
            a ``train_group_size`` that needs more negatives than mining gives (``run_spec.check_negatives``),
            or nothing to evaluate on (``run_spec.eval_set``).
    """
    registry = registry_uri(run.registry, run.work_uri)
    if not registry and (run.retriever.train or run.reranker.train):
        # Checked first, by its own name: planned whole, a run without one failed any stage's spec (ingest's
        # too) with the publish spec's "registry: String should have at least 1 character".
        raise ConfigError("registry: a run that trains a model publishes it, so it needs a registry: set registry "
                          "(a URI), or work_uri (whose <work_uri>/registry is then the registry)")
    layout = DirectLayout(root)
    plan: dict[str, Spec] = {
        "ingest": blocks.ingest_spec(run.ingest, run.retriever, inputs=run.data, output=layout.ingest),
        "mine": blocks.mine_spec(run.mine, run.retriever, inputs=[layout.train_split], output=layout.mined,
                                 corpus=run.corpus, reranker=run.reranker),
    }
    # Ingest writes eval/ whenever it holds queries out; the pipeline validates on the same split.
    split = layout.eval_split if run.ingest.eval_fraction > 0 else ""
    models = {"retriever": run.retriever, "reranker": run.reranker}
    for kind, block in models.items():
        if block.train:
            plan[f"train-{kind}"] = blocks.train_spec(kind, block, train_data=layout.mined,
                                                      output=layout.model_output(kind), validation_data=split or None)
    # As `bgeflow run`'s pre-flight: a typo fails the first stage where this container can check it (an image
    # with FlagEmbedding, a base model it can read); else the training stage's launch refuses it.
    blocks.check_hyperparameters(run, models_elsewhere=True)
    blocks.check_negatives(run)
    # As kfp_steps.evaluate_step: a model not trained in the run is its base model for the retriever,
    # and no reranker column at all for the reranker (its gate rules dropped); with both the run's eval_data
    # and ingest's split, the spec scores the split beside it (ingest_split), so this one Job does both.
    plan["evaluate"] = blocks.evaluate_spec(
        run.evaluate, run.retriever, run.reranker, eval_data=run.eval_data, split=split,
        output=layout.evaluation, registry=registry,
        finetuned_retriever=layout.trained_model("retriever") if run.retriever.train else run.retriever.model,
        finetuned_reranker=layout.trained_model("reranker") if run.reranker.train else None)
    # As kfp_steps.publish_step, plus where the step's result goes (a KFP run keeps it in the artifact's metadata).
    for kind, block in models.items():
        if block.train:
            spec = blocks.publish_spec(run.publish, model=layout.model_output(kind), name=block.name,
                                       registry=registry, metrics=layout.metrics, lineage_inputs=[layout.train_split],
                                       kind=kind, base_model=block.model)
            plan[f"publish-{kind}"] = spec.model_copy(update={"report": layout.published(kind)})
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
