"""Checking and reading the 68 landmarks, in one place for generation, filling, decoding and the command line.

Every command that takes landmarks from a user (``generate --neutral-landmarks``, ``fill``,
``render``, ``retarget``, ``dataset import bu4dfe --landmark-index``) and every module that checks
them (a sequence against a mesh, a neutral face against the model's mean face) goes through these
functions, so that a file is read the same way and a wrong one fails with the same one-line
``Face4DError`` everywhere. The neutral frame of a sequence is ``LandmarkSequences.neutral_frames``.

* checks: ``check_units`` (centimetres against metres or millimetres), ``check_neutral`` (68, 3),
  ``check_landmark_frames`` (F, 68, 3), ``check_landmark_ids`` (68 vertex ids of a mesh);
* readers: ``load_landmark_file`` (a sequence: .npz interchange or .npy), ``neutral_landmarks_from_file``
  (one neutral face: .npz, .npy, .txt), ``neutral_landmarks_from_mesh`` (a mesh of the head's
  topology), ``load_landmark_ids`` (68 indices: .npy or .txt).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from face4d.data.interchange import LandmarkSequences, load_sequences
from face4d.errors import Face4DError
from meshops.head import NUM_LANDMARKS

# ------------------------------------------------------------------------------------ checks


def spread(points: np.ndarray) -> float:
    """The size of a face: root mean square distance of its landmarks from their centre, over one
    set (68, 3) or many (..., 68, 3), each about its own centre."""
    points = np.asarray(points, np.float64).reshape(-1, NUM_LANDMARKS, 3)
    return float(np.sqrt(((points - points.mean(1, keepdims=True)) ** 2).sum(-1).mean()))


def check_units(landmarks: np.ndarray, reference: np.ndarray, what: str = "the landmark sequence's face",
                against: str = "the mesh's landmarks") -> None:
    """Refuse ``landmarks`` (..., 68, 3) of a clearly different size than ``reference`` (68, 3),
    the usual sign of metres or millimetres against centimetres (more than 3x apart)."""
    size, ref = spread(landmarks), spread(reference)
    if not ref / 3 <= size <= 3 * ref:
        raise Face4DError(f"{what} spans {size:.3g} units around its centre and {against} {ref:.3g}: they are in "
                          "different units (the head model and the models work in centimetres; e.g. multiply "
                          "metres by 100, divide millimetres by 10)")


def check_neutral(landmarks, source: str | os.PathLike) -> np.ndarray:
    """One neutral face as (68, 3) float32 finite landmarks, or an error naming ``source``."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.shape != (NUM_LANDMARKS, 3):
        raise Face4DError(f"{source}: neutral landmarks must have shape ({NUM_LANDMARKS}, 3), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise Face4DError(f"{source}: neutral landmarks contain NaN or infinity")
    return landmarks


def check_landmark_frames(landmarks: np.ndarray, source: str) -> np.ndarray:
    """One sequence as (F, 68, 3) float32 finite landmarks with F >= 1, or an error naming ``source``."""
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 3) or len(landmarks) < 1 \
            or not np.issubdtype(landmarks.dtype, np.number):
        raise Face4DError(f"{source}: a landmark sequence must be a (F, {NUM_LANDMARKS}, 3) array of numbers with "
                          f"F >= 1, got {landmarks.dtype} {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise Face4DError(f"{source}: landmarks contain NaN or infinity")
    return landmarks.astype(np.float32)


def check_landmark_ids(landmark_ids, num_vertices: int, source: str = "landmark ids") -> np.ndarray:
    """``landmark_ids`` as (68,) int64 vertex ids of a mesh with ``num_vertices`` vertices, or a clear error."""
    ids = np.asarray(landmark_ids)
    if ids.shape != (NUM_LANDMARKS,) or not np.issubdtype(ids.dtype, np.integer):
        raise Face4DError(f"{source}: expected {NUM_LANDMARKS} integer vertex ids, got {ids.dtype} {ids.shape}")
    if ids.min() < 0 or ids.max() >= num_vertices:
        raise Face4DError(f"{source}: vertex ids must lie in [0, {num_vertices}) for a mesh of {num_vertices} "
                          f"vertices, got [{ids.min()}, {ids.max()}]")
    if len(np.unique(ids)) != NUM_LANDMARKS:
        raise Face4DError(f"{source}: the {NUM_LANDMARKS} landmark vertex ids must be distinct")
    return ids.astype(np.int64)


# ------------------------------------------------------------------------------------ readers


def _read_array(path: Path, what: str, ndmin: int) -> np.ndarray:
    """An array from ``.npy``, or from ``.txt`` / ``.csv`` (whitespace- or comma-separated numbers)."""
    if not path.is_file():
        raise Face4DError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".txt", ".csv"):
        raise Face4DError(f"{path}: unsupported landmark file {suffix or '(no suffix)'!r}; use .npy or .txt (a "
                          "sequence or a neutral face also .npz, the interchange format)")
    try:
        if suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False))
        return np.loadtxt(path, delimiter="," if "," in path.read_text() else None, ndmin=ndmin)
    except Exception as exc:
        raise Face4DError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None


def load_landmark_file(path: str | os.PathLike) -> LandmarkSequences:
    """A landmark sequence file: ``.npz`` in the interchange format or ``.npy`` (F, 68, 3);
    returned as a batch."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        return load_sequences(path)
    if path.suffix.lower() != ".npy":
        raise Face4DError(f"{path}: unsupported landmark file; use .npz (interchange format) or .npy (F, 68, 3)")
    frames = check_landmark_frames(_read_array(path, "landmarks", 1), str(path))
    return LandmarkSequences(frames[None], [len(frames)], [""], [""])


def neutral_landmarks_from_file(path: str | os.PathLike) -> np.ndarray:
    """The neutral landmarks (68, 3) float32 stored in ``path``, in centimetres.

    * ``.npz`` in the interchange format: the first sequence's neutral frame, i.e. its first
      frame, or its last valid frame when the sequence is typed ``E2N`` (expression to neutral).
    * ``.npy``: an array of shape (68, 3) (or (1, 68, 3)).
    * ``.txt`` / ``.csv``: 68 rows of 3 numbers (whitespace- or comma-separated).
    """
    path = Path(path)
    if path.suffix.lower() == ".npz":
        seqs = load_sequences(path)
        return check_neutral(seqs.landmarks[0, seqs.neutral_frames()[0]], path)
    landmarks = _read_array(path, "landmarks", 2)
    if landmarks.shape == (1, NUM_LANDMARKS, 3):
        landmarks = landmarks[0]
    if not np.issubdtype(landmarks.dtype, np.number) or landmarks.shape != (NUM_LANDMARKS, 3):
        raise Face4DError(f"{path}: neutral landmarks must be a ({NUM_LANDMARKS}, 3) array of numbers, "
                          f"got {landmarks.dtype} {landmarks.shape}")
    return check_neutral(landmarks, path)


def neutral_landmarks_from_mesh(path: str | os.PathLike, head=None) -> np.ndarray:
    """The 68 landmarks (68, 3) float32 of a neutral face mesh in the head model's topology.

    The mesh must have the head model's vertices and triangles (the same count and the same
    faces, e.g. one written by ``meshops.io.save_mesh`` from ``HeadModel.vertices(...)``), because
    the landmarks are read as ``vertices[head.landmark_ids]``. Units: the head model, like the
    dataset and the models trained on it, is in centimetres, so the mesh must be too (no rescaling
    is done here; ``LandmarkGenerator.generate_from_neutral`` refuses landmarks of a clearly
    different scale). ``head`` defaults to ``HeadModel.load()``.
    """
    from meshops.head import HeadModel
    from meshops.io import load_mesh

    head = HeadModel.load() if head is None else head
    mesh = load_mesh(path)
    vertices = np.asarray(mesh.vertices, np.float32)
    faces = np.asarray(mesh.faces, np.int64)
    expected = f"the head model's topology ({head.num_vertices} vertices, {len(head.faces)} triangles)"
    if len(vertices) != head.num_vertices or faces.shape != head.faces.shape:
        raise Face4DError(f"{path}: has {len(vertices)} vertices and {len(faces)} triangles; a neutral face mesh "
                          f"must have {expected}, e.g. a mesh written from meshops.HeadModel.vertices()")
    if not np.array_equal(faces, head.faces):
        raise Face4DError(f"{path}: has {len(vertices)} vertices and {len(faces)} triangles but they are connected "
                          f"differently; a neutral face mesh must have {expected} with the same vertex order")
    return check_neutral(vertices[head.landmark_ids], path)


def load_landmark_ids(path: str | os.PathLike, num_vertices: int | None = None) -> np.ndarray:
    """68 landmark indices (68,) int64 from ``.npy`` or ``.txt`` (whitespace/comma separated; a row
    or a column): a mesh's landmark vertex ids, checked against its ``num_vertices`` when given, or
    the landmark points of a capture's files (``face4d dataset import bu4dfe --landmark-index``)."""
    path = Path(path)
    ids = _read_array(path, "landmark ids", 1)
    if ids.ndim == 2 and 1 in ids.shape:
        ids = ids.reshape(-1)
    if np.issubdtype(ids.dtype, np.floating) and ids.size and np.all(ids == np.round(ids)):
        ids = ids.astype(np.int64)
    if num_vertices is not None:
        return check_landmark_ids(ids, num_vertices, str(path))
    if ids.shape != (NUM_LANDMARKS,) or not np.issubdtype(ids.dtype, np.integer):
        raise Face4DError(f"{path}: a landmark index must hold {NUM_LANDMARKS} integers, got {ids.dtype} {ids.shape}")
    return ids.astype(np.int64)
