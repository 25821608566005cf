"""Component and pipeline docstrings written from the specs, so the KFP UI describes every parameter.

KFP reads a component's ``Args:`` section (Google style, through ``inspect.getdoc``) into the
compiled YAML's parameter descriptions. A parameter that carries a run block (a dict) is described
by its block's settings, one line each, from their declarations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bgeflow.core.spec import Spec, describe


def docstring(summary: str, params: Mapping[str, str | type[Spec] | tuple[str, type[Spec]]],
              returns: str = "", defaults: Mapping[str, Any] | None = None) -> str:
    """A Google-style docstring: ``summary``, then ``Args:`` with one entry per parameter.

    A parameter given as a ``Spec`` class (or ``(sentence, Spec)``) is a mapping of that spec's
    settings; its entry lists them, each with type and default (``defaults`` by parameter name
    override the spec's own, e.g. a run block's).
    """
    lines = [summary.strip(), "", "Args:"]
    for name, about in params.items():
        sentence, spec = (about, None) if isinstance(about, str) else (
            about if isinstance(about, tuple) else (f"{_first_line(about)}; keys:", about))
        lines.append(f"    {name}: {sentence}")
        if spec is not None:
            shown = (defaults or {}).get(name)
            lines += [_with_default(line, shown) for line in describe(spec, indent="        ")]
    if returns:
        lines += ["", "Returns:", f"    {returns}"]
    return "\n".join(lines) + "\n"


def _first_line(spec: type[Spec]) -> str:
    return (spec.__doc__ or spec.__name__).strip().splitlines()[0].rstrip(".")


def _with_default(line: str, defaults: Mapping[str, Any] | None) -> str:
    if not defaults:
        return line
    name = line.strip().split(":", 1)[0]
    value: Any = defaults
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return line
        value = value[part]
    head, _, _ = line.rpartition(", default ")
    if not head:  # an unset-by-default setting the run block sets (mine.max_score_ratio)
        head, _, _ = line.rpartition(", optional)")
    return f"{head}, default {value!r})" if head else line
