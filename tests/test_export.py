"""DCC exports (meshops.export, meshops.pointcache, meshops.usd): every format read back exactly, and bad inputs."""
import json
import os
import struct
import sys

import numpy as np
import pytest
from conftest import jaw_smile_animation

from meshops import MeshFileError, load_mesh, pointcache
from meshops.export import MESH_FORMATS, export_frames, export_sequence, frame_name
from meshops.pointcache import read_mdd, read_pc2, write_mdd, write_pc2

NUM_FRAMES = 6
NO_USD = tuple(f for f in MESH_FORMATS if f != "usd")


@pytest.fixture(scope="module")
def animation(head):
    frames = jaw_smile_animation(head, NUM_FRAMES, seed=0)
    assert frames.shape == (NUM_FRAMES, 14388, 3)
    assert all(not np.array_equal(frames[k], frames[k + 1]) for k in range(NUM_FRAMES - 1))
    return frames


@pytest.fixture(scope="module")
def exported(tmp_path_factory, head, animation):
    out = tmp_path_factory.mktemp("export") / "anim"
    return out, export_sequence(out, animation, head.faces, formats=NO_USD, fps=24)


def _listing(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_layout_and_returned_paths(exported):
    out, paths = exported
    names = [f"frame_{k:04d}" for k in range(NUM_FRAMES)]
    assert _listing(out) == sorted(["animation.mdd", "animation.pc2", "export.json", "neutral.obj", "obj", "ply"]
                                   + [f"obj/{n}.obj" for n in names] + [f"ply/{n}.ply" for n in names])
    assert paths["obj"] == [out / "obj" / f"{n}.obj" for n in names]
    assert paths["ply"] == [out / "ply" / f"{n}.ply" for n in names]
    assert paths["pc2"] == [out / "animation.pc2"] and paths["mdd"] == [out / "animation.mdd"]
    assert paths["neutral"] == [out / "neutral.obj"] and paths["manifest"] == [out / "export.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_per_frame_meshes_read_back_exactly(exported, head, animation, fmt):
    _, paths = exported
    for k, path in enumerate(paths[fmt]):
        mesh = load_mesh(path)
        np.testing.assert_array_equal(mesh.vertices.astype(np.float32), animation[k])
        np.testing.assert_array_equal(mesh.faces, head.faces)


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_flat_frames_are_the_sequence_exports_files(exported, tmp_path, head, animation, fmt):
    """``export_frames`` (``face4d retarget``'s layout) writes the very files of ``export_sequence``."""
    out, paths = exported
    neutral = animation[-1]
    written = export_frames(tmp_path / "flat", animation, head.faces, fmt, neutral=neutral)
    assert written == [tmp_path / "flat" / f"frame_{k:04d}.{fmt}" for k in range(NUM_FRAMES)]
    assert _listing(tmp_path / "flat") == sorted([p.name for p in written] + ["neutral.obj"])
    assert [p.read_bytes() for p in written] == [p.read_bytes() for p in paths[fmt]]
    np.testing.assert_array_equal(load_mesh(tmp_path / "flat" / "neutral.obj").vertices.astype(np.float32), neutral)
    with pytest.raises(FileExistsError):
        export_frames(tmp_path / "flat", animation, head.faces, fmt)
    with pytest.raises(ValueError, match="unknown frame format 'pc2'"):
        export_frames(tmp_path / "other", animation, head.faces, "pc2")
    assert not (tmp_path / "other").exists()


def test_neutral_is_the_first_frame_by_default(exported, head, animation):
    mesh = load_mesh(exported[1]["neutral"][0])
    np.testing.assert_array_equal(mesh.vertices.astype(np.float32), animation[0])
    np.testing.assert_array_equal(mesh.faces, head.faces)


def test_pc2_sample_k_is_frame_k(exported, animation):
    cache = read_pc2(exported[1]["pc2"][0])
    np.testing.assert_array_equal(cache.frames, animation)
    assert (cache.start_frame, cache.sample_rate) == (0.0, 1.0)


def test_mdd_sample_k_is_frame_k_at_k_over_fps(exported, animation):
    cache = read_mdd(exported[1]["mdd"][0])
    np.testing.assert_array_equal(cache.frames, animation)
    np.testing.assert_array_equal(cache.times, (np.arange(NUM_FRAMES) / 24).astype(np.float32))
    assert cache.fps == 24


def test_manifest_records_fps_and_layout(exported, animation):
    out, paths = exported
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["fps"] == 24 and manifest["frames"] == NUM_FRAMES and manifest["vertices"] == 14388
    assert manifest["units"] == "centimetres" and manifest["up_axis"] == "Y"
    assert manifest["files"]["obj"] == [f"obj/frame_{k:04d}.obj" for k in range(NUM_FRAMES)]
    assert manifest["formats"] == list(NO_USD)


def test_pc2_bytes_follow_the_spec(tmp_path, animation):
    """Read the header and a vertex with struct, not with our reader, so a shared mistake cannot hide."""
    data = write_pc2(tmp_path / "a.pc2", animation, start_frame=5).read_bytes()
    magic, version, points, start, rate, samples = struct.unpack_from("<12siiffi", data)
    assert (magic, version, points, start, rate, samples) == (b"POINTCACHE2\0", 1, 14388, 5.0, 1.0, NUM_FRAMES)
    assert len(data) == 32 + NUM_FRAMES * 14388 * 12
    k, v = 3, 1234
    assert struct.unpack_from("<3f", data, 32 + (k * 14388 + v) * 12) == tuple(animation[k, v].tolist())


def test_mdd_bytes_follow_the_spec(tmp_path, animation):
    data = write_mdd(tmp_path / "a.mdd", animation, fps=30).read_bytes()
    assert struct.unpack_from(">ii", data) == (NUM_FRAMES, 14388)
    times = struct.unpack_from(f">{NUM_FRAMES}f", data, 8)
    assert times == pytest.approx([k / 30 for k in range(NUM_FRAMES)], abs=1e-7)
    k, v = 4, 777
    offset = 8 + 4 * NUM_FRAMES + (k * 14388 + v) * 12
    assert struct.unpack_from(">3f", data, offset) == tuple(animation[k, v].tolist())


def test_explicit_neutral_fps_and_a_subset_of_formats(tmp_path, head, animation):
    out = tmp_path / "anim"
    paths = export_sequence(out, animation[:3], head.faces, formats=["MDD", ".pc2", "mdd"], fps=12.5,
                            neutral=head.neutral)
    assert set(paths) == {"neutral", "mdd", "pc2", "manifest"}
    assert _listing(out) == ["animation.mdd", "animation.pc2", "export.json", "neutral.obj"]
    np.testing.assert_array_equal(load_mesh(out / "neutral.obj").vertices.astype(np.float32), head.neutral)
    np.testing.assert_array_equal(read_pc2(out / "animation.pc2").frames, animation[:3])
    assert read_mdd(out / "animation.mdd").fps == 12.5
    assert json.loads((out / "export.json").read_text())["fps"] == 12.5


def test_progress_bar_when_asked(tmp_path, head, animation, capsys):
    export_sequence(tmp_path / "a", animation[:2], head.faces, formats=["obj"], progress=True)
    assert "exporting frames" in capsys.readouterr().err


def test_frame_names_are_zero_padded_and_widen_past_9999():
    assert frame_name(0, 40, ".obj") == "frame_0000.obj"
    assert frame_name(39, 40, ".ply") == "frame_0039.ply"
    assert frame_name(7, 12000, ".obj") == "frame_00007.obj"


# -- USD --------------------------------------------------------------------------------------
def test_usd_round_trip_and_stage_metadata(tmp_path, head, animation):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom

    from meshops.usd import read_usd

    out = tmp_path / "anim"
    paths = export_sequence(out, animation, head.faces, formats=["usd"], fps=25)
    assert paths["usd"] == [out / "animation.usdc"]
    anim = read_usd(out / "animation.usdc")
    np.testing.assert_array_equal(anim.frames, animation)
    np.testing.assert_array_equal(anim.faces, head.faces)
    np.testing.assert_array_equal(anim.times, np.arange(NUM_FRAMES))
    assert anim.fps == 25
    stage = Usd.Stage.Open(str(out / "animation.usdc"))
    assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 0.01
    assert stage.GetRootLayer().HasTimeCodesPerSecond() and stage.GetRootLayer().HasFramesPerSecond()
    assert (stage.GetTimeCodesPerSecond(), stage.GetFramesPerSecond()) == (25, 25)
    assert (stage.GetStartTimeCode(), stage.GetEndTimeCode()) == (0, NUM_FRAMES - 1)
    mesh = UsdGeom.Mesh(stage.GetDefaultPrim())
    assert mesh.GetSubdivisionSchemeAttr().Get() == "none"
    np.testing.assert_array_equal(np.asarray(mesh.GetPointsAttr().Get(Usd.TimeCode(3)), np.float32), animation[3])


def test_usda_text_is_written_for_a_usda_suffix(tmp_path, head, animation):
    pytest.importorskip("pxr")
    from meshops.usd import read_usd, write_usd

    path = write_usd(tmp_path / "a.usda", animation[:2], head.faces, fps=30)
    assert path.read_text().startswith("#usda")
    np.testing.assert_array_equal(read_usd(path).frames, animation[:2])


def test_usd_without_pxr_names_the_extra_and_writes_nothing(tmp_path, head, animation, monkeypatch):
    monkeypatch.setitem(sys.modules, "pxr", None)  # makes `import pxr` fail as if it were not installed
    with pytest.raises(ImportError, match=r'pip install "face4d\[usd\]"') as info:
        export_sequence(tmp_path / "anim", animation[:2], head.faces)  # the default formats include usd
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


# -- bad inputs: clear errors, nothing half-written ---------------------------------------------
def test_unknown_format_names_the_known_ones(tmp_path, head, animation):
    with pytest.raises(ValueError, match="unknown export format 'fbx'; known formats: obj, ply, pc2, mdd, usd"):
        export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=["obj", "fbx"])
    with pytest.raises(ValueError, match="no export format"):
        export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=[])
    assert list(tmp_path.iterdir()) == []


def test_non_empty_out_dir_is_refused_without_overwrite(tmp_path, head, animation):
    out = tmp_path / "anim"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty; pass overwrite=True"):
        export_sequence(out, animation[:2], head.faces, formats=["pc2"])
    assert _listing(out) == ["notes.txt"]
    export_sequence(out, animation[:2], head.faces, formats=["pc2"], overwrite=True)
    assert _listing(out) == ["animation.pc2", "export.json", "neutral.obj"]  # the directory is replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim"]


def test_an_empty_out_dir_is_used(tmp_path, head, animation):
    (tmp_path / "anim").mkdir()
    export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=["mdd"])
    assert "animation.mdd" in _listing(tmp_path / "anim")


def test_a_failure_midway_leaves_nothing_behind(tmp_path, head, animation, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(pointcache, "write_mdd", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=["obj", "pc2", "mdd"])
    assert list(tmp_path.iterdir()) == []
    # an existing export survives a failed overwrite untouched
    old = export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=["obj"])
    before = {p: p.read_bytes() for p in old["obj"]}
    with pytest.raises(RuntimeError, match="disk on fire"):
        export_sequence(tmp_path / "anim", animation[2:4], head.faces, formats=["obj", "mdd"], overwrite=True)
    assert {p: p.read_bytes() for p in old["obj"]} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anim"]


def test_unwritable_out_dir_gives_one_line_naming_it(tmp_path, head, animation):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "anim"  # a directory cannot be made under a regular file
    with pytest.raises(OSError, match="cannot write the export to") as info:
        export_sequence(out, animation[:2], head.faces, formats=["pc2"])
    assert str(out) in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_permission_denied_gives_permission_error(tmp_path, head, animation, monkeypatch):
    """What a read-only parent does for a normal user (root, running these tests, can write anywhere)."""
    import errno

    import meshops.atomic

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(dir))
    monkeypatch.setattr(meshops.atomic.tempfile, "mkdtemp", denied)
    with pytest.raises(PermissionError, match="cannot write the export to .*anim: Permission denied") as info:
        export_sequence(tmp_path / "anim", animation[:2], head.faces, formats=["pc2"])
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_parent_gives_permission_error(tmp_path, head, animation):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match="cannot write the export to"):
            export_sequence(parent / "anim", animation[:2], head.faces, formats=["pc2"])
    finally:
        parent.chmod(0o755)
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize("change,message", [
    (lambda f, t, kw: (f[..., :2], t, kw), "frames must be an"),
    (lambda f, t, kw: (np.where(np.arange(f.shape[1])[None, :, None] == 5, np.nan, f), t, kw), "NaN"),
    (lambda f, t, kw: (f, t + 14388, kw), "faces index vertices"),
    (lambda f, t, kw: (f, t.astype(np.float32), kw), "integer"),
    (lambda f, t, kw: (f, t, {"fps": 0}), "fps must be a positive"),
    (lambda f, t, kw: (f, t, {"neutral": f[0, :10]}), "neutral has shape"),
])
def test_bad_arrays_are_refused_before_writing(tmp_path, head, animation, change, message):
    frames, faces, kwargs = change(animation[:2], head.faces, {})
    with pytest.raises(ValueError, match=message):
        export_sequence(tmp_path / "anim", frames, faces, formats=["obj", "pc2"], **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_point_cache_readers_refuse_damaged_files(tmp_path, animation):
    pc2 = write_pc2(tmp_path / "a.pc2", animation[:2])
    pc2.write_bytes(pc2.read_bytes()[:-4])
    with pytest.raises(MeshFileError, match="truncated"):
        read_pc2(pc2)
    (tmp_path / "b.pc2").write_bytes(b"POINTCACHE3\0" + bytes(20))
    with pytest.raises(MeshFileError, match="not a PC2 point cache"):
        read_pc2(tmp_path / "b.pc2")
    mdd = write_mdd(tmp_path / "a.mdd", animation[:2], fps=30)
    mdd.write_bytes(mdd.read_bytes() + b"\0")
    with pytest.raises(MeshFileError, match="trailing data"):
        read_mdd(mdd)
    with pytest.raises(MeshFileError, match="no such file"):
        read_mdd(tmp_path / "missing.mdd")
    with pytest.raises(FileExistsError):
        write_pc2(tmp_path / "a.pc2", animation[:2])


@pytest.mark.parametrize("suffix", [".obj", ".ply"])
def test_single_mesh_writers_are_exact_and_refuse_to_overwrite(tmp_path, head, animation, suffix):
    from meshops.export import write_obj, write_ply

    write = write_obj if suffix == ".obj" else write_ply
    path = write(tmp_path / f"m{suffix}", animation[2], head.faces)
    np.testing.assert_array_equal(load_mesh(path).vertices.astype(np.float32), animation[2])
    with pytest.raises(FileExistsError):
        write(path, animation[3], head.faces)
    write(path, animation[3], head.faces, overwrite=True)
    np.testing.assert_array_equal(load_mesh(path).vertices.astype(np.float32), animation[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"m{suffix}"]
