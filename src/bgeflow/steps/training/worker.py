"""What each torchrun worker runs: a FlagEmbedding runner plus bgeflow's hooks.

``python -m bgeflow.steps.training.worker --kind retriever --runner encoder-m3 --runner-args args.json
[bgeflow options]`` hands the runner's own ``HfArgumentParser`` dataclasses the options in ``args.json``
(as ``python -m FlagEmbedding.finetune.embedder.encoder_only.m3 config.json`` would) and runs the same
runner (the same model, loss and Trainer). bgeflow adds:

- a callback that marks every saved checkpoint complete and uploads it (``checkpoints.publish``);
- resume that restores the weights: FlagEmbedding saves only the wrapped transformers model, and
  Trainer loads a checkpoint into the wrapper, whose keys (``model.…``) match none of those saved
  (transformers 4.57 then fails looking up ``_keys_to_ignore_on_save`` on the wrapper);
- ``--no-inbatch-neg`` (FlagEmbedding 1.4 dropped the seed's ``--use_inbatch_neg False``);
- for the layerwise reranker, MiniCPM's config class registered with ``AutoConfig``
  (``runners.register_layerwise_config``);
- no merge of LoRA weights in the worker (``save_merged_lora_model``): the export merges them for
  every LoRA runner alike (``bgeflow.steps.training.export``);
- a history file (loss log, steps, world size) for ``train_summary.json``;
- ``--validate``: retrieval metrics on a held-out set every N steps, the best step's weights kept
  (``bgeflow.steps.training.validation``);
- a failure record (``failure-rank<N>.json`` beside the runner's options) naming the exception that
  ended this process, so the pod can tell a crash from a cause a rerun would repeat.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bgeflow.steps.training.handoff import FAILURE_PREFIX, HISTORY_FILE

log = logging.getLogger("bgeflow.steps.training")

__all__ = ["FAILURE_PREFIX", "HISTORY_FILE", "main", "record_failure"]


def record_failure(directory: Path, exc: BaseException) -> Path:
    """Write what ended this worker (exception type, message, rank) for the pod to classify."""
    import os

    rank = int(os.environ.get("RANK", "0") or 0)
    path = directory / f"{FAILURE_PREFIX}{rank}.json"
    path.write_text(json.dumps({"type": type(exc).__name__, "module": type(exc).__module__,
                                "message": str(exc)[:4000], "rank": rank}, ensure_ascii=False), encoding="utf-8")
    return path


def _callback(publish_to: str | None, keep: int | None, run: str | None = None,
              inputs: dict[str, Any] | None = None) -> Any:
    import torch.distributed as dist
    from transformers import TrainerCallback

    from bgeflow.core.storage import open_store
    from bgeflow.steps.training import checkpoints

    class CheckpointPublisher(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.start_step = 0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # After a resume, Trainer has restored global_step by now.
            self.start_step = state.global_step

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            # Every rank saves its own RNG state; the marker may only follow all of them.
            if dist.is_available() and dist.is_initialized():
                dist.barrier()
            if state.is_world_process_zero:
                ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                store = open_store(publish_to).child(checkpoints.CHECKPOINTS_PREFIX) if publish_to else None
                checkpoints.publish(ckpt, state.global_step, store, run, inputs)
                if store is not None and keep:
                    checkpoints.prune(store, keep)
            if dist.is_available() and dist.is_initialized():
                dist.barrier()

    return CheckpointPublisher()


class _NoInBatchNegatives:
    """Wraps FlagEmbedding's collator so the loss uses only each query's own group."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def __call__(self, features: Any) -> Any:
        batch = self.collator(features)
        batch["no_in_batch_neg_flag"] = True
        return batch


def _load_wrapped(trainer: Any) -> Any:
    import torch
    from transformers import Trainer

    def load(resume_from_checkpoint: str, model: Any = None) -> Any:
        loaded = Trainer._load_from_checkpoint(trainer, resume_from_checkpoint,
                                               model=model if model is not None else trainer.model.model)
        # bge-m3's ColBERT and sparse heads live beside the encoder, in files of their own.
        for head in ("colbert_linear", "sparse_linear"):
            module, saved = getattr(trainer.model, head, None), Path(resume_from_checkpoint) / f"{head}.pt"
            if module is not None and saved.is_file():
                module.load_state_dict(torch.load(saved, map_location="cpu", weights_only=True))
        return loaded

    return load


def _accept_indexed_cpu_locations() -> None:
    """Let torch.load map storages to ``cpu:N``.

    Under multi-process CPU training transformers' ``args.device`` is ``cpu:<local_rank>``, and on
    resume it passes that as ``map_location`` for the optimizer state; torch only knows plain
    ``cpu`` and refuses, so a CPU job could never resume.
    """
    import torch.serialization

    def restore(storage: Any, location: str) -> Any:
        return storage if location.startswith("cpu:") else None

    torch.serialization.register_package(11, lambda _obj: None, restore)


def _validation(settings_file: str, output_dir: Path) -> Any:
    """The validation callback of ``--validate`` (see ``bgeflow.steps.training.validation``)."""
    from transformers import AutoTokenizer

    from bgeflow.steps.training import validation

    settings = json.loads(Path(settings_file).read_text(encoding="utf-8"))
    scorer = validation.Validator(settings["folder"], pooling=settings["pooling"], normalize=settings["normalize"],
                                  query_max_len=settings["query_max_len"], passage_max_len=settings["passage_max_len"],
                                  query_instruction=settings["query_instruction"])
    tokenizer = AutoTokenizer.from_pretrained(settings["tokenizer"])
    callback = validation.callback(scorer, settings, output_dir / validation.BEST_DIR, tokenizer)
    callback.settings = settings
    return callback


def _keep_best(callback: Any, output_dir: Path, final_step: int) -> dict[str, Any]:
    """Put the best step's weights in place of the final ones (when asked); the curve for the summary."""
    from bgeflow.steps.training import validation

    best, settings = callback.best, callback.settings
    kept = final_step
    if settings["keep_best"] and best is not None and best["step"] != final_step:
        validation.restore_best(output_dir, output_dir / validation.BEST_DIR)
        kept = best["step"]
    log.info("validation: best %s %.4f at step %d; exporting step %d", settings["metric"],
             best[settings["metric"]] if best else float("nan"), best["step"] if best else -1, kept)
    return {"metric": settings["metric"], "every_steps": settings["steps"], "curve": callback.curve,
            "best_step": best["step"] if best else None, "kept_step": kept}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bgeflow.steps.training.worker", allow_abbrev=False)
    parser.add_argument("--kind", choices=("retriever", "reranker"), required=True)
    parser.add_argument("--runner", default=None, help="runner name (default: the kind's encoder runner)")
    parser.add_argument("--runner-args", required=True, help="JSON object of the runner's options")
    parser.add_argument("--publish-to", default=None, help="output URI; checkpoints go to its checkpoints/")
    parser.add_argument("--keep-checkpoints", type=int, default=None)
    parser.add_argument("--no-inbatch-neg", action="store_true")
    parser.add_argument("--run-identity", default=None, help="stamped into every checkpoint's marker")
    parser.add_argument("--run-inputs", default=None,
                        help="JSON file: what the run identity hashes, kept in every checkpoint's marker")
    parser.add_argument("--validate", default=None, help="JSON file: the validation set and how to score it")
    ns = parser.parse_args(argv)
    from bgeflow.core.log import setup_logging

    # bgeflow's handler first: FlagEmbedding's basicConfig is then a no-op, and its argument dumps
    # (and transformers' config dumps) show only at DEBUG (BGEFLOW_LOG_LEVEL, inherited from the verb).
    setup_logging()
    try:
        return _run(ns)
    except Exception as exc:
        record_failure(Path(ns.runner_args).parent, exc)
        raise


def _run(ns: argparse.Namespace) -> int:
    from transformers import HfArgumentParser

    from bgeflow.core.log import route_transformers_logging

    # Before FlagEmbedding loads the model: transformers' warnings then pass bgeflow's handler (its format,
    # its DEBUG-only records), as the worker's other libraries' do.
    route_transformers_logging()
    from bgeflow.steps.training.runners import RUNNERS, register_layerwise_config, runner_for

    chosen = RUNNERS[ns.runner] if ns.runner else runner_for(ns.kind)
    if chosen.name == "reranker-layerwise":
        register_layerwise_config()
    model_cls, data_cls, training_cls, runner_cls = chosen.classes()
    options = json.loads(Path(ns.runner_args).read_text(encoding="utf-8"))
    model_args, data_args, training_args = HfArgumentParser((model_cls, data_cls, training_cls)).parse_dict(options)
    if getattr(model_args, "save_merged_lora_model", False):
        # FlagEmbedding's merge reloads the base in the worker (the layerwise one even from the hub);
        # the export merges instead, once, for every LoRA runner.
        log.info("save_merged_lora_model: the merged model is written by bgeflow's export (model/)")
        model_args.save_merged_lora_model = False
    inputs = json.loads(Path(ns.run_inputs).read_text(encoding="utf-8")) if ns.run_inputs else None
    publisher = _callback(ns.publish_to, ns.keep_checkpoints, ns.run_identity, inputs)
    validator = _validation(ns.validate, Path(training_args.output_dir)) if ns.validate else None
    if training_args.use_cpu:
        _accept_indexed_cpu_locations()

    class Runner(runner_cls):  # type: ignore[misc, valid-type]
        def load_data_collator(self) -> Any:
            collator = super().load_data_collator()
            return _NoInBatchNegatives(collator) if ns.no_inbatch_neg else collator

        def load_trainer(self) -> Any:
            trainer = super().load_trainer()
            trainer.add_callback(publisher)
            if validator is not None:
                trainer.add_callback(validator)
            trainer._load_from_checkpoint = _load_wrapped(trainer)
            return trainer

    runner = Runner(model_args=model_args, data_args=data_args, training_args=training_args)
    runner.run()
    trainer = runner.trainer
    if trainer.is_world_process_zero():
        history = {
            "global_step": trainer.state.global_step,
            "start_step": publisher.start_step,
            "world_size": training_args.world_size,
            "epoch": trainer.state.epoch,
            "log_history": trainer.state.log_history,
        }
        if validator is not None and validator.curve:
            history["validation"] = _keep_best(validator, Path(training_args.output_dir), trainer.state.global_step)
        path = Path(training_args.output_dir) / HISTORY_FILE
        path.write_text(json.dumps(history, indent=1, default=str), encoding="utf-8")
    _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Every rank leaves the process group together, then tears it down.

    Without this each process exits on its own: rank 0 (which hosts the rendezvous store) could be gone
    while another rank's gloo threads still ran, and that rank aborted at exit ("terminate called without
    an active exception", exit -6) after a finished training, failing the pod. PyTorch asks for
    ``destroy_process_group`` before exit for the same reason.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    raise SystemExit(main())
