"""Encoding settings shared by every step that embeds or scores text (mine, train, evaluate).

The token limits here are the seed recipe's (FlagEmbedding's fine-tuning README): the training
recipe in ``bgeflow.steps.training.recipes`` takes its ``query_max_len``/``passage_max_len``/
``max_len`` from these constants, so a run's mining, training and evaluation agree by default.
"""

from __future__ import annotations

from bgeflow.core.spec import Spec, setting
from bgeflow.retrieval.pooling import Pooling
from bgeflow.retrieval.precision import Precision

#: The seed recipe's token limits (retriever query/passage, reranker query+passage pair).
QUERY_MAX_LEN = 64
PASSAGE_MAX_LEN = 256
PAIR_MAX_LEN = 512


class TokenLimits(Spec):
    """A retriever's token limits: texts beyond them are truncated."""

    query_max_len: int = setting(QUERY_MAX_LEN, "query token limit (longer queries are truncated)", gt=0,
                                 unit="tokens")
    passage_max_len: int = setting(PASSAGE_MAX_LEN, "passage token limit (longer passages are truncated)", gt=0,
                                   unit="tokens")


class EncodingSettings(TokenLimits):
    """How texts are embedded by a retriever (bi-encoder)."""

    pooling: Pooling = setting("auto", "sentence pooling; auto: the model's sentence-transformers config, "
                               "else its family's convention (BGE: cls, LLM embedders: last_token)",
                               aliases=("--sentence-pooling-method", "--sentence_pooling_method"))
    normalize: bool | None = setting(None, "L2-normalise embeddings, so inner products are cosine similarities; "
                                     "unset: as the model's sentence-transformers config says (a Normalize "
                                     "module), else on",
                              aliases=("--normlized", "--normalized", "--normalize-embeddings",
                                       "--normalize_embeddings"))
    query_instruction: str = setting("", "prepended to every query that has no prompt of its own (BGE v1.5 "
                                     "English: 'Represent this sentence for searching relevant passages: '); "
                                     "empty: the model's saved sentence-transformers query prompt, if any",
                                     aliases=("--query-instruction-for-retrieval",
                                              "--query_instruction_for_retrieval"), metavar="TEXT")
    batch_size: int = setting(64, "texts encoded per forward pass at most", gt=0)
    # 8192 = 32 passages of 256 tokens: on one CPU core it encoded the example pool in no more CPU time
    # than 16384 (12.8 s vs 14.1 s, bench/mine.py's data), with half the activation memory.
    batch_tokens: int = setting(8192, "padded tokens per forward pass at most (texts x longest in the batch): "
                                "texts are batched by token length, so long ones go fewer at a time and no "
                                "batch pads much beyond its texts", gt=0, unit="tokens")
    precision: Precision = setting("auto", "arithmetic of the forward pass (pooling and normalisation stay fp32); "
                                   "auto: bf16 on a CUDA GPU that has it (else fp16) and on a CPU with native "
                                   "bf16 (AVX512-BF16 or AMX), else fp32")
    device: str | None = setting(None, "torch device (cpu, cuda, cuda:1); default: cuda when available, else cpu")


class ScoringSettings(Spec):
    """How (query, passage) pairs are scored by a reranker (cross-encoder)."""

    max_len: int = setting(PAIR_MAX_LEN, "query + passage token limit of a pair", gt=0, unit="tokens")
    batch_size: int = setting(32, "pairs scored per forward pass", gt=0)
