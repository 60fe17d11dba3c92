"""Integration: the exports of the real head imported by headless Blender (tests/blender_import_check.py).

Runs only where a ``blender`` executable is found (Debian: ``apt-get install blender``, 3.4.1), or
the one that ``FACE4D_BLENDER`` names: a Blender executable, or a Python interpreter that has Blender
as a module (``pip install bpy``; such a build has USD). Every check compares vertex positions at several frames with
the exported arrays, in our coordinates: OBJ (both importers), PLY, neutral.obj + Mesh Cache with
the PC2 and the MDD, and USD where that Blender was built with it (Debian's is not).
"""
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import jaw_smile_animation

from meshops.export import export_sequence

BLENDER = os.environ.get("FACE4D_BLENDER") or shutil.which("blender")
SCRIPT = Path(__file__).with_name("blender_import_check.py")
NUM_FRAMES = 5

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(BLENDER is None, reason="needs Blender (apt-get install blender, or FACE4D_BLENDER)")]


def run_blender(export_dir: Path, expected: Path, *checks: str) -> subprocess.CompletedProcess:
    if Path(BLENDER).name.startswith("python"):  # a Python with Blender as a module (pip install bpy)
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
    try:
        import pxr  # noqa: F401
        formats = ("obj", "ply", "pc2", "mdd", "usd")
    except ImportError:
        formats = ("obj", "ply", "pc2", "mdd")
    export_sequence(root / "export", frames, head.faces, formats=formats, fps=24)
    np.savez(root / "expected.npz", frames=frames, neutral=frames[0])
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


def test_blender_imports_usd_at_the_right_positions(export):
    pytest.importorskip("pxr")
    export_dir, expected, _ = export
    proc = run_blender(export_dir, expected, "usd")
    lines = result_lines(proc)
    if any(line.startswith("SKIP usd") for line in lines):
        pytest.skip(f"{BLENDER} was built without USD support (Debian's Blender is)")
    assert proc.returncode == 0, "\n".join(lines) + proc.stdout[-3000:] + proc.stderr[-3000:]
    assert lines and all(line.startswith("OK") for line in lines), "\n".join(lines)


def test_the_check_catches_frames_off_by_one(export, tmp_path):
    """The check is not vacuous: expected positions shifted by one frame must fail it."""
    export_dir, _, frames = export
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, frames=np.roll(frames, 1, axis=0), neutral=frames[0])
    proc = run_blender(export_dir, shifted, "pc2", "obj")
    lines = result_lines(proc)
    assert proc.returncode == 1, "\n".join(lines) + proc.stderr[-3000:]
    assert len(lines) == 2 and all(line.startswith("FAIL") for line in lines), "\n".join(lines)
