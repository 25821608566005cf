"""Loss variants for ``bench/quality_probes.py loss``: patched into FlagEmbedding's retriever loss in every
process that imports this (the probe puts this folder on ``PYTHONPATH``; Python imports ``sitecustomize``
at start-up), only when ``BGEFLOW_PROBE_LOSS`` names them. Not part of bgeflow: none beat its default loss.

FlagEmbedding's loss with cross-device negatives (``AbsEmbedderModel._compute_cross_device_neg_loss``):
each query's InfoNCE over every passage of the step (its group: positive first, then its hard negatives;
every other query's group), scores already divided by the temperature. ``BGEFLOW_PROBE_LOSS``, ``+``-joined:

- ``sym``: the mean with the passage-to-query direction, each positive against every query of the step
  (symmetric InfoNCE: CLIP, Radford et al. 2021; GTE's bidirectional loss, Li et al. 2023);
- ``mask``: another query's passage that the model itself scores above this query's positive leaves
  this query's denominator (a likely false negative among in-batch candidates);
- ``gist``: the same mask judged by a frozen guide, the base model as training starts (GISTEmbed,
  Solatorio 2024): one more forward pass without gradients per step.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from typing import Any

MODES = frozenset(filter(None, os.environ.get("BGEFLOW_PROBE_LOSS", "").split("+")))


TARGET = "FlagEmbedding.abc.finetune.embedder.AbsModeling"


def _patch(module: Any) -> None:
    import copy

    import torch
    import torch.nn.functional as F

    model_cls = module.AbsEmbedderModel
    original_loss, original_forward = model_cls._compute_cross_device_neg_loss, model_cls.forward

    def masked(scores: Any, judge: Any, targets: Any, group: int) -> Any:
        """``scores`` with other queries' passages that ``judge`` ranks above the query's positive masked."""
        rows = torch.arange(scores.size(0), device=scores.device)
        own = torch.zeros_like(scores, dtype=torch.bool)
        for j in range(group):
            own[rows, targets + j] = True
        above = judge > judge[rows, targets].unsqueeze(1)
        return scores.masked_fill(above & ~own, torch.finfo(scores.dtype).min)

    def loss(self: Any, q_reps: Any, p_reps: Any, teacher_targets: Any = None, compute_score_func: Any = None,
             **kwargs: Any) -> Any:
        if teacher_targets is not None:  # distillation keeps FlagEmbedding's own loss
            return original_loss(self, q_reps, p_reps, teacher_targets, compute_score_func, **kwargs)
        group = p_reps.size(0) // q_reps.size(0)
        queries, passages = self._dist_gather_tensor(q_reps), self._dist_gather_tensor(p_reps)
        scores = self.compute_score(queries, passages)  # (queries of the step, their passages) / temperature
        rows = torch.arange(queries.size(0), device=queries.device)
        targets = rows * group  # each query's positive
        used = scores
        if "gist" in MODES:
            guide_q, guide_p = (self._dist_gather_tensor(t) for t in self._guide_reps)
            used = masked(used, guide_q @ guide_p.T, targets, group)
        if "mask" in MODES:
            used = masked(used, scores.detach(), targets, group)
        value = F.cross_entropy(used, targets)
        if "sym" in MODES:
            value = (value + F.cross_entropy(self.compute_score(passages[targets], queries), rows)) / 2
        return scores, value

    def forward(self: Any, queries: Any = None, passages: Any = None, teacher_scores: Any = None,
                no_in_batch_neg_flag: bool = False) -> Any:
        if self.training and "gist" in MODES:
            if "_guide" not in self.__dict__:
                # Set past nn.Module's __setattr__: a registered submodule would be trained and saved.
                object.__setattr__(self, "_guide", copy.deepcopy(self.model).eval())
            with torch.no_grad():
                def encode(features: Any) -> Any:
                    hidden = self._guide(**features, return_dict=True).last_hidden_state
                    return F.normalize(self._sentence_embedding(hidden, features["attention_mask"]), dim=-1)

                object.__setattr__(self, "_guide_reps", (encode(queries), encode(passages)))
        return original_forward(self, queries, passages, teacher_scores, no_in_batch_neg_flag)

    model_cls._compute_cross_device_neg_loss = loss
    model_cls.forward = forward
    print(f"bench/probe_losses: FlagEmbedding's retriever loss with {'+'.join(sorted(MODES))}", file=sys.stderr)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches FlagEmbedding's model module as it is first imported: processes that never train (the
    probe's own, ``bgeflow mine``) do not pay for importing FlagEmbedding."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_module(module: Any) -> None:
                run(module)
                _patch(module)

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if MODES:
    unknown = MODES - {"sym", "mask", "gist"}
    if unknown:
        raise SystemExit(f"BGEFLOW_PROBE_LOSS: unknown {', '.join(sorted(unknown))} (sym, mask, gist)")
    sys.meta_path.insert(0, _PatchOnImport())
