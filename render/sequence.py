"""Animated previews of mesh sequences: one sequence, a captioned grid of samples, or a sample beside a reference.

All three draw with one ``MeshRenderer`` (one off-screen plotter, the vertex positions swapped per frame)
and one fixed camera that frames every frame of every sequence, so that tiles and frames are comparable.
The results are ``(F, H, W, 3)`` uint8 arrays; ``render.save_animation`` writes them as MP4 or GIF::

    frames = render_sequence(vertices, head.faces, landmarks=landmarks)       # (40, 512, 512, 3)
    save_animation("preview.mp4", frames, fps=30)
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from render.preview import MeshRenderer, _as_bounds, _check_faces, _check_points, grid_layout


def render_sequence(frames: np.ndarray, faces: np.ndarray, size: tuple[int, int] = (512, 512), view: str = "front",
                    landmarks: np.ndarray | None = None, bounds: Sequence[float] | np.ndarray | None = None,
                    progress: bool = True, antialias: str = "ssaa") -> np.ndarray:
    """Render meshes ``frames (F, V, 3)`` with triangles ``faces (M, 3)``: ``(F, H, W, 3)`` uint8.

    ``size`` is ``(width, height)``; ``view`` is ``"front"`` or ``"three_quarter"``. ``landmarks
    (F, K, 3)`` (say the 68 landmarks) are drawn as red dots where the camera projects them, as rings
    where the surface hides them. ``bounds`` fixes the framed box (``(xmin, xmax, ymin, ymax, zmin,
    zmax)`` or ``(N, 3)`` points); by default the camera frames every frame. ``progress`` shows a tqdm
    bar on stderr. ``antialias``: ``"ssaa"`` (default), ``"msaa"`` or ``"none"`` (see ``MeshRenderer``).
    """
    faces = _check_faces(faces)
    frames = _check_sequence(frames, "frames", int(faces.max()) + 1)
    if landmarks is not None:
        landmarks = _check_sequence_landmarks(landmarks, "landmarks", len(frames))
    return render_grid([frames], faces, size=size, view=view, landmarks=None if landmarks is None else [landmarks],
                       bounds=bounds, progress=progress, antialias=antialias)


def render_grid(sequences: Sequence[np.ndarray], faces: np.ndarray, labels: Sequence[str] | None = None,
                columns: int | None = None, size: tuple[int, int] = (256, 256), view: str = "front",
                landmarks: Sequence[np.ndarray | None] | None = None,
                bounds: Sequence[float] | np.ndarray | None = None, progress: bool = True,
                antialias: str = "ssaa") -> np.ndarray:
    """Render several mesh sequences ``(F_i, V, 3)`` (one topology, ``faces``) tiled frame by frame.

    Tiles are ``size`` ``(width, height)`` each, filled row by row in ``columns`` columns (default:
    near-square), with ``labels`` as captions under them. The result has ``max(F_i)`` frames; a shorter
    sequence holds its last frame. ``landmarks`` is one entry per sequence, each ``None`` or ``(F_i, K, 3)``.
    One camera frames all frames of all sequences unless ``bounds`` is given. ``(F, H, W, 3)`` uint8.
    ``grid_frames`` makes the same frames one at a time, for long sequences.
    """
    return np.stack(list(grid_frames(sequences, faces, labels, columns, size, view, landmarks, bounds, progress,
                                     antialias)))


def grid_frames(sequences: Sequence[np.ndarray], faces: np.ndarray, labels: Sequence[str] | None = None,
                columns: int | None = None, size: tuple[int, int] = (256, 256), view: str = "front",
                landmarks: Sequence[np.ndarray | None] | None = None,
                bounds: Sequence[float] | np.ndarray | None = None, progress: bool = True,
                antialias: str = "ssaa") -> Iterator[np.ndarray]:
    """``render_grid``'s frames ``(H, W, 3)`` uint8, made one at a time as they are iterated, so a
    long animation can go to a video writer without ever being held whole. The arguments are checked
    before the first frame is asked for."""
    faces = _check_faces(faces)
    num_vertices = int(faces.max()) + 1
    if isinstance(sequences, np.ndarray) and sequences.ndim == 4:
        sequences = list(sequences)  # (N, F, V, 3): N sequences of one length
    if isinstance(sequences, np.ndarray) and sequences.ndim == 3:
        raise ValueError(f"sequences must be a list of (F, V, 3) vertex arrays, got one array {sequences.shape}: "
                         "put a single sequence in a list, or use render_sequence")
    if isinstance(sequences, np.ndarray) or not isinstance(sequences, Sequence) or len(sequences) == 0:
        raise ValueError("sequences must be a non-empty list of (F, V, 3) vertex arrays")
    sequences = [_check_sequence(s, f"sequences[{i}]", num_vertices) for i, s in enumerate(sequences)]
    landmarks = _check_landmarks(landmarks, sequences)
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if len(size) != 2 or min(size) < 8:
        raise ValueError(f"size must be (width, height) of at least 8 pixels each, got {size}")
    if bounds is None:
        lo = np.min([s.min((0, 1)) for s in sequences], 0)
        hi = np.max([s.max((0, 1)) for s in sequences], 0)
        bounds = np.stack([lo, hi], 1).ravel()
    bounds = _as_bounds(bounds)
    return _grid_frames(sequences, faces, labels, columns, (int(size[0]), int(size[1])), view, landmarks, bounds,
                        progress, antialias)


def _grid_frames(sequences, faces, labels, columns, size, view, landmarks, bounds, progress,
                 antialias) -> Iterator[np.ndarray]:
    """The frames of checked arguments (``grid_frames``), frame by frame: every tile of frame f, then f + 1
    (a shorter sequence holds its last frame)."""
    width, height = size
    canvas, origins = grid_layout(len(sequences), (height, width), labels, columns)
    count = max(len(s) for s in sequences)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=count * len(sequences), desc="rendering", unit="frame")
    try:
        with MeshRenderer(faces, (width, height), view=view, bounds=bounds, antialias=antialias) as renderer:
            for f in range(count):
                frame = canvas.copy()
                for seq, marks, (top, left) in zip(sequences, landmarks, origins):
                    g = min(f, len(seq) - 1)
                    frame[top:top + height, left:left + width] = renderer.render(seq[g],
                                                                                 None if marks is None else marks[g])
                    if bar is not None:
                        bar.update()
                yield frame
    finally:
        if bar is not None:
            bar.close()


def render_side_by_side(frames: np.ndarray, reference: np.ndarray, faces: np.ndarray,
                        labels: Sequence[str] | None = ("generated", "reference"), size: tuple[int, int] = (256, 256),
                        view: str = "front", landmarks: Sequence[np.ndarray | None] | None = None,
                        bounds: Sequence[float] | np.ndarray | None = None, progress: bool = True,
                        antialias: str = "ssaa") -> np.ndarray:
    """``frames`` and a ``reference`` sequence (both ``(F, V, 3)``, one topology) in two captioned columns.

    The same camera frames both, so sizes and motions compare directly; the shorter one holds its last
    frame. ``landmarks`` is ``None`` or a pair ``(for frames, for reference)``, either entry ``None``.
    A two-tile ``render_grid``: see there for the other arguments.
    """
    if landmarks is not None and len(landmarks) != 2:
        raise ValueError(f"landmarks must be None or a pair (frames, reference), got {len(landmarks)} entries")
    return render_grid([frames, reference], faces, labels=labels, columns=2, size=size, view=view,
                       landmarks=landmarks, bounds=bounds, progress=progress, antialias=antialias)


def _check_landmarks(landmarks, sequences: list[np.ndarray]) -> list[np.ndarray | None]:
    if landmarks is None:
        return [None] * len(sequences)
    if isinstance(landmarks, np.ndarray) or len(landmarks) != len(sequences):
        raise ValueError(f"landmarks must be a list with one entry (None or (F, K, 3)) per sequence, "
                         f"{len(sequences)} in all")
    return [None if marks is None else _check_sequence_landmarks(marks, f"landmarks[{i}]", len(seq))
            for i, (marks, seq) in enumerate(zip(landmarks, sequences))]


def _check_sequence(vertices, name: str, num_vertices: int) -> np.ndarray:
    vertices = _check_points(vertices, name, 3)
    if len(vertices) == 0:
        raise ValueError(f"{name} must have at least one frame")
    if vertices.shape[1] != num_vertices:
        raise ValueError(f"{name} have {vertices.shape[1]} vertices but the faces index {num_vertices} "
                         "(faces.max() + 1)")
    return vertices


def _check_sequence_landmarks(landmarks, name: str, frames: int) -> np.ndarray:
    landmarks = _check_points(landmarks, name, 3)
    if len(landmarks) != frames:
        raise ValueError(f"{name} have {len(landmarks)} frames, the meshes have {frames}")
    return landmarks


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """The box (6,) a preview frames: around the face's landmark points (N, 3), widened a little
    and raised to the forehead (the landmarks stop at the eyebrows)."""
    lo, hi = landmarks.min(0), landmarks.max(0)
    width, height = hi[0] - lo[0], hi[1] - lo[1]
    return np.array([lo[0] - 0.06 * width, hi[0] + 0.06 * width, lo[1] - 0.1 * height, hi[1] + 0.35 * height,
                     lo[2], hi[2]])
