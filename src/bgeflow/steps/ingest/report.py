"""The ingest report: problems per rule, length statistics, and its Markdown rendering."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from bgeflow.data import RULES, DataError, Problem, TrainRecord
from bgeflow.data.lengths import Counter as LengthCounter
from bgeflow.data.lengths import histogram, share_over, token_counter
from bgeflow.steps.ingest.spec import IngestSpec

#: Where a problem is in the input: (index of its source among the inputs, 1-based line number).
Position = tuple[int, int]


class ProblemTally:
    """Problems per rule, keeping the first few offenders of each."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Problem]] = defaultdict(list)
        self.bad_lines = 0
        self._kept: list[tuple[Position, Problem]] = []

    def add(self, problems: list[Problem], at: Position, lines: int = 1) -> None:
        """Count the problems found at ``at`` on ``lines`` input lines (several when merged duplicates
        fail together)."""
        self.bad_lines += lines
        for problem in problems:
            self.counts[problem.rule] += 1
            if len(self.examples[problem.rule]) < self.keep:
                self.examples[problem.rule].append(problem)
                self._kept.append((at, problem))

    def in_order(self) -> list[Problem]:
        """The kept offenders of every rule together, in file then line order.

        What a reader scans for: grouped by rule they read ``:3, :7, :5, :8``; and the rules found after
        reading (``too_few_negatives``, once duplicates are merged) are added late, whatever their lines.
        """
        return [problem for _, problem in sorted(self._kept, key=lambda kept: kept[0])]

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
    """The data failed validation; ``report`` holds every problem found, ``problems`` the offenders it
    names, in file then line order (``ProblemTally.in_order``)."""

    def __init__(self, summary: str, report: dict[str, Any], problems: list[Problem] | None = None) -> None:
        super().__init__(summary)
        self.report = report
        self.problems = problems or []


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
