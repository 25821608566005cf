"""YAML config files (a local path or an s3:// URI): the one loader behind every ``--config``."""

from __future__ import annotations

from typing import Any

from bgeflow.core.errors import ConfigError, NotFoundError
from bgeflow.core.storage import open_store


def load_mapping(uri: str, what: str, *, flag: str = "--config") -> dict[str, Any]:
    """The mapping at ``uri`` (empty for an empty file); errors name the file in one line."""
    import yaml

    store = open_store(uri)
    if store.stat("") is None:
        raise NotFoundError(f"{flag} {uri}: no such file")
    try:
        data = yaml.safe_load(store.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{flag} {uri}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{flag} {uri}: expected a mapping of {what}")
    return data
