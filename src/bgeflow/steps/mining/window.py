"""The rank window negatives are sampled from, and the positive-aware filters (see ``select``)."""

from __future__ import annotations

from dataclasses import dataclass

from bgeflow.core.errors import ConfigError


@dataclass(frozen=True)
class RankWindow:
    start: int
    end: int

    @classmethod
    def parse(cls, spec: str | tuple[int, int] | RankWindow) -> RankWindow:
        if isinstance(spec, RankWindow):
            return spec
        if isinstance(spec, str):
            head, sep, tail = spec.strip().partition("-")
            try:
                start, end = int(head), int(tail)
            except ValueError:
                raise ConfigError(f"must look like 2-200, got {spec!r}") from None
            if not sep:
                raise ConfigError(f"must look like 2-200, got {spec!r}")
        else:
            start, end = spec
        if not 0 <= start < end:
            raise ConfigError(f"needs 0 <= start < end, got {start}-{end}")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


@dataclass(frozen=True)
class Filters:
    max_score_ratio: float | None = None
    max_score: float | None = None
    min_score: float | None = None
