"""The seed recipe: the hyperparameters of FlagEmbedding's fine-tuning README, per model kind.

These are the defaults ``bgeflow train`` and the pipeline start from; every key is a
FlagEmbedding or transformers ``TrainingArguments`` option under its own name, and any of them
can be overridden (``--learning_rate 2e-5``, ``hyperparameters: {learning_rate: 2e-5}``). The
token limits come from ``bgeflow.retrieval.spec`` so mining and evaluation use the same ones.
Options the seed leaves to the hardware (``--fp16``) or the job's shape
(``--negatives_cross_device``: on when there are several processes) are not fixed here.
"""

from __future__ import annotations

from typing import Any

from bgeflow.retrieval.spec import PAIR_MAX_LEN, PASSAGE_MAX_LEN, QUERY_MAX_LEN

RETRIEVER: dict[str, Any] = {
    "learning_rate": 1e-5, "num_train_epochs": 5.0, "per_device_train_batch_size": 4, "dataloader_drop_last": True,
    "normalize_embeddings": True, "temperature": 0.02, "query_max_len": QUERY_MAX_LEN,
    "passage_max_len": PASSAGE_MAX_LEN, "train_group_size": 2, "logging_steps": 10,
    "query_instruction_for_retrieval": "",
}
RERANKER: dict[str, Any] = {
    "learning_rate": 6e-5, "num_train_epochs": 5.0, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
    "dataloader_drop_last": True, "train_group_size": 16, "max_len": PAIR_MAX_LEN, "weight_decay": 0.01,
    "logging_steps": 10,
}
SEED: dict[str, dict[str, Any]] = {"retriever": RETRIEVER, "reranker": RERANKER}
