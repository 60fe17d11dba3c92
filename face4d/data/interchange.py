"""The landmark-sequence interchange format: one ``.npz`` layout for every command that reads or
writes landmark sequences (dataset shards, generated samples, filling inputs, real-data imports).

A file holds either one sequence or a batch:

=====================  =======================  ==============================================
key                    one sequence             batch of N (padded to the longest, F)
=====================  =======================  ==============================================
``landmarks``          (F, 68, 3) float32       (N, F, 68, 3) float32, zero past each length
``lengths``            --                       (N,) int64 frames of each sequence
``label``              str                      (N,) str; ``""`` where unknown
``type``               ``"N2E"``/``"E2N"``/""   (N,) str
``fps``                float                    float, shared by the batch
``identity_weights``   (K,) float32, optional   (N, K)
``expression_weights`` (F, 53) float32, opt.    (N, F, 53)
``head_pose``          (F, 6) float32, opt.     (N, F, 6): axis-angle (rad) + translation
``text``               str, optional            (N,) str, raw description ("high smile")
``text_enriched``      str, optional            (N,) str ("from a neutral face to a high smile")
``subject``            str, optional            (N,) str, the captured person (real-data imports)
=====================  =======================  ==============================================

Coordinates are in the head model's units (centimetres). Where the weights are stored, the meshes
of the sequence can be rebuilt exactly with ``meshops.HeadModel`` and ``meshops.apply_head_pose``.
Files are read with ``allow_pickle=False``: strings are stored as numpy unicode arrays.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from face4d.errors import Face4DError
from meshops.atomic import atomic_file
from meshops.head import NUM_LANDMARKS

SEQUENCE_TYPES = ("N2E", "E2N")
DEFAULT_FPS = 30.0
_PER_SEQUENCE = ("identity_weights",)
_PER_FRAME = ("expression_weights", "head_pose")
_STRINGS = {"labels": "label", "types": "type", "texts": "text", "texts_enriched": "text_enriched",
            "subjects": "subject"}


@dataclass
class LandmarkSequences:
    """A batch of landmark sequences of possibly different lengths (padded to the longest)."""

    landmarks: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    types: np.ndarray
    fps: float = DEFAULT_FPS
    identity_weights: np.ndarray | None = None
    expression_weights: np.ndarray | None = None
    head_pose: np.ndarray | None = None
    texts: np.ndarray | None = None
    texts_enriched: np.ndarray | None = None
    subjects: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, np.float32)
        if self.landmarks.ndim != 4 or self.landmarks.shape[2:] != (NUM_LANDMARKS, 3):
            raise Face4DError(f"landmarks must have shape (N, F, {NUM_LANDMARKS}, 3), got {self.landmarks.shape}")
        n, f = self.landmarks.shape[:2]
        self.lengths = np.asarray(self.lengths, np.int64).reshape(-1)
        if self.lengths.shape != (n,) or (self.lengths < 1).any() or (self.lengths > f).any():
            raise Face4DError(f"lengths must be {n} values in [1, {f}], got {self.lengths.tolist()}")
        for name in _STRINGS:
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=np.str_).reshape(-1)
                if value.shape != (n,):
                    raise Face4DError(f"{name} must hold {n} strings, got {value.shape[0]}")
                setattr(self, name, value)
        bad = sorted(set(self.types) - set(SEQUENCE_TYPES) - {""})
        if bad:
            raise Face4DError(f"unknown sequence type(s) {bad}; expected one of {SEQUENCE_TYPES} or ''")
        for name in _PER_SEQUENCE + _PER_FRAME:
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value, np.float32)
            lead = (n,) if name in _PER_SEQUENCE else (n, f)
            if value.shape[: len(lead)] != lead:
                raise Face4DError(f"{name} must start with dimensions {lead}, got {value.shape}")
            setattr(self, name, value)
        if not np.isfinite(self.landmarks).all():
            raise Face4DError("landmarks contain NaN or infinity")
        self.fps = float(self.fps)
        if not self.fps > 0:
            raise Face4DError(f"fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.landmarks)

    @property
    def num_frames(self) -> int:
        """Padded length F of the batch."""
        return self.landmarks.shape[1]

    def sequence(self, i: int) -> np.ndarray:
        """Landmarks of sequence ``i`` without padding, shape (lengths[i], 68, 3)."""
        return self.landmarks[i, : self.lengths[i]]

    def neutral_frames(self, strict: bool = False) -> np.ndarray:
        """Index (N,) int64 of each sequence's neutral frame: its last valid frame for ``E2N``, else
        its first. ``strict``: every sequence must be typed ``N2E`` or ``E2N`` (an untyped one has
        no known neutral end), as the evaluation of geometry-adaptive generation needs."""
        if strict:
            bad = sorted(set(self.types.tolist()) - {"N2E", "E2N"})
            if bad:
                raise Face4DError(f"every sequence needs the type N2E or E2N to have a neutral end, got {bad}")
        return np.where(self.types == "E2N", self.lengths - 1, 0).astype(np.int64)

    def select(self, index) -> "LandmarkSequences":
        """The sub-batch at ``index`` (an int, slice, boolean mask or index array), trimmed to its longest."""
        index = np.atleast_1d(np.arange(len(self))[index])
        f = int(self.lengths[index].max()) if len(index) else 1
        values = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, np.ndarray):
                value = value[index]
                if field.name in ("landmarks",) + _PER_FRAME:
                    value = value[:, :f]
            values[field.name] = value
        return replace(self, **values)

    @classmethod
    def concatenate(cls, parts: list["LandmarkSequences"]) -> "LandmarkSequences":
        """Join batches, padding to the longest; optional fields survive only if every part has them."""
        if not parts:
            raise Face4DError("nothing to concatenate")
        f = max(p.num_frames for p in parts)
        values: dict = {"fps": parts[0].fps}
        for field in fields(cls):
            if field.name == "fps":
                continue
            items = [getattr(p, field.name) for p in parts]
            if any(v is None for v in items):
                values[field.name] = None
                continue
            if field.name in ("landmarks",) + _PER_FRAME:
                items = [np.pad(v, [(0, 0), (0, f - v.shape[1])] + [(0, 0)] * (v.ndim - 2)) for v in items]
            values[field.name] = np.concatenate(items)
        return cls(**values)


def save_sequences(path: str | os.PathLike, seqs: LandmarkSequences, overwrite: bool = False) -> Path:
    """Write ``seqs`` atomically; a batch of one is written in the single-sequence layout."""
    path = Path(path)
    if path.suffix != ".npz":
        raise Face4DError(f"{path}: landmark sequences are stored as .npz")
    single = len(seqs) == 1
    arrays: dict[str, np.ndarray] = {"fps": np.float32(seqs.fps)}
    if single:
        f = int(seqs.lengths[0])
        arrays["landmarks"] = seqs.landmarks[0, :f]
    else:
        arrays["landmarks"] = seqs.landmarks
        arrays["lengths"] = seqs.lengths
    for attr, key in _STRINGS.items():
        value = getattr(seqs, attr)
        if value is not None:
            arrays[key] = value[0] if single else value
    for name in _PER_SEQUENCE + _PER_FRAME:
        value = getattr(seqs, name)
        if value is not None:
            arrays[name] = (value[0, :f] if name in _PER_FRAME else value[0]) if single else value
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path


def load_sequences(path: str | os.PathLike) -> LandmarkSequences:
    """Read a file in the interchange format (either layout) as a batch."""
    path = Path(path)
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # np.load would take any other bytes for a pickle or a bare .npy
        raise Face4DError(f"{path}: not a readable .npz file: not a zip archive of arrays (as face4d and "
                          f"numpy.savez write); truncated, or another kind of file named .npz?")
    try:
        with np.load(path, allow_pickle=False) as d:
            data = {k: d[k] for k in d.files}
    except Exception as exc:
        raise Face4DError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    if "landmarks" not in data:
        raise Face4DError(f"{path}: no 'landmarks' array (keys: {', '.join(sorted(data)) or 'none'})")
    lm = data["landmarks"]
    if not np.issubdtype(lm.dtype, np.floating) or lm.ndim not in (3, 4) or lm.shape[-2:] != (NUM_LANDMARKS, 3):
        raise Face4DError(f"{path}: 'landmarks' must be float (F, 68, 3) or (N, F, 68, 3), "
                          f"got {lm.dtype} {lm.shape}")
    single = lm.ndim == 3
    n, f = (1, lm.shape[0]) if single else lm.shape[:2]
    if n == 0 or f == 0:
        raise Face4DError(f"{path}: holds {'no sequences' if n == 0 else 'sequences of 0 frames'} "
                          f"('landmarks' has shape {lm.shape})")
    expand = (lambda v: np.asarray(v)[None]) if single else np.asarray
    kwargs: dict = {"landmarks": expand(lm), "fps": float(data.get("fps", DEFAULT_FPS))}
    kwargs["lengths"] = np.full(n, f) if single or "lengths" not in data else data["lengths"]
    for attr, key in _STRINGS.items():
        if key in data:
            kwargs[attr] = expand(data[key])
        elif attr in ("labels", "types"):
            kwargs[attr] = np.full(n, "")
    for name in _PER_SEQUENCE + _PER_FRAME:
        if name in data:
            kwargs[name] = expand(data[name])
    try:
        return LandmarkSequences(**kwargs)
    except Face4DError as exc:
        raise Face4DError(f"{path}: {exc}") from None
