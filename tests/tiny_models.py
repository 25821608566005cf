"""Tiny random-weight models of each BGE family, built from configs (no download), for CPU tests.

- ``m3``: a 2-layer XLM-RoBERTa with ``colbert_linear.pt`` and ``sparse_linear.pt`` beside it (bge-m3's layout);
- ``decoder``: a 2-layer Qwen2 causal LM (an LLM embedder base, and an LLM reranker base);
- ``layerwise``: a 2-layer FlagEmbedding ``LayerWiseMiniCPMForCausalLM`` with one score head per layer from
  ``start_layer`` 1 (bge-reranker-v2-minicpm-layerwise's layout, fine-tuned form).

Each gets a word-level tokenizer over the words of the test data (``tokenizers``, saved as a
``PreTrainedTokenizerFast``) with the special tokens its family's runners and inference classes read:
pad, unk, bos/cls, eos/sep, and ``Yes`` as one token (the LLM rerankers score its logit).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids: <s>=0, <pad>=1, </s>=2, <unk>=3
#: Words the LLM rerankers' default prompt and instructions use, so they tokenize to something other than <unk>.
PROMPT_TEXT = ("Given a query A and a passage B, determine whether the passage contains an answer to the query by "
               "providing a prediction of either 'Yes' or 'No'. Instruct: Query: Response:")


def _vocabulary(texts: Iterable[str]) -> list[str]:
    words: set[str] = set()
    for text in (PROMPT_TEXT, *texts):
        words.update(re.findall(r"\w+|[^\w\s]", text))
    return SPECIALS + sorted(words - set(SPECIALS))


def build_tokenizer(dest: Path, texts: Iterable[str], *, decoder: bool) -> int:
    """Save a word-level fast tokenizer in ``dest``; returns its vocabulary size.

    Encoders get ``<s> A </s>`` (pairs ``<s> A </s></s> B </s>``, as XLM-R); decoders ``<s> A </s>``:
    FlagEmbedding's LLM embedders pool the last token, which is the EOS they append.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(_vocabulary(texts))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    pair = "<s> $A </s> </s> $B </s>" if not decoder else "<s> $A </s> $B </s>"
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair=pair, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=512)
    fast.save_pretrained(dest)
    return len(vocab)


def build_m3(dest: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A 2-layer XLM-R with bge-m3's ColBERT and sparse heads (random weights)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    torch.manual_seed(seed)
    vocab = build_tokenizer(dest, texts, decoder=False)
    config = XLMRobertaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=64, max_position_embeddings=520, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2, type_vocab_size=1)
    XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(dest)
    torch.save(torch.nn.Linear(32, 32).state_dict(), dest / "colbert_linear.pt")
    sparse = torch.nn.Linear(32, 1)
    with torch.no_grad():
        sparse.bias.fill_(1.0)  # positive token weights: a random head may zero them all (relu), scoring nothing
    torch.save(sparse.state_dict(), dest / "sparse_linear.pt")
    return dest


def build_decoder(dest: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A 2-layer Qwen2 causal LM (q/k/v/o and MLP projections, as the LoRA recipes target)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    vocab = build_tokenizer(dest, texts, decoder=True)
    config = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=0, eos_token_id=2, pad_token_id=1, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(dest)
    return dest


def build_layerwise(dest: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A 2-layer layerwise MiniCPM reranker with one score head per layer from layer 1."""
    import torch
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.configuration_minicpm_reranker import (
        LayerWiseMiniCPMConfig,
    )
    from FlagEmbedding.finetune.reranker.decoder_only.layerwise.modeling_minicpm_reranker import (
        LayerWiseMiniCPMForCausalLM,
    )

    torch.manual_seed(seed)
    vocab = build_tokenizer(dest, texts, decoder=True)
    config = LayerWiseMiniCPMConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                                    bos_token_id=0, eos_token_id=2, pad_token_id=1, start_layer=1, head_multi=True,
                                    head_type="simple", scale_emb=1, dim_model_base=1, scale_depth=1)
    config.architectures = ["LayerWiseMiniCPMForCausalLM"]
    LayerWiseMiniCPMForCausalLM(config).save_pretrained(dest)
    return dest


def config_of(path: Path) -> dict:
    return json.loads((path / "config.json").read_text(encoding="utf-8"))
