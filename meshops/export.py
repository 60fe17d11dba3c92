"""Export an animated mesh for DCC tools (Blender, Maya, Houdini): OBJ/PLY sequences, PC2/MDD point caches, USD.

``export_sequence`` writes one directory (``docs/exports.md`` has how to import each file)::

    out_dir/
      neutral.obj              rest shape the point caches are applied to (always written)
      obj/frame_0000.obj ...   one OBJ per frame, 0-based, zero-padded to 4 digits (more if needed)
      ply/frame_0000.ply ...   one binary PLY per frame, same numbering
      animation.pc2            PC2 point cache, sample k = frame k
      animation.mdd            MDD point cache, frame k at time k / fps
      animation.usdc           USD stage, time code k = frame k, timeCodesPerSecond = fps
      animation.glb            glTF: neutral mesh, morph targets, weight + head pose animation (rig)
      animation_arkit.csv      ARKit 52 curves in Live Link Face's CSV layout (rig)
      weights.json             per-frame blendshape weights and head pose (rig)
      animation_skel.usdc      UsdSkel stage: BlendShape prims + SkelAnimation weights and pose (rig)
      export.json              fps, frame/vertex counts, units, axes and the file list

All files keep the vertex order of the input and our coordinates: Y up, centimetres, no axis
conversion and no scaling, float32 positions written so that they read back bit for bit (OBJ
with 9 significant digits). Everything is written into a temporary sibling directory that is
renamed to ``out_dir`` only when complete, so a failure leaves nothing behind.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from meshops import pointcache, rig as rigs, usd
from meshops.atomic import atomic_dir, atomic_file, check_dir_target
from meshops.pointcache import check_fps, check_frames
from meshops.usd import check_faces

MESH_FORMATS = ("obj", "ply", "pc2", "mdd", "usd")
"""Vertex animation: any mesh, and ``export_sequence``'s default."""
RIG_FORMATS = ("gltf", "arkit-csv", "weights", "usd-skel")
"""Blendshape weight curves: they need a ``RigAnimation`` (``meshops.rig``)."""
FORMATS = MESH_FORMATS + RIG_FORMATS
FRAME_FORMATS = ("obj", "ply")
"""The formats of one mesh file per frame."""
RIG_FILES = {"gltf": "animation.glb", "arkit-csv": "animation_arkit.csv", "weights": "weights.json",
             "usd-skel": "animation_skel.usdc"}
EXPORT_FORMAT = "face4d-export"
EXPORT_VERSION = 1
PROGRESS_MIN_FRAMES = 100  # below this, per-frame writes take a second or two: no bar


def write_obj(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, overwrite: bool = False) -> Path:
    """Write a triangle mesh as OBJ (``v`` and ``f`` lines only), atomically, keeping float32 exact.

    ``meshops.io.save_mesh`` rounds to 6 decimals; here every coordinate has 9 significant digits,
    which is what a float32 needs to read back unchanged, in Python or in Blender.
    """
    vertices = check_frames(np.asarray(vertices)[None])[0]
    return _write_obj(Path(path), vertices, _obj_faces(check_faces(faces, len(vertices))), overwrite)


def write_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, overwrite: bool = False) -> Path:
    """Write a triangle mesh as binary little-endian PLY with float32 ``x y z``, atomically."""
    vertices = check_frames(np.asarray(vertices)[None])[0]
    faces = check_faces(faces, len(vertices))
    return _write_ply(Path(path), vertices, _ply_faces(faces), len(faces), overwrite)


# The face part of a file is the same for every frame: the sequence writer builds it once.
def _obj_faces(faces: np.ndarray) -> str:
    return "".join("f %d %d %d\n" % tuple(f) for f in (faces + 1).tolist())


def _ply_faces(faces: np.ndarray) -> bytes:
    rows = np.empty(len(faces), np.dtype([("n", "u1"), ("ids", "<i4", 3)]))
    rows["n"], rows["ids"] = 3, faces
    return rows.tobytes()


def _frame_writer(fmt: str, faces: np.ndarray) -> Callable[[Path, np.ndarray], Path]:
    """``write(path, vertices)`` of one ``fmt`` frame (obj or ply) of checked ``faces``."""
    if fmt == "obj":
        lines = _obj_faces(faces)
        return lambda path, vertices: _write_obj(path, vertices, lines)
    rows = _ply_faces(faces)
    return lambda path, vertices: _write_ply(path, vertices, rows, len(faces))


def _write_obj(path: Path, vertices: np.ndarray, face_lines: str, overwrite: bool = False) -> Path:
    text = "".join("v %.9g %.9g %.9g\n" % tuple(v) for v in vertices.tolist()) + face_lines
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="ascii")
    return path


def _write_ply(path: Path, vertices: np.ndarray, face_rows: bytes, num_faces: int, overwrite: bool = False) -> Path:
    header = ("ply\nformat binary_little_endian 1.0\ncomment face4d export, centimetres, Y up\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              f"element face {num_faces}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(header.encode("ascii"))
            f.write(vertices.astype("<f4").tobytes())
            f.write(face_rows)
    return path


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated formats in the order given; ``ValueError`` naming the known ones."""
    if isinstance(formats, str):
        formats = [formats]
    out = []
    for fmt in formats:
        name = str(fmt).lower().lstrip(".")
        if name not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; known formats: {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"no export format given; known formats: {', '.join(FORMATS)}")
    return tuple(out)


def frame_name(k: int, num_frames: int, suffix: str) -> str:
    """``frame_0007.obj``: 0-based, zero-padded to 4 digits, or more when there are 10,000+ frames."""
    return f"frame_{k:0{max(4, len(str(num_frames - 1)))}d}{suffix}"


def _checked_animation(frames: np.ndarray, faces: np.ndarray,
                       neutral: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (F, V, 3) float32, faces and the neutral (V, 3) (default: the first frame), checked."""
    frames = check_frames(frames)
    faces = check_faces(faces, frames.shape[1])
    neutral = frames[0] if neutral is None else check_frames(np.asarray(neutral)[None])[0]
    if neutral.shape != frames.shape[1:]:
        raise ValueError(f"neutral has shape {neutral.shape}, but the frames have {frames.shape[1]} vertices")
    return frames, faces, neutral


def export_frames(out_dir: str | os.PathLike, frames: np.ndarray, faces: np.ndarray, fmt: str = "ply",
                  neutral: np.ndarray | None = None, overwrite: bool = False,
                  progress: bool | None = None) -> list[Path]:
    """The flat layout of ``face4d retarget``: one ``fmt`` file per frame (obj or ply, written as
    ``export_sequence`` writes them), ``frame_0000.<fmt>`` ..., right in ``out_dir``, with
    ``neutral.obj`` (default: the first frame). Checked first and written atomically, as
    ``export_sequence``; ``progress`` as there. Returns the frame files in frame order."""
    out_dir = Path(out_dir)
    if fmt not in FRAME_FORMATS:
        raise ValueError(f"unknown frame format {fmt!r}; use one of {', '.join(FRAME_FORMATS)}")
    frames, faces, neutral = _checked_animation(frames, faces, neutral)
    check_dir_target(out_dir, overwrite)
    names = [frame_name(k, len(frames), "." + fmt) for k in range(len(frames))]
    write = _frame_writer(fmt, faces)
    show = len(frames) >= PROGRESS_MIN_FRAMES if progress is None else progress
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _frame_writer("obj", faces)(tmp / "neutral.obj", neutral)
        for name, frame in zip(tqdm(names, desc="exporting frames", unit="frame", disable=not show), frames):
            write(tmp / name, frame)
    return [out_dir / name for name in names]


def export_sequence(out_dir: str | os.PathLike, frames: np.ndarray, faces: np.ndarray,
                    formats: Iterable[str] = MESH_FORMATS, fps: float = 30, neutral: np.ndarray | None = None,
                    overwrite: bool = False, progress: bool | None = None,
                    rig: rigs.RigAnimation | None = None) -> dict[str, list[Path]]:
    """Export an animation (``frames`` (F, V, 3), centimetres, Y up) into ``out_dir``; the paths by format.

    ``neutral`` is the rest shape written to ``neutral.obj`` that the point caches are applied to
    (default: the first frame). Every input is checked before anything is written: an unknown
    format is a ``ValueError``, ``"usd"`` without ``pxr`` an ``ImportError`` naming the extra, a
    non-empty ``out_dir`` a ``FileExistsError`` unless ``overwrite`` (which replaces the whole
    directory), an unwritable one an ``OSError`` naming it. ``progress`` shows a bar for the
    per-frame files; ``None`` shows it from ``PROGRESS_MIN_FRAMES`` frames on.
    ``rig``: the blendshape animation of the frames (``meshops.blendshapes.fit_head``), needed by
    the ``RIG_FORMATS``, whose morph targets apply to ``neutral``.
    The result maps ``"neutral"``, ``"manifest"`` and each format to its files, frame order.
    """
    out_dir = Path(out_dir)
    formats = check_formats(formats)
    frames, faces, neutral = _checked_animation(frames, faces, neutral)
    fps = check_fps(fps)
    wanted = [f for f in formats if f in RIG_FORMATS]
    if wanted and rig is None:
        raise ValueError(f"the {', '.join(wanted)} export needs the blendshape weights of the animation (a rig); "
                         "for a mesh outside the head model's topology use pc2 or mdd")
    if rig is not None and (rig.num_frames != len(frames) or rig.basis.shape[1:] != frames.shape[1:]):
        raise ValueError(f"the rig has {rig.num_frames} frames of a {rig.basis.shape[1]}-vertex basis, the animation "
                         f"{len(frames)} frames of {frames.shape[1]} vertices")
    if "usd" in formats or "usd-skel" in formats:
        try:
            usd.require_pxr()
        except ImportError:
            raise ImportError(f'{usd.INSTALL_HINT} (or leave "usd" and "usd-skel" out of the export formats)') from None
    check_dir_target(out_dir, overwrite)

    num = len(frames)
    relative: dict[str, list[str]] = {"neutral": ["neutral.obj"]}
    try:
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            per_frame = [f for f in formats if f in FRAME_FORMATS]
            write = {fmt: _frame_writer(fmt, faces) for fmt in {"obj", *per_frame}}
            write["obj"](tmp / "neutral.obj", neutral)
            if per_frame:
                for fmt in per_frame:
                    (tmp / fmt).mkdir()
                show = num >= PROGRESS_MIN_FRAMES if progress is None else progress
                for k in tqdm(range(num), desc="exporting frames", unit="frame", disable=not show):
                    for fmt in per_frame:
                        write[fmt](tmp / fmt / frame_name(k, num, "." + fmt), frames[k])
                for fmt in per_frame:
                    relative[fmt] = [f"{fmt}/{frame_name(k, num, '.' + fmt)}" for k in range(num)]
            if "pc2" in formats:
                pointcache.write_pc2(tmp / "animation.pc2", frames)
                relative["pc2"] = ["animation.pc2"]
            if "mdd" in formats:
                pointcache.write_mdd(tmp / "animation.mdd", frames, fps)
                relative["mdd"] = ["animation.mdd"]
            if "usd" in formats:
                usd.write_usd(tmp / "animation.usdc", frames, faces, fps)
                relative["usd"] = ["animation.usdc"]
            writers = {"gltf": lambda p: rigs.write_gltf(p, neutral, faces, rig, fps),
                       "arkit-csv": lambda p: rigs.write_arkit_csv(p, rig, fps),
                       "weights": lambda p: rigs.write_weights_json(p, rig, fps),
                       "usd-skel": lambda p: usd.write_usd_skel(p, neutral, faces, rig, fps)}
            for fmt in wanted:
                writers[fmt](tmp / RIG_FILES[fmt])
                relative[fmt] = [RIG_FILES[fmt]]
            relative["manifest"] = ["export.json"]
            manifest = {
                "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "fps": fps, "frames": num,
                "vertices": int(frames.shape[1]), "faces": int(len(faces)), "units": "centimetres",
                "up_axis": "Y",
                "frame_numbering": ("0-based: frame k is obj/ply file k, cache sample k, USD time code k, "
                                    "glTF/CSV key at k / fps seconds, weights row k"),
                "formats": list(formats), "files": {k: v for k, v in relative.items() if k != "manifest"},
            }
            with atomic_file(tmp / "export.json") as path:
                path.write_text(json.dumps(manifest, indent=1) + "\n")
    except OSError as exc:
        if exc.filename is None:  # not about a path (USD's own failure): its message says it all
            raise
        reason = f"{exc.strerror or exc} ({exc.filename})"
        if isinstance(exc, (FileExistsError, NotADirectoryError)) and Path(exc.filename).is_file():
            reason = f"{exc.filename} is a file, not a directory"
        raise type(exc)(f"cannot write the export to {out_dir}: {reason}") from None
    return {fmt: [out_dir / name for name in names] for fmt, names in relative.items()}
