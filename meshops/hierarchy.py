"""A mesh hierarchy for CoMA-style mesh autoencoders: quadric decimation plus sparse resampling matrices.

Level 0 is the input mesh; level ``i + 1`` is level ``i`` decimated by quadric error
(``fast-simplification``, the library behind trimesh's ``simplify_quadric_decimation``) to about
``1 / factors[i]`` of its faces, which for a mostly closed mesh is about ``1 / factors[i]`` of its
vertices too. Open boundaries (the ICT head's eyes, mouth and neck) and several components are fine.

Between consecutive levels there are two row-stochastic sparse matrices:

* ``down[i]`` (V_{i+1} x V_i): each coarse vertex takes the barycentric interpolation of the
  fine-mesh triangle closest to it. CoMA used the fine vertex that qslim kept; quadric decimation
  here moves vertices to their optimal positions, so no fine vertex coincides with a coarse one.
* ``up[i]`` (V_i x V_{i+1}): each fine vertex takes the barycentric interpolation of the coarse
  triangle closest to it, as in CoMA.

Closest triangles are found exactly (see ``barycentric_matrix``), not by nearest vertex.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import fast_simplification
import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from meshops.cache import content_key, default_cache_dir, load_or_compute

_CACHE_TAG = "face4d-hierarchy-v1"


@dataclass(frozen=True)
class MeshHierarchy:
    """Meshes from fine (level 0, the input) to coarse, and the resampling matrices between them.

    ``down[i]`` maps level ``i`` vertex data to level ``i + 1``; ``up[i]`` maps it back.
    """

    vertices: list[np.ndarray]
    faces: list[np.ndarray]
    down: list[sp.csr_matrix]
    up: list[sp.csr_matrix]
    factors: tuple[float, ...]

    @property
    def num_vertices(self) -> list[int]:
        return [len(v) for v in self.vertices]

    def save(self, path: str | os.PathLike) -> None:
        """Write as ``.npz`` of plain arrays (sparse matrices as CSR indptr/indices/data/shape)."""
        arrays: dict[str, np.ndarray] = {"factors": np.asarray(self.factors, np.float64)}
        for i, (v, f) in enumerate(zip(self.vertices, self.faces)):
            arrays[f"vertices_{i}"], arrays[f"faces_{i}"] = v, f
        for name, mats in (("down", self.down), ("up", self.up)):
            for i, m in enumerate(mats):
                arrays.update({f"{name}_{i}_indptr": m.indptr, f"{name}_{i}_indices": m.indices,
                               f"{name}_{i}_data": m.data, f"{name}_{i}_shape": np.asarray(m.shape, np.int64)})
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MeshHierarchy":
        """Read a file written by ``save``; raise ``ValueError``/``KeyError`` if it is inconsistent."""
        with np.load(path, allow_pickle=False) as d:
            factors = tuple(float(x) for x in d["factors"])
            n = len(factors) + 1
            vertices = [d[f"vertices_{i}"] for i in range(n)]
            faces = [d[f"faces_{i}"] for i in range(n)]

            def matrix(name: str, i: int) -> sp.csr_matrix:
                shape = tuple(int(s) for s in d[f"{name}_{i}_shape"])
                m = sp.csr_matrix((d[f"{name}_{i}_data"], d[f"{name}_{i}_indices"], d[f"{name}_{i}_indptr"]),
                                  shape=shape)
                m.check_format(full_check=True)
                return m

            down = [matrix("down", i) for i in range(n - 1)]
            up = [matrix("up", i) for i in range(n - 1)]
        for i in range(n):
            if vertices[i].ndim != 2 or vertices[i].shape[1] != 3 or faces[i].ndim != 2 or faces[i].shape[1] != 3:
                raise ValueError(f"level {i}: bad vertex/face array shapes {vertices[i].shape}, {faces[i].shape}")
        for i in range(n - 1):
            fine, coarse = len(vertices[i]), len(vertices[i + 1])
            if down[i].shape != (coarse, fine) or up[i].shape != (fine, coarse):
                raise ValueError(f"level {i}: matrix shapes {down[i].shape}, {up[i].shape} do not match "
                                 f"{fine} -> {coarse} vertices")
        return cls(vertices, faces, down, up, factors)


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation to about ``target_faces`` faces; unreferenced vertices are dropped."""
    v, f = fast_simplification.simplify(np.asarray(vertices, np.float64), np.asarray(faces, np.int64),
                                        target_count=int(target_faces))
    used, f = np.unique(f, return_inverse=True)
    return v[used], f.reshape(-1, 3).astype(np.int64)


def _closest_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, 3) of the point of triangle ``abc`` closest to ``p`` (row-wise).

    Ericson, Real-Time Collision Detection, 5.1.5: the first Voronoi region that holds ``p`` wins,
    so the regions are applied here in reverse order of precedence.
    """
    ab, ac = b - a, c - a

    def dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", x, y)

    d1, d2 = dot(ab, p - a), dot(ac, p - a)
    d3, d4 = dot(ab, p - b), dot(ac, p - b)
    d5, d6 = dot(ab, p - c), dot(ac, p - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        total = va + vb + vc
        v, w = vb / total, vc / total
        bary = np.stack([1 - v - w, v, w], axis=1)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        t_ac = d2 / (d2 - d6)
        t_ab = d1 / (d1 - d3)
    zero = np.zeros_like(d1)
    regions = [  # lowest precedence first
        ((va <= 0) & (d4 >= d3) & (d5 >= d6), np.stack([zero, 1 - t_bc, t_bc], 1)),
        ((vb <= 0) & (d2 >= 0) & (d6 <= 0), np.stack([1 - t_ac, zero, t_ac], 1)),
        ((d6 >= 0) & (d5 <= d6), np.stack([zero, zero, zero + 1], 1)),
        ((vc <= 0) & (d1 >= 0) & (d3 <= 0), np.stack([1 - t_ab, t_ab, zero], 1)),
        ((d3 >= 0) & (d4 <= d3), np.stack([zero, zero + 1, zero], 1)),
        ((d1 <= 0) & (d2 <= 0), np.stack([zero + 1, zero, zero], 1)),
    ]
    for mask, value in regions:
        bary = np.where(mask[:, None], value, bary)
    return bary


def _closest_on_triangles(points: np.ndarray, tri: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric coordinates and distance of each point's closest point on its paired triangle;
    the distance is infinite where a degenerate triangle leaves the coordinates undefined."""
    bary = _closest_barycentric(points, tri[:, 0], tri[:, 1], tri[:, 2])
    dist = np.linalg.norm(np.einsum("nk,nkd->nd", bary, tri) - points, axis=1)
    dist[~np.isfinite(dist)] = np.inf
    return bary, dist


def _candidates(points: np.ndarray, centroids: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, triangle) pairs with the triangle's centroid within ``radius`` of the point."""
    found = cKDTree(centroids).query_ball_point(points, radius)
    counts = np.fromiter((len(c) for c in found), np.int64, len(points))
    return np.repeat(np.arange(len(points)), counts), np.fromiter(chain.from_iterable(found), np.int64, counts.sum())


def barycentric_matrix(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> sp.csr_matrix:
    """Sparse (len(points), len(vertices)) matrix: row ``i`` holds the barycentric weights of the
    point on the mesh closest to ``points[i]``, so the matrix interpolates vertex data there.

    Exact, not approximate: the few triangles with the nearest centroids bound each point's
    distance ``d``; a triangle within ``d`` has its centroid within ``d`` plus its own
    centroid-to-corner reach, so ball queries over centroids, with triangles binned by reach (one
    outsized triangle must not widen every query), list every triangle that can be closest.
    """
    points, vertices = np.asarray(points, np.float64), np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = vertices[faces]
    centroids = tri.mean(axis=1)
    reach = np.linalg.norm(tri - centroids[:, None], axis=2).max(axis=1) * (1 + 1e-9) + 1e-12
    k = min(8, len(faces))
    nearest = cKDTree(centroids).query(points, k=k)[1].reshape(len(points), k)
    point_ids, face_ids = [np.repeat(np.arange(len(points)), k)], [nearest.ravel()]
    bound = _closest_on_triangles(points[point_ids[0]], tri[face_ids[0]])[1].reshape(-1, k).min(axis=1)
    bins = np.maximum(np.floor(np.log2(reach / reach.max())), -8)  # reach within a factor 2 per bin
    for b in np.unique(bins):
        members = np.flatnonzero(bins == b)
        p_id, local = _candidates(points, centroids[members], bound + reach[members].max())
        point_ids.append(p_id)
        face_ids.append(members[local])
    point_id, face_id = np.concatenate(point_ids), np.concatenate(face_ids)
    bary, dist = _closest_on_triangles(points[point_id], tri[face_id])
    order = np.lexsort((face_id, dist, point_id))  # per point: nearest first, ties to the lowest face
    best = order[np.unique(point_id[order], return_index=True)[1]]
    rows = np.repeat(np.arange(len(points)), 3)
    m = sp.csr_matrix((bary[best].ravel(), (rows, faces[face_id[best]].ravel())),
                      shape=(len(points), len(vertices)))
    m.eliminate_zeros()
    return m


def build_hierarchy(vertices: np.ndarray, faces: np.ndarray,
                    factors: Sequence[float] = (4, 4, 4, 4)) -> MeshHierarchy:
    """Decimate ``len(factors)`` times, each level to ``1 / factor`` of the previous level's faces."""
    if any(f <= 1 for f in factors):
        raise ValueError(f"every decimation factor must be > 1, got {tuple(factors)}")
    levels_v = [np.asarray(vertices, np.float64)]
    levels_f = [np.asarray(faces, np.int64)]
    down, up = [], []
    for factor in factors:
        v, f = decimate(levels_v[-1], levels_f[-1], max(1, round(len(levels_f[-1]) / factor)))
        down.append(barycentric_matrix(v, levels_v[-1], levels_f[-1]))
        up.append(barycentric_matrix(levels_v[-1], v, f))
        levels_v.append(v)
        levels_f.append(f)
    return MeshHierarchy(levels_v, levels_f, down, up, tuple(float(f) for f in factors))


def cached_hierarchy(vertices: np.ndarray, faces: np.ndarray, factors: Sequence[float] = (4, 4, 4, 4),
                     cache_dir: str | os.PathLike | None = None) -> MeshHierarchy:
    """``build_hierarchy``, kept as ``.npz`` under ``cache_dir`` (default ``~/.cache/face4d/hierarchy``).

    The file is named by a sha256 of the faces, the vertices rounded to 1e-6, the factors and the
    fast-simplification version (whose output may change between releases).
    """
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir("hierarchy")
    rounded = np.round(np.asarray(vertices, np.float64), 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    key = content_key(_CACHE_TAG, np.asarray(faces, np.int64), rounded,
                      factors=tuple(float(f) for f in factors), simplifier=fast_simplification.__version__)
    return load_or_compute(directory / f"{key}.npz", MeshHierarchy.load,
                           lambda: build_hierarchy(vertices, faces, factors), MeshHierarchy.save)
