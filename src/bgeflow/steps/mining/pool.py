"""The candidate pool on disk: deduplicated texts, readable by index, found by hash.

Texts are appended to a JSONL file in the work dir as they stream in; memory keeps only three
small numbers per text (offset, length, a 64-bit hash). Duplicates are dropped after the fact
with one ``np.unique`` over the hashes (first occurrence wins), so neither dedupe nor later
lookups ("is this candidate one of the query's positives?") need the texts in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import overload

import numpy as np


def text_hash(text: str) -> int:
    """A 64-bit hash of a text (as a signed int, to live in an int64 array)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class TextPool(Sequence[str]):
    """Unique texts in first-seen order, backed by a JSONL file (one JSON string per line)."""

    def __init__(self, path: Path, offsets: np.ndarray, lengths: np.ndarray, hashes: np.ndarray) -> None:
        self.path = path
        self.offsets = offsets
        self.lengths = lengths
        self.hashes = hashes
        self._by_hash = np.argsort(hashes, kind="stable")
        self._sorted_hashes = hashes[self._by_hash]
        self._fd = os.open(path, os.O_RDONLY)

    @classmethod
    def build(cls, texts: Iterable[str], path: str | Path) -> TextPool:
        """Write ``texts`` (empty ones skipped) to ``path`` and index the unique ones."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # array('q'), not lists: 8 bytes a text instead of ~36, while the pool streams in.
        offsets, lengths, hashes = array("q"), array("q"), array("q")
        position = 0
        with open(path, "wb") as fh:
            for text in texts:
                if not text or not text.strip():
                    continue
                line = (json.dumps(text, ensure_ascii=False) + "\n").encode("utf-8")
                fh.write(line)
                offsets.append(position)
                lengths.append(len(line))
                hashes.append(text_hash(text))
                position += len(line)
        all_hashes = np.frombuffer(hashes, dtype=np.int64)
        _, first = np.unique(all_hashes, return_index=True)
        keep = np.sort(first)
        return cls(
            path,
            np.frombuffer(offsets, dtype=np.int64)[keep],
            np.frombuffer(lengths, dtype=np.int64)[keep],
            all_hashes[keep],
        )

    def __len__(self) -> int:
        return len(self.offsets)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._read(index)

    def __iter__(self) -> Iterator[str]:
        for i in range(len(self)):
            yield self._read(i)

    def _read(self, i: int) -> str:
        return json.loads(os.pread(self._fd, int(self.lengths[i]), int(self.offsets[i])))

    def index_of(self, hashes: np.ndarray) -> np.ndarray:
        """Pool index of each hash, -1 where the text is not in the pool."""
        hashes = np.asarray(hashes, dtype=np.int64)
        if not len(self):
            return np.full(len(hashes), -1, dtype=np.int64)
        pos = np.searchsorted(self._sorted_hashes, hashes)
        pos = np.minimum(pos, len(self) - 1)
        found = self._sorted_hashes[pos] == hashes
        return np.where(found, self._by_hash[pos], -1).astype(np.int64)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()
