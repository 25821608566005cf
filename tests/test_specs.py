"""Every setting is declared once: the CLI, the run spec, the chart schema and the docs follow the specs.

The KFP side (pipeline parameters and component settings) is checked against the compiled YAML in
``test_pipeline.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from bgeflow.cli import build_parser
from bgeflow.cli._options import DEST
from bgeflow.core.errors import ConfigError
from bgeflow.core.spec import Spec, deep_merge, options, value_kind
from bgeflow.platform.run_spec import LocalRunSpec, RunSpec
from bgeflow.steps.evaluation import EvaluateSpec
from bgeflow.steps.ingest import IngestSpec
from bgeflow.steps.mining import MineSpec
from bgeflow.steps.publish import PublishSpec
from bgeflow.steps.training import TrainSpec

REPO = Path(__file__).resolve().parents[1]

VERBS: list[tuple[str, type[Spec], set[str]]] = [
    ("ingest", IngestSpec, set()),
    ("mine", MineSpec, set()),
    ("train", TrainSpec, set()),
    ("evaluate", EvaluateSpec, set()),
    ("publish", PublishSpec, set()),
    ("run", LocalRunSpec, set()),
    # The job's shape is the launcher's own flags (--nnodes, --nproc-per-node), not the pods' settings.
    ("launch", TrainSpec, {f"distributed.{n}" for n in ("nnodes", "node_rank", "nproc_per_node", "master_addr",
                                                        "master_port", "local_nodes")}),
]


def _verb_parser(verb: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


@pytest.mark.parametrize(("verb", "spec", "excluded"), VERBS, ids=[v[0] for v in VERBS])
def test_every_setting_has_its_flags_and_nothing_else(verb: str, spec: type[Spec], excluded: set[str]) -> None:
    parser = _verb_parser(verb)
    by_dest: dict[str, set[str]] = {}
    for action in parser._actions:
        if action.dest.startswith(DEST):
            by_dest.setdefault(action.dest[len(DEST):], set()).update(action.option_strings)
    expected = {opt.name: opt for opt in options(spec)
                if opt.name not in excluded and not opt.cli.hidden and value_kind(opt.annotation)[0] != "other"}
    assert set(by_dest) == set(expected)
    for name, opt in expected.items():
        assert set(opt.spellings) <= by_dest[name], name
        help_text = next(a.help for a in parser._actions if a.dest == DEST + name and a.help != argparse.SUPPRESS)
        assert opt.help.rstrip(".").replace("%", "%%") in help_text  # the declaration's sentence


@pytest.mark.parametrize(("verb", "spec", "excluded"), VERBS, ids=[v[0] for v in VERBS])
def test_flag_values_reach_the_spec(verb: str, spec: type[Spec], excluded: set[str]) -> None:
    """A flag sets the setting it is derived from, typed as declared."""
    from bgeflow.cli._options import given

    parser = _verb_parser(verb)
    for opt in options(spec):
        kind, detail = value_kind(opt.annotation)
        if opt.name in excluded or opt.cli.hidden or kind == "other":
            continue
        value = {"bool": "false", "choice": str(detail[-1]) if kind == "choice" else "", "list": "x"}.get(kind, "7")
        args = parser.parse_args([opt.flag, value])
        got: Any = given(args)
        for part in opt.path:
            got = got[part]
        expected = {"bool": False, "list": ["x"]}.get(kind, detail[-1] if kind == "choice" else detail("7"))
        assert got == expected, opt.name


def test_the_chart_schema_is_generated_from_the_retrain_spec() -> None:
    """`make schema` output and the committed values.schema.json agree: the chart accepts what the trigger does."""
    from bgeflow.platform.chart_schema import CHART_SCHEMA, retrain_schema

    committed = json.loads(CHART_SCHEMA.read_text())
    assert committed["properties"]["retrain"] == retrain_schema(), "stale: run `make schema` and commit"


def test_the_chart_schema_validates_what_the_spec_validates() -> None:
    import jsonschema

    from bgeflow.platform.chart_schema import retrain_schema
    from bgeflow.platform.gitops import RetrainSpec

    schema = retrain_schema()
    good = {"enabled": True, "data": "s3://b/raw/", "retriever": {"model": "m", "hyperparameters": {"lr": 1}},
            "mine": {"negative_number": 7}, "evaluate": {"gate": "ndcg@10>=base"}}
    jsonschema.validate(good, schema)
    RetrainSpec.build(good)
    for bad in ({"mine": {"negative_numbr": 7}}, {"enabled": True}, {"training": {"backend": "slurm"}},
                {"retriever": {"query_max_len": 0}}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ConfigError):
            RetrainSpec.build({"data": [] if bad == {"enabled": True} else "s3://b/raw/", **bad})


def test_run_blocks_are_the_step_settings_not_copies() -> None:
    """A run's block is the step's own settings class: a field added to a step appears in the run, the pipeline,
    the chart schema and `bgeflow run --<block>-<name>` with no other edit."""
    from bgeflow.steps.evaluation import EvaluateSettings
    from bgeflow.steps.ingest import IngestSettings
    from bgeflow.steps.mining import MineSettings
    from bgeflow.steps.publish import PublishSettings

    fields = RunSpec.model_fields
    assert fields["ingest"].annotation is IngestSettings and issubclass(IngestSpec, IngestSettings)
    assert fields["mine"].annotation is MineSettings and issubclass(MineSpec, MineSettings)
    assert fields["evaluate"].annotation is EvaluateSettings and issubclass(EvaluateSpec, EvaluateSettings)
    assert fields["publish"].annotation is PublishSettings and issubclass(PublishSpec, PublishSettings)


def test_layers_merge_deeply_and_unknown_keys_are_named() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"c": 3}}) == {"a": {"b": 1, "c": 3}, "d": 1}
    spec = MineSpec.build({"model": "m", "input": "i.jsonl", "output": "o.jsonl"},
                          {"query-max-len": 32}, {"encoding": {"pooling": "mean"}})
    assert (spec.inputs, spec.encoding.query_max_len, spec.encoding.pooling) == (["i.jsonl"], 32, "mean")
    with pytest.raises(ConfigError, match=r"^x\.yaml: unknown setting 'negative_numbr' for MineSpec; did you mean "
                                          r"negative_number"):
        MineSpec.build({"negative_numbr": 1}, where="x.yaml")
    with pytest.raises(ConfigError, match=r"query_max_len \(--query-max-len\): Input should be greater than 0"):
        MineSpec.build({"model": "m", "inputs": "i", "output": "o.jsonl", "query_max_len": 0}, cli=True)


def test_mine_without_pooling_uses_the_models_own(minilm_path: str, tmp_path: Path) -> None:
    """No --pooling: MiniLM mines with mean pooling (its sentence-transformers config), as train and evaluate do."""
    from bgeflow.cli import main

    data = tmp_path / "in.jsonl"
    rows = [{"query": f"where is item {i}?", "pos": [f"item {i} is in box {i}."], "neg": [f"box {i + 1}."]}
            for i in range(6)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["mine", "--model", "bundled:minilm", "--input", str(data), "--output", str(tmp_path / "o.jsonl"),
                 "--negative-number", "1", "--range-for-sampling", "0-5", "--query-max-len", "16",
                 "--passage-max-len", "16"]) == 0
    report = json.loads((tmp_path / "mine_report.json").read_text())
    assert report["encoding"]["pooling"] == "mean"
