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

#: LoRA as FlagEmbedding's LLM examples train it (examples/finetune/*/decoder_only/*.sh): rank 32, alpha 64,
#: gradient checkpointing (the activations of a 2B-9B model would not fit otherwise).
_LORA: dict[str, Any] = {"use_lora": True, "lora_rank": 32, "lora_alpha": 64, "gradient_checkpointing": True}
_LLM_EMBEDDER: dict[str, Any] = {
    **_LORA, "learning_rate": 1e-4, "warmup_ratio": 0.1,
    "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"],
}
_LLM_RERANKER: dict[str, Any] = {
    **_LORA, "learning_rate": 2e-4, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
    # bge-reranker-v2-gemma's example: 1 query (x 16 passages) per pass, 16 passes per step. The same 16
    # queries a step as the encoder seed's 4 x 4, without 4 x 16 x 512 tokens of vocabulary logits at once.
    "per_device_train_batch_size": 1, "gradient_accumulation_steps": 16,
    # What FlagLLMReranker and LayerWiseFlagLLMReranker put before query and passage when scoring.
    "query_instruction_for_rerank": "A: ", "passage_instruction_for_rerank": "B: ",
}
#: Each runner's changes to its kind's seed, from FlagEmbedding's example script for that runner. Token
#: limits and group sizes stay the kind's (mining and evaluation share them), and so do the queries per
#: optimizer step; instructions are the run's ``query_instruction`` (an LLM embedder's format goes into
#: it: ``<instruct>TASK\n<query>``).
RUNNER_SEED: dict[str, dict[str, Any]] = {
    "encoder-m3": {"unified_finetuning": True, "use_self_distill": True, "self_distill_start_step": 0},
    "decoder-base": _LLM_EMBEDDER,
    # The ICL runner builds its in-context examples from each batch, so batches come from one file.
    "decoder-icl": {**_LLM_EMBEDDER, "same_dataset_within_batch": True},
    "reranker-decoder": _LLM_RERANKER,
    "reranker-layerwise": _LLM_RERANKER,
}
