"""The paper's generation protocol for the results tables: one generated sample per test sequence.

Every row of Tables 1-4 is "a set of sequences scored against the test split" (accuracy under the
independent classifier, FID on its features). To make the rows comparable, each method produces
one sequence per test sequence, with that sequence's label (and type, and length): on a test split
of variable-length sequences the generated set then has the same lengths and label mix as the real
one, so FID measures the motion rather than differences in length or class balance.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tqdm.auto import tqdm

from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError

SampleFn = Callable[[np.ndarray, int, int], LandmarkSequences]
"""``sample(indices, frames, seed) -> LandmarkSequences``: generate one ``frames``-frame sequence for
each reference sequence ``indices`` (a method may read their labels, types or known frames)."""


def generate_like(reference: LandmarkSequences, sample: SampleFn, seed: int = 0, batch_size: int = 128,
                  progress: bool = True, desc: str = "generating") -> LandmarkSequences:
    """One sequence per ``reference`` sequence with its length, in reference order.

    References are grouped by length and the groups cut into batches of at most ``batch_size``;
    batch ``k`` of length ``F`` is sampled with seed ``seed + 1000 * F + k``, so a result does not
    depend on which other lengths are present. The returned set carries the reference's labels and
    types (what each sample was asked to be), whatever ``sample`` recorded.
    """
    if batch_size < 1:
        raise Face4DError(f"batch_size must be >= 1, got {batch_size}")
    parts, order = [], []
    jobs = []
    for frames in np.unique(reference.lengths):
        indices = np.flatnonzero(reference.lengths == frames)
        for k, start in enumerate(range(0, len(indices), batch_size)):
            jobs.append((indices[start:start + batch_size], int(frames), seed + 1000 * int(frames) + k))
    for indices, frames, job_seed in tqdm(jobs, desc=desc, unit="batch", disable=not progress):
        part = sample(indices, frames, job_seed)
        if len(part) != len(indices) or part.num_frames != frames:
            raise Face4DError(f"sample() returned {len(part)} sequences of {part.num_frames} frames, "
                              f"expected {len(indices)} of {frames}")
        parts.append(part)
        order.append(indices)
    joined = LandmarkSequences.concatenate(parts)
    result = joined.select(np.argsort(np.concatenate(order), kind="stable"))
    result.labels, result.types = reference.labels.copy(), reference.types.copy()
    return result
