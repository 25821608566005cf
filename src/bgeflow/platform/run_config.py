"""``bgeflow run``'s config: the whole retrain on one machine, from a YAML file or flags.

The defaults finish on a 2-core CPU machine in minutes: the shipped example data, the bundled
MiniLM (all-MiniLM-L6-v2) as base for both retriever and reranker, short sequences, one epoch,
two local training processes. On a machine with internet and a GPU the usual bases are
``BAAI/bge-base-en-v1.5`` and ``BAAI/bge-reranker-base`` with the pipeline's seed defaults.

Every field maps onto a parameter of the ``bge-finetune`` pipeline (``pipeline_arguments``),
which ``bgeflow run`` executes through kfp.local: the same compiled pipeline the cluster runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bgeflow.core.models import BUNDLED_MINILM

EXAMPLE_DATA = str(Path(__file__).resolve().parents[1] / "examples" / "train.jsonl.gz")

#: CPU-sized FlagEmbedding settings for the bundled MiniLM (any TrainConfig field may be set).
#: ``max_steps`` caps the work: 12 steps × 16 queries × 2 processes, 8 steps × 4 groups × 2 processes.
CPU_RETRIEVER = {
    "learning_rate": 5e-5, "max_steps": 12, "per_device_train_batch_size": 16, "train_group_size": 2,
    "temperature": 0.05, "query_max_len": 24, "passage_max_len": 96, "logging_steps": 2, "save_steps": 100000,
}
CPU_RERANKER = {
    "learning_rate": 5e-5, "max_steps": 8, "per_device_train_batch_size": 4, "train_group_size": 4,
    "gradient_accumulation_steps": 1, "max_len": 128, "logging_steps": 2, "save_steps": 100000,
}


@dataclass
class RunConfig:
    """What ``bgeflow run`` does; every field is a YAML key and (scalars) a ``--flag``."""

    data: str = EXAMPLE_DATA
    # Records sampled (seeded) from data before the pipeline runs; 0: all. Keeps the CPU demo short.
    max_records: int = 600
    output: str = "bgeflow-output"  # (ignored by git)
    registry: str = ""  # "": <output>/registry
    retriever_model: str = BUNDLED_MINILM
    reranker_model: str = BUNDLED_MINILM
    train_retriever: bool = True
    train_reranker: bool = True
    retriever_name: str = "bge-retriever"
    reranker_name: str = "bge-reranker"
    pooling: str = "mean"  # the retriever's pooling for mining (MiniLM: mean; BGE: cls)
    query_instruction: str = ""
    eval_fraction: float = 0.15
    eval_distractors: int = 200
    seed: int = 42
    range_for_sampling: str = "2-50"
    negative_number: int = 3
    mine_batch_size: int = 64
    retriever: dict[str, Any] = field(default_factory=lambda: dict(CPU_RETRIEVER))
    reranker: dict[str, Any] = field(default_factory=lambda: dict(CPU_RERANKER))
    nnodes: int = 1
    nproc_per_node: int = 2
    train_timeout_s: int = 3600
    gate: str = "ndcg@10>=base+0.01"
    query_max_len: int = 24  # mining and evaluation (training: the retriever mapping)
    passage_max_len: int = 96
    rerank_max_len: int = 128
    rerank_top_k: int = 5
    eval_batch_size: int = 64
    champion: str = "if-gate-passed"
    pipeline: str = ""  # the compiled pipeline YAML; "": pipelines/bge_finetune.yaml of this checkout

    def __post_init__(self) -> None:
        for name, hint in _scalar_types().items():
            value = getattr(self, name)
            if hint is float and isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))
            elif not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
                raise ValueError(f"run config: {name} must be {hint.__name__}, got {value!r}")
        for name in ("retriever", "reranker"):
            if not isinstance(getattr(self, name), dict):
                raise ValueError(f"run config: {name} must be a mapping of train options, got {getattr(self, name)!r}")
        for name in ("data", "output", "retriever_model", "reranker_model"):
            if not getattr(self, name):
                raise ValueError(f"run config: {name} must not be empty")
        if "://" in self.output and not self.output.startswith("file://"):
            raise ValueError(f"run config: output {self.output!r} must be a local directory (the run's workspace); "
                             "the registry may be s3://")
        if self.max_records < 0:
            raise ValueError(f"run config: max_records must be >= 0 (0: all), got {self.max_records}")
        for name in ("nnodes", "nproc_per_node", "train_timeout_s", "rerank_top_k", "eval_batch_size",
                     "mine_batch_size", "negative_number"):
            if getattr(self, name) < 1:
                raise ValueError(f"run config: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"run config: eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if not self.registry:
            self.registry = str(Path(self.output) / "registry")

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if str(key).replace("-", "_") not in known:
                raise ValueError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(known))}")
        return cls(**{str(k).replace("-", "_"): v for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str, **overrides: Any) -> RunConfig:
        from bgeflow.core.config_file import load_mapping

        data = load_mapping(path, "run options")
        merged = {str(k).replace("-", "_"): v for k, v in data.items()}
        cls.from_mapping(merged, where=path)  # unknown keys name the file
        merged.update(overrides)
        return cls.from_mapping(merged, where=path)

    def pipeline_arguments(self) -> dict[str, Any]:
        """The ``bge-finetune`` run parameters: local backend, steps writing into artifact dirs."""
        return {
            "train_data": self.data, "work_uri": "", "registry": self.registry,
            "retriever_model": self.retriever_model, "reranker_model": self.reranker_model,
            "train_retriever": self.train_retriever, "train_reranker": self.train_reranker,
            "retriever_name": self.retriever_name, "reranker_name": self.reranker_name,
            "eval_fraction": self.eval_fraction, "eval_distractors": self.eval_distractors, "seed": self.seed,
            "range_for_sampling": self.range_for_sampling, "negative_number": self.negative_number,
            "query_instruction": self.query_instruction, "retriever_pooling": self.pooling,
            "mine_batch_size": self.mine_batch_size, "mine_use_gpu": False,
            "retriever_hyperparameters": self.train_options("retriever"),
            "reranker_hyperparameters": self.train_options("reranker"),
            "train_nnodes": self.nnodes, "train_nproc_per_node": self.nproc_per_node,
            "train_timeout_s": self.train_timeout_s, "launcher_backend": "local", "gate": self.gate,
            "query_max_len": self.query_max_len, "passage_max_len": self.passage_max_len,
            "rerank_max_len": self.rerank_max_len, "rerank_top_k": self.rerank_top_k,
            "eval_batch_size": self.eval_batch_size, "champion": self.champion,
        }

    def train_options(self, kind: str) -> dict[str, Any]:
        options = dict(getattr(self, kind))
        if kind == "retriever" and self.query_instruction:
            options.setdefault("query_instruction_for_retrieval", self.query_instruction)
        return options


def _scalar_types() -> dict[str, type]:
    hints = {"str": str, "int": int, "float": float, "bool": bool}
    return {f.name: hints[f.type] for f in dataclasses.fields(RunConfig) if f.type in hints}
