"""The final model as users load it: transformers files plus sentence-transformers' module configs.

FlagEmbedding saves the bare transformers model. A retriever also needs ``modules.json``,
``1_Pooling/config.json`` (the pooling it was trained with) and, when embeddings were normalised,
a Normalize module, or ``SentenceTransformer(path)`` would silently pool differently. A reranker is
a sequence-classification model with one label, which ``CrossEncoder(path)`` loads as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bgeflow.core.errors import ConfigError, StepFailed
from bgeflow.retrieval.pooling import ST_MODES

#: Files of a training output directory that are not part of the model.
_NOT_MODEL = {"training_args.bin", "trainer_state.json"}



def export_model(run_dir: Path, dest: Path, *, kind: str, pooling: str = "cls", normalize: bool = True,
                 max_seq_length: int | None = None, query_prompt: str | None = None) -> Path:
    """Copy the model files of ``run_dir`` to ``dest`` and add the retriever's module configs.

    Raises:
        ConfigError: a retriever without ``max_seq_length`` (its passage limit).
        StepFailed: the run saved no safetensors weights.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for path in run_dir.iterdir():
        if path.is_file() and path.name not in _NOT_MODEL and not path.name.startswith(("bgeflow-", ".")):
            shutil.copy2(path, dest / path.name)
    if not any(dest.glob("*.safetensors")):
        raise StepFailed(f"no safetensors weights in {run_dir}: the training run did not save a final model")
    if kind == "retriever":
        if max_seq_length is None:
            raise ConfigError("a retriever's export needs max_seq_length (the passage limit it was trained with)")
        _write_sentence_transformers_config(dest, pooling=pooling, normalize=normalize,
                                            max_seq_length=max_seq_length, query_prompt=query_prompt)
    return dest


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
