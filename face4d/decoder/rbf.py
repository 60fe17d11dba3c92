"""The non-learned baseline and fallback: radial-basis-function interpolation of landmark displacements.

The 68 landmark displacements ``dL_f`` are interpolated over the neutral mesh's vertices with a
scattered-data RBF interpolant centred on the mesh's own landmark vertices (scipy's
``RBFInterpolator``): exact at the landmarks, smooth in between. It needs no training and no
particular topology, only the landmark vertex ids of the mesh, so it serves as the fallback for a
user's own character mesh (``face4d retarget --method rbf --landmark-ids ids.npy``).

The interpolant is linear in the data, so every frame of a sequence is one column of a single
solve: a whole sequence costs about as much as one frame.
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import RBFInterpolator

from face4d.data.interchange import NUM_LANDMARKS
from face4d.errors import Face4DError
from face4d.landmarks import check_landmark_ids

RBF_KERNELS = ("thin_plate_spline", "gaussian", "linear", "cubic", "quintic", "multiquadric",
               "inverse_multiquadric", "inverse_quadratic")
DEFAULT_KERNEL = "linear"
DEFAULT_DEGREE = 0
"""``phi(r) = -r`` with a constant tail: it has no width to tune, and of the kernels tried it gave
the lowest and least spread error on the face (docs/tuning.md)."""


def rbf_displacements(neutral_vertices: np.ndarray, landmark_ids, delta_landmarks: np.ndarray,
                      kernel: str = DEFAULT_KERNEL, epsilon: float = 1.0, degree: int = DEFAULT_DEGREE,
                      smoothing: float = 0.0) -> np.ndarray:
    """Vertex displacements (F, V, 3) (or (V, 3) for one frame) interpolating ``delta_landmarks``
    (F, 68, 3) (or (68, 3)) from the landmark vertices ``neutral_vertices[landmark_ids]``.

    ``kernel``, ``epsilon`` (shape parameter, in 1 / mesh units; the scale-free kernels ignore it),
    ``degree`` (of the polynomial tail, -1 for none) and ``smoothing`` are those of
    ``scipy.interpolate.RBFInterpolator``. With ``smoothing`` 0 the interpolant is exact at the
    landmark vertices.
    """
    vertices = np.asarray(neutral_vertices, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise Face4DError(f"neutral vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    ids = check_landmark_ids(landmark_ids, len(vertices))
    delta = np.asarray(delta_landmarks, np.float64)
    single = delta.ndim == 2
    if single:
        delta = delta[None]
    if delta.ndim != 3 or delta.shape[1:] != (NUM_LANDMARKS, 3):
        raise Face4DError(f"landmark displacements must be (F, {NUM_LANDMARKS}, 3), got {np.shape(delta_landmarks)}")
    if not np.isfinite(delta).all():
        raise Face4DError("landmark displacements contain NaN or infinity")
    if kernel not in RBF_KERNELS:
        raise Face4DError(f"unknown RBF kernel {kernel!r}; expected one of {', '.join(RBF_KERNELS)}")
    frames = len(delta)
    values = delta.transpose(1, 0, 2).reshape(NUM_LANDMARKS, frames * 3)  # one column per frame and axis
    try:
        interpolant = RBFInterpolator(vertices[ids], values, kernel=kernel, epsilon=epsilon, degree=degree,
                                      smoothing=smoothing)
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise Face4DError(f"RBF interpolation failed ({exc}); are the landmark vertices distinct points?") from None
    out = interpolant(vertices).reshape(len(vertices), frames, 3).transpose(1, 0, 2).astype(np.float32)
    if smoothing == 0:
        out[:, ids] = delta  # the solve is exact there up to rounding; make it exact
    return out[0] if single else out


def rbf_retarget(neutral_vertices: np.ndarray, landmark_ids, delta_landmarks: np.ndarray,
                 kernel: str = DEFAULT_KERNEL, epsilon: float = 1.0, degree: int = DEFAULT_DEGREE) -> np.ndarray:
    """Deformed meshes ``neutral_vertices + rbf_displacements(...)``: (F, V, 3), or (V, 3) for one frame.

    Works on any mesh given the vertex ids of its 68 landmarks (in the iBUG-68 order of the
    landmark sequences); a zero displacement leaves the mesh exactly as it is."""
    displacement = rbf_displacements(neutral_vertices, landmark_ids, delta_landmarks, kernel, epsilon, degree)
    return np.asarray(neutral_vertices, np.float32) + displacement
