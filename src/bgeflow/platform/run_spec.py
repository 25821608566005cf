"""``RunSpec``: a whole retrain as one document, composed of the step specs' settings.

The same document is the ``bge-finetune`` pipeline's parameters (one per top-level key), the
chart's ``retrain`` values (the GitOps spec) and ``bgeflow run``'s config. Its blocks are the
steps' own settings (``ingest``, ``mine``, ``evaluate``, ``publish``) and the two models
(``retriever``, ``reranker``: base model, registry name, encoding, FlagEmbedding
hyperparameters over the seed recipe). A partial block merges over the defaults.

The functions at the bottom turn blocks into each step's spec; the KFP components, the local
pre-flight and the direct-mode Jobs call them, so a block means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import field_validator, model_validator

from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import FolderUri, KeyPath, Spec, UriList, absolute_local, deep_merge, nested, setting
from bgeflow.core.storage import SAFE_NAME_PATTERN
from bgeflow.platform.launcher.submit import LauncherBackend
from bgeflow.retrieval.spec import EncodingSettings, ScoringSettings
from bgeflow.steps.evaluation.gate import without_reranker
from bgeflow.steps.evaluation.spec import DEFAULT_GATE, INGEST_SPLIT_DIR, EvaluateSettings, EvaluateSpec
from bgeflow.steps.ingest.spec import IngestSettings, IngestSpec
from bgeflow.steps.mining.spec import MineSettings, MineSpec
from bgeflow.steps.publish.spec import PublishSettings, PublishSpec
from bgeflow.steps.training.spec import RunnerSettings, TrainSpec

#: A run drops mined candidates scoring above this share of the query's positive (NV-Retriever's TopK-PercPos):
#: likely false negatives. bench/quality.py measures what it buys against the same recipe without it.
RUN_MAX_SCORE_RATIO = 0.95
EXAMPLE_DATA = str(Path(__file__).resolve().parents[1] / "examples" / "train.jsonl.gz")
#: Overlay of ``bgeflow run``'s defaults: the example data on a 2-core CPU in minutes.
CPU_PROFILE = Path(__file__).resolve().parents[1] / "examples" / "cpu-run.yaml"


def _into_hyperparameters(key: str) -> KeyPath:
    return ("hyperparameters", key.strip().lstrip("-").replace("-", "_"))


class RetrieverRun(EncodingSettings, RunnerSettings):
    """The retriever of a run: base model, registry name, how it encodes, how it trains (and with which runner)."""

    model: str = setting("BAAI/bge-base-en-v1.5", "base retriever: hub name, s3:// URI, local path or bundled:minilm",
                         min_length=1)
    name: str = setting("bge-retriever", "its name in the registry", pattern=SAFE_NAME_PATTERN)
    train: bool = setting(True, "fine-tune it (false: evaluate and rerank with the base model)")
    distill: bool = setting(False, "knowledge distillation: mining scores every mined pair with a teacher "
                            "cross-encoder (mine.teacher.model, else the run's base reranker, reranker.model) and "
                            "the retriever trains on those scores (FlagEmbedding's knowledge_distillation)")
    validation_steps: int = setting(0, "score ingest's held-out split every N training steps (nDCG, recall, ...), "
                                    "export the best step's weights and plot the curve; 0: off", ge=0)
    hyperparameters: dict[str, Any] = setting(
        default_factory=dict, help="FlagEmbedding/TrainingArguments options over the seed recipe (learning_rate, "
        "num_train_epochs, train_group_size, temperature, fp16, ...); the token limits, instruction and "
        "normalisation come from this block")

    @classmethod
    def unknown_key(cls, key: str, value: Any, *, where: str) -> KeyPath | None:
        """Any other key is a hyperparameter (``retriever: {learning_rate: 2e-5}``), checked by name when the
        job is planned."""
        return _into_hyperparameters(key)


class RerankerRun(ScoringSettings, RunnerSettings):
    """The reranker of a run: base model, registry name, pair budget, how it trains (and with which runner)."""

    model: str = setting("BAAI/bge-reranker-base", "base reranker (a cross-encoder)", min_length=1)
    name: str = setting("bge-reranker", "its name in the registry", pattern=SAFE_NAME_PATTERN)
    train: bool = setting(True, "fine-tune it (false: no reranker is trained, evaluated or published, and the "
                          "gate's rerank.* rules are left out, as the evaluate report says)")
    hyperparameters: dict[str, Any] = setting(
        default_factory=dict, help="FlagEmbedding/TrainingArguments options over the seed recipe; the pair "
        "budget is max_len of this block")

    @classmethod
    def unknown_key(cls, key: str, value: Any, *, where: str) -> KeyPath | None:
        return _into_hyperparameters(key)


class TrainingSettings(Spec):
    """Where and how big the training jobs are."""

    nnodes: int = setting(1, "pods per training job (1 Master + nnodes-1 Workers)", gt=0)
    nproc_per_node: int = setting(1, "processes (GPUs) per pod", gt=0)
    timeout_s: int = setting(86_400, "wait this long for a training job before deleting it", gt=0, unit="s")
    backend: LauncherBackend = setting("pytorchjob", "pytorchjob: a Kubeflow Training Operator PyTorchJob "
                                       "(kubernetes: its older name); trainjob: a Kubeflow Trainer v2 TrainJob on the "
                                       "chart's bgeflow-torch runtime; auto: whichever of the two the cluster serves "
                                       "(Trainer v2 first); local: processes where the launcher runs (bgeflow run); "
                                       "container: Docker containers of the gpu image where the launcher runs, one "
                                       "per node (the Kubeflow SDK's container backend)")


class RunSpec(Spec):
    """A whole retrain: ingest → mine → train retriever and reranker → evaluate → gate → publish."""

    data: UriList = setting(help="raw training JSONL: files or prefixes (s3:// or local), comma-separated",
                            metavar="URI", min_length=1)
    corpus: UriList = setting(default_factory=list, help="your corpus, the pool hard negatives are mined from: "
                              "JSONL files or prefixes with a 'text' field per line (FlagEmbedding's candidate_pool), "
                              "comma-separated; empty: every pos and neg text of the training data", metavar="URI")
    eval_data: str = setting("", "your own held-out eval set: a folder or prefix with corpus.jsonl and queries.jsonl "
                             "(bgeflow's {id, text} / {id, text, relevant}, or BEIR's layout: corpus.jsonl with "
                             "_id/title/text, queries.jsonl with _id/text, qrels/test.tsv); the gate judges on it. "
                             "While ingest.eval_fraction > 0, the evaluate step also scores ingest's split "
                             "(its ingest_split: reported under evaluate's " + INGEST_SPLIT_DIR + "/, never gated); "
                             "set that to 0 to train on every record instead", metavar="URI")
    work_uri: str = setting("", "s3://bucket/prefix under which every step writes (needed on a cluster: the "
                            "training pods write there); empty: the steps' local artifact folders", metavar="URI")
    registry: FolderUri = setting("", "registry root (s3:// or a folder); empty: <work_uri>/registry", metavar="URI")
    retriever: RetrieverRun = nested(RetrieverRun, "the retriever", prefix="retriever-")
    reranker: RerankerRun = nested(RerankerRun, "the reranker", prefix="reranker-")
    ingest: IngestSettings = nested(IngestSettings, "ingest", prefix="ingest-")
    mine: MineSettings = nested(MineSettings, "hard-negative mining", prefix="mine-",
                                default_factory=lambda: MineSettings(max_score_ratio=RUN_MAX_SCORE_RATIO))
    training: TrainingSettings = nested(TrainingSettings, "training jobs", prefix="training-")
    evaluate: EvaluateSettings = nested(EvaluateSettings, "evaluation and the quality gate", prefix="evaluate-",
                                        default_factory=lambda: EvaluateSettings(gate=DEFAULT_GATE))
    publish: PublishSettings = nested(PublishSettings, "publishing", prefix="publish-",
                                      default_factory=lambda: PublishSettings(champion="if-gate-passed"))

    @model_validator(mode="before")
    @classmethod
    def _partial_blocks_keep_the_run_defaults(cls, data: Any) -> Any:
        """A partial block merges over the run's default of that block (the gate, the champion policy, the
        mining filter), not over the step's bare defaults: ``evaluate: {rerank_top_k: 5}`` keeps the gate."""
        if not isinstance(data, Mapping):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            if isinstance(out.get(name), Mapping) and info.default_factory is not None:
                default = info.get_default(call_default_factory=True)
                if isinstance(default, Spec):
                    out[name] = deep_merge(default.model_dump(mode="json", exclude_defaults=True), out[name])
        return out

    def blocks(self) -> dict[str, Any]:
        """Every top-level key, JSON-ready: the pipeline's run arguments.

        Unset optional settings are left out (KFP parameters cannot hold null; each is the default).
        """
        document = self.model_dump(mode="json", exclude_none=True)
        document["data"] = ",".join(self.data)
        document["corpus"] = ",".join(self.corpus)
        return document


class LocalRunSpec(RunSpec):
    """``bgeflow run``: a ``RunSpec`` plus where this machine keeps the run."""

    output: FolderUri = setting("bgeflow-output", "local folder of the run (outputs, logs, a registry by default)",
                          metavar="DIR", min_length=1)
    max_records: int = setting(0, "records sampled (seeded) from data before the pipeline runs; 0: all (the CPU "
                               "profile samples the demo's example data)", ge=0)
    pipeline: str = setting("", "the compiled pipeline YAML; empty: this checkout's or the installed package's",
                            metavar="FILE")

    @field_validator("output")
    @classmethod
    def _local(cls, value: str) -> str:
        if "://" in value and not value.startswith("file://"):
            raise ValueError(f"{value!r} must be a local folder (the run's workspace); the registry may be s3://")
        return value

    def pipeline_arguments(self) -> dict[str, Any]:
        """The run's blocks without the keys only this machine uses; the registry defaults to <output>/registry."""
        arguments = {k: v for k, v in self.blocks().items() if k not in ("output", "max_records", "pipeline")}
        # Absolute: the registry is written into model cards, the run summary and `models download` commands,
        # and kfp.local's tasks need not run in this folder.
        arguments["registry"] = absolute_local(self.registry or str(Path(self.output.removeprefix("file://"))
                                                                     / "registry"))
        return arguments


def run_defaults(name: str) -> dict[str, Any]:
    """The defaults of the run block ``name`` in a pipeline run (unset optional settings left out)."""
    return RunSpec.model_fields[name].get_default(call_default_factory=True).model_dump(mode="json", exclude_none=True)


# --------------------------------------------------------------------------- blocks → step specs


def ingest_spec(ingest: IngestSettings, retriever: RetrieverRun, *, inputs: list[str], output: str) -> IngestSpec:
    """The ingest step of a run (its truncation report measures against the retriever's limits)."""
    return IngestSpec.build(ingest.to_dict(), {"inputs": inputs, "output": output, "limits": {
        "query_max_len": retriever.query_max_len, "passage_max_len": retriever.passage_max_len}}, where="ingest")


def _encoding(retriever: RetrieverRun) -> dict[str, Any]:
    return {name: getattr(retriever, name) for name in EncodingSettings.model_fields}


def mine_spec(mine: MineSettings, retriever: RetrieverRun, *, inputs: list[str], output: str,
              corpus: list[str] | None = None, reranker: RerankerRun | None = None) -> MineSpec:
    """The mining step of a run: the base retriever, encoding as the run's retriever block says, negatives
    drawn from ``corpus`` when the run names one (else from the training data's own texts). A distilled
    retriever needs teacher scores: the teacher is ``mine.teacher.model``, else the run's base reranker.

    Raises:
        ConfigError: ``retriever.distill`` with neither a teacher nor a reranker block to take one from.
    """
    document: dict[str, Any] = {"model": retriever.model, "inputs": inputs, "output": output,
                                "encoding": _encoding(retriever), "candidate_pool": corpus or None}
    if retriever.distill and not mine.teacher.model:
        if reranker is None:
            raise ConfigError("retriever.distill needs a teacher: set mine.teacher.model")
        document["teacher"] = {"model": reranker.model, "max_len": reranker.max_len}
    return MineSpec.build(mine.to_dict(), document, where="mine")


#: Options of a run's model block that are runner hyperparameters too (block name → runner name).
_SHARED = {"retriever": {"query_max_len": "query_max_len", "passage_max_len": "passage_max_len",
                         "query_instruction": "query_instruction_for_retrieval", "normalize": "normalize_embeddings"},
           "reranker": {"max_len": "max_len"}}


def train_spec(kind: str, block: RetrieverRun | RerankerRun, *, train_data: str, output: str,
               validation_data: str | None = None) -> TrainSpec:
    """The training job of a run's model block (``validation_data``: the eval set scored during training
    when the block asks for ``validation_steps``).

    Raises:
        ConfigError: ``hyperparameters`` repeats an option the block declares itself (it drives
            mining and evaluation too, so it has one place), or the job's shape.
    """
    # An unset block option (normalize: as the model says) leaves the seed recipe's value.
    shared = {runner: value for name, runner in _SHARED[kind].items() if (value := getattr(block, name)) is not None}
    clash = sorted(set(_SHARED[kind].values()) & set(block.hyperparameters))
    shape = sorted({"nnodes", "nproc_per_node", "node_rank", "local_nodes"} & set(block.hyperparameters))
    if clash or shape:
        names = {v: k for k, v in _SHARED[kind].items()}
        fix = [f"{kind}.{names[c]}" for c in clash] + [f"training.{s}" for s in shape]
        raise ConfigError(f"{kind}.hyperparameters: {', '.join(clash + shape)} have their own settings: "
                          f"set {', '.join(fix)} instead")
    hyperparameters = dict(block.hyperparameters)
    if isinstance(block, RetrieverRun) and block.distill:  # the mined pairs carry the teacher's scores
        hyperparameters.setdefault("knowledge_distillation", True)
    document: dict[str, Any] = {"kind": kind, "model": block.model, "runner": block.runner, "train_data": train_data,
                                "output": output, **hyperparameters, "hyperparameters": shared}
    if isinstance(block, RetrieverRun):
        document["pooling"] = block.pooling
        if block.validation_steps and validation_data:
            document["validation"] = {"eval_data": validation_data, "steps": block.validation_steps}
    return TrainSpec.build(document, where=f"{kind}")


def evaluate_spec(evaluate: EvaluateSettings, retriever: RetrieverRun, reranker: RerankerRun, *, eval_data: str,
                  split: str, output: str, finetuned_retriever: str, finetuned_reranker: str | None,
                  registry: str) -> EvaluateSpec:
    """The evaluation step of a run: base vs fine-tuned (vs the registry's champions).

    The gate judges the run's own ``eval_data``, else ingest's ``split`` (``eval_set``). With both,
    the split is the step's ``ingest_split``: scored in the same call, reported, never gated. So
    every runner (the KFP task, ``bgeflow run``, direct mode's one evaluate Job) scores it alike.

    Without a reranker to evaluate, the gate's ``rerank.`` rules (the default gate has one) do not apply:
    they judge a model this run does not produce. The spec's ``gate_note`` names them and why, so the
    evaluate report (and the run's summary, which shows its warnings) says so.

    Args:
        evaluate: the run's ``evaluate`` block.
        retriever: the run's ``retriever`` block (base model, encoding, registry name).
        reranker: the run's ``reranker`` block (base model, pair budget, registry name).
        eval_data: the run's own eval set ("" when it names none).
        split: ingest's held-out split ("" when ingest holds no query out).
        output: where the step writes.
        finetuned_retriever: the fine-tuned retriever (the base model when the run does not train it).
        finetuned_reranker: the fine-tuned reranker; None: no reranker is evaluated.
        registry: where champions are looked up ("" for none).

    Raises:
        ConfigError: neither ``eval_data`` nor ``split``, or a setting the step refuses.
    """
    settings = evaluate.to_dict()
    if not finetuned_reranker:
        settings["gate"] = without_reranker(evaluate.gate)
        if dropped := [rule.text for rule in evaluate.rules if rule.is_rerank]:
            # Said in the evaluate report (and so the run's summary), which shows the gate without them.
            settings["gate_note"] = (f"gate rule(s) {', '.join(dropped)} left out: this run trains no reranker "
                                     "(reranker.train false), so none is evaluated")
    document: dict[str, Any] = {
        **settings, "output": output, "eval_data": eval_set(eval_data, split),
        "ingest_split": split if eval_data and split else None, "retriever": finetuned_retriever,
        "base_retriever": retriever.model, "encoding": {**_encoding(retriever)},
        "rerank": {"max_len": reranker.max_len, "batch_size": reranker.batch_size},
    }
    if finetuned_reranker:
        document.update(reranker=finetuned_reranker, base_reranker=reranker.model)
    if registry:
        document.update(registry=registry, name=retriever.name)
        if finetuned_reranker:
            document["reranker_name"] = reranker.name
    return EvaluateSpec.build(document, where="evaluate")


def eval_set(eval_data: str, split: str) -> str:
    """The eval set a run's gate judges on: its own ``eval_data``, else ingest's held-out ``split``.

    Args:
        eval_data: the run's ``eval_data`` ("" when it names none).
        split: ingest's held-out split ("" when ingest holds no query out).

    Returns:
        The URI ``evaluate_spec`` gets as ``eval_data``.

    Raises:
        ConfigError: neither.
    """
    if not eval_data and not split:
        raise ConfigError("nothing to evaluate on: ingest held out no query (ingest.eval_fraction 0) and the run "
                          "names no eval_data")
    return eval_data or split


def publish_spec(publish: PublishSettings, *, model: str, name: str, registry: str, metrics: str,
                 lineage_inputs: list[str], kind: str = "auto", base_model: str | None = None) -> PublishSpec:
    """The publish step of a run for one model.

    A run never publishes a model whose own gate rules failed in ``metrics``: the step itself decides
    (``publish_if_gate_failed`` pinned False, ``bgeflow publish``'s default), so the pipeline and the
    chart's direct mode decide alike.
    """
    return PublishSpec.build(publish.to_dict(), {"model": model, "name": name, "registry": registry,
                                                 "metrics": metrics, "lineage_inputs": lineage_inputs,
                                                 "kind": kind, "base_model": base_model,
                                                 "publish_if_gate_failed": False}, where="publish")


def check_hyperparameters(run: RunSpec, *, models_elsewhere: bool = False) -> dict[str, dict[str, Any]]:
    """Each trained model's hyperparameters as its launcher and pods will check them: every name
    against FlagEmbedding's dataclasses of the runner its base model gets, and the values it can train
    with. ``bgeflow run``'s pre-flight and direct mode's plan call this, so a typo fails before any step.

    Args:
        run: the retrain spec.
        models_elsewhere: the training runs elsewhere, in another image (direct mode's stages other than
            training run the ops image, which holds neither FlagEmbedding nor a ``bundled:`` model nor
            the pods' paths): check only where this container can, i.e. with FlagEmbedding importable
            and for base models it can read; ``bgeflow launch`` checks the rest, with the training
            image's FlagEmbedding and the model at hand, before anything is submitted.

    Returns:
        Model kind → its resolved runner options (only the kinds the run trains and could check).

    Raises:
        ConfigError: an unknown option (with the close names), one bgeflow sets itself, or a bad value.
        NotFoundError: a local base model path with no model in it (unless ``models_elsewhere``).
    """
    from bgeflow.core.errors import BgeflowError
    from bgeflow.core.models import inspectable_model
    from bgeflow.steps.training.pod import resolved_options
    from bgeflow.steps.training.runners import options_checkable

    checked: dict[str, dict[str, Any]] = {}
    if models_elsewhere and not options_checkable():
        return checked  # the names are FlagEmbedding's dataclass fields: nothing to check them against here
    for kind, block in (("retriever", run.retriever), ("reranker", run.reranker)):
        if not block.train:
            continue
        if models_elsewhere:
            try:
                inspectable_model(block.model)
            except BgeflowError:
                continue
        checked[kind] = resolved_options(train_spec(kind, block, train_data="-", output="-"))
    return checked


def check_negatives(run: RunSpec) -> None:
    """Each trained model's ``train_group_size`` against the negatives mining will give it.

    Raises:
        ConfigError: a group needs more negatives than ``mine.negative_number`` (and repeats are off).
    """
    for kind, block in (("retriever", run.retriever), ("reranker", run.reranker)):
        if not block.train:
            continue
        spec = train_spec(kind, block, train_data="-", output="-")
        group = int(spec.resolved_hyperparameters()["train_group_size"])
        if group - 1 > run.mine.negative_number and not spec.allow_repeated_negatives:
            raise ConfigError(
                f"{kind}: train_group_size {group} needs {group - 1} negatives per record, but mining gives "
                f"mine.negative_number {run.mine.negative_number}: raise mine.negative_number to {group - 1}, "
                f"lower {kind}.hyperparameters.train_group_size to {run.mine.negative_number + 1}, or set "
                f"{kind}.hyperparameters.allow_repeated_negatives: true")
