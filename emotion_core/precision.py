"""Which dtype the frozen weights take, whether training autocasts to bf16, and which attention kernel runs.

bf16 where the machine computes in it natively: a GPU, or a CPU with AMX or AVX512-BF16 (elsewhere a CPU emulates bf16,
slower than float32), on a CPU only for models wide enough for it to pay. The trained weights always stay float32.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

PRECISIONS: tuple[str, ...] = ("auto", "bf16", "fp32")
# On a CPU, bf16 pays once matrix products dominate a step: a LoRA epoch of a 576-wide model took half the time of
# float32, a 256-wide one two thirds, and a 64-wide one gained nothing and lost a second to oneDNN building bf16 kernels
# for each new batch shape.
CPU_BF16_MIN_HIDDEN_SIZE = 256


def use_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


def native_bf16() -> bool:
    """Whether this machine computes in bf16 natively: a GPU that has it, or a CPU with AMX or AVX512-BF16."""
    import torch

    if use_gpu():
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    return any(getattr(cpu, check, lambda: False)() for check in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))


@functools.cache
def hidden_size(model: str) -> int:
    from transformers import AutoConfig

    from emotion_core.sources import local_path

    try:
        return int(getattr(AutoConfig.from_pretrained(local_path(model)), "hidden_size", 0) or 0)
    except (OSError, ValueError):  # loading the model will say why; float32 meanwhile
        return 0


def frozen_dtype(model: str, precision: str = "auto") -> torch.dtype:
    """The dtype of frozen full-precision weights. ``auto``: bf16 where the machine computes in it natively, on a CPU
    only for models of CPU_BF16_MIN_HIDDEN_SIZE and wider; float32 elsewhere. ``bf16`` / ``fp32`` force one."""
    import torch

    check_precision(precision)
    if precision == "fp32":
        return torch.float32
    if precision == "bf16" or (native_bf16() and (use_gpu() or hidden_size(model) >= CPU_BF16_MIN_HIDDEN_SIZE)):
        return torch.bfloat16
    return torch.float32


def bf16_autocast(model: torch.nn.Module):
    """bf16 autocast on the model's device when its frozen weights are bf16 (its trained ones are float32), as in
    training; a no-op context otherwise."""
    import torch

    device = next(model.parameters()).device
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=any(p.dtype == torch.bfloat16 for p in model.parameters()))


def attention_for(dtype: torch.dtype) -> str:
    # SDPA is the fused kernel on a GPU and the fastest float32 path on a CPU. On a CPU in bf16, SDPA's flash-attention
    # backward is the slow part: 17.5 ms a layer against 1.6 ms in float32 (SmolLM2-135M LoRA, 32 x 22 tokens), where
    # eager attention trains 1.6x faster than SDPA in bf16.
    import torch

    return "eager" if dtype == torch.bfloat16 and not use_gpu() else "sdpa"
