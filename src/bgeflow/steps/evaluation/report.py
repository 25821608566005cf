"""The human side of an evaluation: a Markdown comparison table and a PNG of the deltas.

Both take the ``metrics.json`` document that ``evaluate`` writes; the model card of
``bgeflow publish`` reuses ``metrics_table``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bgeflow.steps.evaluation.spec import INGEST_SPLIT_DIR

_LABELS = {"base": "base", "finetuned": "fine-tuned", "champion": "champion", "retriever": "not reranked"}
_SHOWN = ("base", "finetuned", "champion", "retriever")


def _metric_rows(columns: dict[str, dict[str, float]]) -> list[str]:
    rows: list[str] = []
    for values in columns.values():
        for metric in values:
            if metric not in rows:
                rows.append(metric)
    # Retrieval first, then the reranked lists, each in the order they were computed.
    return [m for m in rows if "." not in m] + [m for m in rows if "." in m]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def metrics_table(document: dict[str, Any]) -> str:
    """Markdown: one row per metric; base, fine-tuned, champion columns and the deltas."""
    columns: dict[str, dict[str, float]] = document.get("metrics", {})
    if not columns:
        return "No metrics.\n"
    tuned = columns.get("finetuned", {})
    header = ["metric"]
    for column in _SHOWN:
        if column in columns:
            header.append(_LABELS[column])
    for reference in ("base", "champion"):
        if reference in columns and "finetuned" in columns:
            header.append(f"Δ vs {reference}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in _metric_rows(columns):
        cells = [f"`{metric}`"]
        cells += [_fmt(columns[c].get(metric)) for c in _SHOWN if c in columns]
        for reference in ("base", "champion"):
            if reference in columns and "finetuned" in columns:
                other = columns[reference].get(metric)
                mine = tuned.get(metric)
                cells.append(_fmt(mine - other if mine is not None and other is not None else None, signed=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def gate_lines(gate: dict[str, Any]) -> list[str]:
    if not gate.get("rules"):
        return ["No gate rules were given."]
    lines = [f"Gate `{gate.get('expression', '')}`: **{'passed' if gate['passed'] else 'FAILED'}**", ""]
    lines += [f"- {'✅' if r['passed'] else '❌'} `{r['rule']}`: {r['reason']}" for r in gate["rules"]]
    return lines


def _sizes(eval_set: dict[str, Any]) -> str:
    return (f"{eval_set.get('queries', '?')} queries, {eval_set.get('corpus', '?')} passages, "
            f"{eval_set.get('judgements', '?')} judgements")


def split_section(split: dict[str, Any]) -> list[str]:
    """The main report's lines on the set scored beside the judged one (``metrics.json``'s ``ingest_split``).

    Args:
        split: ``{"uri", "output", "eval_set", "metrics", "deltas"}`` as ``evaluate`` records it.

    Returns:
        Markdown lines: a heading that says it is not gated, the set, where its files are, its metrics table.
    """
    eval_set = split.get("eval_set") or {}
    where = split.get("uri") or (eval_set.get("uris") or {}).get("queries", "?")
    return ["## Ingest's split (ingest_split): reported, not gated", "",
            f"Also scored with the same models: `{where}` ({_sizes(eval_set)}). The gate never reads these "
            f"numbers and no champion is scored on them. Its files: `{INGEST_SPLIT_DIR}/metrics.json`, "
            f"`{INGEST_SPLIT_DIR}/report.md`, `{INGEST_SPLIT_DIR}/runs/`.", "",
            metrics_table(split)]


def render_report(document: dict[str, Any]) -> str:
    """``report.md`` of an evaluation: the eval set, the models, the metrics table, the gate's verdict (or
    that this set is not gated), the set scored beside it, and the deltas plot.

    Args:
        document: the ``metrics.json`` document ``evaluate`` writes.
    """
    sizes = document.get("eval_set", {})
    lines = ["# Evaluation report", ""]
    lines += [f"Eval set: {_sizes(sizes)}.", ""]
    lines += [f"> **Warning:** {w}" for w in document.get("warnings", [])] + ([""] if document.get("warnings") else [])
    lines += ["## Models", "", "| column | role | model | pooling | normalised | precision |",
              "|---|---|---|---|---|---|"]
    skipped = []
    for column, info in document.get("models", {}).items():
        version = f" (version `{info['registry_version']}`)" if info.get("registry_version") else ""
        normalize = {True: "yes", False: "no (dot product)"}.get(info.get("normalize"), "–")
        lines.append(f"| {column} | {info['role']} | `{info['model']}`{version} | {info.get('pooling', '–')} | "
                     f"{normalize} | {info.get('precision', '–')} |")
        if info.get("skipped"):
            skipped.append(f"- {column}: {info['skipped']}")
    if skipped:
        lines += ["", *skipped]
    lines += ["", "## Metrics", ""]
    if document.get("rerank_top_k"):
        lines += [f"`rerank.*`: the rerankers reorder the fine-tuned retriever's top {document['rerank_top_k']} "
                  "candidates; relevant documents outside them count as not retrieved. *not reranked*: the "
                  "retriever's own order of those candidates.", ""]
    lines += [metrics_table(document), "## Quality gate", ""]
    if document.get("gate", {}) is None:  # a set scored beside the judged one (ingest_split)
        lines += ["Not gated: this set is scored beside the eval set the gate judges (`../metrics.json`), and "
                  "no champion is scored on it."]
    else:
        lines += gate_lines(document.get("gate", {}))
    lines += ["", "![metric deltas](deltas.png)", ""]
    if document.get("ingest_split"):  # after the plot, which shows the judged set's deltas
        lines += [*split_section(document["ingest_split"]), ""]
    return "\n".join(lines) + "\n"


def delta_label(key: str) -> str:
    """``finetuned-base`` → ``fine-tuned − base``: a delta's legend (the column names, then a minus sign)."""
    return " − ".join(_LABELS.get(part, part) for part in key.split("-"))


def plot_deltas(document: dict[str, Any], path: str | Path) -> None:
    """A horizontal bar chart of fine-tuned minus base (and minus champion), per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    deltas: dict[str, dict[str, float]] = document.get("deltas", {})
    metrics = _metric_rows({k: v for k, v in deltas.items()})
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * max(len(metrics), 2) + 1.2), dpi=100)
    try:
        if not metrics:
            ax.text(0.5, 0.5, "no base or champion to compare with", ha="center", va="center")
            ax.set_axis_off()
        else:
            height = 0.8 / max(len(deltas), 1)
            for n, (name, values) in enumerate(deltas.items()):
                positions = [i + n * height for i in range(len(metrics))]
                ax.barh(positions, [values.get(m, 0.0) for m in metrics], height=height, label=delta_label(name))
            ax.set_yticks([i + height * (len(deltas) - 1) / 2 for i in range(len(metrics))], metrics)
            ax.invert_yaxis()
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.set_xlabel("Δ metric")
            ax.legend(loc="best", fontsize="small")
        ax.set_title("Fine-tuned vs reference")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
