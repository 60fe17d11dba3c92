"""Point caches: PC2 and MDD files, the vertex animation formats of Blender's Mesh Cache modifier.

A point cache holds only vertex positions, one sample per frame, in the vertex order of a mesh
file it is applied to (here ``neutral.obj``); it carries no faces. Sample ``k`` is frame ``k``.
Both formats store float32, so float32 positions come back bit for bit.

- **PC2** (3ds Max point cache 2, little-endian): ``b"POINTCACHE2\\0"``, int32 version (1), int32
  number of points, float32 start frame, float32 sample rate, int32 number of samples, then the
  float32 ``xyz`` of every point of every sample. The sample rate is the number of *frames*
  between samples (1.0: every frame), not frames per second: PC2 has no field for fps.
- **MDD** (LightWave, big-endian): int32 number of frames, int32 number of points, float32 time of
  every frame in seconds, then the float32 ``xyz`` of every point of every frame. The times carry
  the fps: frame ``k`` is at ``k / fps``.

Positions are written as they are, with no axis conversion: in Blender, keep the Mesh Cache
modifier's default axes (forward +Y, up +Z, meaning "none") and the cache lands in the same frame
as the vertex data of an OBJ imported with the default settings (see ``docs/exports.md``).
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from meshops.atomic import atomic_file
from meshops.io import MeshFileError

PC2_MAGIC = b"POINTCACHE2\0"
_PC2_HEADER = struct.Struct("<12siiffi")  # magic, version, points, start frame, sample rate, samples
_MDD_HEADER = struct.Struct(">ii")        # frames, points


class PC2Cache(NamedTuple):
    """What a PC2 file holds: ``frames`` float32 (F, V, 3), the start frame and the frame step."""
    frames: np.ndarray
    start_frame: float
    sample_rate: float


class MDDCache(NamedTuple):
    """What an MDD file holds: ``frames`` float32 (F, V, 3) and each frame's time in seconds."""
    frames: np.ndarray
    times: np.ndarray

    @property
    def fps(self) -> float | None:
        """Frames per second implied by the times, to 6 significant digits (the times are float32);
        None with fewer than two frames."""
        if len(self.times) < 2:
            return None
        return float(f"{1.0 / np.median(np.diff(self.times.astype(np.float64))):.6g}")


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` as a C-contiguous float32 (F, V, 3) array of finite values, F >= 1 and V >= 1."""
    frames = np.asarray(frames)
    if frames.ndim != 3 or frames.shape[2] != 3 or frames.shape[0] < 1 or frames.shape[1] < 1:
        raise ValueError(f"frames must be an (F, V, 3) array with F, V >= 1, got shape {frames.shape}")
    frames = np.ascontiguousarray(frames, np.float32)
    if not np.isfinite(frames).all():
        raise ValueError("frames contain NaN or infinity (or values too large for float32)")
    return frames


def check_fps(fps: float) -> float:
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    return fps


def write_pc2(path: str | os.PathLike, frames: np.ndarray, start_frame: float = 0.0, sample_rate: float = 1.0,
              overwrite: bool = False) -> Path:
    """Write ``frames`` (F, V, 3) as a PC2 point cache, atomically; sample ``k`` is ``frames[k]``.

    ``start_frame`` and ``sample_rate`` (frames between samples) only matter to readers that map
    scene time to samples through them (Blender's Mesh Cache in "Seconds" time mode, 3ds Max);
    in Blender's default "Frames" mode the sample index is the scene frame.
    """
    frames = check_frames(frames)
    if not np.isfinite(start_frame) or not np.isfinite(sample_rate) or sample_rate <= 0:
        raise ValueError(f"start_frame must be finite and sample_rate positive, got {start_frame}, {sample_rate}")
    header = _PC2_HEADER.pack(PC2_MAGIC, 1, frames.shape[1], start_frame, sample_rate, frames.shape[0])
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            _write_frames(f, frames, "<f4")
    return Path(path)


WRITE_FRAMES = 64
"""Frames converted and written at once: a long cache (a minute of a 14k-vertex head is 300 MB) is
never copied whole."""


def _write_frames(f, frames: np.ndarray, dtype: str) -> None:
    """Write ``frames`` as ``dtype`` bytes, ``WRITE_FRAMES`` frames at a time."""
    for start in range(0, len(frames), WRITE_FRAMES):
        f.write(np.ascontiguousarray(frames[start: start + WRITE_FRAMES], dtype=dtype).tobytes())


def read_pc2(path: str | os.PathLike) -> PC2Cache:
    """Read a PC2 point cache written by any program; one-line ``MeshFileError`` if it is not one."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < _PC2_HEADER.size or data[:12] != PC2_MAGIC:
        raise MeshFileError(f"{path}: not a PC2 point cache (no {PC2_MAGIC!r} header)")
    _, _, points, start, rate, samples = _PC2_HEADER.unpack_from(data)
    frames = _frames_from(path, data, _PC2_HEADER.size, samples, points, "<f4")
    return PC2Cache(frames, float(start), float(rate))


def write_mdd(path: str | os.PathLike, frames: np.ndarray, fps: float, overwrite: bool = False) -> Path:
    """Write ``frames`` (F, V, 3) as an MDD point cache, atomically; frame ``k`` at time ``k / fps`` s."""
    frames = check_frames(frames)
    fps = check_fps(fps)
    times = np.arange(len(frames), dtype=np.float64) / fps
    with atomic_file(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(_MDD_HEADER.pack(frames.shape[0], frames.shape[1]))
            f.write(times.astype(">f4").tobytes())
            _write_frames(f, frames, ">f4")
    return Path(path)


def read_mdd(path: str | os.PathLike) -> MDDCache:
    """Read an MDD point cache; one-line ``MeshFileError`` if its size does not match its header."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < _MDD_HEADER.size:
        raise MeshFileError(f"{path}: not an MDD point cache (shorter than its header)")
    count, points = _MDD_HEADER.unpack_from(data)
    offset = _MDD_HEADER.size + 4 * count
    frames = _frames_from(path, data, offset, count, points, ">f4")
    times = np.frombuffer(data, ">f4", count, _MDD_HEADER.size).astype(np.float32)
    return MDDCache(frames, times)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise MeshFileError(f"{path}: no such file")
    return path.read_bytes()


def _frames_from(path: Path, data: bytes, offset: int, count: int, points: int, dtype: str) -> np.ndarray:
    """The (count, points, 3) float32 block at ``offset``, checking the file is exactly that long."""
    if count < 0 or points < 0:
        raise MeshFileError(f"{path}: corrupt header ({count} samples of {points} points)")
    expected = offset + count * points * 12
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "has trailing data"
        raise MeshFileError(f"{path}: {kind}: header says {count} samples of {points} points "
                            f"({expected} bytes), file has {len(data)} bytes")
    block = np.frombuffer(data, dtype, count * points * 3, offset)
    return block.astype(np.float32).reshape(count, points, 3)
