"""What ``bgeflow train`` does: one typed config, from YAML, CLI flags or code.

Every field is a CLI flag (``--learning-rate``, also ``--learning_rate``); fields also carry the
spellings of FlagEmbedding's old README (``--normlized``, ``--output_dir``, ...) so its commands
run unchanged. ``None`` means "the kind's seed default" for the hyperparameters below and "from the
pod's environment" for the distributed fields; the kind's defaults are filled in at construction
so a config always states the values it trains with.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

Kind = Literal["retriever", "reranker"]
Pooling = Literal["cls", "mean", "last_token"]
KINDS: tuple[str, ...] = get_args(Kind)
POOLINGS: tuple[str, ...] = get_args(Pooling)

#: The seed README's hyperparameters per kind (FlagEmbedding's old retriever and reranker recipes).
SEED_DEFAULTS: dict[str, dict[str, Any]] = {
    "retriever": {
        "learning_rate": 1e-5, "train_group_size": 2, "gradient_accumulation_steps": 1, "weight_decay": 0.0,
        "query_max_len": 64, "passage_max_len": 256,
    },
    "reranker": {
        "learning_rate": 6e-5, "train_group_size": 16, "gradient_accumulation_steps": 4, "weight_decay": 0.01,
    },
}

#: FlagEmbedding/TrainingArguments options bgeflow sets itself; ``extra_args`` may not repeat them.
MANAGED_RUNNER_ARGS = frozenset({
    "output_dir", "model_name_or_path", "train_data", "resume_from_checkpoint", "overwrite_output_dir",
    "local_rank", "use_cpu", "ddp_backend", "sentence_pooling_method", "normlized", "max_len", "cache_path",
})


def _opt(help_: str, *aliases: str, retriever: bool = False, reranker: bool = False,
         distributed: bool = False) -> dict[str, Any]:
    return {"help": help_, "aliases": aliases, "retriever": retriever, "reranker": reranker,
            "distributed": distributed}


@dataclass
class TrainConfig:
    """A fine-tuning run of a retriever (bi-encoder) or reranker (cross-encoder) with FlagEmbedding."""

    kind: Kind
    model: str = field(metadata=_opt("base model: hub name, local path or bundled:minilm", "--model-name-or-path"))
    train_data: str = field(metadata=_opt(
        "training JSONL (.jsonl/.jsonl.gz file or prefix of them, s3:// or local); fetched to each node"))
    output: str = field(metadata=_opt("where model/, checkpoints/ and the summary go (s3:// or local)",
                                      "--output-dir"))

    # Optimisation. None: the kind's seed default (SEED_DEFAULTS).
    learning_rate: float | None = field(default=None, metadata=_opt("peak learning rate (retriever 1e-5, reranker 6e-5)"))
    num_train_epochs: float = field(default=5.0, metadata=_opt("epochs (seed: 5)"))
    max_steps: int = field(default=-1, metadata=_opt("stop after this many optimizer steps (-1: epochs decide)"))
    per_device_train_batch_size: int = field(default=4, metadata=_opt("queries per process per step (seed: 4)"))
    gradient_accumulation_steps: int | None = field(default=None, metadata=_opt("retriever 1, reranker 4"))
    weight_decay: float | None = field(default=None, metadata=_opt("retriever 0.0, reranker 0.01"))
    warmup_ratio: float = field(default=0.0, metadata=_opt("share of steps with linear warm-up"))
    train_group_size: int | None = field(default=None, metadata=_opt(
        "passages per query: 1 positive + (N-1) negatives (retriever 2, reranker 16)"))
    dataloader_drop_last: bool = field(default=True, metadata=_opt("drop the last incomplete batch (seed: True)"))
    dataloader_num_workers: int = field(default=0, metadata=_opt("data loader worker processes"))
    seed: int = field(default=42, metadata=_opt("random seed"))
    logging_steps: int = field(default=10, metadata=_opt("log the loss every N steps (seed: 10)"))
    save_steps: int = field(default=500, metadata=_opt("checkpoint every N steps (each is uploaded to --output)"))
    save_total_limit: int | None = field(default=None, metadata=_opt(
        "keep only the newest N checkpoints, locally and under --output"))
    allow_repeated_negatives: bool = field(default=False, metadata=_opt(
        "let records with fewer than train_group_size-1 negatives repeat them (FlagEmbedding samples "
        "with replacement); off: such data fails before launch"))

    # Precision and memory; these pass through to transformers.
    fp16: bool = field(default=False, metadata=_opt("fp16 mixed precision (CUDA GPUs only)"))
    bf16: bool = field(default=False, metadata=_opt("bf16 mixed precision"))
    gradient_checkpointing: bool = field(default=False, metadata=_opt("trade compute for activation memory"))
    deepspeed: str | None = field(default=None, metadata=_opt("DeepSpeed config JSON (path or s3:// URI)"))
    use_cpu: bool | None = field(default=None, metadata=_opt(
        "train on CPU with gloo (default: CPU only when no CUDA device is visible)"))

    # Lengths. Retriever: 64/256. Reranker: max_len is the pair budget, split query 1/4, passage 3/4.
    query_max_len: int | None = field(default=None, metadata=_opt("query token limit (retriever 64)"))
    passage_max_len: int | None = field(default=None, metadata=_opt("passage token limit (retriever 256)"))
    max_len: int = field(default=512, metadata=_opt("reranker: query+passage token limit (seed: 512)", reranker=True))

    # Retriever loss and embedding.
    temperature: float = field(default=0.02, metadata=_opt("softmax temperature of the contrastive loss",
                                                           retriever=True))
    negatives_cross_device: bool | None = field(default=None, metadata=_opt(
        "share in-batch negatives across all processes (default: on when there are several)", retriever=True))
    use_inbatch_neg: bool = field(default=True, metadata=_opt(
        "use the other queries' passages in the batch as negatives too", retriever=True))
    normalize_embeddings: bool = field(default=True, metadata=_opt(
        "L2-normalise embeddings (cosine similarity)", "--normlized", "--normalized", retriever=True))
    pooling: Pooling | None = field(default=None, metadata=_opt(
        "sentence pooling: cls (BGE), mean (MiniLM, e5) or last_token; default: the base model's "
        "sentence-transformers pooling, else cls", "--sentence-pooling-method", retriever=True))
    query_instruction_for_retrieval: str | None = field(default=None, metadata=_opt(
        "instruction prepended to every query (also saved as the model's 'query' prompt)", retriever=True))
    query_instruction_format: str = field(default="{}{}", metadata=_opt(
        "how instruction and query are joined", retriever=True))
    knowledge_distillation: bool = field(default=False, metadata=_opt(
        "learn from pos_scores/neg_scores of every record (teacher scores)"))

    # Distributed. None: from the Kubeflow Training Operator's env (PET_*, MASTER_*), else one process.
    nnodes: int | None = field(default=None, metadata=_opt("nodes (pods) in the job", distributed=True))
    node_rank: int | None = field(default=None, metadata=_opt("this node's rank", distributed=True))
    nproc_per_node: int | None = field(default=None, metadata=_opt(
        "processes per node (default: GPUs here, else 1)", distributed=True))
    master_addr: str | None = field(default=None, metadata=_opt("address of node 0", distributed=True))
    master_port: int | None = field(default=None, metadata=_opt("rendezvous port on node 0", distributed=True))
    local_nodes: int | None = field(default=None, metadata=_opt(
        "run N pods on this machine, each with the operator's env (multi-node without a cluster)",
        distributed=True))
    work_dir: str | None = field(default=None, metadata=_opt(
        "local scratch (default: $BGEFLOW_WORK_DIR, else the temp dir); one subdirectory per node"))

    #: More FlagEmbedding/transformers options, as command-line tokens (``--KEY VALUE``).
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("model", "train_data", "output"):
            if not getattr(self, name):
                raise ValueError(f"train {self.kind} needs --{name.replace('_', '-')}")
        for name, value in SEED_DEFAULTS[self.kind].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.kind == "reranker":
            self._fill_reranker_lengths()
        self._check_ranges()
        self._check_combinations()
        self.extra_args = [str(a) for a in self.extra_args]
        check_extra_args(self.extra_args)

    def _fill_reranker_lengths(self) -> None:
        if self.query_max_len is None:
            self.query_max_len = self.max_len // 4
        if self.passage_max_len is None:
            self.passage_max_len = self.max_len - self.query_max_len
        if self.query_max_len + self.passage_max_len > self.max_len:
            raise ValueError(
                f"reranker: --query-max-len {self.query_max_len} + --passage-max-len {self.passage_max_len} "
                f"exceed --max-len {self.max_len}; FlagEmbedding truncates each pair to their sum")

    def _check_ranges(self) -> None:
        positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps",
                    "query_max_len", "passage_max_len", "max_len")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("nnodes", "nproc_per_node", "local_nodes", "save_total_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.node_rank is not None and self.node_rank < 0:
            raise ValueError(f"--node-rank must be >= 0, got {self.node_rank}")
        if self.learning_rate <= 0 or self.temperature <= 0:
            raise ValueError("--learning-rate and --temperature must be positive")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio < 1 or self.dataloader_num_workers < 0:
            raise ValueError("--weight-decay >= 0, 0 <= --warmup-ratio < 1 and --dataloader-num-workers >= 0")
        if self.max_steps == 0 or self.max_steps < -1 or (self.max_steps == -1 and self.num_train_epochs <= 0):
            raise ValueError("set --max-steps > 0, or --max-steps -1 with --num-train-epochs > 0")
        minimum_group = 2 if self.kind == "reranker" else 1
        if self.train_group_size < minimum_group:
            raise ValueError(f"{self.kind}: --train-group-size must be >= {minimum_group} (1 positive + negatives), "
                             f"got {self.train_group_size}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ValueError(f"--pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")

    def _check_combinations(self) -> None:
        if self.fp16 and self.bf16:
            raise ValueError("--fp16 and --bf16 exclude each other: pick one")
        if self.use_cpu and self.fp16:
            raise ValueError("--fp16 needs a CUDA GPU and --use-cpu was given: drop --fp16 (or use --bf16)")
        if self.use_cpu and self.deepspeed:
            raise ValueError("--deepspeed needs CUDA GPUs and --use-cpu was given: drop --deepspeed")
        if self.negatives_cross_device and not self.use_inbatch_neg:
            raise ValueError("--negatives-cross-device shares in-batch negatives across processes, but "
                             "--use-inbatch-neg False turns in-batch negatives off: drop one of them")
        if self.local_nodes is not None and (self.nnodes is not None or self.node_rank is not None):
            raise ValueError("--local-nodes starts every node here; it excludes --nnodes and --node-rank")
        if self.nnodes is not None and self.node_rank is not None and self.node_rank >= self.nnodes:
            raise ValueError(f"--node-rank {self.node_rank} must be below --nnodes {self.nnodes}")
        if self.kind == "reranker":
            changed = [f.name for f in dataclasses.fields(self)
                       if f.metadata.get("retriever") and getattr(self, f.name) != _default(f)]
            if changed:
                raise ValueError(f"{', '.join('--' + n.replace('_', '-') for n in changed)}: retriever only; "
                                 "for reranker options FlagEmbedding has, use --extra-arg KEY=VALUE")
        elif self.max_len != _default(_field("max_len")):
            raise ValueError("--max-len is a reranker option; the retriever has --query-max-len and --passage-max-len")

    # ------------------------------------------------------------------ loading and round-tripping

    @classmethod
    def from_yaml(cls, source: str | Path | dict[str, Any], **overrides: Any) -> TrainConfig:
        """Build from a YAML file (local path or URI) or an already-parsed mapping; ``overrides`` win."""
        if isinstance(source, dict):
            data = dict(source)
        else:
            from bgeflow.core.config_file import load_mapping

            data = load_mapping(str(source), "TrainConfig fields")
        data = {_field_name(key, where=str(source) if not isinstance(source, dict) else "config"): value
                for key, value in data.items()}
        for key, value in overrides.items():
            if key == "kind" and data.get("kind") not in (None, value):
                raise ValueError(f"the config says kind {data['kind']!r} but {value!r} was asked for")
            data[key] = value
        if "kind" not in data:
            raise ValueError("the config needs kind: retriever or reranker")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def to_cli_args(self) -> list[str]:
        """Flags that make ``bgeflow train <kind>`` build this same config.

        Only fields that differ from their defaults are written, so distributed values left to
        the pod's environment (the PyTorchJob case) stay out of the command.
        """
        args: list[str] = []
        for f in dataclasses.fields(self):
            if f.name in ("kind", "extra_args"):
                continue
            value = getattr(self, f.name)
            if value == _default(f):
                continue
            args += [cli_flag(f.name), format_value(value)]
        if self.extra_args:
            args += ["--runner-args", *self.extra_args]
        return args


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def format_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def parse_bool(text: str | bool) -> bool:
    """``True/False``, ``yes/no``, ``1/0`` (how the seed commands spell booleans)."""
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError(f"expected a boolean (True/False), got {text!r}")


def check_extra_args(tokens: list[str]) -> None:
    """Refuse extra runner options that bgeflow sets itself or that a config field already covers."""
    covered = {f.name for f in dataclasses.fields(TrainConfig)} | MANAGED_RUNNER_ARGS
    for token in tokens:
        if not token.startswith("--"):
            continue
        key = token[2:].split("=", 1)[0].replace("-", "_")
        if key in MANAGED_RUNNER_ARGS:
            raise ValueError(f"extra argument {token!r}: bgeflow sets --{key} itself")
        if key in covered:
            raise ValueError(f"extra argument {token!r}: use bgeflow's {cli_flag(key)} instead")


def extra_arg_tokens(pairs: list[str]) -> list[str]:
    """``["gradient_checkpointing_kwargs={...}", ...]`` → ``["--gradient_checkpointing_kwargs", "{...}"]``."""
    tokens: list[str] = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key.lstrip("-")):
            raise ValueError(f"--extra-arg expects KEY=VALUE, got {pair!r}")
        tokens += ["--" + key.lstrip("-"), value]
    return tokens


def _field(name: str) -> dataclasses.Field[Any]:
    return next(f for f in dataclasses.fields(TrainConfig) if f.name == name)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _field_name(key: str, *, where: str) -> str:
    name = str(key).replace("-", "_")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if name in known:
        return name
    for f in dataclasses.fields(TrainConfig):
        if any(alias.lstrip("-").replace("-", "_") == name for alias in f.metadata.get("aliases", ())):
            return f.name
    raise ValueError(f"{where}: unknown train option {key!r}; known: {', '.join(sorted(known))}")
