"""Sampling precision: bfloat16 autocast where the CPU computes bfloat16 natively.

A 64² CCFExp sample is 25 small UNet passes whose convolutions dominate the time. On a CPU with
AVX512-BF16 or AMX, oneDNN runs them in bfloat16 with channels-last weights at about 0.6 of the
float32 time; elsewhere bfloat16 is emulated and slower, so "auto" keeps float32 there. The images
differ from float32 ones by about 1/255 at most (docs/neural.md, *Cost*)."""
from __future__ import annotations

import contextlib

import torch

from render.neural.data import NeuralInputError

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX) for oneDNN."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def sampling_context(device: torch.device | str, precision: str = "auto"):
    """The autocast context for sampling on ``device``: bfloat16 when asked, or under "auto" on a CPU
    with native bfloat16; float32 otherwise (and always on other devices under "auto")."""
    if precision not in PRECISIONS:
        raise NeuralInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    kind = torch.device(device).type
    use = precision == "bfloat16" or (precision == "auto" and kind == "cpu" and native_bf16())
    return torch.autocast(kind, dtype=torch.bfloat16) if use else contextlib.nullcontext()
