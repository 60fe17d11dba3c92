"""Loading BU-4DFE landmark tracks as 68-landmark N2E / E2N sequences.

BU-4DFE (Yin et al. 2008) records each subject performing six expressions at 25 fps, one folder per
capture, ``root/<subject>/<Expression>/``. We read its per-frame landmark files, not the meshes:
``.bnd`` (the dataset's own, 83 points, one ``x y z`` or ``index x y z`` line each, where the index
is a mesh vertex id and is ignored), ``.txt`` in the same layout, or ``.npy`` arrays (P, 3). Files
of other types in a capture folder (``.wrl``, ``.bmp`` ...) are ignored. Each sequence records its
subject folder's name (``F001``) as its subject.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face4d.data.cutting import cut_captures, frame_files, subfolders
from face4d.data.interchange import NUM_LANDMARKS, LandmarkSequences
from face4d.errors import Face4DError

BU4DFE_FPS = 25.0
BU4DFE_LABELS = {"angry": "anger", "disgust": "disgust", "fear": "fear",
                 "happy": "happiness", "sad": "sadness", "surprise": "surprise"}
LANDMARK_SUFFIXES = (".bnd", ".txt", ".npy")


def load_bu4dfe(root: str | os.PathLike, frames: int | None = 40, landmark_index: np.ndarray | None = None,
                scale: float = 1.0, progress: bool = True) -> LandmarkSequences:
    """Read BU-4DFE captures under ``root`` as N2E/E2N landmark sequences of ``frames`` frames.

    Frames with other than 68 points (the 83 of ``.bnd`` files) need ``landmark_index``: 68 indices
    into their points, in the 68-point order. ``scale`` multiplies the coordinates; BU-4DFE's are
    roughly millimetres, so pass 0.1 for the package's centimetres.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise Face4DError(f"scale must be a positive number, got {scale}")
    if landmark_index is not None:
        landmark_index = np.asarray(landmark_index)
        if landmark_index.shape != (NUM_LANDMARKS,) or not np.issubdtype(landmark_index.dtype, np.integer) \
                or (landmark_index < 0).any():
            raise Face4DError(f"landmark_index must be {NUM_LANDMARKS} non-negative integer indices, "
                              f"got {landmark_index.dtype} {landmark_index.shape}")
    found = _find_captures(Path(root))
    captures = ((subject, label, scale * _read_capture(folder, landmark_index))
                for subject, label, folder in tqdm(found, desc="BU-4DFE captures", unit="capture",
                                                   disable=not progress))
    return cut_captures(captures, frames, BU4DFE_FPS, root)


def _find_captures(root: Path) -> list[tuple[str, str, Path]]:
    """``(subject, label, folder)`` of every expression folder, matched case-insensitively."""
    if not root.is_dir():
        raise Face4DError(f"{root}: BU-4DFE root folder not found")
    found, skipped = [], []
    for subject in subfolders(root):
        for folder in subfolders(subject):
            label = BU4DFE_LABELS.get(folder.name.lower())
            if label is None:
                skipped.append(str(folder))
            else:
                found.append((subject.name, label, folder))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} folder(s) that are not BU-4DFE expressions: {', '.join(skipped)}",
                      stacklevel=3)
    if not found:
        raise Face4DError(f"{root}: no BU-4DFE captures found (expected <subject>/<Expression>/<frame>.bnd "
                          f"with Expression one of Angry, Disgust, Fear, Happy, Sad, Surprise)")
    return found


def _read_capture(folder: Path, landmark_index: np.ndarray | None) -> np.ndarray:
    """Landmarks (F, 68, 3) of the per-frame landmark files in ``folder``, in file units."""
    files = frame_files(folder, LANDMARK_SUFFIXES)
    if not files:
        raise Face4DError(f"{folder}: no landmark files ({', '.join(LANDMARK_SUFFIXES)}) in this capture folder")
    suffixes = sorted({p.suffix.lower() for p in files})
    if len(suffixes) > 1:
        raise Face4DError(f"{folder}: mixes landmark files of types {', '.join(suffixes)}; keep one per capture")
    points = [read_landmark_file(path) for path in files]
    for path, frame in zip(files, points):
        if len(frame) != len(points[0]):
            raise Face4DError(f"{path}: has {len(frame)} points but {files[0].name} has {len(points[0])}")
    count = len(points[0])
    if landmark_index is None:
        if count != NUM_LANDMARKS:
            raise Face4DError(f"{files[0]}: has {count} landmarks, not {NUM_LANDMARKS}; pass landmark_index "
                              f"(the {NUM_LANDMARKS} indices of the 68-point order among its {count} points)")
        return np.stack(points)
    if landmark_index.max() >= count:
        raise Face4DError(f"{files[0]}: landmark_index uses point {landmark_index.max()} but the file has {count}")
    return np.stack(points)[:, landmark_index]


def read_landmark_file(path: Path) -> np.ndarray:
    """Points (P, 3) of one ``.bnd`` / ``.txt`` (``x y z`` or ``index x y z`` lines) or ``.npy`` file."""
    if path.stat().st_size == 0:
        raise Face4DError(f"{path}: file is empty")
    try:
        if path.suffix.lower() == ".npy":
            points = np.load(path, allow_pickle=False)
        else:
            points = np.loadtxt(path, ndmin=2)
            points = points[:, -3:] if points.shape[1] in (3, 4) else points
    except Exception as exc:
        raise Face4DError(f"{path}: cannot read landmarks ({type(exc).__name__}: {exc})") from None
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or not np.issubdtype(points.dtype, np.number):
        raise Face4DError(f"{path}: expected lines of 'x y z' or 'index x y z' (an array (P, 3) for .npy), "
                          f"got shape {points.shape}")
    if not np.isfinite(points).all():
        raise Face4DError(f"{path}: coordinates contain NaN or infinity")
    return points.astype(np.float64)
