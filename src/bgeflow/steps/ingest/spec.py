"""``IngestSpec``: what ``bgeflow ingest`` does, and the names of its outputs."""

from __future__ import annotations

from typing import Literal

from bgeflow.core import reports
from bgeflow.core.spec import FolderUri, Spec, UriList, nested, setting
from bgeflow.core.storage import DEFAULT_WORKERS, MAX_LINE_BYTES
from bgeflow.retrieval.spec import TokenLimits

OnError = Literal["fail", "skip"]
TRAIN_FILE = "train.jsonl"
EVAL_CORPUS_FILE = "eval/corpus.jsonl"
EVAL_QUERIES_FILE = "eval/queries.jsonl"
REPORT_FILE = reports.INGEST_REPORT
REPORT_MD_FILE = reports.MARKDOWN_REPORT


class IngestSettings(Spec):
    """How raw data is checked, deduplicated and split (the pipeline's ``ingest`` block)."""

    eval_fraction: float = setting(0.05, "share of queries held out for evaluation", ge=0.0, lt=1.0)
    seed: int = setting(42, "seed of the deterministic train/eval split and distractor sample")
    min_negatives: int = setting(0, "records with fewer negatives break a rule (FlagEmbedding training needs "
                                 ">= 1: run `bgeflow mine` to add them)", ge=0)
    on_error: OnError = setting("fail", "fail: any bad line fails the run and nothing is written; skip: bad "
                                "lines are dropped and counted")
    tokenizer: str | None = setting(None, "count lengths with this model's tokenizer (default: a word-based "
                                    "estimate)", metavar="MODEL")
    # Passages from the training split added to the eval corpus, so retrieval is not a lookup among a
    # handful of candidates.
    eval_distractors: int = setting(10_000, "training passages added to the eval corpus as distractors", ge=0)
    examples_per_rule: int = setting(5, "offending lines named per rule in the report", ge=0)
    workers: int = setting(DEFAULT_WORKERS, "objects read concurrently", gt=0)
    max_line_bytes: int = setting(MAX_LINE_BYTES, "a longer line breaks a rule (line_too_long) and is skipped "
                                  "unread: memory stays bounded whatever the input", gt=0, unit="bytes")


class IngestSpec(IngestSettings):
    """What ``bgeflow ingest`` does: the settings plus its inputs and outputs."""

    inputs: UriList = setting(help="a JSONL file or a prefix/directory of .jsonl/.json files, gzipped or not "
                              "(s3:// or local); repeatable", flag="--input", metavar="URI", min_length=1)
    output: FolderUri = setting(help="where train.jsonl, eval/ and the reports go (s3:// or local)", metavar="URI",
                          min_length=1)
    limits: TokenLimits = nested(TokenLimits, "token limits the truncation report measures against")
