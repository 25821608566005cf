"""``PublishSpec``: what ``bgeflow publish`` does."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import field_validator, model_validator

from bgeflow.core.spec import FolderUri, Spec, UriList, absolute_local, setting
from bgeflow.steps.publish.registry import check_name

ChampionPolicy = Literal["never", "always", "if-gate-passed"]
CHAMPION_POLICIES: tuple[str, ...] = get_args(ChampionPolicy)
ModelKind = Literal["auto", "retriever", "reranker"]
KINDS: tuple[str, ...] = get_args(ModelKind)
TRAINING_CONFIGS = ("train_config.yaml", "train_summary.json")


class PublishSettings(Spec):
    """When a published version becomes the champion (the pipeline's ``publish`` block)."""

    champion: ChampionPolicy = setting("never", "move champion.json to this version: never, always, or "
                                       "if-gate-passed, which moves it only when the --metrics file says this "
                                       "model's own gate rules passed")


class PublishSpec(PublishSettings):
    """What ``bgeflow publish`` does: the settings plus the model, its evidence and the registry."""

    model: str = setting(help="a model directory or a training output holding model/", metavar="URI", min_length=1)
    name: str = setting(help="the model's name in the registry", min_length=1)
    registry: FolderUri = setting(help="registry root: s3://bucket/prefix or a directory", metavar="URI", min_length=1)
    version: str | None = setting(None, "version name (default: UTC timestamp + 8 hex of the content hash)")
    metrics: str | None = setting(None, "metrics.json from bgeflow evaluate", metavar="URI")
    configs: UriList = setting(default_factory=list, help="a resolved config to keep with the model (repeatable; "
                               "default: the training output's train_config.yaml and train_summary.json)",
                               flag="--train-config", metavar="URI")
    lineage_inputs: UriList = setting(default_factory=list, help="training/eval data the model came from: its "
                                      "objects' ETag/sha256 and row counts are recorded (repeatable)",
                                      flag="--lineage-input", metavar="URI")
    kind: ModelKind = setting("auto", "auto: reranker when the model has a sequence-classification head")
    base_model: str | None = setting(None, "recorded in the model card (default: from metrics/configs)")
    publish_if_gate_failed: bool = setting(False, "publish even when the --metrics file says this model's own gate "
                                           "rules failed (default: such a model is not published: nothing is "
                                           "written, latest stays, the reason is printed and the exit status is 0)")
    report: str | None = setting(None, "also write what this publish did as JSON here (the version, or published: "
                                 "false and why not)", metavar="URI")

    @field_validator("registry")
    @classmethod
    def _absolute_registry(cls, value: str) -> str:
        # The model card names the registry and how to download from it: a relative path there works only
        # from the folder publish ran in.
        return absolute_local(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_name(value, "name")

    @field_validator("version", "metrics", "base_model", "report", mode="before")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        # Pipeline components pass "" for an input they do not have.
        return value or None

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return check_name(value, "version") if value is not None else None

    @field_validator("configs", "lineage_inputs")
    @classmethod
    def _no_empty(cls, value: list[str]) -> list[str]:
        return [uri for uri in value if uri]  # "" would mean the working directory

    @model_validator(mode="after")
    def _gate_needs_metrics(self) -> PublishSpec:
        if self.champion == "if-gate-passed" and not self.metrics:
            raise ValueError("champion if-gate-passed needs metrics (the metrics.json with the gate verdict)")
        return self
