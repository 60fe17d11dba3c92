"""Blendshape solve: per-frame expression weights and rigid head pose of the head model from a sequence.

A rig drives a face with weight curves, not vertex positions. ``solve_blendshapes`` finds, for
each frame ``f`` of a target sequence (68 landmarks or a whole mesh in the head's topology)::

    target_f ~= pose_f(neutral + w_f @ basis),   0 <= w_f <= 1

``neutral`` is the sequence's own rest shape (its neutral frame, or a known mesh), ``basis`` the
head's expression blendshapes at the same points and ``pose_f`` a rotation about ``pivot`` plus a
translation (``meshops.pose.apply_head_pose``'s axis-angle + translation layout). Expression and
pose are solved in turn: the weights by bounded linear least squares with the pose removed, then
the pose by Kabsch/Procrustes between the posed model and the target; a couple of rounds suffice
because a head's expressions are small next to its rigid motion.

The weights are bounded because a rig's sliders are: ARKit and glTF consumers clamp to [0, 1],
so an unbounded solve that uses negative weights to fit noise would play back differently from
what it reported. The bound is also what keeps the 68-landmark problem well posed: the landmark
rows of the basis have full rank but some shapes (eye looks, cheek puff) barely move landmarks.

The least-squares step is reduced once per basis: with ``B = Q R`` (thin QR, ``R`` K x K), the
error of every frame is ``|R w - Q^T b|^2`` plus a constant, so the per-frame problems are K x K,
whatever the number of points, and ``Q^T b`` is one matrix product for all frames; every frame is
then solved at once by ADMM (``BlendshapeSolver._smoothed``). With ``smoothness > 0`` the frames
are coupled by ``smoothness * P * sum_f |w_f - w_{f-1}|^2`` added to the squared error over the
``P`` points (so one setting means the same on 68 landmarks and on a whole mesh), which steadies
weights that the target leaves ill-determined.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.spatial.transform import Rotation

from meshops.head import NUM_LANDMARKS, HeadModel
from meshops.pose import apply_head_pose

POSE_ROUNDS = 10
"""Alternations of the weight and pose solves; more change nothing measurable on head motion of a
few degrees (the round stops early once the pose moves less than ``POSE_TOLERANCE``)."""
POSE_TOLERANCE = 1e-7
ADMM_ITERATIONS = 20000
ADMM_TOLERANCE = 1e-7
RELAXATION = 1.6
"""Iteration cap of the smoothed solve and the weight change (and constraint gap) that ends it."""
STILL = 1e-4
"""A point moved less than this (units) by every blendshape is rigid: the pose is aligned on those."""
MIN_POSE_POINTS = 5


@dataclass
class BlendshapeFit:
    """What ``solve_blendshapes`` returns.

    ``weights`` (F, K) float32 in [0, 1]; ``head_pose`` (F, 6) float32, axis-angle (rad) +
    translation about ``pivot`` (3,); ``error`` (F,) mean distance (target units) between each
    target point and the fitted model's, over the points that were fitted; ``seconds``: the solve's
    wall time.
    """

    weights: np.ndarray
    head_pose: np.ndarray
    pivot: np.ndarray
    error: np.ndarray
    seconds: float

    def points(self, neutral: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """The fitted sequence (F, P, 3) at the points of ``neutral`` (P, 3) / ``basis`` (K, P, 3)."""
        return pose_points(neutral, basis, self.weights, self.head_pose, self.pivot)


def pose_points(neutral: np.ndarray, basis: np.ndarray, weights: np.ndarray, head_pose: np.ndarray | None,
                pivot: np.ndarray) -> np.ndarray:
    """``pose_f(neutral + w_f @ basis)`` for every frame: (F, P, 3) float32."""
    basis = np.asarray(basis, np.float32)
    shaped = np.asarray(neutral, np.float32) + (np.asarray(weights, np.float32) @ basis.reshape(len(basis), -1)
                                                ).reshape(len(weights), *basis.shape[1:])
    return shaped if head_pose is None else apply_head_pose(shaped, head_pose, pivot)


def kabsch(source: np.ndarray, target: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Rigid poses (F, 6) taking ``source`` (F, P, 3) closest to ``target`` (F, P, 3) in least
    squares, as a rotation about ``pivot`` then a translation (Kabsch, reflections excluded)."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    src_mean, tgt_mean = source.mean(1, keepdims=True), target.mean(1, keepdims=True)
    cov = np.einsum("fpi,fpj->fij", target - tgt_mean, source - src_mean)
    u, _, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u @ vt))
    u[:, :, -1] *= sign[:, None]
    rot = u @ vt
    # x -> R (x - pivot) + pivot + t maps the source mean onto the target mean
    shift = tgt_mean[:, 0] - np.einsum("fij,fj->fi", rot, src_mean[:, 0] - pivot) - pivot
    return np.concatenate([Rotation.from_matrix(rot).as_rotvec(), shift], 1).astype(np.float32)


def _unpose(points: np.ndarray, head_pose: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """The inverse of ``apply_head_pose``: ``R^T (x - pivot - t) + pivot``."""
    rot = Rotation.from_rotvec(np.asarray(head_pose[:, :3], np.float64)).as_matrix()
    centred = np.asarray(points, np.float64) - pivot - head_pose[:, None, 3:]
    return (np.einsum("fji,fpj->fpi", rot, centred) + pivot).astype(np.float32)


class BlendshapeSolver:
    """The bounded least-squares solve for one basis (the QR is done once, reused for every call).

    ``bounds``: the range of every weight, a rig's [0, 1] by default.
    """

    def __init__(self, basis: np.ndarray, bounds: tuple[float, float] = (0.0, 1.0)):
        self.bounds = (float(bounds[0]), float(bounds[1]))
        if not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"the weight bounds must be (lower, upper) with lower < upper, got {bounds}")
        basis = np.asarray(basis, np.float64)
        if basis.ndim != 3 or basis.shape[2] != 3:
            raise ValueError(f"the basis must be (K, P, 3), got shape {basis.shape}")
        self.basis = basis.astype(np.float32)
        self.q, self.r = np.linalg.qr(basis.reshape(len(basis), -1).T)
        if np.abs(np.diag(self.r)).min() < 1e-9 * np.abs(np.diag(self.r)).max():
            raise ValueError("the basis is rank-deficient at these points: the weights are not determined")

    @property
    def num_shapes(self) -> int:
        return len(self.basis)

    def weights(self, offsets: np.ndarray, smoothness: float = 0.0, start: np.ndarray | None = None) -> np.ndarray:
        """Weights (F, K) within the bounds of offsets from the neutral (F, P, 3), with no pose; ``start``:
        a guess (default: the unbounded solution, clipped)."""
        rhs = np.asarray(offsets, np.float64).reshape(len(offsets), -1) @ self.q  # (F, K)
        if start is None:
            start = np.clip(np.linalg.solve(self.r, rhs.T).T, *self.bounds)
        per_point = smoothness * self.basis.shape[1]  # the same setting means the same on 68 points or 14k
        return self._smoothed(rhs, start, per_point if len(rhs) > 1 else 0.0).astype(np.float32)

    def _smoothed(self, rhs: np.ndarray, start: np.ndarray, smoothness: float) -> np.ndarray:
        """ADMM on ``sum_f |R w_f - c_f|^2 + smoothness |D W|^2`` with ``W = Z``, ``Z`` in the box.

        The unconstrained step is a Sylvester equation ``W G + smoothness D^T D W + rho W = M``
        (``G = R^T R``); in the eigenbases of ``G`` and of the path Laplacian ``D^T D`` it is an
        elementwise division, so an iteration costs two small matrix products per side and the
        whole sequence is solved at once.
        """
        frames = len(rhs)
        g, v = np.linalg.eigh(self.r.T @ self.r)
        laplacian = 2 * np.eye(frames) - np.eye(frames, k=1) - np.eye(frames, k=-1)
        laplacian[0, 0] = laplacian[-1, -1] = 1.0
        s, p = np.linalg.eigh(laplacian)
        rho = float(np.sqrt(max(g.min(), 1e-12) * g.max()))
        denominator = g[None, :] + smoothness * s[:, None] + rho
        data = rhs @ self.r  # the rows c_f^T R
        z, u = np.array(start, np.float64), np.zeros(start.shape)
        for _ in range(ADMM_ITERATIONS):
            w = p @ ((p.T @ (data + rho * (z - u)) @ v) / denominator) @ v.T
            relaxed = RELAXATION * w + (1 - RELAXATION) * z
            z_old, z = z, np.clip(relaxed + u, *self.bounds)
            u += relaxed - z
            if np.abs(w - z).max() < ADMM_TOLERANCE and np.abs(z - z_old).max() < ADMM_TOLERANCE:
                break
        return z


def still_points(basis: np.ndarray) -> np.ndarray:
    """Ids of the points no blendshape moves by ``STILL`` or more (the back of the head, the neck),
    or, where fewer than ``MIN_POSE_POINTS`` are (68 landmarks), the ``MIN_POSE_POINTS`` that move
    least (the inner eye corners, the temples, the bridge of the nose)."""
    motion = np.linalg.norm(np.asarray(basis), axis=-1).max(0)
    still = np.flatnonzero(motion < STILL)
    return still if len(still) >= MIN_POSE_POINTS else np.sort(np.argsort(motion)[:MIN_POSE_POINTS])


def solve_blendshapes(targets: np.ndarray, neutral: np.ndarray, basis: np.ndarray | BlendshapeSolver,
                      pivot: np.ndarray | None = None, solve_pose: bool = True, smoothness: float = 0.0,
                      pose_ids: np.ndarray | None = None) -> BlendshapeFit:
    """Fit ``targets`` (F, P, 3) with weights in [0, 1] of ``basis`` (K, P, 3) about ``neutral``
    (P, 3) and, with ``solve_pose``, a rigid pose per frame about ``pivot`` (default: the neutral's
    centroid). The pose is aligned on ``pose_ids`` (default ``still_points(basis)``): the points
    expression moves least, so that a jaw opening is not read as a nod. A ``BlendshapeSolver`` of
    the basis may be passed to reuse its QR across calls. ``smoothness``: see the module docstring.
    """
    start = time.perf_counter()
    solver = basis if isinstance(basis, BlendshapeSolver) else BlendshapeSolver(basis)
    targets = np.asarray(targets, np.float32)
    neutral = np.asarray(neutral, np.float32)
    if targets.ndim != 3 or targets.shape[1:] != neutral.shape or solver.basis.shape[1:] != neutral.shape:
        raise ValueError(f"targets {targets.shape}, neutral {neutral.shape} and basis {solver.basis.shape} "
                         "do not describe the same points")
    if not np.isfinite(targets).all():
        raise ValueError("the targets contain NaN or infinity")
    pivot = neutral.mean(0) if pivot is None else np.asarray(pivot, np.float32)
    pose = np.zeros((len(targets), 6), np.float32)
    weights = np.zeros((len(targets), solver.num_shapes), np.float32)
    if solve_pose:
        ids = still_points(solver.basis) if pose_ids is None else np.asarray(pose_ids)
        for round_ in range(POSE_ROUNDS):
            model = pose_points(neutral[ids], solver.basis[:, ids], weights, None, pivot)
            new_pose = kabsch(model, targets[:, ids], pivot)
            change, pose = np.abs(new_pose - pose).max(), new_pose
            weights = solver.weights(_unpose(targets, pose, pivot) - neutral, smoothness, weights if round_ else None)
            if change < POSE_TOLERANCE:
                break
    else:
        weights = solver.weights(targets - neutral, smoothness)
    fitted = pose_points(neutral, solver.basis, weights, pose if solve_pose else None, pivot)
    error = np.linalg.norm(fitted - targets, axis=-1).mean(1).astype(np.float32)
    return BlendshapeFit(weights, pose, pivot.astype(np.float32), error, time.perf_counter() - start)


@lru_cache(maxsize=8)
def head_solver(head: HeadModel, points: str, bounds: tuple[float, float] = (0.0, 1.0)) -> BlendshapeSolver:
    """The solver of the head's expression basis at its 68 landmarks (``points="landmarks"``) or at
    every vertex (``"mesh"``), built once per head."""
    if points not in ("landmarks", "mesh"):
        raise ValueError(f"points must be 'landmarks' or 'mesh', got {points!r}")
    return BlendshapeSolver(head.landmark_expression_basis if points == "landmarks" else head.expression_basis,
                            bounds)


def fit_head(head: HeadModel, frames: np.ndarray, neutral: np.ndarray, smoothness: float = 0.0,
             solve_pose: bool = True, bounds: tuple[float, float] = (0.0, 1.0)) -> BlendshapeFit:
    """Expression weights and head pose of the head model for a sequence of its 68 landmarks
    (F, 68, 3) or of meshes in its topology (F, V, 3), given the sequence's neutral shape at the same
    points. The pose turns about the head's neck pivot, as the data generator's head motion does
    (``head_pose`` in the interchange format)."""
    frames = np.asarray(frames, np.float32)
    points = {NUM_LANDMARKS: "landmarks", head.num_vertices: "mesh"}.get(frames.shape[1] if frames.ndim == 3 else -1)
    if points is None:
        raise ValueError(f"expected (F, {NUM_LANDMARKS}, 3) landmarks or (F, {head.num_vertices}, 3) meshes of the "
                         f"head model, got shape {frames.shape}")
    return solve_blendshapes(frames, neutral, head_solver(head, points, tuple(bounds)), head.neck_pivot, solve_pose,
                             smoothness)
