"""``face4d demo``: a few labels on the default head, exported with a captioned preview grid.

The quickest look at what face4d does, and the README's main job: one sequence per label, each
starting from the head's own neutral face, decoded onto the head, exported per label and shown in
one preview, on one torch thread (``face4d.threads.torch_threads``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from face4d.errors import Face4DError
from face4d.outputs import (PREVIEW_FORMATS, check_export_formats, check_out_dir, check_preview_formats,
                            check_preview_size)
from face4d.pipeline import TARGET_PASSES, Pipeline, PipelineResult
from face4d.threads import torch_threads

DEMO_LABELS = ("high_smile", "mouth_open", "sadness", "bareteeth")
DEMO_SEED = 3


def run_demo(out_dir: str | os.PathLike, labels: Sequence[str] = DEMO_LABELS, seed: int = DEMO_SEED,
             frames: int = 40, formats: str | Sequence[str] | None = None,
             preview: str | Sequence[str] | None = PREVIEW_FORMATS, size: int = 256, overwrite: bool = False,
             progress: bool = True, pipeline: Pipeline | None = None, sampling=None) -> PipelineResult:
    """``face4d demo``: one sequence per label on the default head, exported into ``out_dir/<label>/``,
    with a captioned preview grid (``preview.mp4`` and ``preview.gif``).

    Each sequence starts from the head's own neutral face (``Pipeline.generate(start="target")``:
    geometry-adaptive generation with one pass, i.e. filling from a known neutral first frame,
    guided towards the label), so frame 0 is exactly the head at rest and the decoder moves it from
    there. Same seed, same output.
    """
    from tqdm.auto import tqdm

    from face4d.data.interchange import LandmarkSequences
    from face4d.data.labels import get_label

    labels = [get_label(name).name for name in labels]
    if not labels or len(set(labels)) != len(labels):
        raise Face4DError(f"the demo needs distinct labels, got {labels}")
    check_export_formats(formats)
    if check_preview_formats(preview):
        check_preview_size(len(labels), frames, size)
    check_out_dir(out_dir, overwrite)
    pipe = Pipeline.from_default() if pipeline is None else pipeline
    target = pipe.target()
    with torch_threads(1):
        parts = [pipe.sample(label=name, neutral_landmarks=target.landmarks, frames=frames, seed=seed,
                             passes=TARGET_PASSES, sampling=sampling)  # what generate(start="target") does
                 for name in tqdm(labels, desc="generating", unit="label", disable=not progress)]
    result = pipe.decode(LandmarkSequences.concatenate(parts), target, names=labels, progress=progress)
    pipe.export(result, out_dir, formats, overwrite=overwrite, preview=preview, size=size, progress=progress)
    return result
