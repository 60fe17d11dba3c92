"""Real face data for the neural renderers: iBUG-style image folders and video folders with landmarks.

The image models train on portrait dicts (the issue-17 data contract, docs/neural.md): ``rgb`` (n, S, S, 3)
uint8 and ``landmarks`` (n, 68, 2) float32 pixel coordinates (x right, y down, pixel centres at
integer + 0.5, iBUG-68 order), ``identity`` (n,) int32 and ``label`` (n,) int16 (-1: unknown). The
rendered portrait data has them exactly; these loaders give users with real faces the same dicts, so
the same models train on them:

* ``load_image_folder``: images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``) each with an iBUG ``.pts``
  file of the same stem (the 300-W / Multi-PIE format: ``version: 1``, ``n_points: 68``, then the
  points between ``{`` and ``}``, one ``x y`` per line);
* ``load_video_folders``: one sub-folder per video, its frames as images sorted by name, each with
  a ``.npy`` of the same stem holding its (68, 2) landmarks in this module's pixel convention.

Real photos are not framed like the renders, so each face is cut out by a square around its
landmarks (``margin`` times their larger extent, edge pixels repeated beyond the image) and resized
to ``size``; a video uses one square for all its frames, so the head's motion stays in the clip.
iBUG ``.pts`` coordinates count pixels from 1 (Matlab: the first pixel's centre is 1.0), so 0.5 is
subtracted to reach this convention (``pts_origin`` changes that).

Malformed input raises ``RealDataError`` (a ``ValueError``) naming the file and what is wrong. This
module imports numpy and Pillow only (not torch, not ``face4d``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

NUM_LANDMARKS = 68
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MARGIN = 1.6
"""Crop side over the landmarks' larger extent: about the portrait renders' framing (forehead to chin)."""


class RealDataError(ValueError):
    """A real-data file or folder that cannot be read as faces with 68 landmarks."""


def read_pts(path: str | os.PathLike, origin: float = 1.0) -> np.ndarray:
    """The (68, 2) float32 landmarks of an iBUG ``.pts`` file, in pixel coordinates with pixel centres
    at integer + 0.5; ``origin`` is the file's coordinate of the first pixel's centre (1 for iBUG)."""
    path = Path(path)
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except UnicodeDecodeError:
        raise RealDataError(f"{path}: not a text .pts file") from None
    lines = [line for line in lines if line]
    header = {}
    while lines and ":" in lines[0]:
        key, _, value = lines.pop(0).partition(":")
        header[key.strip().lower()] = value.strip()
    if header.get("version") != "1":
        raise RealDataError(f"{path}: expected 'version: 1' in the header, got {header.get('version')!r}")
    if header.get("n_points") != str(NUM_LANDMARKS):
        raise RealDataError(f"{path}: expected 'n_points: {NUM_LANDMARKS}', got {header.get('n_points')!r}")
    if len(lines) < 2 or lines[0] != "{" or lines[-1] != "}":
        raise RealDataError(f"{path}: the points must be enclosed in lines '{{' and '}}'")
    points = []
    for number, line in enumerate(lines[1:-1], 1):
        fields = line.split()
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 2 or not all(np.isfinite(values)):
            raise RealDataError(f"{path}: point {number} is not two numbers: {line!r}")
        points.append(values)
    if len(points) != NUM_LANDMARKS:
        raise RealDataError(f"{path}: has {len(points)} points, the header says {NUM_LANDMARKS}")
    return (np.array(points, np.float64) - origin + 0.5).astype(np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (grey and palette images are converted, alpha is dropped)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise RealDataError(f"{path}: not a readable image ({exc})") from None


def crop_box(landmarks: np.ndarray, margin: float = MARGIN) -> tuple[float, float, float]:
    """The square ``(left, top, side)`` around (..., 68, 2) landmarks: centred on their bounding box,
    ``margin`` times its larger side."""
    points = np.asarray(landmarks, np.float64).reshape(-1, 2)
    lo, hi = points.min(0), points.max(0)
    side = margin * max(float((hi - lo).max()), 1.0)
    centre = (lo + hi) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def crop_face(image: np.ndarray, landmarks: np.ndarray, box: tuple[float, float, float],
              size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut the square ``box`` out of ``image`` (edge pixels repeated beyond it), resize it to ``size``
    x ``size``, and move ``landmarks`` (..., 2) with it."""
    left, top, side = box
    scale = size / side
    height, width = image.shape[:2]
    # the box in whole pixels, padded by edge repetition where it leaves the image
    x0, y0 = int(np.floor(left)), int(np.floor(top))
    x1, y1 = int(np.ceil(left + side)), int(np.ceil(top + side))
    pad = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    padded = np.pad(image, pad, mode="edge")
    patch = padded[y0 + pad[0][0]:y1 + pad[0][0], x0 + pad[1][0]:x1 + pad[1][0]]
    # resize the exact (sub-pixel) box: PIL's box argument is in the patch's continuous coordinates
    sub = (left - x0, top - y0, left - x0 + side, top - y0 + side)
    resized = np.asarray(Image.fromarray(patch).resize((size, size), Image.BICUBIC, box=sub), np.uint8)
    moved = (np.asarray(landmarks, np.float64) - [left, top]) * scale
    return resized, moved.astype(np.float32)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _check_size(size: int) -> int:
    if int(size) != size or not 8 <= size <= 4096:
        raise RealDataError(f"size must be an integer number of pixels within 8..4096, got {size}")
    return int(size)


def load_image_folder(root: str | os.PathLike, size: int = 64, margin: float = MARGIN,
                      pts_origin: float = 1.0) -> dict[str, np.ndarray]:
    """Every image under ``root`` (searched recursively) with its ``.pts`` landmarks, cropped and resized
    to ``size``: a portrait dict with ``rgb``, ``landmarks``, ``label`` (all -1), ``identity`` and
    ``names`` (the images' paths relative to ``root``). Images in one folder share an identity (the
    usual layout of one folder per person); images directly in ``root`` are each their own identity."""
    root, size = Path(root), _check_size(size)
    if not root.is_dir():
        raise RealDataError(f"{root}: no such folder")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise RealDataError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    rgb, landmarks, identity, names, people = [], [], [], [], {}
    for path in files:
        pts = path.with_suffix(".pts")
        if not pts.is_file():
            raise RealDataError(f"{path}: no landmark file {pts.name} beside it")
        points = read_pts(pts, pts_origin)
        image, points = crop_face(read_image(path), points, crop_box(points, margin), size)
        rgb.append(image)
        landmarks.append(points)
        person = str(path.parent.relative_to(root)) if path.parent != root else str(path.relative_to(root))
        identity.append(people.setdefault(person, len(people)))
        names.append(str(path.relative_to(root)))
    n = len(rgb)
    return {"rgb": np.stack(rgb), "landmarks": np.stack(landmarks), "label": np.full(n, -1, np.int16),
            "identity": np.array(identity, np.int32), "names": np.array(names)}


def load_video_folders(root: str | os.PathLike, size: int = 64, high_size: int | None = None,
                       frames: int | None = None, margin: float = MARGIN) -> dict[str, np.ndarray]:
    """Each sub-folder of ``root`` is a video: its frames (images sorted by name) each with a ``.npy`` of
    (68, 2) landmarks. Returns a clip dict: ``low`` (m, T, size, size, 3), ``landmarks_low``, ``identity``
    (one per video), ``label`` (all -1), ``names`` (the folders) and, with ``high_size``, ``high``,
    ``landmarks_high`` and ``identity_high`` (each video's first frame, standing in for its neutral).
    ``frames`` keeps the first T frames of every video; without it all videos must be equally long."""
    root, size = Path(root), _check_size(size)
    high_size = None if high_size is None else _check_size(high_size)
    if not root.is_dir():
        raise RealDataError(f"{root}: no such folder")
    videos = sorted(p for p in root.iterdir() if p.is_dir() and _images(p))
    if not videos:
        raise RealDataError(f"{root}: no video folders (sub-folders holding frame images) found")
    lengths = {video: len(_images(video)) for video in videos}
    if frames is None and len(set(lengths.values())) > 1:
        raise RealDataError(f"{root}: the videos have {min(lengths.values())} to {max(lengths.values())} frames; "
                            f"pass frames=T to keep the first T of each")
    count = frames if frames is not None else next(iter(lengths.values()))
    if int(count) != count or count < 1:
        raise RealDataError(f"frames must be a positive integer, got {count}")
    short = [v.name for v, n in lengths.items() if n < count]
    if short:
        raise RealDataError(f"{root}: video(s) {', '.join(short)} have fewer than {count} frames")
    sizes = {"low": size, **({"high": high_size} if high_size else {})}
    out: dict[str, list] = {key: [] for name in sizes for key in (name, f"landmarks_{name}")}
    out["identity_high"] = []
    for video in videos:
        paths = _images(video)[:count]
        images, points = [], []
        for path in paths:
            images.append(read_image(path))
            points.append(_read_npy(path.with_suffix(".npy")))
        if len({im.shape for im in images}) > 1:
            raise RealDataError(f"{video}: the frames differ in size")
        box = crop_box(np.stack(points), margin)
        for name, side in sizes.items():
            cropped = [crop_face(im, pt, box, side) for im, pt in zip(images, points)]
            out[name].append(np.stack([c[0] for c in cropped]))
            out[f"landmarks_{name}"].append(np.stack([c[1] for c in cropped]))
        if high_size:
            out["identity_high"].append(out["high"][-1][0])
    result = {key: np.stack(value) for key, value in out.items() if value}
    m = len(videos)
    result.update(identity=np.arange(m, dtype=np.int32), label=np.full(m, -1, np.int16),
                  names=np.array([v.name for v in videos]))
    return result


def _read_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise RealDataError(f"{path}: missing (each frame needs its landmarks as a .npy of the same name)")
    try:
        points = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RealDataError(f"{path}: not a readable .npy file ({exc})") from None
    if points.shape != (NUM_LANDMARKS, 2) or not np.issubdtype(points.dtype, np.number):
        raise RealDataError(f"{path}: landmarks must be a numeric ({NUM_LANDMARKS}, 2) array, "
                            f"got {points.dtype} {points.shape}")
    if not np.isfinite(points).all():
        raise RealDataError(f"{path}: landmarks contain NaN or infinity")
    return points.astype(np.float32)
