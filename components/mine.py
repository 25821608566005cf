"""Mine hard negatives for every training record with the base retriever (``bgeflow.steps.mining``)."""

# No `from __future__ import annotations`: kfp reads the real annotation objects.
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from bgeflow.platform.kfp_docs import docstring
from bgeflow.platform.run_spec import MineSettings, RetrieverRun, run_defaults
from components import exec_executor
from components.images import GPU_IMAGE


def mine(
    dataset: Input[Dataset],
    mined: Output[Dataset],
    settings: dict = None,  # noqa: RUF013 - KFP reads the bare annotation; None: the defaults
    retriever: dict = None,  # noqa: RUF013
    corpus: str = "",
    reranker: dict = None,  # noqa: RUF013
    work_uri: str = "",
    run_id: str = "",
):
    """Mine hard negatives with the base retriever (parameters: see the compiled component)."""
    from bgeflow.platform.kfp_steps import mine_step

    mine_step(dataset=dataset, settings=settings, retriever=retriever, corpus=corpus, reranker=reranker, mined=mined,
              work_uri=work_uri, run_id=run_id)


mine.__doc__ = docstring("Search every query against the corpus (or the pool of all passages); take negatives from the "
                         "rank window.", {
    "dataset": "ingest's output (train.jsonl)",
    "mined": "the mined JSONL in FlagEmbedding's format (metadata: uri, pooling)",
    "settings": MineSettings,
    "retriever": ("the run's retriever block (base model and encoding); keys:", RetrieverRun),
    "corpus": "the run's corpus: JSONL files or prefixes with a 'text' field per line, comma-separated, that "
              "negatives are drawn from (empty: the training data's own pos and neg texts)",
    "reranker": "the run's reranker block: with retriever.distill and no mine.teacher.model, its base model "
                "scores the mined pairs",
    "work_uri": "s3://bucket/prefix the step writes under (empty: the artifact's folder)",
    "run_id": "the pipeline run's id",
}, defaults={"settings": run_defaults("mine")})
mine = exec_executor(dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)(mine))
