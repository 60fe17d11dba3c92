"""What a command writes: the checks of its outputs, made before any slow work so that bad output options
fail at once, and the per-sample folders of ``Pipeline.export``.

The export and preview format lists, the output directory and file checks (a non-empty directory
without ``overwrite``, a file where a folder should be, no write permission), and the optional
extras an output needs (``usd-core``, ``pyvista``). They wrap the geometry-level checks of
``meshops.export`` and ``meshops.atomic`` into one-line ``Face4DError``s for the command line and
``face4d.pipeline``.
"""
from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from face4d.errors import Face4DError
from meshops.atomic import check_dir_target
from render.preview import MAX_TILE

if TYPE_CHECKING:
    from face4d.decoder.target import Target
    from face4d.pipeline import PipelineResult

DEFAULT_EXPORTS = ("pc2", "mdd", "usd")
"""Without a choice, the compact formats: two point caches and a USD stage (each one file per
sample) plus ``neutral.obj``, which every sample folder holds. ``usd`` is left out of the default
when ``usd-core`` is not installed (asked for explicitly, it is an error that names the extra)."""
PREVIEW_FORMATS = ("mp4", "gif")
MAX_PREVIEW_BYTES = 4 * 2**30
"""Largest preview, as its frames held in memory (frames x tiles x size^2 x 3 bytes)."""
MAX_PREVIEW_SAMPLES = 64
"""Most samples a preview grid shows; a larger ``num`` with a preview is refused before any work."""
def check_export_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Export formats as a tuple: a comma-separated string or a list; None gives ``DEFAULT_EXPORTS``
    (without ``usd`` when usd-core is missing). An unknown format, or ``usd`` without usd-core, is a
    one-line ``Face4DError``."""
    from meshops.export import check_formats

    if formats is None:
        return tuple(f for f in DEFAULT_EXPORTS if f != "usd" or usd_available())
    if isinstance(formats, str):
        formats = [part.strip() for part in formats.split(",") if part.strip()]
    try:
        formats = check_formats(formats)
    except ValueError as exc:
        raise Face4DError(str(exc)) from None
    if ("usd" in formats or "usd-skel" in formats) and not usd_available():
        raise Face4DError("the usd export needs usd-core: pip install 'face4d[usd]' (or leave usd out of the "
                          "export formats)")
    return formats


def usd_available() -> bool:
    return importlib.util.find_spec("pxr") is not None


def check_preview_formats(formats: str | Sequence[str] | None) -> tuple[str, ...]:
    """Preview formats (``mp4``, ``gif``) from a comma-separated string or a list; ``none`` or an
    empty value gives none. Asking for one without pyvista is an error naming the extra."""
    if formats is None:
        return ()
    if isinstance(formats, str):
        formats = [part.strip().lower().lstrip(".") for part in formats.split(",") if part.strip()]
    formats = [f for f in dict.fromkeys(formats) if f != "none"]
    bad = [f for f in formats if f not in PREVIEW_FORMATS]
    if bad:
        raise Face4DError(f"unknown preview format {bad[0]!r}; use {', '.join(PREVIEW_FORMATS)} (or none)")
    if formats:
        require_render()
    return tuple(formats)


def check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise Face4DError(f"fps must be a positive number, got {fps}")
    return float(fps)


def check_preview_fps(formats: Sequence[str], fps: float) -> float:
    """``fps`` if every preview format can play at it (GIF: 100 fps at most, ``render.preview.gif_delays``)."""
    from render.preview import check_animation_fps

    fps = check_fps(fps)
    try:
        for fmt in formats:
            check_animation_fps(f".{fmt.lstrip('.')}", fps)
    except ValueError as exc:
        raise Face4DError(str(exc)) from None
    return fps


def check_names(names: Sequence[str], count: int) -> list[str]:
    """``count`` distinct sample names, each a plain folder name (``meshops.atomic.check_name``), so
    that ``export`` can never write outside its output directory."""
    from meshops.atomic import check_name

    names = [str(n) for n in names]
    if len(names) != count or len(set(names)) != len(names):
        raise Face4DError(f"need {count} distinct sample names, got {names}")
    try:
        return [check_name(n, "sample name") for n in names]
    except ValueError as exc:
        raise Face4DError(str(exc)) from None


# bytes per vertex and frame of each export, and per vertex / triangle of an OBJ or PLY mesh
_FRAME_BYTES = {"pc2": 12, "mdd": 12, "usd": 12}
_OBJ_BYTES, _PLY_BYTES = (30, 20), (12, 13)
_LANDMARK_FILE_BYTES = 68 * 3 * 4, 2048  # per frame, per file


def estimate_output_bytes(num: int, frames: int, formats: Sequence[str] = (), vertices: int = 0,
                          triangles: int = 0) -> int:
    """A lower estimate of what ``num`` samples of ``frames`` frames take on disk: their landmark
    files, and with ``formats`` their sample folders (``neutral.obj`` and the exports)."""
    per_sample = frames * _LANDMARK_FILE_BYTES[0] + _LANDMARK_FILE_BYTES[1]
    if formats:
        obj = _OBJ_BYTES[0] * vertices + _OBJ_BYTES[1] * triangles
        per_sample += obj + frames * sum(_FRAME_BYTES.get(f, 0) * vertices for f in formats)
        per_sample += frames * (obj * ("obj" in formats) + (_PLY_BYTES[0] * vertices + _PLY_BYTES[1] * triangles)
                                * ("ply" in formats))
    return num * per_sample


def check_disk_space(path: str | os.PathLike, needed: int) -> None:
    """Refuse, before any work, an output of ``needed`` bytes that the disk holding ``path`` cannot take."""
    import shutil

    parent = Path(path).absolute()
    while not parent.exists():
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    if needed > free:
        raise Face4DError(f"the output would take about {_size(needed)}, but {parent} has only {_size(free)} free; "
                          f"ask for fewer samples or frames")


def _size(count: float) -> str:
    units = ("bytes", "KiB", "MiB", "GiB", "TiB")
    k = 0
    while count >= 1024 and k < len(units) - 1:
        count, k = count / 1024, k + 1
    return f"{count:.0f} bytes" if k == 0 else f"{count:.1f} {units[k]}"


def check_preview_size(tiles: int, frames: int, size: int) -> None:
    """Refuse a preview that would be too large to hold: tile ``size`` out of [32, MAX_TILE], more than
    ``MAX_PREVIEW_SAMPLES`` tiles, or frames over ``MAX_PREVIEW_BYTES``."""
    if not 32 <= size <= MAX_TILE:
        raise Face4DError(f"the preview tile size must be from 32 to {MAX_TILE} pixels, got {size}")
    if tiles > MAX_PREVIEW_SAMPLES:
        raise Face4DError(f"a preview shows at most {MAX_PREVIEW_SAMPLES} samples, got {tiles}; leave the preview out "
                          f"or ask for fewer samples")
    held = frames * tiles * size * size * 3
    if held > MAX_PREVIEW_BYTES:
        raise Face4DError(f"a preview of {tiles} tile(s) of {size} pixels would take {_size(held)} of memory, "
                          f"more than {_size(MAX_PREVIEW_BYTES)}; use a smaller size or fewer samples")


def require_render() -> None:
    if importlib.util.find_spec("pyvista") is None:
        raise Face4DError("previews need pyvista: pip install 'face4d[render]'")


def check_out_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse, before any work, an output directory that cannot be written: a non-empty one without
    ``overwrite`` (``FileExistsError``), a file, or a place without write permission."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise Face4DError(f"{path} exists and is not a directory")
    check_dir_target(path, overwrite)
    _check_writable_parent(path)
    return path


def check_out_file(path: str | os.PathLike, suffixes: Sequence[str], overwrite: bool = False) -> Path:
    """The same for an output file, which must also end in one of ``suffixes`` (``.mp4``, ...)."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise Face4DError(f"{path}: unsupported output {path.suffix or '(no suffix)'!r}; use {', '.join(suffixes)}")
    if path.is_dir():
        raise Face4DError(f"{path} is a directory; give a file name such as {path / ('preview' + suffixes[0])}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    _check_writable_parent(path)
    return path


def _check_writable_parent(path: Path) -> None:
    """The nearest existing ancestor of ``path`` must be a directory we may create entries in."""
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise Face4DError(f"cannot write {path}: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise Face4DError(f"cannot write {path}: no permission to write in {parent}")


def check_rig_target(target: Target, formats: Sequence[str], head) -> None:
    """The rig formats (glTF, ARKit CSV, weights, UsdSkel) need a target in the head model's
    topology (``head``), whose blendshapes they animate: a one-line error otherwise."""
    from meshops.export import RIG_FORMATS

    wanted = [f for f in formats if f in RIG_FORMATS]
    if wanted and (len(target.vertices) != head.num_vertices or not np.array_equal(target.faces, head.faces)):
        raise Face4DError(f"the {', '.join(wanted)} export animates the head model's blendshapes, so it needs a "
                          f"mesh in its topology ({head.num_vertices} vertices); {target.name} is not: export "
                          f"its vertex animation instead: use pc2 or mdd")


def rig_animation(head, meshes: np.ndarray, neutral: np.ndarray):
    """The blendshape animation of a mesh sequence on the head's topology: weights in [0, 1] and
    head pose solved from the meshes (``meshops.blendshapes.fit_head``), exact for the blendshape
    path's meshes, a close fit of the learned decoder's (docs/results.md, section rig)."""
    from meshops.blendshapes import fit_head
    from meshops.rig import RigAnimation

    fit = fit_head(head, meshes, neutral)
    return RigAnimation(head.expression_names, head.expression_basis, fit.weights, fit.head_pose, fit.pivot)


def write_samples(result: PipelineResult, out_dir: Path, formats: Sequence[str], fps: float,
                  progress: bool = False, head=None) -> None:
    """The per-sample folders and ``samples.json`` of ``export``, into an existing (temporary)
    directory; the caller makes the whole directory appear at once. With a rig format (``head``
    needed), each sample's weights and head pose are solved and also stored in its ``landmarks.npz``
    (the interchange format's ``expression_weights`` and ``head_pose``)."""
    records = write_sample_folders(result, out_dir, formats, fps, progress, head)
    write_samples_manifest(result.target, out_dir, formats, fps, records)


def write_samples_manifest(target: Target, out_dir: Path, formats: Sequence[str], fps: float,
                           records: list[dict]) -> None:
    """``samples.json``: the target, the formats and one record per sample folder."""
    manifest = {"target": target.name, "method": target.method, "fps": fps,
                "vertices": int(len(target.vertices)), "formats": list(formats), "samples": records}
    (out_dir / "samples.json").write_text(json.dumps(manifest, indent=1) + "\n")


def write_sample_folders(result: PipelineResult, out_dir: Path, formats: Sequence[str], fps: float,
                         progress: bool = False, head=None) -> list[dict]:
    """One folder per sample of ``result`` in ``out_dir`` (``head``: for the rig formats); returns their
    ``samples.json`` records."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    from face4d.data.interchange import save_sequences
    from meshops.export import RIG_FORMATS, export_sequence

    check_names(result.names, len(result))
    seqs, records = result.landmarks, []
    for i in tqdm(range(len(result)), desc="exporting", unit="sample", disable=not progress):
        folder = out_dir / result.names[i]
        rig = (rig_animation(head, result.meshes[i], result.target.vertices)
               if any(f in RIG_FORMATS for f in formats) else None)
        export_sequence(folder, result.meshes[i], result.faces, formats=formats, fps=fps,
                        neutral=result.target.vertices, progress=False, rig=rig)
        sequence = seqs.select(i)
        if rig is not None:
            sequence = replace(sequence, expression_weights=rig.weights[None], head_pose=rig.head_pose[None])
        save_sequences(folder / "landmarks.npz", sequence)
        records.append({"name": result.names[i], "caption": result.captions[i], "label": str(seqs.labels[i]),
                        "text": "" if seqs.texts is None else str(seqs.texts[i]), "type": str(seqs.types[i]),
                        "frames": int(seqs.lengths[i])})
        if result.flame is not None:
            fit = result.flame[i]
            # the rig formats are the head's blendshapes; FLAME's own rig is flame_params.npz
            mesh_formats = [f for f in formats if f not in RIG_FORMATS] or ["pc2"]
            export_sequence(folder / "flame", fit.meshes, fit.faces, formats=mesh_formats, fps=fps, neutral=fit.rest,
                            progress=False)
            fit.save(folder / "flame" / "flame_params.npz", fps)
            records[-1]["flame"] = {"landmark_error_mm": round(float(fit.landmark_error_mm.mean()), 4),
                                    "fit_seconds": round(fit.seconds, 2)}
    return records
