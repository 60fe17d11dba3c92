"""Loading CoMA captures as 68-landmark N2E / E2N sequences.

CoMA (Ranjan et al. 2018) stores one folder per capture, ``root/<subject>/<action>/``, holding one
PLY per frame (``high_smile.000001.ply`` ...) registered to the FLAME topology (5023 vertices), in
metres, at 60 fps. The 12 action folder names are the labels. The meshes carry no landmarks, so
the 68 points are read off each frame through a user-given ``LandmarkEmbedding`` on that topology.
Each sequence records its subject folder's name (``FaceTalk_170725_00137_TA``) as its subject.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face4d.data.cutting import cut_captures, frame_files, subfolders
from face4d.data.interchange import NUM_LANDMARKS, LandmarkSequences
from face4d.errors import Face4DError
from meshops.io import MeshFileError, load_mesh

COMA_FPS = 60.0
COMA_ACTIONS = ("bareteeth", "cheeks_in", "eyebrow", "high_smile", "lips_back", "lips_up",
                "mouth_down", "mouth_extreme", "mouth_middle", "mouth_open", "mouth_side", "mouth_up")


@dataclass
class LandmarkEmbedding:
    """Where the 68 landmarks sit on a mesh topology.

    Either on vertices (``vertex_ids`` (68,)), or inside triangles (``face_idx`` (68,) with
    barycentric ``b_coords`` (68, 3)), as in FLAME's landmark embeddings. Barycentric points follow
    the surface between vertices, which is how FLAME defines its 68 landmarks.
    """

    vertex_ids: np.ndarray | None = None
    face_idx: np.ndarray | None = None
    b_coords: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.vertex_ids is None) == (self.face_idx is None or self.b_coords is None):
            raise Face4DError("a landmark embedding needs either vertex_ids, or face_idx with b_coords")
        if self.vertex_ids is not None:
            self.vertex_ids = _indices(self.vertex_ids, "vertex_ids")
            return
        self.face_idx = _indices(self.face_idx, "face_idx")
        self.b_coords = np.asarray(self.b_coords, np.float64)
        if self.b_coords.shape != (NUM_LANDMARKS, 3) or not np.isfinite(self.b_coords).all():
            raise Face4DError(f"b_coords must be finite barycentric coordinates of shape ({NUM_LANDMARKS}, 3), "
                              f"got {self.b_coords.shape}")

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "LandmarkEmbedding":
        """Read ``.npz`` (keys ``vertex_ids``, or ``lmk_face_idx`` + ``lmk_b_coords``) or ``.npy`` vertex ids."""
        path = Path(path)
        if not path.is_file():
            raise Face4DError(f"{path}: no such landmark embedding file")
        try:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # .npy: the vertex ids themselves
                arrays = {"vertex_ids": loaded}
            else:
                with loaded:
                    arrays = {k: loaded[k] for k in loaded.files}
        except Exception as exc:
            raise Face4DError(f"{path}: not a readable .npz/.npy landmark embedding "
                              f"({type(exc).__name__}: {exc}); pickled files must be re-saved as .npz") from None
        try:
            if "vertex_ids" in arrays:
                return cls(vertex_ids=arrays["vertex_ids"])
            if "lmk_face_idx" in arrays and "lmk_b_coords" in arrays:
                return cls(face_idx=arrays["lmk_face_idx"], b_coords=arrays["lmk_b_coords"])
        except Face4DError as exc:
            raise Face4DError(f"{path}: {exc}") from None
        raise Face4DError(f"{path}: needs key 'vertex_ids' or keys 'lmk_face_idx' and 'lmk_b_coords' "
                          f"(found: {', '.join(sorted(arrays)) or 'none'})")

    def apply(self, vertices: np.ndarray, faces: np.ndarray | None = None) -> np.ndarray:
        """Landmarks (..., 68, 3) of meshes ``vertices`` (..., V, 3); ``faces`` (T, 3) for barycentric."""
        vertices = np.asarray(vertices, np.float64)
        if self.vertex_ids is not None:
            _check_range(self.vertex_ids, vertices.shape[-2], "vertex", "vertices")
            return vertices[..., self.vertex_ids, :]
        if faces is None:
            raise Face4DError("a barycentric landmark embedding needs the mesh faces")
        faces = np.asarray(faces, np.int64)
        _check_range(self.face_idx, len(faces), "face", "faces")
        corners = vertices[..., faces[self.face_idx], :]  # (..., 68, 3 corners, 3)
        return np.einsum("...lcx,lc->...lx", corners, self.b_coords)


def load_coma(root: str | os.PathLike, embedding: LandmarkEmbedding | str | os.PathLike, frames: int | None = 40,
              scale: float = 100.0, subjects: list[str] | None = None, actions: list[str] | None = None,
              progress: bool = True) -> LandmarkSequences:
    """Read CoMA captures under ``root`` as N2E/E2N landmark sequences of ``frames`` frames.

    ``embedding`` is a ``LandmarkEmbedding`` or a file for ``LandmarkEmbedding.from_file``.
    ``scale`` multiplies the coordinates: CoMA is in metres and the package works in centimetres,
    hence 100. ``subjects`` / ``actions`` restrict the folders read; folders that are not CoMA
    actions are skipped with a warning.
    """
    if not (np.isfinite(scale) and scale > 0):
        raise Face4DError(f"scale must be a positive number, got {scale}")
    if not isinstance(embedding, LandmarkEmbedding):
        embedding = LandmarkEmbedding.from_file(embedding)
    found = _find_captures(Path(root), subjects, actions)
    captures = ((subject, label, scale * _read_capture(folder, embedding))
                for subject, label, folder in tqdm(found, desc="CoMA captures", unit="capture",
                                                   disable=not progress))
    return cut_captures(captures, frames, COMA_FPS, root)


def _find_captures(root: Path, subjects: list[str] | None,
                   actions: list[str] | None) -> list[tuple[str, str, Path]]:
    """``(subject, action, folder)`` of every capture to read, in a stable order."""
    if not root.is_dir():
        raise Face4DError(f"{root}: CoMA root folder not found")
    unknown = sorted(set(actions or ()) - set(COMA_ACTIONS))
    if unknown:
        raise Face4DError(f"unknown CoMA action(s) {', '.join(unknown)}; expected some of {', '.join(COMA_ACTIONS)}")
    if subjects is None:
        subject_dirs = subfolders(root)
    else:
        subject_dirs = [root / s for s in subjects]
        for folder in subject_dirs:
            if not folder.is_dir():
                raise Face4DError(f"{folder}: CoMA subject folder not found")
    found, skipped = [], []
    for subject in subject_dirs:
        for folder in subfolders(subject):
            if folder.name not in COMA_ACTIONS:
                if actions is None:  # with an explicit action list, other folders are not looked at
                    skipped.append(str(folder))
            elif actions is None or folder.name in actions:
                found.append((subject.name, folder.name, folder))
    if skipped:
        warnings.warn(f"skipped {len(skipped)} folder(s) that are not CoMA actions: {', '.join(skipped)}",
                      stacklevel=3)
    missing = sorted(set(actions or ()) - {label for _, label, _ in found})
    if missing:
        raise Face4DError(f"{root}: no capture of requested action(s) {', '.join(missing)}")
    if not found:
        raise Face4DError(f"{root}: no CoMA captures found (expected <subject>/<action>/<action>.000001.ply)")
    return found


def _read_capture(folder: Path, embedding: LandmarkEmbedding) -> np.ndarray:
    """Landmarks (F, 68, 3) of the PLY frames in ``folder``, in file units."""
    files = frame_files(folder, [".ply"])
    if not files:
        raise Face4DError(f"{folder}: no .ply frames in this CoMA capture folder")
    landmarks, num_vertices = [], None
    for path in files:
        try:
            mesh = load_mesh(path)
        except MeshFileError as exc:
            raise Face4DError(str(exc)) from None
        num_vertices = num_vertices or len(mesh.vertices)
        if len(mesh.vertices) != num_vertices:
            raise Face4DError(f"{path}: has {len(mesh.vertices)} vertices but {files[0].name} "
                              f"has {num_vertices}; all frames of a capture must share one topology")
        try:
            landmarks.append(embedding.apply(mesh.vertices, mesh.faces))
        except Face4DError as exc:
            raise Face4DError(f"{path}: {exc}") from None
    return np.stack(landmarks)


def _indices(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` as 68 non-negative int64 indices, or a Face4DError that says what is wrong."""
    values = np.asarray(values)
    if values.shape != (NUM_LANDMARKS,) or not np.issubdtype(values.dtype, np.integer):
        flame_static = values.shape[:1] == (51,)
        hint = " (FLAME's flame_static_embedding has 51 points, without the jaw line)" if flame_static else ""
        raise Face4DError(f"{name} must be {NUM_LANDMARKS} integer indices in the 68-point order, "
                          f"got {values.dtype} {values.shape}{hint}")
    if (values < 0).any():
        raise Face4DError(f"{name} contains negative indices")
    return values.astype(np.int64)


def _check_range(indices: np.ndarray, count: int, what: str, plural: str) -> None:
    if indices.max() >= count:
        raise Face4DError(f"landmark embedding uses {what} {indices.max()} but the mesh has {count} {plural}")
