"""YAML settings (a file at a local path or an s3:// URI, or one ``--set`` value): the one reader behind
every ``--config``, ``--spec`` and ``--set``."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.storage import open_store

#: A float in exponent notation without YAML 1.1's mandatory dot and sign (``2e-5``, ``3e-05``, ``1E6``):
#: YAML 1.2's core schema reads these as floats, PyYAML's YAML 1.1 as strings.
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


@cache
def _loader() -> type:
    """PyYAML's safe loader (no arbitrary objects), reading ``2e-5`` as the float its writer meant.

    Why: ``learning_rate: 2e-5`` is how people and FlagEmbedding's docs write it, and Go's YAML
    encoder (Helm's ``toYaml``) writes 2e-5 as ``2e-05``; YAML 1.1 reads both as strings, which
    the runner's dataclasses take as they are and the optimiser fails on much later.
    """
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    return Loader


def load_yaml(text: str) -> Any:
    """``text`` read as YAML, exponent floats as floats (``_loader``).

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    import yaml

    return yaml.load(text, Loader=_loader())  # a SafeLoader subclass: no arbitrary objects


def load_mapping(uri: str, what: str, *, flag: str = "--config") -> dict[str, Any]:
    """The mapping at ``uri`` (empty for an empty file), read with ``load_yaml``.

    Raises:
        NotFoundError: no file at ``uri``.
        ConfigError: not valid YAML (one line naming the file and line), or not a mapping.
    """
    import yaml

    store = open_store(uri)
    if store.stat("") is None:
        raise NotFoundError(f"{flag} {uri}: no such file")
    try:
        data = load_yaml(store.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag} {yaml_problem(exc, uri)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{flag} {uri}: expected a mapping of {what}")
    return data


def yaml_problem(exc: Exception, name: str) -> str:
    """``name:LINE:COLUMN: not valid YAML: problem (context at line L, column C)``, on one line.

    PyYAML's own text names the stream ``"<unicode string>"`` and spans lines; this names the file.
    """
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{name}: not valid YAML ({' '.join(str(exc).split())})"
    problem = " ".join(str(getattr(exc, "problem", None) or "syntax error").split())
    context, where = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    detail = ""
    if context:
        detail = f" ({' '.join(str(context).split())}"
        detail += f" at line {where.line + 1}, column {where.column + 1})" if where is not None else ")"
    return f"{name}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}{detail}"
