"""The target mesh a landmark sequence animates: resolving it from what the user gave, and checking it.

The **target** is, in this order: ``mesh`` (an OBJ/PLY path or a (V, 3) vertex array), a random
person of the head model (``identity_seed``: identity weights ~ N(0, I) from that seed), else the
head model's mean face. A mesh in the decoder's topology (the ICT head's) is decoded by the learned
decoder; any other needs the vertex ids of its 68 landmarks (``landmark_ids``) and goes through the
non-learned RBF fallback (``face4d.decoder.rbf``); a mesh in the head model's topology is animated by
the blendshape path (the head's expression weights solved from the landmarks, the default) or the
learned decoder. Every check runs here, before any sampling or
decoding, so a bad mesh fails at once (``face4d.pipeline.Pipeline.target`` and ``face4d retarget``).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from face4d.decoder.topology import DecoderTopology
from face4d.errors import Face4DError
from face4d.landmarks import check_landmark_ids, check_units, load_landmark_ids
from meshops.io import load_mesh

METHODS = ("blendshape", "learned", "rbf")
"""The blendshape path or the learned decoder (the head model's topology), or the RBF fallback (any
mesh, given its landmark ids)."""
DEFAULT_METHOD = "blendshape"
"""On the head model's topology; why it beats the learned decoder there: docs/decoder.md."""

if TYPE_CHECKING:
    import torch

    from meshops.head import HeadModel


@dataclass
class Target:
    """The mesh a landmark sequence animates: ``vertices`` (V, 3) float32 in centimetres, ``faces``
    (M, 3) int64, the vertex ids of its 68 landmarks, the ``method`` that decodes onto it
    (``blendshape``, ``learned`` or ``rbf``) and a ``name`` for messages and captions."""

    vertices: np.ndarray
    faces: np.ndarray
    landmark_ids: np.ndarray
    method: str
    name: str

    @property
    def landmarks(self) -> np.ndarray:
        """The mesh's own 68 landmarks (68, 3)."""
        return self.vertices[self.landmark_ids]


def resolve_target(mesh=None, identity_seed: int | None = None, faces: np.ndarray | None = None,
                   landmark_ids=None, method: str | None = None, *, head: HeadModel,
                   decoder: Callable[[], torch.nn.Module], default: str = DEFAULT_METHOD) -> Target:
    """Resolve and check the mesh to animate (see the module docstring).

    ``mesh``: an .obj/.ply path or a (V, 3) vertex array (with ``faces``, default the head's
    when V matches); ``identity_seed``: a random person of the head model instead;
    ``landmark_ids``: (68,) vertex ids (or a .npy/.txt file of them) of a mesh in another
    topology, for the RBF fallback; ``method``: ``blendshape``, ``learned`` or ``rbf`` (default:
    ``rbf`` when ``landmark_ids`` are given, else ``default``). ``head``: the head model;
    ``decoder``: returns the learned decoder, called only for that method, so the other methods
    never load it.
    """
    method = method or ("rbf" if landmark_ids is not None else default)
    if method not in METHODS:
        raise Face4DError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if method != "rbf" and landmark_ids is not None:
        raise Face4DError(f"landmark ids only apply to the RBF fallback (--method rbf): the {method} method "
                          "knows its topology's landmarks")
    if mesh is not None and identity_seed is not None:
        raise Face4DError("give a target mesh or an identity seed, not both")
    if mesh is None:
        if identity_seed is None:
            vertices, name = head.neutral, "the default head"
        else:
            weights = np.random.default_rng(int(identity_seed)).standard_normal(head.num_identity)
            vertices, name = head.vertices(weights.astype(np.float32)), f"identity seed {identity_seed}"
        vertices, faces = np.asarray(vertices, np.float32), head.faces
    elif isinstance(mesh, (str, os.PathLike)):
        if faces is not None:
            raise Face4DError("faces are read from the mesh file; pass them only with a vertex array")
        loaded = load_mesh(mesh)
        vertices, faces, name = np.asarray(loaded.vertices, np.float32), np.asarray(loaded.faces), str(mesh)
    else:
        vertices, name = np.asarray(mesh, np.float32), "the target mesh"
        if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
            raise Face4DError(f"the target mesh must be a finite (V, 3) vertex array, got shape {vertices.shape}")
        if faces is None:
            if len(vertices) != head.num_vertices:
                raise Face4DError(f"the target mesh has {len(vertices)} vertices, not the head model's "
                                  f"{head.num_vertices}: pass its faces too")
            faces = head.faces
    faces = _integer_faces(faces, name)
    if method != "rbf":
        topology = decoder().topology if method == "learned" else DecoderTopology.from_head(head)
        vertices = topology.check_mesh(vertices, faces, name)
        ids = topology.landmark_ids
    elif landmark_ids is None:
        if len(vertices) != head.num_vertices or not np.array_equal(faces, head.faces):
            raise Face4DError(f"{name}: has {len(vertices)} vertices and {len(faces)} triangles, not the head "
                              f"model's topology; give the vertex ids of its 68 landmarks (--landmark-ids ids.npy)")
        ids = head.landmark_ids
    elif isinstance(landmark_ids, (str, os.PathLike)):
        ids = load_landmark_ids(landmark_ids, len(vertices))
    else:
        ids = check_landmark_ids(landmark_ids, len(vertices))
    if len(faces) == 0 or faces.min() < 0 or faces.max() >= len(vertices):
        raise Face4DError(f"{name}: faces must index its {len(vertices)} vertices")
    check_units(head.landmark_neutral, vertices[ids])
    return Target(vertices, faces, ids, method, name)


def _integer_faces(faces, name: str) -> np.ndarray:
    """Triangles as int64; float values that are not whole numbers are refused instead of truncated."""
    faces = np.asarray(faces)
    if faces.dtype.kind not in "iu":
        if faces.dtype.kind != "f" or not np.isfinite(faces).all() or (faces != np.round(faces)).any():
            raise Face4DError(f"{name}: faces must be integer vertex indices, got {faces.dtype} values")
    return faces.astype(np.int64)
