"""Validation during training: retrieval metrics on a held-out set every N steps, the best checkpoint kept.

FlagEmbedding's runners have no evaluation loop of their own (transformers' needs an
``eval_dataset`` and a loss, not ranking metrics), so bgeflow adds a ``TrainerCallback``: every
``steps`` optimizer steps, process 0 encodes the eval set's corpus and queries with the model being
trained (its own pooling and normalisation), searches exactly and computes the metrics of
``bgeflow.steps.evaluation.metrics``; the other processes wait at a barrier. When ``keep_best`` is
on, the weights of the best step by ``metric`` are saved aside and replace the final ones before
export, so the exported model is the best one seen (the curve in ``train_summary.json`` and
``validation.png`` shows which).

Selecting a checkpoint on a set makes that set's scores optimistic; a run that gates on its own
``eval_data`` keeps the two apart (validation reads ingest's split, the gate the run's set).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from pydantic import field_validator

from bgeflow.core.spec import Spec, setting
from bgeflow.steps.evaluation.metrics import DEFAULT_METRICS, parse_metric

log = logging.getLogger("bgeflow.steps.training")

BEST_DIR = "bgeflow-best"
CURVE_PLOT = "validation.png"


class ValidationSettings(Spec):
    """Retrieval metrics on a held-out set during training (retriever only)."""

    eval_data: str | None = setting(None, "eval set scored during training: a folder or prefix with corpus.jsonl and "
                                    "queries.jsonl (ingest's eval/, or BEIR's layout)", metavar="URI")
    steps: int = setting(0, "score it every N optimizer steps and at the end; 0: off", ge=0)
    metric: str = setting("ndcg@10", "the metric that picks the best step")
    keep_best: bool = setting(True, "export the best step's weights instead of the last ones")

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        parse_metric(value)
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.eval_data) and self.steps > 0


class Validator:
    """Scores a live transformers model on a local eval set (the files ``fetch`` wrote)."""

    def __init__(self, folder: str | Path, *, pooling: str, normalize: bool, query_max_len: int,
                 passage_max_len: int, query_instruction: str = "", metrics: tuple[str, ...] = DEFAULT_METRICS,
                 batch_size: int = 64) -> None:
        from bgeflow.steps.evaluation.evalset import load_eval_set, resolve_eval_uris

        self.evalset = load_eval_set(resolve_eval_uris(str(folder), None, None, None))
        self.pooling, self.normalize = pooling, normalize
        self.query_max_len, self.passage_max_len = query_max_len, passage_max_len
        self.instruction = query_instruction
        self.metrics = metrics
        self.batch_size = batch_size

    def _encode(self, model: Any, tokenizer: Any, texts: list[str], max_len: int) -> Any:
        import torch

        device = next(model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True, max_length=max_len,
                              return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"]
            if self.pooling == "cls":
                vectors = hidden[:, 0]
            elif self.pooling == "mean":
                vectors = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
            else:  # last_token, as FlagEmbedding pools it (right padding: the last non-pad position)
                vectors = hidden[torch.arange(hidden.shape[0], device=device), mask.sum(1) - 1]
            if self.normalize:
                vectors = torch.nn.functional.normalize(vectors, dim=-1)
            out.append(vectors.float().cpu())
        return torch.cat(out).numpy()

    def score(self, model: Any, tokenizer: Any) -> dict[str, float]:
        """The metrics of ``model`` (a transformers encoder) on the eval set; the model's mode is restored."""
        import torch

        from bgeflow.retrieval.search import search
        from bgeflow.steps.evaluation.metrics import compute_metrics

        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                passages = self._encode(model, tokenizer, self.evalset.corpus_texts, self.passage_max_len)
                queries = self._encode(model, tokenizer, [
                    (q.prompt if q.prompt is not None else self.instruction) + q.text for q in self.evalset.queries],
                    self.query_max_len)
        finally:
            model.train(was_training)
        k = min(len(self.evalset.corpus_ids), max(parse_metric(m)[1] for m in self.metrics))
        ids = search(queries, passages, k).ids
        rankings = {q.id: [self.evalset.corpus_ids[i] for i in row if i >= 0]
                    for q, row in zip(self.evalset.queries, ids, strict=True)}
        return compute_metrics(rankings, self.evalset.qrels, self.metrics)


def fetch(eval_data: str, dest: Path) -> Path:
    """Copy the eval set's files (corpus, queries, qrels) to ``dest``, keeping their names.

    Raises:
        NotFoundError, ConfigError: the eval set's files are missing or ambiguous.
    """
    from bgeflow.core.storage import open_store
    from bgeflow.steps.evaluation.evalset import resolve_eval_uris

    dest.mkdir(parents=True, exist_ok=True)
    for what, uri in resolve_eval_uris(eval_data, None, None, None).items():
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        target = dest / name if what != "qrels" else dest / f"qrels{name[name.index('.'):]}"
        open_store(uri).get_file("", target)
    return dest


def callback(validator: Validator, settings: dict[str, Any], best_dir: Path, tokenizer: Any) -> Any:
    """The ``TrainerCallback`` that scores every ``settings["steps"]`` steps and keeps the best weights."""
    import torch.distributed as dist
    from transformers import TrainerCallback

    every, metric, keep_best = int(settings["steps"]), str(settings["metric"]), bool(settings["keep_best"])

    class Validation(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.curve: list[dict[str, Any]] = []
            self.best: dict[str, Any] | None = None

        def _run(self, state: Any, model: Any, tokenizer: Any) -> None:
            if any(point["step"] == state.global_step for point in self.curve):
                return
            if state.is_world_process_zero:
                inner = getattr(model, "model", model)  # FlagEmbedding wraps the transformers model
                scores = validator.score(inner, tokenizer)
                point = {"step": state.global_step, **{k: round(v, 6) for k, v in scores.items()}}
                self.curve.append(point)
                log.info("validation at step %d: %s", state.global_step,
                         ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                if self.best is None or point[metric] > self.best[metric]:
                    self.best = point
                    if keep_best:
                        shutil.rmtree(best_dir, ignore_errors=True)
                        inner.save_pretrained(best_dir, safe_serialization=True)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()

        def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step % every == 0:
                self._run(state, model, tokenizer)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            self._run(state, model, tokenizer)

    return Validation()


def restore_best(run_dir: Path, best_dir: Path) -> None:
    """Put the best step's weights (and config) over the final ones in ``run_dir`` before export."""
    for old in run_dir.glob("*.safetensors"):
        old.unlink()
    for path in best_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, run_dir / path.name)


def plot_curve(curve: list[dict[str, Any]], best_step: int | None, path: Path) -> None:
    """``validation.png``: each metric by step, the kept step marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        steps = [p["step"] for p in curve]
        for name in [k for k in curve[0] if k != "step"]:
            ax.plot(steps, [p[name] for p in curve], marker="o", label=name)
        if best_step is not None:
            ax.axvline(best_step, color="grey", linestyle="--", linewidth=0.8, label=f"kept: step {best_step}")
        ax.set_xlabel("step")
        ax.set_ylabel("metric on the validation set")
        ax.legend(loc="best", fontsize="small")
        ax.set_title("Validation during training")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


