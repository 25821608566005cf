"""``PublishConfig``: what ``bgeflow publish`` does."""

from __future__ import annotations

from dataclasses import dataclass, field

from bgeflow.steps.publish.registry import check_name

CHAMPION_POLICIES = ("never", "always", "if-gate-passed")
KINDS = ("auto", "retriever", "reranker")
TRAINING_CONFIGS = ("train_config.yaml", "train_summary.json")


@dataclass
class PublishConfig:
    """What ``bgeflow publish`` does; every field is a CLI flag of the same name."""

    model: str
    name: str
    registry: str
    version: str | None = None
    metrics: str | None = None
    # Resolved configs to keep with the model; default: the training output's own.
    configs: list[str] = field(default_factory=list)
    lineage_inputs: list[str] = field(default_factory=list)
    champion: str = "never"
    kind: str = "auto"
    base_model: str | None = None

    def __post_init__(self) -> None:
        for flag in ("model", "name", "registry"):
            if not getattr(self, flag):
                raise ValueError(f"publish needs --{flag}")
        check_name(self.name, "--name")
        self.version = self.version or None
        if self.version is not None:
            check_name(self.version, "--version")
        # Callers (pipeline components) pass "" for an input they do not have; "" would mean the cwd.
        self.configs = [u for u in ([self.configs] if isinstance(self.configs, str) else self.configs) if u]
        self.lineage_inputs = [u for u in ([self.lineage_inputs] if isinstance(self.lineage_inputs, str)
                                           else self.lineage_inputs) if u]
        self.metrics = self.metrics or None
        if self.champion not in CHAMPION_POLICIES:
            raise ValueError(f"champion policy must be one of {', '.join(CHAMPION_POLICIES)}, got {self.champion!r}")
        if self.champion == "if-gate-passed" and not self.metrics:
            raise ValueError("--only-if-gate-passed needs --metrics (the metrics.json with the gate verdict)")
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
