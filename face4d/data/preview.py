"""Pictures of the dataset: one apex frame per label in a captioned grid, and a GIF of a few sequences.

This is how a person checks that every label's recipe reads as the expression it names; the grid
for the default seed is kept in ``docs/labels.png``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences
from face4d.data.synth import ExpressionSynthesizer, SynthConfig, sequence_vertices
from face4d.errors import Face4DError
from render.preview import MAX_TILE
from meshops.atomic import atomic_dir
from meshops.head import HeadModel


def apex_index(seqs: LandmarkSequences, i: int) -> int:
    """Frame of sequence ``i`` farthest from neutral: the last frame of an N2E, the first of an E2N."""
    f = int(seqs.lengths[i])
    if seqs.expression_weights is not None:
        strength = np.abs(seqs.expression_weights[i, :f]).sum(-1)
    else:
        lm = seqs.sequence(i)
        strength = np.linalg.norm(lm - lm[seqs.neutral_frames()[i]], axis=-1).mean(-1)
    return int(np.argmax(strength))


def face_bounds(head: HeadModel) -> np.ndarray:
    """Box (6,) that frames the face: the neutral landmarks, widened a little and raised to the forehead."""
    lm = head.landmark_neutral
    lo, hi = lm.min(0), lm.max(0)
    height = hi[1] - lo[1]
    return np.array([lo[0] - 0.5, hi[0] + 0.5, lo[1] - 0.1 * height, hi[1] + 0.35 * height, lo[2], hi[2]])


def _label_examples(head: HeadModel, data: Dataset | None, seed: int) -> LandmarkSequences:
    """One sequence per label: the dataset's first of each, or the generator's clean recipe on the mean face."""
    if data is not None:
        firsts: dict[str, dict] = {}
        for record in data.manifest["sequences"]:
            firsts.setdefault(record["label"], record)
        return data.gather([firsts[label] for label in data.labels if label in firsts])
    synth = ExpressionSynthesizer(head, SynthConfig(), seed)
    samples = [synth.sample(0, label=label, sequence_type="N2E", identity=np.zeros(head.num_identity, np.float32),
                            intensity=1.0, clean=True) for label in synth.config.labels]
    return synth.to_sequences(samples)


def _gif_examples(head: HeadModel, data: Dataset | None, seed: int, count: int) -> LandmarkSequences:
    if data is not None:
        return data.gather(data.records()[:count])
    return ExpressionSynthesizer(head, SynthConfig(), seed).generate(range(count))[0]


def write_preview(out: str | os.PathLike, data: str | os.PathLike | None = None, seed: int = 0,
                  gif_sequences: int = 4, tile: int = 256, overwrite: bool = False,
                  progress: bool = True) -> list[Path]:
    """Write ``labels.png`` (and ``sequences.gif`` unless ``gif_sequences`` is 0) into the directory ``out``."""
    from render import MeshRenderer, image_grid, save_animation, save_image

    if gif_sequences < 0:
        raise Face4DError(f"gif sequences must be 0 or more, got {gif_sequences}")
    if not 64 <= tile <= MAX_TILE:
        raise Face4DError(f"tile size must be from 64 to {MAX_TILE} pixels, got {tile}")
    head = HeadModel.load()
    dataset = Dataset.load(data) if data is not None else None
    if dataset is not None and dataset.source is not None:
        raise Face4DError(f"{dataset.root}: an imported dataset holds landmarks only, no blendshape weights to rebuild "
                          f"the head model's meshes from; 'face4d render' drives a mesh with landmark files instead")
    examples = _label_examples(head, dataset, seed)
    bounds = face_bounds(head)
    written = []
    with atomic_dir(out, overwrite=overwrite) as tmp, MeshRenderer(head.faces, (tile, tile), bounds=bounds) as renderer:
        tiles = []
        for i in tqdm(range(len(examples)), desc="rendering labels", disable=not progress):
            tiles.append(renderer.render(sequence_vertices(head, examples, i)[apex_index(examples, i)]))
        save_image(tmp / "labels.png", image_grid(tiles, list(examples.labels), ncols=6))
        written.append("labels.png")
        if gif_sequences:
            seqs = _gif_examples(head, dataset, seed, gif_sequences)
            videos = [renderer.render_sequence(sequence_vertices(head, seqs, i))
                      for i in tqdm(range(len(seqs)), desc="rendering sequences", disable=not progress)]
            frames = max(len(v) for v in videos)
            videos = [np.concatenate([v, np.repeat(v[-1:], frames - len(v), 0)]) for v in videos]
            captions = [f"{label} ({kind})" for label, kind in zip(seqs.labels, seqs.types)]
            grid = np.stack([image_grid([v[f] for v in videos], captions, ncols=len(videos)) for f in range(frames)])
            save_animation(tmp / "sequences.gif", grid, fps=seqs.fps)
            written.append("sequences.gif")
    return [Path(out) / name for name in written]
