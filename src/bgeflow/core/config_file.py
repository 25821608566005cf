"""YAML config files (a local path or an s3:// URI): the one loader behind every ``--config``."""

from __future__ import annotations

import re
from typing import Any

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.storage import open_store


def _exponent_float_loader() -> type:
    """PyYAML's safe loader, reading ``3e-05`` as a float (YAML 1.2) rather than a string (YAML 1.1)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # Go's YAML encoder (Helm's toYaml) writes the float 3e-5 as `3e-05`, without the dot YAML 1.1 needs.
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    return Loader


def load_mapping(uri: str, what: str, *, flag: str = "--config", exponent_floats: bool = False) -> dict[str, Any]:
    """The mapping at ``uri`` (empty for an empty file); errors name the file in one line.

    ``exponent_floats``: read ``3e-05`` as a number, as the file's writer meant (a file Helm rendered).
    """
    import yaml

    store = open_store(uri)
    if store.stat("") is None:
        raise NotFoundError(f"{flag} {uri}: no such file")
    try:
        text = store.read_text()
        # A SafeLoader subclass: no arbitrary objects either way.
        data = yaml.load(text, Loader=_exponent_float_loader()) if exponent_floats else yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag} {uri}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{flag} {uri}: expected a mapping of {what}")
    return data
