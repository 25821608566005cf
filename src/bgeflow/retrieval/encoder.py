"""The one text encoder of bgeflow: mining and evaluation embed through this module.

Models load through transformers' ``AutoModel`` / ``AutoModelForSequenceClassification`` (no
hand-written architectures), so any BERT/XLM-R style BGE model works, including a checkpoint
that ``bgeflow train`` just wrote.

Speed comes from what ``bench/mine.py`` measures against FlagEmbedding's ``hn_mine``: reduced
precision where the hardware computes it natively (``bgeflow.retrieval.precision``: bf16 on
AVX512-BF16/AMX CPUs and on GPUs), batches of similar token length under a token budget (little
compute on padding), ``torch.inference_mode``, and tokenizing each text once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from bgeflow.core.errors import ConfigError
from bgeflow.core.log import progress
from bgeflow.core.models import check_token_limits, resolve_model
from bgeflow.data.records import query_prompt
from bgeflow.retrieval.pooling import (
    check_encoder_modules,
    resolve_normalize,
    resolve_pooling,
    resolve_query_instruction,
)
from bgeflow.retrieval.precision import Precision, ResolvedPrecision, resolve_precision, torch_dtype
from bgeflow.retrieval.spec import EncodingSettings, ScoringSettings

if TYPE_CHECKING:
    from bgeflow.core.spec import Spec

log = logging.getLogger(__name__)

EmbeddingDtype = Literal["float16", "float32"]
MANIFEST_SUFFIX = ".manifest.json"


def pick_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but torch sees no CUDA GPU")
    return device


#: Texts tokenized at once before sorting; bounds tokenizer memory whatever the input size.
TOKENIZE_WINDOW = 8192


def plan_batches(lengths: np.ndarray, batch_size: int, batch_tokens: int) -> list[np.ndarray]:
    """Positions into ``lengths`` (token counts), longest first, cut into batches of similar length.

    A batch holds at most ``batch_size`` texts and, padded to its longest text, at most
    ``batch_tokens`` tokens (a text longer than the budget goes alone). Sorting first means a batch
    pads to barely more than its own texts; the budget lets short texts go many at a time and long
    ones few, which bounds activation memory by tokens rather than by texts. Longest first also
    shows running out of memory at once.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        rows = max(1, min(batch_size, batch_tokens // longest))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def token_sorted_batches(
    tokenizer: Any, inputs: tuple[Sequence[str], ...], max_len: int, batch_size: int,
    batch_tokens: int | None = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """``(indices, padded features)`` batches of ``inputs`` (texts, or two lists for pairs), longest first.

    Each window of texts is tokenized once, then batched by token count (``plan_batches``; no token
    budget: ``batch_size`` texts a batch). Character length is a poor proxy for sorting: it left
    ~1.6x the ideal padding on the example data.
    """
    # Padding pre-tokenized ids is exactly what we want here; the "use __call__" advice does not apply.
    tokenizer.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True
    n = len(inputs[0])
    budget = batch_tokens if batch_tokens is not None else batch_size * max_len
    for w0 in range(0, n, TOKENIZE_WINDOW):
        encoded = tokenizer(*(list(x[w0 : w0 + TOKENIZE_WINDOW]) for x in inputs), truncation=True, max_length=max_len)
        lengths = np.fromiter((len(ids) for ids in encoded["input_ids"]), dtype=np.int64)
        for idx in plan_batches(lengths, batch_size, budget):
            features = tokenizer.pad({k: [encoded[k][i] for i in idx] for k in encoded}, return_tensors="pt")
            yield idx + w0, features


def load_for_inference(loader: Any, model_path: str, device: str, precision: ResolvedPrecision, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model_path)`` with its weights in ``precision`` on ``device``, in eval mode.

    Raises:
        OSError, ValueError: transformers cannot load the checkpoint (callers turn them into ConfigError).
    """
    import transformers
    from packaging.version import Version

    # transformers 4.56 renamed torch_dtype to dtype (the old name warns); bgeflow allows 4.44 on.
    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    model = loader.from_pretrained(model_path, **{key: torch_dtype(precision)}, **kwargs)
    return model.to(device).eval()


def model_fingerprint(path: str) -> str:
    """What identifies a model's weights: its name, plus file sizes and mtimes for a local dir.

    A checkpoint retrained in place gets a new fingerprint, so stale cached encodings are not reused.
    """
    parts = [path]
    local = Path(path)
    if local.is_dir():
        for entry in sorted(local.iterdir()):
            if entry.is_file():
                st = entry.stat()
                parts.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def texts_sha256(texts: Sequence[str], chunk: int = 65536) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(texts), chunk):
        for text in texts[start : start + chunk]:
            digest.update(text.encode("utf-8"))
            digest.update(b"\0")
    digest.update(str(len(texts)).encode())
    return digest.hexdigest()


class Encoder:
    """A bi-encoder: texts → float32 vectors of shape ``(n, dim)``, as ``SentenceTransformer(path)`` gives them.

    ``pooling``: ``auto`` (the model's own, see ``bgeflow.retrieval.pooling``), ``cls``, ``mean`` or
    ``last_token``; the resolved one is ``self.pooling``. ``precision``: the forward pass's arithmetic
    (``bgeflow.retrieval.precision``), resolved into ``self.precision``; pooling and normalisation run
    in fp32 whatever it is. ``normalize`` unset: the model's own
    (a Normalize module or cosine similarity in its sentence-transformers config), else on. Queries get their own prompt, else ``query_instruction`` (else
    the model's saved query prompt) prepended; passages never do.

    Raises:
        ConfigError: a non-positive length or batch size, a token limit above the model's positions,
            a pooling or sentence-transformers module the encoder cannot compute.
        NotFoundError: the model cannot be loaded from where ``model`` points.
    """

    def __init__(self, model: str, settings: Spec | None = None, **overrides: Any) -> None:
        """``settings`` (``EncodingSettings``; its defaults when None) with ``overrides`` by name over them."""
        from transformers import AutoModel, AutoTokenizer

        # Any spec holding the encoding settings (a run's retriever block) will do: only they are read.
        given = settings.model_dump(include=set(EncodingSettings.model_fields)) if settings else {}
        config = EncodingSettings.build(given, overrides, where="encoder")
        self.settings = config
        self.model_name = model
        self.model_path = resolve_model(model)
        check_encoder_modules(self.model_path, model)
        check_token_limits(self.model_path, {"query_max_len": config.query_max_len,
                                             "passage_max_len": config.passage_max_len}, model=model, where="encoder")
        self.pooling = resolve_pooling(config.pooling, self.model_path)
        self.normalize = resolve_normalize(config.normalize, self.model_path)
        self.query_instruction = resolve_query_instruction(config.query_instruction, self.model_path)
        self.query_max_len = config.query_max_len
        self.passage_max_len = config.passage_max_len
        self.batch_size = config.batch_size
        self.batch_tokens = config.batch_tokens
        self.device = pick_device(config.device)
        self.precision: ResolvedPrecision = resolve_precision(config.precision, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.model = load_for_inference(AutoModel, self.model_path, self.device, self.precision)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load model {model!r} ({self.model_path}): {exc}") from exc
        self.dim: int = int(self.model.config.hidden_size)
        log.info("encoder %s on %s: precision %s (asked: %s), attention %s, batches of <= %d texts / %d tokens",
                 model, self.device, self.precision, config.precision, self.attention, self.batch_size,
                 self.batch_tokens)

    @property
    def attention(self) -> str:
        """transformers' attention implementation the model runs (``sdpa``, ``eager``, ...)."""
        return str(getattr(self.model.config, "_attn_implementation", None) or "eager")

    def describe(self) -> dict[str, Any]:
        """How this encoder computes, for reports: backend, device, precision, attention, batching."""
        return {"backend": "torch", "device": self.device, "precision": self.precision,
                "precision_requested": self.settings.precision, "attention": self.attention,
                "batch_size": self.batch_size, "batch_tokens": self.batch_tokens}

    # ------------------------------------------------------------------ public API

    def encode_queries(self, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """Query vectors; ``prompts[i]`` (a record's own prompt, None: none) wins over the instruction."""
        own = prompts if prompts is not None else [None] * len(texts)
        prefixed = [query_prompt(p, self.query_instruction) + t for t, p in zip(texts, own, strict=True)]
        return self._encode(prefixed, self.query_max_len, desc="encode queries")

    def encode_passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), self.passage_max_len, desc="encode passages")

    def settings_key(self, **extra: Any) -> str:
        """A digest of everything that changes a passage vector (used to validate cached encodings)."""
        settings = {
            "model": model_fingerprint(self.model_path),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "passage_max_len": self.passage_max_len,
            # bf16 vectors differ from fp32 ones in the 4th digit: chunks of one are not resumed as the other.
            "precision": self.precision,
            **extra,
        }
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def encode_passages_to_file(
        self,
        texts: Sequence[str],
        path: str | Path,
        *,
        chunk_size: int = 8192,
        dtype: EmbeddingDtype = "float32",
    ) -> np.memmap:
        """Encode ``texts`` into a raw ``(len(texts), dim)`` array file, one chunk at a time.

        Memory stays at one chunk of texts and vectors. A sidecar ``<path>.manifest.json`` records
        the finished chunks and a key over model, settings and the texts' hash; a rerun with the same
        key skips those chunks, so an interrupted encode resumes where it stopped. Any other key
        starts afresh. Chunks are written with plain file writes (not through the map), so the
        encoded pool never becomes resident in this process.
        """
        if dtype not in ("float16", "float32"):
            raise ConfigError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        if chunk_size <= 0:
            raise ConfigError("chunk_size must be positive")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path = path.with_name(path.name + MANIFEST_SUFFIX)
        n = len(texts)
        key = self.settings_key(dtype=dtype, chunk_size=chunk_size, dim=self.dim, texts=texts_sha256(texts))
        row_bytes = self.dim * np.dtype(dtype).itemsize
        done = _resume_state(manifest_path, path, key, n * row_bytes)
        if done:
            log.info("resuming %s: %d of %d chunks already encoded", path, len(done), -(-n // chunk_size))
        else:
            with open(path, "wb") as fh:
                fh.truncate(n * row_bytes)
            _write_manifest(manifest_path, key, n, self.dim, dtype, chunk_size, done)
        chunks = [c for c in range(-(-n // chunk_size)) if c not in done]
        with open(path, "r+b") as fh:
            for chunk in progress(chunks, desc="encode pool chunks", total=len(chunks), unit="chunk"):
                start = chunk * chunk_size
                vectors = self._encode(list(texts[start : start + chunk_size]), self.passage_max_len, desc=None)
                fh.seek(start * row_bytes)
                fh.write(np.ascontiguousarray(vectors, dtype=dtype).tobytes())
                fh.flush()
                os.fsync(fh.fileno())
                # The manifest moves only after the chunk's bytes are on disk.
                done.add(chunk)
                _write_manifest(manifest_path, key, n, self.dim, dtype, chunk_size, done)
        if n == 0:
            return np.zeros((0, self.dim), dtype=dtype)  # type: ignore[return-value]
        return np.memmap(path, dtype=dtype, mode="r", shape=(n, self.dim))

    # ------------------------------------------------------------------ internals

    def _encode(self, texts: list[str], max_len: int, desc: str | None) -> np.ndarray:
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        batches = token_sorted_batches(self.tokenizer, (texts,), max_len, self.batch_size, self.batch_tokens)
        if desc is not None:
            # The number of batches is known only once each window is tokenized: the bar counts without a total.
            batches = progress(batches, desc=desc, unit="batch")
        with torch.inference_mode():
            for idx, features in batches:
                features = features.to(self.device)
                hidden = self.model(**features, return_dict=True).last_hidden_state
                vectors = self._pool(hidden, features["attention_mask"])
                if self.normalize:
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out[idx] = vectors.cpu().numpy()
        return out

    def _pool(self, hidden: Any, mask: Any) -> Any:
        """``(batch, dim)`` float32 sentence vectors from ``(batch, tokens, dim)`` hidden states of any dtype.

        In fp32 whatever the model's precision: a bf16 sum over hundreds of tokens would round at
        every step (8 significant bits), where the fp32 mean of bf16 states keeps their agreement.
        """
        import torch

        if self.pooling == "cls":
            return hidden[:, 0].float()
        if self.pooling == "last_token":
            # Left-padded batches (LLM tokenizers) end every row at the last position; right-padded
            # ones end at each row's length - 1 (as sentence-transformers' lasttoken pooling does).
            if bool(mask[:, -1].all()):
                return hidden[:, -1].float()
            last = mask.sum(dim=1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
        weights = mask.unsqueeze(-1).float()
        return (hidden.float() * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def _resume_state(manifest_path: Path, path: Path, key: str, expected_bytes: int) -> set[int]:
    """The finished chunks a previous run left, or an empty set when nothing can be reused."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return set()
    if manifest.get("key") != key or not path.is_file() or path.stat().st_size != expected_bytes:
        return set()
    return {int(c) for c in manifest.get("done", [])}


def _write_manifest(
    manifest_path: Path, key: str, n: int, dim: int, dtype: str, chunk_size: int, done: set[int]
) -> None:
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps({
        "key": key, "rows": n, "dim": dim, "dtype": dtype, "chunk_size": chunk_size,
        "chunks": -(-n // chunk_size), "done": sorted(done),
    }))
    os.replace(tmp, manifest_path)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The sidecar manifest of an encodings file (rows, dim, dtype, finished chunks)."""
    path = Path(path)
    return json.loads(path.with_name(path.name + MANIFEST_SUFFIX).read_text())


class UntrainedHead(ConfigError):
    """A reranker checkpoint without a trained sequence-classification head."""


def require_trained_head(model_path: str, model: str) -> None:
    """Refuse a cross-encoder reranker whose checkpoint lacks a trained sequence-classification head.

    transformers would create the missing weights (a bi-encoder's ``classifier``) at random, and the
    "scores" would be noise that differs on every load. The check loads the checkpoint onto the meta
    device (no weights in memory) and reads transformers' own loading report; every loader of a
    reranker (mine's teacher, evaluate) calls it.

    Raises:
        UntrainedHead: naming the weights that would be newly initialised.
        ConfigError: the model cannot be loaded.
    """
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from bgeflow.retrieval.families import family_of

    if family_of("reranker", model_path) in ("llm-reranker", "layerwise-reranker"):
        return  # scored by its language-model head (FlagLLMReranker), not a classification head
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its "newly initialized" warning becomes our error below
    try:
        _, info = AutoModelForSequenceClassification.from_pretrained(model_path, output_loading_info=True,
                                                                     device_map="meta")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load reranker {model!r} ({model_path}): {exc}") from exc
    finally:
        hf_logging.set_verbosity(verbosity)
    fresh = [*info.get("missing_keys", []), *(str(m[0]) for m in info.get("mismatched_keys", []))]
    if fresh:
        raise UntrainedHead(f"reranker {model} has no trained sequence-classification head: its checkpoint lacks "
                          f"{', '.join(sorted(fresh)[:4])}, which would be initialised at random. Give a "
                          "cross-encoder (e.g. BAAI/bge-reranker-base, or a `bgeflow train reranker` output)")


class CrossEncoderScorer:
    """A cross-encoder (reranker): (query, passage) pairs → float32 relevance logits.

    Scores are ``CrossEncoder(path).predict``'s logits (before its activation) at the same length.
    ``precision`` as the bi-encoder's (``bgeflow.retrieval.precision``); logits come out as float32.

    Raises:
        ConfigError: no trained classification head, or ``max_len`` above the model's positions.
    """

    def __init__(self, model: str, settings: Spec | None = None, *, device: str | None = None,
                 precision: Precision = "auto", **overrides: Any) -> None:
        """``settings`` (``ScoringSettings``; its defaults when None) with ``overrides`` by name over them."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        given = settings.model_dump(include=set(ScoringSettings.model_fields)) if settings else {}
        config = ScoringSettings.build(given, overrides, where="reranker")
        self.model_name = model
        self.model_path = resolve_model(model)
        require_trained_head(self.model_path, model)
        check_token_limits(self.model_path, {"max_len": config.max_len}, model=model, where="reranker")
        self.max_len = config.max_len
        self.batch_size = config.batch_size
        self.device = pick_device(device)
        self.precision: ResolvedPrecision = resolve_precision(precision, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            self.model = load_for_inference(AutoModelForSequenceClassification, self.model_path, self.device,
                                            self.precision)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load reranker {model!r} ({self.model_path}): {exc}") from exc

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One logit per pair (the first, when the head has several labels)."""
        import torch

        out = np.empty(len(pairs), dtype=np.float32)
        if not len(pairs):
            return out
        queries = [q for q, _ in pairs]
        passages = [p for _, p in pairs]
        batches = token_sorted_batches(self.tokenizer, (queries, passages), self.max_len, self.batch_size)
        with torch.inference_mode():
            for idx, features in progress(batches, desc="rerank pairs", unit="batch"):
                logits = self.model(**features.to(self.device), return_dict=True).logits
                out[idx] = logits[:, 0].float().cpu().numpy()
        return out
