"""Spiral vertex orderings for spiral convolution (Neural3DMM, SpiralNet++), for any triangle mesh.

A spiral starts at a vertex, walks its 1-ring in the rotational sense of the face winding, then
the 2-ring in the same sense, and so on. Because the mesh topology is fixed, a fixed rule for
where each spiral starts makes the ordering consistent across all meshes in that topology, which
is all a spiral convolution needs (SpiralNet++ showed that the geodesic-based start of the original
Neural3DMM is not required). The rules used here:

* Around every vertex its neighbours are ordered by the face winding: a face ``(v, a, b)`` puts
  ``b`` right after ``a`` around ``v`` (counter-clockwise seen from the side the winding's normal
  points to). An interior vertex's neighbours form a closed cycle, which starts at its
  lowest-index neighbour. A boundary vertex's neighbours form an open fan, walked from its open
  end; a non-manifold vertex's several fans follow one another, open fans first, each group by
  its lowest starting index.
* Each further ring continues the rotation: its vertices are collected by visiting the previous
  ring in order and, around each of those, taking the not yet visited neighbours in winding order,
  starting right after the neighbours already visited (as SpiralNet++'s ``extract_spirals``).
* The walk stops after ``length * dilation`` vertices and keeps every ``dilation``-th one, so a
  dilated spiral is exactly the every-``dilation``-th subsequence of the longer plain spiral.
* Where a vertex's connected component runs out of vertices first (tiny components, isolated
  vertices), the spiral is padded by repeating its last vertex. Indices are never -1.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from meshops.cache import content_key, default_cache_dir, load_or_compute

_CACHE_TAG = "face4d-spiral-v1"


def _check_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be integers, got {faces.dtype}")
    faces = faces.astype(np.int64)
    if len(faces) and (faces.min() < 0 or faces.max() >= num_vertices):
        raise ValueError(f"face indices must lie in [0, {num_vertices}), got [{faces.min()}, {faces.max()}]")
    return faces


def _order_fan(first: list[int], second: list[int]) -> tuple[list[int], bool]:
    """Order one vertex's neighbours from its wedges ``first[i] -> second[i]`` (winding order).

    Returns the ordered neighbours and whether they form a single closed cycle.
    """
    succ: dict[int, int] = {}
    for a, b in zip(first, second):
        succ.setdefault(a, b)  # a non-manifold edge has two successors: the extra one starts a new chain
    has_pred = set(succ.values())
    nodes = sorted(set(first) | set(second))
    open_ends = [n for n in nodes if n not in has_pred]
    order: list[int] = []
    placed: set[int] = set()
    chains = 0
    for start in open_ends + nodes:
        if start in placed:
            continue
        chains += 1
        node: int | None = start
        while node is not None and node not in placed:
            order.append(node)
            placed.add(node)
            node = succ.get(node)
    return order, chains == 1 and not open_ends


def vertex_fans(faces: np.ndarray, num_vertices: int) -> tuple[list[list[int]], list[bool]]:
    """Every vertex's neighbours in winding order (see the module docstring) and whether they close a cycle.

    A vertex in no face has no neighbours.
    """
    faces = _check_faces(faces, num_vertices)
    centre = faces.ravel()
    first = np.roll(faces, -1, axis=1).ravel()
    second = np.roll(faces, -2, axis=1).ravel()
    order = np.argsort(centre, kind="stable")
    bounds = np.searchsorted(centre[order], np.arange(num_vertices + 1)).tolist()
    first, second = first[order].tolist(), second[order].tolist()
    fans: list[list[int]] = []
    cyclic: list[bool] = []
    for v in range(num_vertices):
        lo, hi = bounds[v], bounds[v + 1]
        fan, closed = _order_fan(first[lo:hi], second[lo:hi])
        fans.append(fan)
        cyclic.append(closed)
    return fans, cyclic


def _continue_rotation(fan: list[int], closed: bool, seen: set[int]) -> list[int]:
    """The unvisited vertices of ``fan``, in winding order from just after the visited ones."""
    start = 0
    for i, w in enumerate(fan):
        if w not in seen and ((i > 0 and fan[i - 1] in seen) or (i == 0 and closed and fan[-1] in seen)):
            start = i
            break
    return [w for w in fan[start:] + fan[:start] if w not in seen]


def _spiral(v: int, fans: list[list[int]], cyclic: list[bool], count: int) -> list[int]:
    spiral = [v]
    seen = {v}
    ring = [v]
    while len(spiral) < count and ring:
        next_ring: list[int] = []
        for u in ring:
            # The centre's own fan starts where vertex_fans put it; later rings continue the rotation.
            new = fans[u] if u == v else _continue_rotation(fans[u], cyclic[u], seen)
            spiral.extend(new)
            seen.update(new)
            next_ring.extend(new)
            if len(spiral) >= count:
                break
        ring = next_ring
    spiral = spiral[:count]
    return spiral + [spiral[-1]] * (count - len(spiral))


def spiral_indices(faces: np.ndarray, num_vertices: int, length: int, dilation: int = 1) -> np.ndarray:
    """Spiral of every vertex, ``(num_vertices, length)`` int64; column 0 is the vertex itself.

    ``dilation`` keeps every ``dilation``-th vertex of a spiral ``length * dilation`` long. The
    ordering and padding rules are in the module docstring.
    """
    if length < 1 or dilation < 1:
        raise ValueError(f"length and dilation must be >= 1, got {length} and {dilation}")
    fans, cyclic = vertex_fans(faces, num_vertices)
    count = length * dilation
    out = np.array([_spiral(v, fans, cyclic, count) for v in range(num_vertices)], np.int64)
    return out.reshape(num_vertices, count)[:, ::dilation]


def cached_spiral_indices(faces: np.ndarray, num_vertices: int, length: int, dilation: int = 1,
                          cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """``spiral_indices``, kept as ``.npy`` under ``cache_dir`` (default ``~/.cache/face4d/spirals``).

    The file is named by a sha256 of the faces, ``num_vertices``, ``length`` and ``dilation``.
    """
    faces = _check_faces(faces, num_vertices)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir("spirals")
    key = content_key(_CACHE_TAG, faces, num_vertices=num_vertices, length=length, dilation=dilation)

    def load(path: Path) -> np.ndarray:
        out = np.load(path, allow_pickle=False)
        if (out.dtype != np.int64 or out.shape != (num_vertices, length)
                or (out.size and (out.min() < 0 or out.max() >= num_vertices))):
            raise ValueError(f"expected int64 {(num_vertices, length)} in [0, {num_vertices}), "
                             f"got {out.dtype} {out.shape}")
        return out

    def save(value: np.ndarray, path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, value, allow_pickle=False)

    return load_or_compute(directory / f"{key}.npy", load,
                           lambda: spiral_indices(faces, num_vertices, length, dilation), save)
