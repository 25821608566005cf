"""Mine hard negatives for every training record with the base retriever (``bgeflow.steps.mining``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def mine(
    dataset: Input[Dataset],
    model: str,
    mined: Output[Dataset],
    work_uri: str = "",
    run_id: str = "",
    range_for_sampling: str = "2-200",
    negative_number: int = 15,
    query_instruction: str = "",
    pooling: str = "cls",
    query_max_len: int = 64,
    passage_max_len: int = 256,
    batch_size: int = 64,
    use_gpu: bool = False,
    seed: int = 42,
):
    """Search every query against the pool of all passages; take negatives from the rank window.

    ``mined`` (metadata uri) is the mined JSONL in FlagEmbedding's format.
    """
    import time

    from bgeflow.core.storage import join_uri
    from bgeflow.platform.kfp_io import artifact_uri, record, step_output
    from bgeflow.steps.mining import MineConfig
    from bgeflow.steps.mining import mine as run_mine

    started = time.monotonic()
    output = join_uri(step_output(mined, work_uri, run_id, "mine"), "mined.jsonl")
    result = run_mine(MineConfig(
        model=model, inputs=[dataset.metadata.get("train") or join_uri(artifact_uri(dataset), "train.jsonl")],
        output=output, range_for_sampling=range_for_sampling, negative_number=negative_number,
        query_instruction=query_instruction, pooling=pooling, query_max_len=query_max_len,
        passage_max_len=passage_max_len, batch_size=batch_size, use_gpu=use_gpu, seed=seed,
    ))
    record(mined, result.output, started)
