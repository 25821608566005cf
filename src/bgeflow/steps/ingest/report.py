"""The ingest report: problems per rule, length statistics, and its Markdown rendering."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bgeflow.data import RULES, DataError, Problem, TrainRecord
from bgeflow.data.lengths import Counter as LengthCounter
from bgeflow.data.lengths import histogram, share_over, token_counter
from bgeflow.steps.ingest.spec import IngestSpec


class ProblemTally:
    """Problems per rule, keeping the first few offenders of each."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Problem]] = defaultdict(list)
        self.bad_lines = 0

    def add(self, problems: list[Problem], lines: int = 1) -> None:
        """Count the problems of ``lines`` input lines (several when merged duplicates fail together)."""
        self.bad_lines += lines
        for problem in problems:
            self.counts[problem.rule] += 1
            if len(self.examples[problem.rule]) < self.keep:
                self.examples[problem.rule].append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            rule: {
                "count": self.counts[rule],
                "description": RULES[rule],
                "examples": [p.to_dict() for p in self.examples[rule]],
                # Offenders not named above: with the examples, they add up to "count".
                "more": self.counts[rule] - len(self.examples[rule]),
            }
            for rule in sorted(self.counts)
        }


class IngestFailed(DataError):
    """The data failed validation; ``report`` holds every problem found."""

    def __init__(self, summary: str, report: dict[str, Any]) -> None:
        super().__init__(summary)
        self.report = report


def length_report(records: list[TrainRecord], config: IngestSpec,
                  counter: tuple[LengthCounter, str] | None = None) -> dict[str, Any]:
    """Token lengths of ``records`` (``counter``: ``token_counter(config.tokenizer)``, made here when None)."""
    count, method = counter or token_counter(config.tokenizer)
    queries = [r.query for r in records]
    passages = [text for r in records for text in (*r.pos, *r.neg)]
    query_lengths: list[int] = []
    passage_lengths: list[int] = []
    for texts, out in ((queries, query_lengths), (passages, passage_lengths)):
        for start in range(0, len(texts), 4096):
            out.extend(count(texts[start : start + 4096]))

    return {
        "method": method,
        "query": {
            "max_len": config.limits.query_max_len,
            "truncated_share": share_over(query_lengths, config.limits.query_max_len),
            "histogram": histogram(query_lengths),
        },
        "passage": {
            "max_len": config.limits.passage_max_len,
            "truncated_share": share_over(passage_lengths, config.limits.passage_max_len),
            "histogram": histogram(passage_lengths),
        },
    }


def render_markdown(report: dict[str, Any]) -> str:
    counts = report["counts"]
    lines = ["# Ingest report", "", f"Status: **{report.get('status', '?')}**", "", "| count | value |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in counts.items()]
    lines += ["", "## Inputs", ""] + [f"- `{i['uri']}` ({i['bytes']} bytes)" for i in report["inputs"]]
    lines += ["", "## Failures by rule", ""]
    if not report["failures"]:
        lines.append("None.")
    for rule, info in report["failures"].items():
        lines.append(f"### `{rule}` — {info['description']}: {info['count']}")
        lines += [f"- `{e['where']}` {e['field']}: {e['message']}" for e in info["examples"]]
        if info.get("more"):
            lines.append(f"- +{info['more']} more")
        lines.append("")
    lengths = report.get("lengths")
    if not lengths:
        return "\n".join(lines) + "\n"
    lines += ["", f"## Lengths (tokens, {lengths['method']})", ""]
    for kind in ("query", "passage"):
        info = lengths[kind]
        lines.append(f"**{kind}**: {info['truncated_share']:.2%} over max_len {info['max_len']}")
        lines += ["", "| tokens | count |", "|---|---|"]
        lines += [f"| {bucket} | {n} |" for bucket, n in info["histogram"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"
