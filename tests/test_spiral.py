"""Spiral orderings, the decimation hierarchy and the spiral-convolution layers of meshops."""
import ast
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import trimesh

import meshops
from meshops import (MeshHierarchy, SparseOperator, SpiralConv, barycentric_matrix, build_hierarchy,
                     cached_hierarchy, cached_spiral_indices, sparse_to_torch, spiral_indices)
from meshops.hierarchy import _closest_on_triangles


def directed_edges(faces: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).tolist()))


def graph_distance(mesh: trimesh.Trimesh, source: int) -> np.ndarray:
    dist = np.full(len(mesh.vertices), -1)
    dist[source], frontier = 0, [source]
    while frontier:
        nxt = []
        for u in frontier:
            for w in mesh.vertex_neighbors[u]:
                if dist[w] < 0:
                    dist[w] = dist[u] + 1
                    nxt.append(w)
        frontier = nxt
    return dist


def grid(n: int) -> np.ndarray:
    """Faces of an open n x n vertex grid, two counter-clockwise triangles per cell."""
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


@pytest.fixture(scope="module")
def sphere() -> trimesh.Trimesh:
    return trimesh.creation.icosphere(subdivisions=2)


@pytest.fixture(scope="module")
def hierarchy_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hierarchy")


@pytest.fixture(scope="module")
def hierarchy(head, hierarchy_dir) -> MeshHierarchy:
    return cached_hierarchy(head.neutral, head.faces, (4, 4, 4, 4), cache_dir=hierarchy_dir)


# -- spirals ----------------------------------------------------------------------------------------
def test_meshops_imports_no_diffusion_code():
    for path in Path(meshops.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] in ("face4d", "render") for n in names), path


def test_one_ring_is_the_neighbourhood_in_winding_order(sphere):
    s = spiral_indices(sphere.faces, len(sphere.vertices), 7)
    assert s.shape == (len(sphere.vertices), 7) and s.dtype == np.int64
    np.testing.assert_array_equal(s[:, 0], np.arange(len(sphere.vertices)))
    edges = directed_edges(sphere.faces)
    valences = set()
    for v, nbrs in enumerate(sphere.vertex_neighbors):
        k = len(nbrs)
        valences.add(k)
        ring = s[v, 1:k + 1].tolist()
        assert set(ring) == set(nbrs) and ring[0] == min(nbrs)  # the documented start
        # consecutive, wrap-around included: each step turns along a face's winding
        assert all((a, b) in edges for a, b in zip(ring, ring[1:] + ring[:1])), v
        if k == 5:  # the 12 valence-5 vertices go on into their 2-ring
            assert graph_distance(sphere, v)[s[v, 6]] == 2
    assert valences == {5, 6}


def test_later_rings_continue_in_the_same_rotation(sphere):
    s = spiral_indices(sphere.faces, len(sphere.vertices), 19)
    edges = directed_edges(sphere.faces)
    checked = 0
    for v in range(len(sphere.vertices)):
        dist = graph_distance(sphere, v)
        if (dist == 1).sum() != 6 or (dist == 2).sum() != 12:
            continue
        checked += 1
        assert (np.diff(dist[s[v]]) >= 0).all()  # ring by ring
        ring2 = s[v, 7:].tolist()
        assert set(ring2) == set(np.flatnonzero(dist == 2))
        assert all((a, b) in edges for a, b in zip(ring2, ring2[1:])), v
    assert checked > 50


def test_open_boundaries_and_short_neighbourhoods_are_padded():
    faces = grid(4)  # corners have 2 or 3 neighbours, edges 4, the interior 6
    s = spiral_indices(faces, 16, 7)
    edges = directed_edges(faces)
    mesh = trimesh.Trimesh(np.zeros((16, 3)), faces, process=False)
    for v, nbrs in enumerate(mesh.vertex_neighbors):
        ring = s[v, 1:len(nbrs) + 1].tolist()
        assert set(ring) == set(nbrs)
        assert all((a, b) in edges for a, b in zip(ring, ring[1:]))
        if len(nbrs) < 6:  # an open fan starts at its open end: the boundary edge leaving v
            assert (v, ring[0]) in edges and (ring[0], v) not in edges
    # a lone triangle and an isolated vertex run out of vertices: the last index repeats
    s = spiral_indices(np.array([[0, 1, 2]]), 4, 5)
    np.testing.assert_array_equal(s, [[0, 1, 2, 2, 2], [1, 2, 0, 0, 0], [2, 0, 1, 1, 1], [3, 3, 3, 3, 3]])


def test_dilated_spiral_is_every_nth_entry_of_the_long_one(head):
    long = spiral_indices(head.faces, head.num_vertices, 12)
    np.testing.assert_array_equal(spiral_indices(head.faces, head.num_vertices, 6, dilation=2), long[:, ::2])
    np.testing.assert_array_equal(spiral_indices(head.faces, head.num_vertices, 4, dilation=3), long[:, ::3])


def test_ict_head_spirals_are_fast_and_in_range(head):
    start = time.perf_counter()
    s = spiral_indices(head.faces, head.num_vertices, 9)
    assert time.perf_counter() - start < 10
    assert s.shape == (head.num_vertices, 9)
    np.testing.assert_array_equal(s[:, 0], np.arange(head.num_vertices))
    assert s.min() >= 0 and s.max() < head.num_vertices
    assert (np.sort(s, axis=1)[:, 1:] != np.sort(s, axis=1)[:, :-1]).all()  # no padding needed on the head


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        spiral_indices(np.zeros((3, 4), int), 5, 3)
    with pytest.raises(ValueError, match="indices"):
        spiral_indices(np.array([[0, 1, 5]]), 5, 3)
    with pytest.raises(ValueError, match=">= 1"):
        spiral_indices(np.array([[0, 1, 2]]), 3, 0)


def test_spiral_cache_hits_and_recovers_from_a_corrupt_file(head, tmp_path, monkeypatch):
    first = cached_spiral_indices(head.faces, head.num_vertices, 9, 1, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npy")
    np.testing.assert_array_equal(np.load(entry, allow_pickle=False), first)

    def no_recompute(*args, **kwargs):
        raise AssertionError("recomputed despite a cache entry")

    with monkeypatch.context() as m:
        m.setattr("meshops.spiral.spiral_indices", no_recompute)
        np.testing.assert_array_equal(cached_spiral_indices(head.faces, head.num_vertices, 9, 1, cache_dir=tmp_path),
                                      first)
    assert cached_spiral_indices(head.faces, head.num_vertices, 9, 2, cache_dir=tmp_path).shape == first.shape
    assert len(list(tmp_path.glob("*.npy"))) == 2  # the dilation is part of the key

    for damage in (entry.read_bytes()[:200], b"not an array"):
        entry.write_bytes(damage)
        with pytest.warns(UserWarning, match="unreadable cache entry"):
            again = cached_spiral_indices(head.faces, head.num_vertices, 9, 1, cache_dir=tmp_path)
        np.testing.assert_array_equal(again, first)
        np.testing.assert_array_equal(np.load(entry, allow_pickle=False), first)  # repaired


def test_spiral_cache_honours_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached_spiral_indices(np.array([[0, 1, 2]]), 3, 2)
    assert len(list((tmp_path / "face4d" / "spirals").glob("*.npy"))) == 1


# -- hierarchy --------------------------------------------------------------------------------------
def test_closest_point_matrix_is_exact(sphere):
    rng = np.random.default_rng(0)
    vertices = sphere.vertices * rng.uniform(0.8, 1.2, (len(sphere.vertices), 1))
    points = np.concatenate([rng.normal(size=(200, 3)) * 0.7, rng.normal(size=(50, 3)) * 3])
    m = barycentric_matrix(points, vertices, sphere.faces)
    tri = vertices[sphere.faces]
    brute = np.array([_closest_on_triangles(np.repeat(p[None], len(tri), 0), tri)[1].min() for p in points])
    np.testing.assert_allclose(np.linalg.norm(m @ vertices - points, axis=1), brute, atol=1e-12)
    np.testing.assert_allclose(m.sum(axis=1).A1, 1, atol=1e-12)
    assert m.data.min() >= 0 and (np.diff(m.indptr) <= 3).all()


def test_ict_hierarchy_levels_and_resampling(head, hierarchy):
    sizes = hierarchy.num_vertices
    assert sizes[0] == head.num_vertices and len(sizes) == 5
    ratios = np.array(sizes[:-1]) / np.array(sizes[1:])
    assert ((ratios > 3) & (ratios < 5)).all(), sizes  # measured 14388, 3617, 918, 242, 70
    diagonal = np.linalg.norm(np.ptp(head.neutral, axis=0))  # 47.5 (cm) for the ICT head
    for i, (down, up) in enumerate(zip(hierarchy.down, hierarchy.up)):
        fine, coarse = hierarchy.vertices[i], hierarchy.vertices[i + 1]
        assert down.shape == (len(coarse), len(fine)) and up.shape == (len(fine), len(coarse))
        assert hierarchy.faces[i + 1].max() == len(coarse) - 1
        for m in (down, up):
            np.testing.assert_allclose(m.sum(axis=1).A1, 1, atol=1e-12)
            assert m.data.min() >= 0
        error = np.linalg.norm(up @ (down @ fine) - fine, axis=1)
        assert error.mean() < 0.02 * diagonal, i  # measured 0.014, 0.062, 0.20, 0.61
        if i == 0:  # measured mean 0.014, max 0.27: 0.03% and 0.6% of the head's diagonal
            assert error.mean() < 1e-3 * diagonal and error.max() < 1e-2 * diagonal


def test_hierarchy_cache_round_trips_and_recovers(head, hierarchy, hierarchy_dir, monkeypatch):
    (entry,) = hierarchy_dir.glob("*.npz")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt despite a cache entry")

    with monkeypatch.context() as m:
        m.setattr("meshops.hierarchy.build_hierarchy", no_rebuild)
        again = cached_hierarchy(head.neutral, head.faces, (4, 4, 4, 4), cache_dir=hierarchy_dir)
    for a, b in zip(again.vertices + again.faces, hierarchy.vertices + hierarchy.faces):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(again.down + again.up, hierarchy.down + hierarchy.up):
        assert (a != b).nnz == 0
    assert again.factors == (4.0, 4.0, 4.0, 4.0)
    entry.write_bytes(entry.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        repaired = cached_hierarchy(head.neutral, head.faces, (4, 4, 4, 4), cache_dir=hierarchy_dir)
    assert repaired.num_vertices == hierarchy.num_vertices
    assert MeshHierarchy.load(entry).num_vertices == hierarchy.num_vertices


def test_hierarchy_on_a_closed_mesh_and_bad_factors(sphere):
    h = build_hierarchy(sphere.vertices, sphere.faces, (2, 3))
    assert len(h.vertices) == 3 and h.num_vertices[0] > h.num_vertices[1] > h.num_vertices[2]
    with pytest.raises(ValueError, match="> 1"):
        build_hierarchy(sphere.vertices, sphere.faces, (1,))


# -- torch layers -----------------------------------------------------------------------------------
def test_spiralconv_matches_a_hand_computed_output():
    conv = SpiralConv(1, 1, np.array([[0, 1], [1, 2], [2, 0]]))
    with torch.no_grad():
        conv.linear.weight.copy_(torch.tensor([[1.0, 10.0]]))
        conv.linear.bias.fill_(0.5)
    x = torch.tensor([[1.0], [2.0], [3.0]])[:, :, None]  # (V, C, N)
    torch.testing.assert_close(conv(x), torch.tensor([[21.5], [32.5], [13.5]])[:, :, None])


def test_spiralconv_is_batched_spiral_major_and_permutation_equivariant():
    torch.manual_seed(0)
    faces = grid(4)
    indices = torch.from_numpy(spiral_indices(faces, 16, 5))
    conv = SpiralConv(3, 4, indices.numpy())
    x = torch.randn(16, 3, 6)  # (V, C, N)
    out = conv(x)
    assert out.shape == (16, 4, 6)
    w = conv.linear.weight.reshape(4, 5, 3)  # (out, spiral position, in channel)
    expected = torch.einsum("vlcn,olc->von", x[indices], w) + conv.linear.bias[:, None]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conv(x[:, :, 2:3]), out[:, :, 2:3], rtol=1e-5, atol=1e-5)
    # relabelling the vertices (and the spirals with them) relabels the output
    perm = torch.randperm(16)
    inverse = torch.argsort(perm)
    relabelled = SpiralConv(3, 4, inverse[indices[perm]].numpy())  # new vertex i is old vertex perm[i]
    relabelled.load_state_dict(conv.state_dict())
    torch.testing.assert_close(relabelled(x[perm]), out[perm], rtol=1e-5, atol=1e-5)
    assert "indices" not in conv.state_dict()
    with pytest.raises(ValueError, match="expected"):
        conv(torch.randn(15, 3, 2))


def test_sparse_operator_matches_scipy(hierarchy):
    torch.manual_seed(0)
    down = hierarchy.down[0]
    x = torch.randn(down.shape[1], 3, 5)  # (V, C, N)
    expected = (down @ x.numpy().reshape(down.shape[1], -1)).reshape(down.shape[0], 3, 5)
    out = SparseOperator(down)(x)
    assert out.shape == (down.shape[0], 3, 5)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-5)
    small = hierarchy.down[-1]
    np.testing.assert_array_equal(sparse_to_torch(small, torch.float64).to_dense().numpy(), small.toarray())

    up = SparseOperator(hierarchy.up[0])
    y = torch.randn(hierarchy.up[0].shape[1], 3, 4, requires_grad=True)
    z = up(y)
    assert z.shape == (hierarchy.up[0].shape[0], 3, 4)
    z.sum().backward()  # d(sum)/dy = column sums of up
    col = np.asarray(hierarchy.up[0].sum(axis=0)).ravel()
    np.testing.assert_allclose(y.grad[:, 0, 0].numpy(), col, rtol=1e-5)
    with pytest.raises(ValueError, match="does not apply"):
        SparseOperator(sp.eye(5, format="csr"))(torch.randn(7, 3, 2))


def test_spirals_hierarchy_and_spiralconv_on_a_flame_sized_head(head):
    """FLAME's head has 5023 vertices and 9976 triangles in another topology, with open eyes and mouth
    (its model cannot be shipped): the ICT head decimated to that size stands in for it."""
    vertices, faces = meshops.hierarchy.decimate(head.neutral, head.faces, 9976)
    assert abs(len(faces) - 9976) < 100 and 4000 < len(vertices) < 6000
    spirals = spiral_indices(faces, len(vertices), 9)
    assert spirals.shape == (len(vertices), 9) and spirals.min() >= 0 and spirals.max() < len(vertices)
    assert (spirals[:, 0] == np.arange(len(vertices))).all()
    h = build_hierarchy(vertices, faces, (4, 4, 4, 4))
    sizes = np.array(h.num_vertices)
    assert sizes[0] == len(vertices) and ((sizes[:-1] / sizes[1:] > 3) & (sizes[:-1] / sizes[1:] < 5)).all(), sizes
    error = np.linalg.norm(h.up[0] @ (h.down[0] @ vertices) - vertices, axis=1)
    assert error.mean() < 1e-3 * np.linalg.norm(np.ptp(vertices, axis=0))
    conv = SpiralConv(3, 8, spirals)
    out = conv(torch.from_numpy(vertices).float()[:, :, None])
    assert out.shape == (len(vertices), 8, 1) and torch.isfinite(out).all()
    coarse = SparseOperator(h.down[0])(out)
    assert coarse.shape == (sizes[1], 8, 1)
