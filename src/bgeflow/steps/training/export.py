"""The final model as users load it: transformers files plus sentence-transformers' module configs.

FlagEmbedding saves the bare transformers model. A retriever also needs ``modules.json``,
``1_Pooling/config.json`` (the pooling it was trained with) and, when embeddings were normalised,
a Normalize module, or ``SentenceTransformer(path)`` would silently pool differently. A reranker is
a sequence-classification model with one label, which ``CrossEncoder(path)`` loads as it is.

Per family (``bgeflow.retrieval.families``):

- bge-m3 keeps ``colbert_linear.pt`` and ``sparse_linear.pt`` next to the encoder (``BGEM3FlagModel``
  reads them; ``SentenceTransformer`` gets the dense embedding);
- a LoRA run (the LLM runners) saves only the adapter: the export merges it into the base model,
  which the runner's own loading code rebuilds, and writes the merged weights as a plain model;
  the adapter stays in ``adapter/`` (``PeftModel.from_pretrained(base, "<model>/adapter")``), its
  ``base_model_name_or_path`` naming the base the run started from;
- every export writes ``flagembedding.json``: the FlagEmbedding class and arguments to load it with
  (``getattr(FlagEmbedding, doc["class"])(path, **doc["init"])``), which evaluation reads too.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from bgeflow.core.errors import ConfigError, StepFailed
from bgeflow.retrieval.families import INFERENCE_FILE
from bgeflow.retrieval.pooling import ST_MODES

#: Files of a training output directory that are not part of the model.
_NOT_MODEL = {"training_args.bin", "trainer_state.json"}
#: What PEFT saves for an adapter (README.md: its model card), kept in ``adapter/`` instead of the model.
_ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", "README.md"}
ADAPTER_DIR = "adapter"


def instruction_prefix(options: dict[str, Any]) -> str | None:
    """What FlagEmbedding's query instruction puts before each query: its format with an empty query.

    None without an instruction, or when the format puts text after the query (not a prefix).
    """
    instruction = options.get("query_instruction_for_retrieval")
    # FlagEmbedding's data arguments read a typed "\n" as a newline.
    template = str(options.get("query_instruction_format") or "{}{}").replace("\\n", "\n")
    if not instruction or not template.endswith("{}"):
        return None
    return template.format(instruction, "")


def export_model(run_dir: Path, dest: Path, *, kind: str, pooling: str = "cls", normalize: bool = True,
                 max_seq_length: int | None = None, query_prompt: str | None = None, runner: str | None = None,
                 runner_args: dict[str, Any] | None = None, base_model: str | None = None) -> Path:
    """Copy the model files of ``run_dir`` to ``dest``, merge a LoRA adapter, add the loaders' configs.

    ``runner``/``runner_args``: the FlagEmbedding runner and the options it ran with (the LoRA merge
    rebuilds the base as the runner did); ``base_model``: how the adapter's config names the base
    (default: the runner's ``model_name_or_path``).

    Raises:
        ConfigError: a retriever without ``max_seq_length`` (its passage limit).
        StepFailed: ``run_dir`` holds no final weights, or an adapter without the options to merge it.
    """
    runner = runner or ("encoder-base" if kind == "retriever" else "reranker-encoder")
    options = dict(runner_args or {})
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    lora = (run_dir / "adapter_config.json").is_file()
    for path in run_dir.iterdir():
        if (path.is_file() and path.name not in _NOT_MODEL and not path.name.startswith(("bgeflow-", "."))
                and not (lora and path.name in _ADAPTER_FILES)):
            shutil.copy2(path, dest / path.name)
    if lora:
        if "model_name_or_path" not in options:
            raise StepFailed(f"{run_dir} holds a LoRA adapter, but the runner's options are unknown: cannot merge it")
        merge_lora(run_dir, dest, runner=runner, options=options)
        keep_adapter(run_dir, dest / ADAPTER_DIR, base_model=base_model or str(options["model_name_or_path"]))
    if not any(dest.glob("*.safetensors")):
        raise StepFailed(f"no safetensors weights in {run_dir}: the training run did not save a final model")
    if kind == "retriever":
        if max_seq_length is None:
            raise ConfigError("a retriever's export needs max_seq_length (the passage limit it was trained with)")
        _write_sentence_transformers_config(dest, pooling=pooling, normalize=normalize,
                                            max_seq_length=max_seq_length, query_prompt=query_prompt)
    _write_json(dest / INFERENCE_FILE, inference_document(runner, options, max_seq_length=max_seq_length,
                                                          pooling=pooling, normalize=normalize))
    return dest


# --------------------------------------------------------------------------- LoRA


def _model_arguments(runner: str, options: dict[str, Any]) -> Any:
    """The runner's model-arguments dataclass over ``options``, without LoRA (what the adapter went onto)."""
    from bgeflow.steps.training.runners import RUNNERS

    model_cls = RUNNERS[runner].classes()[0]
    given = {f.name: options[f.name] for f in dataclasses.fields(model_cls) if f.init and f.name in options}
    return dataclasses.replace(model_cls(**given), use_lora=False, from_peft=None)


def base_model_for(runner: str, options: dict[str, Any], run_dir: Path) -> Any:
    """The base model as the runner built it before adding the adapter (the same class, heads, vocabulary).

    Embedders: ``AutoModel``, its input embeddings resized and restored from ``embedding/emb.pth``
    when the run added special tokens; the decoder reranker: ``AutoModelForCausalLM``; the layerwise
    reranker: FlagEmbedding's own loader (it replaces the LM head by score heads built from the
    ``Yes`` row, which the adapter does not hold).
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    path = str(options["model_name_or_path"])
    remote = bool(options.get("trust_remote_code", False))
    if runner == "reranker-layerwise":
        from FlagEmbedding.finetune.reranker.decoder_only.layerwise.load_model import get_model

        from bgeflow.steps.training.runners import register_layerwise_config

        register_layerwise_config()
        yes = AutoTokenizer.from_pretrained(run_dir, trust_remote_code=remote)("Yes", add_special_tokens=False)
        return get_model(_model_arguments(runner, options), yes["input_ids"][-1])
    if runner == "reranker-decoder":
        return AutoModelForCausalLM.from_pretrained(path, dtype="auto", trust_remote_code=remote)
    model = AutoModel.from_pretrained(path, dtype="auto", trust_remote_code=remote)
    embeddings = run_dir / "embedding" / "emb.pth"
    if embeddings.is_file():
        # The run added special tokens: it resized the embeddings (new rows drawn at random) and saved them.
        model.resize_token_embeddings(len(AutoTokenizer.from_pretrained(run_dir, trust_remote_code=remote)))
        model.set_input_embeddings(torch.load(embeddings, map_location="cpu", weights_only=False))
    return model


def merge_lora(run_dir: Path, dest: Path, *, runner: str, options: dict[str, Any]) -> None:
    """Write base + the adapter in ``run_dir``, merged, as a plain transformers model in ``dest``."""
    from peft import PeftModel

    merged = PeftModel.from_pretrained(base_model_for(runner, options, run_dir), str(run_dir)).merge_and_unload()
    if runner == "reranker-layerwise":
        # FlagEmbedding's layerwise model code predates transformers' Cache classes: scoring with the
        # cache on fails (DynamicCache.get_usable_length), and a reranker never generates.
        merged.config.use_cache = False
    merged.save_pretrained(dest, safe_serialization=True)


def keep_adapter(run_dir: Path, dest: Path, *, base_model: str) -> None:
    """The adapter files in ``dest``, their config naming ``base_model`` (not the run's scratch copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in _ADAPTER_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "embedding").is_dir():
        shutil.copytree(run_dir / "embedding", dest / "embedding")
    config = json.loads((dest / "adapter_config.json").read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    _write_json(dest / "adapter_config.json", config)


# --------------------------------------------------------------------------- loaders' configs


def inference_document(runner: str, options: dict[str, Any], *, max_seq_length: int | None, pooling: str = "cls",
                       normalize: bool = True) -> dict[str, Any]:
    """``flagembedding.json``: the FlagEmbedding class of ``runner``'s models and the arguments the run implies."""
    def text(name: str, default: str | None = None) -> str | None:
        value = options.get(name, default)
        return None if value is None else str(value).replace("\\n", "\n")

    query_len, passage_len = options.get("query_max_len"), options.get("passage_max_len")
    lengths = {"query_max_length": query_len, "passage_max_length": passage_len}
    retrieval = {"query_instruction_for_retrieval": text("query_instruction_for_retrieval") or None,
                 "query_instruction_format": text("query_instruction_format", "{}{}")}
    init: dict[str, Any]
    if runner == "encoder-base" or (runner == "encoder-m3" and not options.get("unified_finetuning")):
        # Without unified fine-tuning the m3 runner trains (and saves) the dense encoder only.
        cls, init = "FlagModel", {**retrieval, **lengths, "pooling_method": pooling, "normalize_embeddings": normalize}
    elif runner == "encoder-m3":
        cls, init = "BGEM3FlagModel", {**retrieval, **lengths, "pooling_method": pooling,
                                       "normalize_embeddings": normalize}
        if int(options.get("colbert_dim", -1)) > 0:  # the ColBERT head's width must be given to load it
            init["colbert_dim"] = int(options["colbert_dim"])
    elif runner == "decoder-base":
        cls, init = "FlagLLMModel", {**retrieval, **lengths, "normalize_embeddings": normalize}
    elif runner == "decoder-icl":
        # The ICL runner ends every query with icl_suffix_str; FlagICLModel calls it suffix.
        cls, init = "FlagICLModel", {**retrieval, **lengths, "normalize_embeddings": normalize,
                                     "suffix": text("icl_suffix_str", "\nResponse:")}
    elif runner == "reranker-encoder":
        cls, init = "FlagReranker", {"max_length": max_seq_length}
    else:  # the LLM rerankers: what precedes query and passage, as the runner's dataset wrote it
        cls = "FlagLLMReranker" if runner == "reranker-decoder" else "LayerWiseFlagLLMReranker"
        init = {"query_instruction_for_rerank": text("query_instruction_for_rerank") or "",
                "query_instruction_format": text("query_instruction_format", "{}{}"),
                "passage_instruction_for_rerank": text("passage_instruction_for_rerank") or "",
                "passage_instruction_format": text("passage_instruction_format", "{}{}"),
                "max_length": max_seq_length}
    return {"class": cls, "runner": runner, "init": {k: v for k, v in init.items() if v is not None}}


def _write_sentence_transformers_config(dest: Path, *, pooling: str, normalize: bool, max_seq_length: int,
                                        query_prompt: str | None) -> None:
    hidden = json.loads((dest / "config.json").read_text(encoding="utf-8"))["hidden_size"]
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (dest / "2_Normalize").mkdir(exist_ok=True)
    pooling_config = {"word_embedding_dimension": hidden, "pooling_mode_cls_token": False,
                      "pooling_mode_mean_tokens": False, "pooling_mode_max_tokens": False,
                      "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
                      "pooling_mode_lasttoken": False, "include_prompt": True}
    pooling_config[ST_MODES[pooling]] = True
    (dest / "1_Pooling").mkdir(exist_ok=True)
    _write_json(dest / "1_Pooling" / "config.json", pooling_config)
    _write_json(dest / "modules.json", modules)
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    st_config: dict[str, Any] = {"similarity_fn_name": "cosine" if normalize else "dot"}
    if query_prompt:
        st_config["prompts"] = {"query": query_prompt, "document": ""}
    _write_json(dest / "config_sentence_transformers.json", st_config)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
