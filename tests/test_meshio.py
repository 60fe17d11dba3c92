import numpy as np
import pytest

from meshops import MeshFileError, load_mesh, save_mesh


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_round_trip_keeps_vertex_order(tmp_path, head, suffix):
    verts = head.vertices(np.random.default_rng(1).standard_normal(100))
    path = save_mesh(tmp_path / f"m{suffix}", verts, head.faces)
    mesh = load_mesh(path)
    np.testing.assert_allclose(mesh.vertices, verts, atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, head.faces)


def test_save_refuses_to_overwrite_and_leaves_no_temporaries(tmp_path, head):
    path = save_mesh(tmp_path / "m.ply", head.neutral, head.faces)
    with pytest.raises(FileExistsError):
        save_mesh(path, head.neutral, head.faces)
    save_mesh(path, head.neutral + 1, head.faces, overwrite=True)
    assert load_mesh(path).vertices[0, 0] == pytest.approx(head.neutral[0, 0] + 1, abs=1e-5)
    with pytest.raises(ValueError):
        save_mesh(tmp_path / "bad.obj", np.full((3, 3), np.nan), [[0, 1, 2]])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.ply"]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("name,text,message", [
    ("empty.obj", "", "file is empty"),
    ("points.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no faces"),
    ("quad.obj", "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n", "more than 3 corners"),
    ("nan.obj", "v 0 0 nan\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "NaN"),
    ("junk.ply", "this is not a ply file\n", "cannot read"),
    ("mesh.stl", "solid x\n", "unsupported mesh format"),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, name, text, message):
    path = _write(tmp_path, name, text)
    with pytest.raises(MeshFileError, match=message) as info:
        load_mesh(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(MeshFileError, match="no such file"):
        load_mesh(tmp_path / "nope.obj")


def test_quad_ply_is_refused(tmp_path):
    import trimesh
    text = ("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
            "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
            "0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    path = _write(tmp_path, "quad.ply", text)
    assert isinstance(trimesh.load(path, process=False), trimesh.Trimesh)  # trimesh itself would split it
    with pytest.raises(MeshFileError, match="more than 3 corners"):
        load_mesh(path)


def test_outputs_get_ordinary_permissions(tmp_path, head):
    import os
    from meshops import atomic_dir
    mask = os.umask(0o022)
    try:
        path = save_mesh(tmp_path / "m.obj", head.neutral, head.faces)
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
