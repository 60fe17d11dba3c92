"""Thread control for torch: the landmark models are small, and small tensors run fastest on one thread.

Used by the pipeline (sampling, FLAME fits), ``face4d demo`` and the benchmarks; it sits low so that
none of them reaches up into another for it.
"""
from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def torch_threads(count: int):
    """Run torch on ``count`` intra-op threads, then restore the setting. The landmark models are
    small: sampling one sequence at a time is fastest on one thread, and two threads fighting over
    a small machine's busy cores are far slower (docs/tuning.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
