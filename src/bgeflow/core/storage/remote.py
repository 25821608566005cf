"""Every other URI scheme fsspec serves: ``gs://``, ``az://``/``abfs://``, ``hf://``, ``memory://``, ...

S3 keeps its own store (``s3.py``: conditional puts for publish claims and the manifest, MinIO's
checksum settings, ETags that name content) and local paths theirs; any other scheme goes through
the fsspec filesystem its package registers (``gcsfs``, ``adlfs``, ``huggingface_hub``), with that
package's own credentials (Application Default Credentials, ``AZURE_STORAGE_*``, ``HF_TOKEN``).

A conditional put (``if_absent``) is an existence check then a write here: object stores other
than S3 offer no precondition through fsspec's interface, so two publishes racing for one version
on ``gs://`` are told apart by the version claim only as well as that check allows.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any

from bgeflow.core.errors import ConfigError
from bgeflow.core.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    StorageError,
    Store,
    is_hidden_key,
    join_key,
    join_uri,
    matches_suffixes,
    safe_join,
    staged_file,
)

#: The package that serves each common scheme (what to install when fsspec cannot load it).
PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs", "hf": "huggingface_hub"}


def filesystem(uri: str) -> tuple[Any, str]:
    """``(fsspec filesystem, path within it)`` for ``uri``.

    Raises:
        ConfigError: a scheme no installed package serves, naming the package to install.
    """
    import fsspec

    protocol = uri.split("://", 1)[0]
    try:
        return fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as exc:
        package = PACKAGES.get(protocol)
        hint = f"pip install {package}" if package else "no installed package serves it"
        raise ConfigError(f"{uri}: the {protocol}:// scheme needs an fsspec filesystem ({hint}): {exc}") from None


class FsspecStore(Store):
    """A store on any fsspec filesystem, rooted at ``uri``."""

    def __init__(self, uri: str, *, fs: Any = None, path: str | None = None) -> None:
        self.uri = uri.rstrip("/")
        if fs is None or path is None:
            fs, path = filesystem(self.uri)
        self.fs, self.path = fs, path.rstrip("/")

    def child(self, key: str) -> FsspecStore:
        return FsspecStore(join_uri(self.uri, self._check(key)), fs=self.fs, path=self._full(key))

    def _check(self, key: str) -> str:
        # The rule of local paths for every key: no absolute, "..", "." or empty part.
        safe_join("/", key, what=f"key under {self.uri}")
        return key

    def _full(self, key: str) -> str:
        return join_key(self.path, self._check(key)) if key else self.path

    def _wrap(self, exc: Exception, key: str, action: str) -> StorageError:
        return StorageError(f"cannot {action} {self.url(key)}: {exc}")

    def _info(self, detail: dict[str, Any], key: str) -> ObjectInfo:
        modified = detail.get("mtime") or detail.get("updated") or detail.get("last_modified") or detail.get("created")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else (
            float(modified) if isinstance(modified, int | float) else None)
        etag = detail.get("ETag") or detail.get("etag") or detail.get("md5Hash") or detail.get("blob_id") or ""
        return ObjectInfo(key, int(detail.get("size") or 0), str(etag).strip('"'), stamp)

    def list(self, suffixes: tuple[str, ...] = (), *, hidden: bool = False) -> list[ObjectInfo]:
        try:
            if self.path and self.fs.isfile(self.path):
                own = self._info(self.fs.info(self.path), "")
                return [own] if matches_suffixes(self.path, suffixes) else []
            if not self.fs.exists(self.path):
                return []
            found = self.fs.find(self.path, detail=True)
        except Exception as exc:
            raise self._wrap(exc, "", "list") from exc
        base = self.fs._strip_protocol(self.path).rstrip("/") + "/"
        out = []
        for name, detail in found.items():
            rel = self.fs._strip_protocol(name)[len(base):] if self.fs._strip_protocol(name).startswith(base) else ""
            if rel and detail.get("type", "file") == "file" and (hidden or not is_hidden_key(rel)) \
                    and matches_suffixes(rel, suffixes):
                out.append(self._info(detail, rel))
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str = "") -> ObjectInfo | None:
        path = self._full(key)
        try:
            if not self.fs.isfile(path):
                return None
            return self._info(self.fs.info(path), key)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._wrap(exc, key, "stat") from exc

    def open_read(self, key: str = "") -> IO[bytes]:
        path = self._full(key)  # an unsafe key is refused as such, not wrapped as a storage fault
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no such object: {self.url(key)}") from exc
        except Exception as exc:
            raise self._wrap(exc, key, "read") from exc

    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        path = self._full(key)
        if if_absent and self.exists(key):  # see the module doc: no precondition through fsspec
            raise FileExistsError(f"{self.url(key)} already exists")
        try:
            # One PUT of a finished file: object stores show it whole or not at all.
            self.fs.put_file(str(local_path), path)
        except Exception as exc:
            raise self._wrap(exc, key, "write") from exc

    def get_file(self, key: str, local_path: str | Path) -> None:
        path = self._full(key)
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(local_path.parent, suffix=".part") as tmp:
            try:
                self.fs.get_file(path, str(tmp))
            except FileNotFoundError as exc:
                raise ObjectNotFound(f"no such object: {self.url(key)}") from exc
            except Exception as exc:
                raise self._wrap(exc, key, "read") from exc
            os.replace(tmp, local_path)

    def delete(self, key: str) -> None:
        path = self._full(key)
        try:
            if self.fs.isfile(path):
                self.fs.rm_file(path)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self._wrap(exc, key, "delete") from exc

