"""Local paths (and ``file://`` URIs): writes staged beside the target and renamed into place."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

from bgeflow.core.storage.base import (
    ObjectInfo,
    ObjectNotFound,
    Store,
    is_hidden_key,
    matches_suffixes,
    safe_join,
    staged_file,
)


class LocalStore(Store):
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser()
        self.uri = str(self.root)

    def child(self, key: str) -> LocalStore:
        return LocalStore(self._path(key))

    def _path(self, key: str) -> Path:
        # A key never reaches outside the root, whoever made it (a listing, a manifest, a user).
        return safe_join(self.root, key, what=f"key under {self.root}") if key else self.root

    def list(self, suffixes: tuple[str, ...] = (), *, hidden: bool = False) -> list[ObjectInfo]:
        if self.root.is_file():
            info = self.root.stat()
            return [ObjectInfo("", info.st_size, modified=info.st_mtime)] if matches_suffixes(self.root.name, suffixes) else []
        if not self.root.exists():
            return []
        out = []
        for path in self.root.rglob("*"):
            rel = path.relative_to(self.root).as_posix()
            if path.is_file() and (hidden or not is_hidden_key(rel)) and matches_suffixes(path.name, suffixes):
                info = path.stat()
                out.append(ObjectInfo(rel, info.st_size, modified=info.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str = "") -> ObjectInfo | None:
        path = self._path(key)
        return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def open_read(self, key: str = "") -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no such file: {self._path(key)}") from exc

    def put_file(self, local_path: str | Path, key: str, *, if_absent: bool = False) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(target.parent, suffix=".part") as tmp:
            shutil.copyfile(local_path, tmp)
            if if_absent:
                # link() fails if the target exists: the local equivalent of a conditional put.
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    raise FileExistsError(f"{target} already exists") from None
            else:
                os.replace(tmp, target)

    def get_file(self, key: str, local_path: str | Path) -> None:
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        with staged_file(local_path.parent, suffix=".part") as tmp:
            shutil.copyfile(self._path(key), tmp)
            os.replace(tmp, local_path)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
