"""``MineSpec``: what ``bgeflow mine`` does (FlagEmbedding ``hn_mine``'s flags under their own names)."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from bgeflow.core import reports
from bgeflow.core.spec import Spec, UriList, nested, setting
from bgeflow.retrieval.spec import EncodingSettings, ScoringSettings
from bgeflow.steps.mining.window import Filters, RankWindow

EmbeddingDtype = Literal["float16", "float32"]
REPORT_FILE = reports.MINE_REPORT
PLOT_FILE = reports.MINE_PLOT
#: The output names whose report and plot keep the plain names above: the pipeline's and direct mode's
#: ``<folder>/mined.jsonl``, whose ``<folder>/mine_report.json`` later steps wait for as its completion marker.
DEFAULT_OUTPUTS = ("mined.jsonl", "mined.jsonl.gz")


def beside_output(output: str, name: str) -> str:
    """Where ``name`` (the report or the plot) goes for ``output``: ``<folder>/<name>`` for a default
    output name, else ``<folder>/<stem>.<name>`` (``a_minedHN.jsonl`` → ``a_minedHN.mine_report.json``).

    Named after its output, so runs writing other files into one folder (the seed recipe's
    ``a_minedHN.jsonl`` and ``b_minedHN.jsonl``) each keep their own report: the completion marker
    of one output can never be another's.
    """
    parent, _, file = output.rpartition("/")
    if file not in DEFAULT_OUTPUTS:
        stem = file.removesuffix(".gz").removesuffix(".jsonl")
        name = f"{stem}.{name}"
    return f"{parent}/{name}" if parent else name

_RANKS_HELP = (
    "rank window A-B to sample negatives from. Ranks are 0-based positions in the query's search hits, "
    "best first, counting every hit: A <= rank < B, i.e. hits[A:B] as in FlagEmbedding's hn_mine; 2-200 skips "
    "the two best hits and samples among the next 198. The query's positives and its own text are then removed"
)
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(value: str | int | None) -> int | None:
    """``"512MB"``, ``"2GiB"``, ``"1.5g"`` or a plain byte count → bytes (None stays None).

    Raises:
        ValueError: not a size.
    """
    if value is None or isinstance(value, int):
        return value
    match = _SIZE.match(value)
    if not match or (match.group(2) or "").lower() not in _UNITS:
        raise ValueError(f"must be a size like 512MB or 2GiB, got {value!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])


class TeacherSettings(ScoringSettings):
    """A cross-encoder that scores the final pos/neg into pos_scores/neg_scores (for distillation)."""

    model: str | None = setting(None, "cross-encoder (e.g. BAAI/bge-reranker-base) whose scores go into "
                                "pos_scores/neg_scores for FlagEmbedding's knowledge distillation",
                                aliases=("--reranker",), metavar="MODEL")


class MineSettings(Spec):
    """How hard negatives are chosen (the pipeline's ``mine`` block)."""

    range_for_sampling: str = setting("2-200", _RANKS_HELP, metavar="A-B")
    negative_number: int = setting(15, "negatives per record", ge=1)
    use_gpu: bool = setting(False, "search with a faiss GPU index (needs faiss-gpu and a CUDA GPU)",
                            aliases=("--use-gpu-for-searching",))
    seed: int = setting(42, "seed of the negative sampling: same seed, data, model and settings, same output "
                        "(chunk_size included when the encoding precision is bf16/fp16, see chunk_size)")
    max_score_ratio: float | None = setting(None, "drop candidates scoring above R x the query-positive score "
                                            "(NV-Retriever TopK-PercPos: 0.95)", gt=0, metavar="R")
    max_score: float | None = setting(None, "drop candidates scoring above this")
    min_score: float | None = setting(None, "drop candidates scoring below this")
    teacher: TeacherSettings = nested(TeacherSettings, prefix="teacher-")
    denoise_margin: float | None = setting(None, "with a teacher: sample twice the negatives, drop those the teacher "
                                           "scores at least its lowest positive score minus M (likely false "
                                           "negatives), keep negative_number of the rest", metavar="M")
    max_memory: str | None = setting(None, "memory budget for the search index, e.g. 512MB or 2GiB; a larger "
                                     "pool is searched exactly in shards (default: one flat index)", metavar="SIZE")
    work_dir: str | None = setting(None, "where pool texts and encodings (resumable chunks) live; default: a "
                                   "directory under the system temp keyed by model and pool, removed after "
                                   "success; an explicit one is kept, so reruns skip encoding", metavar="DIR")
    embedding_dtype: EmbeddingDtype = setting("float32", "on-disk type of the pool encodings (float16 halves "
                                              "disk and I/O)")
    # Why the caveat: a reduced-precision encoding of a text varies with the other texts of its batch
    # (padding length, kernel choice), and a chunk bounds the batches; fp32 is stable to the last digits.
    chunk_size: int = setting(8192, "passages per resumable encoding chunk; with a bf16/fp16 encoding (precision "
                              "auto picks bf16 on CPUs that have it) another chunk size moves scores slightly, "
                              "and so which negatives are drawn", gt=0)
    query_batch_size: int = setting(4096, "queries per faiss search call", gt=0)

    @field_validator("range_for_sampling")
    @classmethod
    def _window(cls, value: str) -> str:
        RankWindow.parse(value)
        return value.strip()

    @field_validator("max_memory")
    @classmethod
    def _memory(cls, value: str | None) -> str | None:
        size = parse_size(value)
        if size is not None and size <= 0:
            raise ValueError("must be positive")
        return value

    @model_validator(mode="after")
    def _score_bounds(self) -> MineSettings:
        if self.max_score is not None and self.min_score is not None and self.min_score >= self.max_score:
            raise ValueError(f"min_score ({self.min_score}) must be below max_score ({self.max_score})")
        return self

    @property
    def window(self) -> RankWindow:
        return RankWindow.parse(self.range_for_sampling)

    @property
    def max_memory_bytes(self) -> int | None:
        return parse_size(self.max_memory)

    @property
    def filters(self) -> Filters:
        return Filters(self.max_score_ratio, self.max_score, self.min_score)


class MineSpec(MineSettings):
    """What ``bgeflow mine`` does: the settings plus the retriever, its inputs and outputs."""

    model: str = setting(help="retriever: a Hugging Face name or path (e.g. BAAI/bge-base-en-v1.5), s3:// URI "
                         "or bundled:minilm", aliases=("--model-name-or-path",), metavar="MODEL", min_length=1)
    inputs: UriList = setting(help="training JSONL: a file or a prefix/directory (s3:// or local); repeatable",
                              flag="--input", aliases=("--input-file",), metavar="URI", min_length=1)
    output: str = setting(help="the mined JSONL to write (…/mined.jsonl or .jsonl.gz); mine_report.json goes "
                          "beside it (<stem>.mine_report.json for another name than mined.jsonl)",
                          aliases=("--output-file",), metavar="URI")
    candidate_pool: UriList | None = setting(None, "corpus JSONL with a 'text' field per line to mine from "
                                             "(repeatable); default: every pos and neg text of the input",
                                             metavar="URI")
    encoding: EncodingSettings = nested(EncodingSettings, "encoding")

    @model_validator(mode="after")
    def _denoise_needs_teacher(self) -> MineSpec:
        # Checked here, not on the run's block: a distilled run's teacher is filled in when the step is planned.
        if self.denoise_margin is not None and not self.teacher.model:
            raise ValueError("denoise_margin needs a teacher cross-encoder (teacher.model)")
        return self

    @field_validator("output")
    @classmethod
    def _output(cls, value: str) -> str:
        if not value or value.endswith("/") or not value.endswith((".jsonl", ".jsonl.gz")):
            raise ValueError(f"must name a .jsonl or .jsonl.gz file, got {value!r}")
        return value

    @property
    def report_uri(self) -> str:
        """The output's report and completion marker (``beside_output``)."""
        return beside_output(self.output, REPORT_FILE)

    @property
    def plot_uri(self) -> str:
        """The output's score histogram (``beside_output``)."""
        return beside_output(self.output, PLOT_FILE)

    def default_work_dir(self) -> Path:
        """Keyed by model, pool and encoder settings, so a rerun of the same job finds its chunks."""
        key = json.dumps([self.model, self.candidate_pool or self.inputs, self.encoding.pooling,
                          self.encoding.normalize, self.encoding.passage_max_len, self.embedding_dtype])
        return Path(tempfile.gettempdir()) / "bgeflow-mine" / hashlib.sha256(key.encode()).hexdigest()[:16]
