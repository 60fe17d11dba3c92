"""Sampling precision: bfloat16 autocast where the CPU computes bfloat16 natively.

A 64² CCFExp sample is 25 small UNet passes whose convolutions dominate the time. On a CPU with
AVX512-BF16 or AMX, oneDNN runs them in bfloat16 faster than in float32 (the figures: *Cost* in
docs/results.md); elsewhere bfloat16 is emulated and slower, so "auto" keeps float32 there. The
images differ from float32 ones by a few 1/255 at most (``tests/test_neural.py`` bounds it).

Apart from the precision, the samplers keep their UNet's weights channels-last on the CPU, the
layout oneDNN's convolutions want (``channels_last``)."""
from __future__ import annotations

import contextlib

import torch

from render.neural.data import NeuralInputError

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX) for oneDNN."""
    flags = (getattr(torch.cpu, name, lambda: False) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    return torch.backends.mkldnn.is_available() and any(bool(flag()) for flag in flags)


def channels_last(unet: torch.nn.Module, device: torch.device) -> None:
    """``unet``'s 4-D weights channels-last on the CPU: oneDNN convolves without reordering them every
    call, the main cost of a 64² step there. The arithmetic is the same up to summation order."""
    if torch.device(device).type == "cpu":
        unet.to(memory_format=torch.channels_last)


def resolve(device: torch.device | str, precision: str = "auto") -> str:
    """"float32" or "bfloat16": what ``precision`` means on ``device`` (under "auto", bfloat16 on a CPU
    with native bfloat16, float32 otherwise and on other devices)."""
    if precision not in PRECISIONS:
        raise NeuralInputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    return "bfloat16" if torch.device(device).type == "cpu" and native_bf16() else "float32"


def sampling_context(device: torch.device | str, precision: str = "auto"):
    """The autocast context for sampling on ``device`` at ``precision`` (``resolve``)."""
    if resolve(device, precision) == "bfloat16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
