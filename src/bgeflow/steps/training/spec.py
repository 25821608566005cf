"""``TrainSpec``: a fine-tuning run, as a document the launcher writes and the pods read.

bgeflow declares only what it manages itself: where the base model, the data and the output are,
the pooling rule, the job's shape, scratch and resume. Every FlagEmbedding and transformers
``TrainingArguments`` option is a key of ``hyperparameters`` under its own name, over the seed
recipe (``bgeflow.steps.training.recipes``), and is checked and parsed by FlagEmbedding's own
argument dataclasses (``HfArgumentParser``) when the run starts.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import field_validator, model_validator

from bgeflow.core.errors import ConfigError
from bgeflow.core.models import inspectable_model
from bgeflow.core.spec import FolderUri, KeyPath, Spec, UriList, nested, setting
from bgeflow.retrieval.pooling import Pooling
from bgeflow.steps.training import recipes
from bgeflow.steps.training.runners import RUNNERS, Runner, RunnerChoice, select_runner
from bgeflow.steps.training.validation import ValidationSettings

Kind = Literal["retriever", "reranker"]
KINDS: tuple[str, ...] = get_args(Kind)

#: Runner options bgeflow sets itself from the spec and the job (a user value would be overwritten).
MANAGED = frozenset({
    "output_dir", "model_name_or_path", "train_data", "resume_from_checkpoint", "overwrite_output_dir",
    "local_rank", "cache_path", "sentence_pooling_method",
})
#: Spellings of FlagEmbedding's earlier README that its 1.4 runners renamed.
LEGACY_OPTIONS = {"normlized": "normalize_embeddings", "normalized": "normalize_embeddings"}


class DistributedSettings(Spec):
    """The job's shape. Unset: from the Kubeflow Training Operator's env (PET_*, MASTER_*), else one process."""

    nnodes: int | None = setting(None, "nodes (pods) in the job", gt=0)
    node_rank: int | None = setting(None, "this node's rank", ge=0)
    nproc_per_node: int | None = setting(None, "processes per node (default: the GPUs here, else 1)", gt=0)
    master_addr: str | None = setting(None, "address of node 0")
    master_port: int | None = setting(None, "rendezvous port on node 0", gt=0, le=65535)
    local_nodes: int | None = setting(None, "run N pods on this machine, each with the operator's env (multi-node "
                                      "without a cluster)", gt=0, metavar="N")

    @model_validator(mode="after")
    def _consistent(self) -> DistributedSettings:
        if self.local_nodes is not None and (self.nnodes is not None or self.node_rank is not None):
            raise ValueError("local_nodes starts every node here; it excludes nnodes and node_rank")
        if self.nnodes is not None and self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"node_rank {self.node_rank} must be below nnodes {self.nnodes}")
        return self

    def job_shape_only(self) -> DistributedSettings:
        """Without this process's place in the job (what every pod of a job shares)."""
        return DistributedSettings()


class RunnerSettings(Spec):
    """Which FlagEmbedding runner trains the model (declared once: training specs and a run's model blocks)."""

    runner: RunnerChoice = setting(
        "auto", "FlagEmbedding runner; auto: from the base model (bge-m3 heads: encoder-m3, decoder-only LM: "
        "decoder-base / reranker-decoder, layerwise config: reranker-layerwise, else encoder-base / "
        "reranker-encoder); decoder-icl only when named")


class TrainSpec(RunnerSettings):
    """A fine-tuning run of a retriever (bi-encoder) or reranker (cross-encoder) with FlagEmbedding."""

    kind: Kind = setting(help="retriever (bi-encoder) or reranker (cross-encoder)")
    model: str = setting(help="base model: hub name, local path, s3:// URI or bundled:minilm",
                         aliases=("--model-name-or-path",), metavar="MODEL", min_length=1)
    train_data: UriList = setting(help="training JSONL (files, or prefixes of .jsonl/.json files, gzipped or not; "
                                  "s3:// or local); fetched to each node", metavar="URI", min_length=1)
    output: FolderUri = setting(help="where model/, checkpoints/ and the summary go (s3:// or local)",
                          aliases=("--output-dir",), metavar="URI", min_length=1)
    pooling: Pooling = setting("auto", "retriever: sentence pooling; auto: the base model's sentence-transformers "
                               "config, else its family's convention", aliases=("--sentence-pooling-method",))
    use_inbatch_neg: bool = setting(True, "retriever: use the other queries' passages in the batch as negatives too "
                                    "(an option of FlagEmbedding's README; FlagEmbedding 1.4 always does)")
    allow_repeated_negatives: bool = setting(False, "let records with fewer than train_group_size-1 negatives repeat "
                                             "them (FlagEmbedding samples with replacement); off: such data fails "
                                             "before launch")
    work_dir: str | None = setting(None, "local scratch (default: $BGEFLOW_WORK_DIR, else the temp dir)",
                                   metavar="DIR")
    distributed: DistributedSettings = nested(DistributedSettings, "distributed")
    validation: ValidationSettings = nested(ValidationSettings, "retrieval metrics on a held-out set during training",
                                            prefix="validation-")
    hyperparameters: dict[str, Any] = setting(
        default_factory=dict, hidden=True,
        help="FlagEmbedding and transformers TrainingArguments options by name (learning_rate, fp16, "
        "lr_scheduler_type, report_to, ...), over the kind's recipe from FlagEmbedding's README")

    @classmethod
    def unknown_key(cls, key: str, value: Any, *, where: str) -> KeyPath | None:
        """Any other key is a runner option: files and mappings may list them flat, as FlagEmbedding's do."""
        return ("hyperparameters", key.strip().lstrip("-").replace("-", "_"))

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _option_names(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out = {}
        for key, item in value.items():
            name = str(key).strip().lstrip("-").replace("-", "_")
            out[LEGACY_OPTIONS.get(name, name)] = item
        return out

    @model_validator(mode="after")
    def _checks(self) -> TrainSpec:
        managed = sorted(MANAGED & set(self.hyperparameters))
        if managed:
            raise ValueError(f"hyperparameters {', '.join(managed)}: set by bgeflow from model, train_data, "
                             "output and pooling")
        if self.kind == "reranker":
            changed = [name for name in ("pooling", "use_inbatch_neg") if getattr(self, name) != _default(name)]
            if self.validation.enabled:
                changed.append("validation")
            if changed:
                raise ValueError(f"{', '.join(changed)}: retriever options, not for a reranker")
        if self.runner != "auto" and RUNNERS[self.runner].kind != self.kind:
            raise ValueError(f"runner {self.runner} trains a {RUNNERS[self.runner].kind}, not a {self.kind}")
        self.resolved_hyperparameters()  # the reranker's length budget
        return self

    def chosen_runner(self, model_path: str | None = None) -> Runner:
        """The runner this spec trains with: ``runner`` by name, or the one for the base model's family.

        ``model_path``: the base model already fetched (a pod); else the model is read where it lies,
        nothing downloaded (an ``s3://`` model gets the kind's encoder runner here; its pods choose again).

        Raises:
            ConfigError: ``runner`` does not train this ``kind``, or an unknown ``bundled:`` name.
            NotFoundError: a local model path with no model in it.
        """
        return select_runner(self.kind, self.runner, model_path or inspectable_model(self.model))

    def resolved_hyperparameters(self, runner: str | None = None) -> dict[str, Any]:
        """The seed recipe of ``kind`` (and of ``runner``, when given) with ``hyperparameters`` over it.

        A reranker's ``max_len`` (the seed's pair budget) sets ``query_max_len`` (a quarter) and
        ``passage_max_len`` (the rest) unless those are given: FlagEmbedding 1.4 truncates pairs
        to their sum and ignores ``max_len`` itself.
        """
        options = {**recipes.SEED[self.kind], **recipes.RUNNER_SEED.get(runner or "", {}), **self.hyperparameters}
        if self.kind == "reranker":
            budget = int(options["max_len"])
            options.setdefault("query_max_len", budget // 4)
            options.setdefault("passage_max_len", budget - options["query_max_len"])
            if options["query_max_len"] + options["passage_max_len"] > budget:
                raise ConfigError(f"reranker: query_max_len {options['query_max_len']} + passage_max_len "
                                 f"{options['passage_max_len']} exceed max_len {budget}")
        return options


def _default(name: str) -> Any:
    return TrainSpec.model_fields[name].get_default(call_default_factory=True)
