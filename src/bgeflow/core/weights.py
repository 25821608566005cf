"""The weights bgeflow accepts: safetensors only.

``pytorch_model.bin`` and the other ``torch.save`` formats are pickles: loading one can run code
that came with the file. A model folder whose weights exist only in such a format is refused
where bgeflow takes a model in (publish, evaluate), with the one-line way to convert it. Not
converted here: publish runs in the image without torch, and converting in place would rewrite a
user's folder (into a copy, double the disk for a large model).
"""

from __future__ import annotations

from pathlib import Path

from bgeflow.core.errors import DataError

#: A model's card, beside its ``config.json`` (a Hugging Face repo's README): publish writes each version's own
#: over the one a model came with, so it is no part of what the model is (``content_fingerprint``).
CARD_NAME = "README.md"
#: ``torch.save``/pickle weight files (``pytorch_model.bin``, its shards, ``.pt``, ``.pth``, ``.ckpt``).
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(model_dir: str | Path, what: str = "model") -> None:
    """Refuse a model folder whose weights are pickles only; anything else passes.

    A hub name (not a folder) is left to the loader; a folder with any ``*.safetensors`` passes
    (transformers and sentence-transformers load those first).

    Raises:
        DataError: naming the folder, its pickle files and how to convert them.
    """
    path = Path(model_dir)
    if not path.is_dir():
        return
    files = [p for p in path.rglob("*") if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if any(p.name.endswith(".safetensors") for p in files):
        return
    pickles = sorted(p.relative_to(path).as_posix() for p in files if p.name.endswith(PICKLE_WEIGHTS))
    if pickles:
        shown = ", ".join(pickles[:3]) + (f" (+{len(pickles) - 3} more)" if len(pickles) > 3 else "")
        raise DataError(
            f"{what} {path}: weights only as pickle files ({shown}); bgeflow takes safetensors only (loading a "
            "pickle can run code). Convert it once: load it with transformers and "
            "save_pretrained(<dir>, safe_serialization=True), or sentence-transformers' save(<dir>, "
            "safe_serialization=True)")


def content_fingerprint(uri: str | Path) -> str:
    """What identifies a model by its bytes: ``files_digest`` of each file's sha256 by its path below ``uri``.

    The same model gives the same fingerprint wherever it lies (a training output's ``model/``, its S3
    copy, a registry download) and a model retrained in place gives another, unlike a path or
    ``retrieval.encoder.model_fingerprint`` (sizes and mtimes, for a cache). Hidden files (caches,
    download markers) and the card (``CARD_NAME``) are left out, as publish leaves them out of a
    version. Every file is read once (a 1 GB model: a few seconds).

    Args:
        uri: the model folder (a local path, or an ``s3://`` or other object-store prefix).

    Returns:
        64 hex characters.

    Raises:
        StorageError: a file cannot be read.
    """
    from bgeflow.core.storage import files_digest, object_sha256, open_store  # loads boto3: not at import

    store = open_store(str(uri))
    return files_digest({obj.key: object_sha256(store, obj.key) for obj in store.list() if obj.key != CARD_NAME})
