"""bgeflow: fine-tune BGE retrievers and rerankers from raw JSONL to a published model."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bgeflow")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"
