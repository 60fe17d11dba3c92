"""Integration: the exports of the real head imported by headless Blender (tests/blender_import_check.py).

The Blender used is, in this order: the one ``FACE4D_BLENDER`` names (a Blender executable, or a
Python interpreter that has Blender as a module), Blender as a module in this Python (the
``blender`` extra: ``pip install "face4d[blender]"``, bpy 4.2 LTS, with USD; what CI runs), or a
``blender`` executable on the PATH (Debian: ``apt-get install blender``, 3.4.1, no USD). Every
check compares vertex positions at the first, a middle and the last frame with the exported
arrays, in our coordinates: OBJ (both importers), PLY, neutral.obj + Mesh Cache with the PC2 and
the MDD, USD points, USD blendshapes (UsdSkel) and glTF (morph targets + node animation). Under
``CI=true`` a skipped test here is a failure (``conftest.py``): the checks must run there.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import jaw_smile_animation

from meshops.blendshapes import fit_head
from meshops.export import export_sequence
from meshops.pose import apply_head_pose
from meshops.rig import RigAnimation

BLENDER = (os.environ.get("FACE4D_BLENDER") or (sys.executable if importlib.util.find_spec("bpy") else None)
           or shutil.which("blender"))
SCRIPT = Path(__file__).with_name("blender_import_check.py")
NUM_FRAMES = 5

pytestmark = [pytest.mark.slow, pytest.mark.blender,
              pytest.mark.skipif(BLENDER is None, reason='needs Blender (pip install "face4d[blender]", '
                                                         "apt-get install blender, or FACE4D_BLENDER)")]


def run_blender(export_dir: Path, expected: Path, *checks: str) -> subprocess.CompletedProcess:
    if Path(BLENDER).name.startswith("python") or BLENDER == sys.executable:  # Blender as a module (bpy)
        command = [BLENDER, str(SCRIPT)]
    else:
        command = [BLENDER, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(SCRIPT)]
    command += ["--", str(export_dir), str(expected), *checks]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def result_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stdout.splitlines() if line.split(" ", 1)[0] in ("OK", "FAIL", "SKIP")]


@pytest.fixture(scope="module")
def export(tmp_path_factory, head):
    root = tmp_path_factory.mktemp("blender")
    frames = jaw_smile_animation(head, NUM_FRAMES, seed=1)
    # a few degrees of head motion, so that the rig formats' pose animation is checked too
    turn = np.linspace(0, 1, NUM_FRAMES)[:, None] * np.array([0.05, -0.08, 0.03, 0.3, -0.2, 0.5], np.float32)
    frames = apply_head_pose(frames, turn, head.neck_pivot)
    formats = ("obj", "ply", "pc2", "mdd", "gltf") + (("usd", "usd-skel") if importlib.util.find_spec("pxr") else ())
    fit = fit_head(head, frames, frames[0])
    rig = RigAnimation(head.expression_names, head.expression_basis, fit.weights, fit.head_pose, fit.pivot)
    export_sequence(root / "export", frames, head.faces, formats=formats, fps=24, rig=rig)
    np.savez(root / "expected.npz", frames=frames, neutral=frames[0],
             rig_frames=fit.points(frames[0], head.expression_basis))
    return root / "export", root / "expected.npz", frames


def test_blender_imports_obj_ply_pc2_mdd_at_the_right_positions(export):
    export_dir, expected, _ = export
    proc = run_blender(export_dir, expected, "obj-neutral", "obj", "ply", "pc2", "mdd")
    lines = result_lines(proc)
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not [line for line in lines if line.startswith("FAIL")], "\n".join(lines)
    ok = [line for line in lines if line.startswith("OK")]
    for name in ("wm.obj_import", "obj/frame_", "ply/frame_", "Mesh Cache PC2", "Mesh Cache MDD"):
        assert any(name in line for line in ok), name
    # the legacy OBJ importer is checked where it exists (Blender 3.x; Debian's 3.4.1 has it)
    assert any("legacy" in line for line in lines)


@pytest.mark.parametrize("check", ["usd", "usd-skel"])
def test_blender_imports_usd_at_the_right_positions(export, check):
    pytest.importorskip("pxr")
    export_dir, expected, _ = export
    proc = run_blender(export_dir, expected, check)
    lines = result_lines(proc)
    if any(line.startswith("SKIP usd") for line in lines):
        pytest.skip(f"{BLENDER} was built without USD support (Debian's Blender is)")
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines and all(line.startswith("OK") for line in lines), "\n".join(lines)


def test_blender_imports_gltf_morph_targets_and_pose_at_the_right_positions(export):
    export_dir, expected, _ = export
    proc = run_blender(export_dir, expected, "gltf")
    lines = result_lines(proc)
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("OK animation.glb") and "53 shape keys" in lines[0], lines


def test_the_check_catches_frames_off_by_one(export, tmp_path):
    """The check is not vacuous: expected positions shifted by one frame must fail it."""
    export_dir, _, frames = export
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, frames=np.roll(frames, 1, axis=0), neutral=frames[0])
    proc = run_blender(export_dir, shifted, "pc2", "obj")
    lines = result_lines(proc)
    assert proc.returncode == 1, "\n".join(lines) + proc.stderr[-3000:]
    assert len(lines) == 2 and all(line.startswith("FAIL") for line in lines), "\n".join(lines)


LONG_FRAMES = 300


@pytest.fixture(scope="module")
def long_export(tmp_path_factory, head):
    """A 300-frame shot through a timeline's downstream path: landmarks decoded in chunks from a given
    neutral face (``Pipeline.decode(..., neutral=)``, ``DECODE_FRAMES`` at a time) and exported."""
    from face4d.data.interchange import LandmarkSequences
    from face4d.pipeline import DECODE_FRAMES, Pipeline

    assert LONG_FRAMES > DECODE_FRAMES  # more than one chunk
    root = tmp_path_factory.mktemp("blender_long")
    frames = jaw_smile_animation(head, LONG_FRAMES, seed=2)
    landmarks = frames[:, head.landmark_ids]
    pipe = Pipeline(head=head)
    seqs = LandmarkSequences(landmarks[None], [LONG_FRAMES], [""], [""], fps=30)
    result = pipe.decode(seqs, pipe.target(frames[0]), neutral=landmarks[0])
    formats = ("pc2", "mdd") + (("usd",) if importlib.util.find_spec("pxr") else ())
    pipe.export(result, root / "out", formats=formats)
    np.savez(root / "expected.npz", frames=result.meshes[0], neutral=frames[0])
    return root / "out" / "sample_000", root / "expected.npz", result.meshes[0], frames


def test_blender_imports_a_300_frame_export(long_export):
    export_dir, expected, meshes, frames = long_export
    assert meshes.shape == frames.shape
    np.testing.assert_allclose(meshes, frames, atol=1e-3)  # the chunks join: the blendshape path is exact here
    checks = ["pc2", "mdd"] + (["usd"] if (export_dir / "animation.usdc").exists() else [])
    proc = run_blender(export_dir, expected, *checks)
    lines = result_lines(proc)
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:] + proc.stderr[-3000:]
    ok = [line for line in lines if line.startswith("OK")]
    assert any("Mesh Cache PC2" in line for line in ok) and any("Mesh Cache MDD" in line for line in ok), lines
    assert not [line for line in lines if line.startswith("FAIL")], "\n".join(lines)
