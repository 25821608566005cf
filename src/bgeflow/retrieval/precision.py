"""The arithmetic an encoder runs in: ``auto`` picks reduced precision where the hardware computes it natively.

bf16 keeps fp32's exponent range, so activations that overflow fp16 (some models trained in bf16
do) stay finite; it rounds to 8 significant bits. On the bundled all-MiniLM-L6-v2 bf16 weights
and activations give sentence vectors within cosine 0.9999 of fp32 (``tests/test_encoder.py``
checks >= 0.999 per text; ``bench/mine.py`` measures it on the example pool), because pooling and
normalisation, where a mean over hundreds of tokens would otherwise lose digits, run in fp32.

On a CPU without native bf16 dot products (AVX512-BF16 or AMX), PyTorch emulates bf16 with fp32
arithmetic plus conversions, which is slower than plain fp32: ``auto`` stays at fp32 there.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path
from typing import Any, Literal

from bgeflow.core.errors import ConfigError

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
ResolvedPrecision = Literal["fp32", "bf16", "fp16"]

#: /proc/cpuinfo flags of native bf16 dot products: AVX512-BF16 (Cooper Lake, Zen 4 on) and AMX (Sapphire Rapids on).
_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@cache
def cpu_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 dot products natively (Linux's cpuinfo flags; False when unreadable)."""
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not _BF16_CPU_FLAGS.isdisjoint(line.partition(":")[2].split())
    return False


def resolve_precision(requested: Precision, device: str) -> ResolvedPrecision:
    """``auto`` → bf16 on a CUDA GPU with bf16 (Ampere on), else fp16 there; bf16 on a CPU with native bf16; else fp32.

    An explicit choice is kept, with a warning where the hardware only emulates it (slower, not wrong).

    Raises:
        ConfigError: a precision that is none of auto, fp32, bf16, fp16.
    """
    import torch

    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, got {requested!r}")
    cuda = device.startswith("cuda")
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if device == "cpu" and cpu_native_bf16() else "fp32"
    if requested == "bf16" and device == "cpu" and not cpu_native_bf16():
        log.warning("precision bf16 on a CPU without AVX512-BF16/AMX: emulated, likely slower than fp32")
    if requested == "fp16" and not cuda:
        log.warning("precision fp16 on %s: most CPUs have no fp16 arithmetic, likely slower than fp32", device)
    return requested


def torch_dtype(precision: ResolvedPrecision) -> Any:
    """The ``torch.dtype`` a model is loaded in for ``precision``."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
