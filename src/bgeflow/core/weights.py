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
