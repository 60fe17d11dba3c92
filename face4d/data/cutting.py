"""Turning raw captures into the N2E / E2N sequences the model trains on.

CoMA and BU-4DFE record each expression as one capture that goes neutral -> apex -> neutral. The
paper splits every capture at its apex into N2E (neutral to expression, frames [0, apex]) and E2N
(expression to neutral, frames [apex, end]), and resamples both linearly to 40 frames so that
performances of different speeds share one time axis. The loaders only find and read files; the
cutting, resampling and batching they share lives here.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from face4d.data.interchange import LandmarkSequences
from face4d.data.labels import get_label
from face4d.errors import Face4DError

MIN_FRAMES = 3
"""Shortest part kept. A part of one or two frames (an apex at the very start or end of a capture)
is a jump rather than a motion, and resampling it to 40 frames would only invent a linear ramp."""

_DIGITS = re.compile(r"\d+")


def resample(seq: np.ndarray, frames: int) -> np.ndarray:
    """Linearly interpolate ``seq`` (F, ...) to ``frames`` frames over normalised time [0, 1].

    The first and last frames are kept exactly; a 1-frame input is repeated.
    """
    seq = np.asarray(seq)
    if frames <= 0:
        raise Face4DError(f"frames must be a positive number of frames, got {frames}")
    if len(seq) == 0:
        raise Face4DError("cannot resample an empty sequence")
    pos = np.linspace(0.0, len(seq) - 1, frames)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(seq) - 1)
    w = (pos - lo).reshape((-1,) + (1,) * (seq.ndim - 1))
    out = (1.0 - w) * seq[lo] + w * seq[hi]
    return out.astype(seq.dtype if np.issubdtype(seq.dtype, np.floating) else np.float64)


def apex_frame(seq: np.ndarray) -> int:
    """Index of the frame farthest from the first (mean landmark distance).

    Captures start neutral and peak at the apex, so the apex is where the face has moved most from
    frame 0. On a held apex (a plateau) the first frame of the plateau is returned.
    """
    seq = np.asarray(seq, np.float64)
    if len(seq) == 0:
        raise Face4DError("cannot find the apex of an empty sequence")
    distance = np.linalg.norm(seq - seq[:1], axis=-1).reshape(len(seq), -1).mean(axis=1)
    return int(np.argmax(distance))


def cut_n2e_e2n(seq: np.ndarray, frames: int | None = 40,
                min_frames: int = MIN_FRAMES) -> list[tuple[str, np.ndarray]]:
    """Split a neutral -> apex -> neutral capture at its apex into ``("N2E", ...)`` and ``("E2N", ...)``.

    Both parts contain the apex frame. Parts shorter than ``min_frames`` are left out; each kept
    part is resampled to ``frames`` frames, or keeps its native length when ``frames`` is None.
    """
    seq = np.asarray(seq)
    apex = apex_frame(seq)
    parts = (("N2E", seq[: apex + 1]), ("E2N", seq[apex:]))
    return [(kind, part if frames is None else resample(part, frames))
            for kind, part in parts if len(part) >= min_frames]


def frame_files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    """Files of ``folder`` with one of ``suffixes``, in the order of the last number in their name.

    Sorting by number rather than by name keeps ``x.10.ply`` after ``x.9.ply`` when names are not
    zero-padded. A file with no number in its name has no place in the sequence and is an error.
    """
    suffixes = {s.lower() for s in suffixes}
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes]
    for path in files:
        if not _DIGITS.search(path.stem):
            raise Face4DError(f"{path}: no frame number in the file name")
    return sorted(files, key=lambda p: (int(_DIGITS.findall(p.stem)[-1]), p.name))


def subfolders(folder: Path) -> list[Path]:
    """Visible subfolders of ``folder`` sorted by name, so that loading order is reproducible."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def cut_captures(captures: Iterable[tuple[str, str, np.ndarray]], frames: int | None, fps: float,
                 source: str | os.PathLike, min_frames: int = MIN_FRAMES) -> LandmarkSequences:
    """Cut every ``(subject, label, landmarks (F, 68, 3))`` capture into N2E/E2N parts and batch them.

    Each part keeps its capture's subject (the person, for the dataset's identity split). Texts are
    the labels' own (``face4d.data.labels``), as for generated data; ``source`` names the dataset in
    the error raised when no capture yields a part of ``min_frames`` frames.
    """
    if frames is not None and frames <= 0:
        raise Face4DError(f"frames must be a positive number of frames or None, got {frames}")
    subjects, labels, types, seqs = [], [], [], []
    for subject, label, landmarks in captures:
        for kind, part in cut_n2e_e2n(landmarks, frames, min_frames):
            subjects.append(subject)
            labels.append(label)
            types.append(kind)
            seqs.append(part)
    if not seqs:
        raise Face4DError(f"{source}: no capture has an N2E or E2N part of at least {min_frames} frames")
    lengths = np.array([len(s) for s in seqs])
    padded = np.zeros((len(seqs), lengths.max()) + seqs[0].shape[1:], np.float32)
    for i, part in enumerate(seqs):
        padded[i, : len(part)] = part
    described = [get_label(label) for label in labels]
    return LandmarkSequences(landmarks=padded, lengths=lengths, labels=labels, types=types, fps=fps,
                             texts=[d.text for d in described],
                             texts_enriched=[d.enriched_text(kind) for d, kind in zip(described, types)],
                             subjects=subjects)
