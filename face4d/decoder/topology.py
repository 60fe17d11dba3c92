"""The mesh topology a learned decoder is tied to, and the checks that refuse any other mesh.

A spiral decoder's weights only make sense on the mesh they were trained on: its spirals follow the
triangles, and its pooling matrices come from a decimation of the template's vertex positions.
Neither is stored with the weights (both are rebuilt, through the caches of ``meshops``, from the
template); the model config keeps the topology's *fingerprint* instead -- vertex and triangle
counts and sha256 hashes of the triangles and of the template vertices -- so a checkpoint loaded
against another mesh fails with a message that names the topology it expects.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from face4d.errors import Face4DError
from meshops.head import NUM_LANDMARKS, HeadModel

ICT_NAME = "ICT Face Model Light"


def _sha256(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


@dataclass(frozen=True, eq=False)
class DecoderTopology:
    """A template mesh with 68 landmark vertices: what a decoder is built on.

    ``template`` (V, 3) float32 is the neutral mesh the hierarchy is decimated from (the head
    model's mean face), ``faces`` (F, 3) int64 its triangles, ``landmark_ids`` (68,) the landmark
    vertices and ``face_ids`` the vertices of the face region (errors are also reported there).
    """

    name: str
    template: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    face_ids: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "template", np.ascontiguousarray(self.template, np.float32))
        object.__setattr__(self, "faces", np.ascontiguousarray(self.faces, np.int64))
        object.__setattr__(self, "landmark_ids", np.ascontiguousarray(self.landmark_ids, np.int64))
        object.__setattr__(self, "face_ids", np.ascontiguousarray(self.face_ids, np.int64))
        v = len(self.template)
        if self.template.ndim != 2 or self.template.shape[1] != 3:
            raise ValueError(f"template must be (V, 3), got {self.template.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.min() < 0 or self.faces.max() >= v:
            raise ValueError(f"faces must be (F, 3) indices into {v} vertices")
        if self.landmark_ids.shape != (NUM_LANDMARKS,) or self.landmark_ids.min() < 0 or self.landmark_ids.max() >= v:
            raise ValueError(f"landmark_ids must be {NUM_LANDMARKS} vertex ids in [0, {v})")

    @classmethod
    def from_head(cls, head: HeadModel | None = None) -> "DecoderTopology":
        """The topology of the morphable head (the shipped ICT head by default)."""
        head = HeadModel.load() if head is None else head
        return cls(ICT_NAME, head.neutral, head.faces, head.landmark_ids, head.region_ids("face"))

    @property
    def num_vertices(self) -> int:
        return len(self.template)

    @cached_property
    def fingerprint(self) -> dict[str, Any]:
        """What a model config stores to recognise this topology (JSON-ready)."""
        return {"name": self.name, "vertices": self.num_vertices, "faces": len(self.faces),
                "faces_sha256": _sha256(self.faces), "template_sha256": _sha256(np.round(self.template, 5) + 0.0),
                "landmarks_sha256": _sha256(self.landmark_ids)}

    def describe(self) -> str:
        return describe_fingerprint(self.fingerprint)

    def check_fingerprint(self, expected: dict[str, Any] | None, source: str) -> None:
        """Refuse to build a model whose stored fingerprint is another topology's."""
        if expected is None:
            return
        if dict(expected) != self.fingerprint:
            differing = sorted(k for k in set(expected) | set(self.fingerprint)
                               if expected.get(k) != self.fingerprint.get(k))
            raise Face4DError(f"{source}: the model was trained on {describe_fingerprint(expected)}, not on "
                              f"{self.describe()} (differs in: {', '.join(differing)})")

    def check_mesh(self, vertices: np.ndarray, faces: np.ndarray | None = None, source: str = "mesh") -> np.ndarray:
        """``vertices`` as float32 (V, 3) if the mesh is in this topology; otherwise a one-line error
        that names the expected topology. ``faces`` None checks the vertex count only."""
        vertices = np.asarray(vertices)
        if vertices.ndim != 2 or vertices.shape[1] != 3:
            raise Face4DError(f"{source}: vertices must be a (V, 3) array, got shape {vertices.shape}")
        if not np.isfinite(vertices).all():
            raise Face4DError(f"{source}: vertex coordinates contain NaN or infinity")
        hint = "use a mesh written in that topology (e.g. from meshops.HeadModel.vertices()), or --method rbf"
        if len(vertices) != self.num_vertices or (faces is not None and np.shape(faces) != self.faces.shape):
            counts = f"{len(vertices)} vertices" + ("" if faces is None else f" and {len(faces)} triangles")
            raise Face4DError(f"{source}: has {counts}; the decoder expects {self.describe()}; {hint}")
        if faces is not None and not np.array_equal(np.asarray(faces), self.faces):
            raise Face4DError(f"{source}: has {len(vertices)} vertices and {len(faces)} triangles but they are "
                              f"connected differently; the decoder expects {self.describe()} with the same vertex "
                              f"order and triangles; {hint}")
        return vertices.astype(np.float32)

    @cached_property
    def landmark_distance(self) -> np.ndarray:
        """Distance (V,) of each template vertex to its nearest landmark vertex, in mesh units."""
        from scipy.spatial import cKDTree

        return cKDTree(self.template[self.landmark_ids]).query(self.template)[0].astype(np.float32)


def describe_fingerprint(fp: dict[str, Any]) -> str:
    return f"the {fp.get('name', 'unnamed')} topology ({fp.get('vertices')} vertices, {fp.get('faces')} triangles)"
