"""Reading and writing triangle meshes (OBJ, PLY) through trimesh, with the checks a user needs.

Vertex order is kept exactly as in the file (trimesh's processing is off), because every model
in the package indexes vertices by id. A file that cannot serve as a triangle mesh raises
``MeshFileError`` with one line that names the file and what is wrong with it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import trimesh

from meshops.atomic import atomic_file

SUFFIXES = (".obj", ".ply")


class MeshFileError(ValueError):
    """A mesh file that is missing, unreadable or not a finite triangle mesh."""


def load_mesh(path: str | os.PathLike) -> trimesh.Trimesh:
    """Load an OBJ or PLY triangle mesh without reordering or merging vertices."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MeshFileError(f"{path}: unsupported mesh format {suffix or '(none)'!r}; use .obj or .ply")
    if not path.is_file():
        raise MeshFileError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MeshFileError(f"{path}: file is empty")
    _check_layout(path, suffix)
    try:
        mesh = trimesh.load(path, file_type=suffix[1:], process=False, maintain_order=True, force="mesh")
    except Exception as exc:  # trimesh raises many types for broken files
        if "unexpected length" in str(exc):
            raise MeshFileError(f"{path}: the PLY header's element counts do not match the data size (truncated "
                                f"file or wrong vertex or face count?)") from None
        raise MeshFileError(f"{path}: cannot read as {suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut = f.read(1) != b"\n" and suffix == ".obj"
        raise MeshFileError(f"{path}: no faces found " + ("and the file ends mid-line (truncated?)" if cut else
                                                          "(a point cloud is not a mesh)"))
    vertices = _declared_count(path, suffix, "vertex")
    if vertices is not None and vertices != len(mesh.vertices):
        raise MeshFileError(f"{path}: the file declares {vertices} vertices but {len(mesh.vertices)} were read "
                            f"(truncated file or wrong vertex count?)")
    declared = _declared_count(path, suffix, "face")
    if declared is not None and declared != len(mesh.faces):
        raise MeshFileError(f"{path}: has polygons with more than 3 corners; triangulate it first "
                            f"({declared} faces in the file, {len(mesh.faces)} triangles after splitting)")
    if not np.isfinite(mesh.vertices).all():
        raise MeshFileError(f"{path}: vertex coordinates contain NaN or infinity")
    return mesh


def save_mesh(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray, overwrite: bool = False) -> Path:
    """Write a triangle mesh to ``.obj`` or ``.ply`` (binary), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MeshFileError(f"{path}: unsupported mesh format {suffix or '(none)'!r}; use .obj or .ply")
    vertices = np.asarray(vertices, np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or not np.isfinite(vertices).all():
        raise ValueError(f"vertices must be a finite (V, 3) array, got shape {vertices.shape}")
    mesh = trimesh.Trimesh(vertices, np.asarray(faces, np.int64), process=False)
    if suffix == ".obj":
        data = trimesh.exchange.obj.export_obj(mesh, include_normals=False, include_texture=False,
                                               include_color=False, digits=6)
    else:
        data = trimesh.exchange.ply.export_ply(mesh, encoding="binary", include_attributes=False)
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


_BINARY = bytes(range(9)) + bytes(range(14, 32))


def _check_layout(path: Path, suffix: str) -> None:
    """Name what is wrong with a file that is not a mesh of its kind before trimesh misreads it: binary
    data in an OBJ, an OBJ vertex or face line cut short (a truncated file), a PLY whose header counts
    do not match its rows."""
    data = path.read_bytes()
    if suffix == ".obj":
        if any(byte in _BINARY for byte in data[:65536]):
            raise MeshFileError(f"{path}: binary data, not a text OBJ file")
        for number, line in enumerate(data.splitlines(), 1):
            fields = line.split()
            if not fields or fields[0] not in (b"v", b"f"):
                continue
            if fields[0] == b"v" and not _numbers(fields[1:4]):
                raise MeshFileError(f"{path}: line {number}: a vertex needs 3 coordinates, got {line[:60]!r} "
                                    f"(truncated or malformed file?)")
            if fields[0] == b"f" and len(fields) < 4:
                raise MeshFileError(f"{path}: line {number}: a face needs 3 vertices, got {line[:60]!r} "
                                    f"(truncated or malformed file?)")
        return
    header_end = data.find(b"end_header")
    if not data.startswith(b"ply") or header_end < 0:
        raise MeshFileError(f"{path}: cannot read as PLY: no 'ply' ... 'end_header' header")
    counts = [int(n) for n in re.findall(rb"element \w+ (\d+)", data[:header_end])]
    if b"format ascii" in data[:header_end]:
        rows = len(data[header_end:].splitlines()) - 1
        if rows != sum(counts):
            raise MeshFileError(f"{path}: the header declares {' + '.join(map(str, counts))} rows (vertices, faces) "
                                f"but the file holds {rows} (truncated file or wrong element counts?)")


def _numbers(fields: list[bytes]) -> bool:
    try:
        return len([float(f) for f in fields]) == 3
    except ValueError:
        return False


def _declared_count(path: Path, suffix: str, element: str) -> int | None:
    """Number of ``element``s (``vertex`` or ``face``) the file itself declares (its ``v`` / ``f`` lines,
    or the PLY header's count), to tell whether trimesh dropped or split any of them."""
    if suffix == ".obj":
        tag = element[0].encode()
        with open(path, "rb") as f:
            return sum(1 for line in f if line.startswith(tag + b" ") or line.startswith(tag + b"\t"))
    with open(path, "rb") as f:
        header = f.read(4096)
    match = re.search(rb"element " + element.encode() + rb" (\d+)", header)
    return int(match.group(1)) if match else None
