"""Headless CPU previews of face meshes: a fixed-camera renderer, captioned grids and image/video files.

The renderer keeps one off-screen pyvista plotter and one mesh and only swaps the vertex positions per
frame, so a sequence costs one draw per frame rather than one scene build. Vertex normals are
recomputed here from each frame's geometry, so shading follows the deformation whatever pyvista does
with its own smooth-shading filter. pyvista is imported only when a renderer is built: grids and
file writing work without it.

Anti-aliasing defaults to supersampling: the scene is drawn at 1.5x the size and area-averaged down.
On the CPU (Mesa llvmpipe) that looks like MSAA at about half its cost. Landmarks are projected with
the renderer's own camera (``MeshRenderer.project``) and drawn as dots on the finished image, so they
always show: filled where visible (or slightly inside the skin), rings where the depth buffer says the
surface hides them (the far cheek in a turned view).
"""
from __future__ import annotations

import itertools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meshops.atomic import atomic_file
from render.camera import Camera

SKIN = (0.87, 0.70, 0.60)
BACKGROUND = (0.94, 0.94, 0.94)
VIEWS = {"front": 0.0, "three_quarter": 35.0}  # camera azimuth in degrees about the up (+y) axis
VIEW_ANGLE = 20.0  # a narrow, portrait-lens field of view: little perspective distortion of the face
ANTIALIAS = ("ssaa", "msaa", "none")
SUPERSAMPLE = 1.5  # "ssaa" draws at this multiple of the output size and area-averages it down
LANDMARK_COLOR = (230, 25, 25)
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
ANIMATION_SUFFIXES = (".gif", ".mp4")
MAX_TILE = 2048
"""Largest tile, in pixels, that face4d asks a renderer for (previews, dataset previews); with
``face4d.outputs.MAX_PREVIEW_BYTES`` it keeps a request like ``--size 100000`` from asking for tens of GiB."""


class MeshRenderer:
    """Render one triangle mesh topology many times from a fixed camera.

    ``size`` is ``(width, height)`` in pixels; images come back as ``(height, width, 3)`` uint8.
    ``bounds`` fixes what the camera frames: six numbers ``(xmin, xmax, ymin, ymax, zmin, zmax)`` or
    an ``(N, 3)`` array of points (say, the neutral mesh's face region). Without it the camera is
    fitted to the first mesh rendered (all frames of the first sequence) and then kept, so that
    frames of one renderer are always comparable.

    ``antialias``: ``"ssaa"`` (default; draw at 1.5x and area-average down), ``"msaa"`` (multisampling:
    the same look, about twice the time on a CPU) or ``"none"`` (fastest, jagged silhouettes).

    ``camera`` is the ``render.camera.Camera`` in use once it is fixed (``set_camera`` picks another):
    it projects points into this renderer's images without VTK.
    """

    def __init__(self, faces: np.ndarray, size: tuple[int, int] = (512, 512), view: str = "front",
                 bounds: Sequence[float] | np.ndarray | None = None, color: Sequence[float] = SKIN,
                 background: Sequence[float] = BACKGROUND, margin: float = 1.08, antialias: str = "ssaa"):
        import pyvista as pv
        from scipy.sparse import csr_matrix

        self.faces = _check_faces(faces)
        self.num_vertices = int(self.faces.max()) + 1
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"size must be (width, height) of at least 8 pixels each, got {size}")
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
        if antialias not in ANTIALIAS:
            raise ValueError(f"unknown antialias {antialias!r}; use one of {', '.join(ANTIALIAS)}")
        self.size = (int(size[0]), int(size[1]))
        self.view = view
        self.margin = float(margin)
        self.antialias = antialias
        self.landmark_radius = max(1.5, min(self.size) / 170)
        scale = SUPERSAMPLE if antialias == "ssaa" else 1.0
        self._window = (round(self.size[0] * scale), round(self.size[1] * scale))
        self._framed = False
        self.camera: Camera | None = None
        _quiet_vtk()
        self._plotter = pv.Plotter(off_screen=True, window_size=self._window, lighting="none")
        self._plotter.set_background(background)
        # pyvista's own "ssaa" renders at 4x the pixels and FXAA is unsupported on EGL: supersampling is done
        # here (see _draw). llvmpipe's MSAA costs ~3.5x a plain draw, whatever the number of samples.
        if antialias == "msaa":
            self._plotter.enable_anti_aliasing("msaa")
        else:
            self._plotter.disable_anti_aliasing()
        for position, intensity in (((-1.0, 1.2, 1.5), 0.75), ((1.5, -0.3, 1.0), 0.35), ((0.0, 0.0, 1.0), 0.15)):
            self._plotter.add_light(pv.Light(position=position, light_type="camera light", intensity=intensity))

        cells = np.hstack([np.full((len(self.faces), 1), 3, np.int64), self.faces]).ravel()
        # vertex normal = sum of its faces' area-weighted normals: one sparse product per frame
        self._face_to_vertex = csr_matrix(
            (np.ones(self.faces.size, np.float32), (self.faces.ravel(), np.repeat(np.arange(len(self.faces)), 3))),
            shape=(self.num_vertices, len(self.faces)))
        self._mesh = pv.PolyData(np.zeros((self.num_vertices, 3), np.float32), cells)
        self._mesh.point_data.active_normals = np.zeros((self.num_vertices, 3), np.float32)
        actor = self._plotter.add_mesh(self._mesh, color=color, ambient=0.18, diffuse=0.85, specular=0.12,
                                       specular_power=18.0)
        actor.prop.interpolation = "phong"  # per-pixel lighting: no faceting on the coarse ICT mesh
        if bounds is not None:
            self._frame(_as_bounds(bounds))

    # -- rendering ----------------------------------------------------------------------------
    def render(self, vertices: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Render one mesh ``(V, 3)``, optionally with ``(K, 3)`` landmarks as red dots; ``(H, W, 3)`` uint8.

        Without ``bounds`` the first call fits the camera to this mesh.
        """
        self._require_open()
        vertices = self._check_vertices(vertices, 2)
        landmarks = None if landmarks is None else _check_points(landmarks, "landmarks", 2)
        if not self._framed:
            self._frame(_as_bounds(vertices))
        return self._draw(vertices, landmarks)

    def render_sequence(self, vertices: np.ndarray, landmarks: np.ndarray | None = None,
                        progress: bool = False) -> np.ndarray:
        """Render ``(F, V, 3)`` meshes (and ``(F, K, 3)`` landmarks) with one camera; ``(F, H, W, 3)`` uint8."""
        self._require_open()
        vertices = self._check_vertices(vertices, 3)
        if landmarks is not None:
            landmarks = _check_points(landmarks, "landmarks", 3)
            if len(landmarks) != len(vertices):
                raise ValueError(f"landmarks have {len(landmarks)} frames, vertices have {len(vertices)}")
        if not self._framed and len(vertices):
            self._frame(_as_bounds(vertices.reshape(-1, 3)))
        out = np.empty((len(vertices), self.size[1], self.size[0], 3), np.uint8)
        frames = range(len(vertices))
        if progress:
            from tqdm import tqdm
            frames = tqdm(frames, desc="rendering", unit="frame")
        for i in frames:
            out[i] = self._draw(vertices[i], None if landmarks is None else landmarks[i])
        return out

    def project(self, points: np.ndarray) -> np.ndarray:
        """Image positions of ``(..., 3)`` world points with this renderer's camera: ``(..., 2)`` float ``(x, y)``.

        ``x`` counts columns from the left and ``y`` rows from the top of the output image, with integer
        values at pixel centres: ``np.round(xy).astype(int)`` indexes ``image[y, x]``. The camera must be
        fixed already (``bounds`` given, or a mesh rendered).
        """
        self._require_open()
        if not self._framed:
            raise RuntimeError("the camera is not fixed yet: pass bounds or render a mesh first")
        points = np.asarray(points, np.float64)
        if points.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {points.shape}")
        return self._pixels(self._ndc(points), self.size)

    def set_camera(self, camera: Camera) -> None:
        """Look through ``camera`` (a ``render.camera.Camera`` of this renderer's size) from now on."""
        self._require_open()
        if camera.size != self.size:
            raise ValueError(f"the camera is for {camera.size[0]} x {camera.size[1]} images, "
                             f"this renderer draws {self.size[0]} x {self.size[1]}")
        vtk_camera = self._plotter.camera
        vtk_camera.focal_point = camera.target
        vtk_camera.position = tuple(camera.position)
        vtk_camera.up = tuple(camera.rotation[1])
        vtk_camera.view_angle = camera.view_angle
        self.camera = camera
        if not self._framed:
            self._depth_tolerance = 0.02 * camera.distance * camera.size[1] / camera.focal
        self._framed = True

    def close(self) -> None:
        """Release the render window; the renderer cannot be used afterwards."""
        if self._plotter is not None:
            self._plotter.close()
            self._plotter = None

    def __enter__(self) -> "MeshRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------------
    def _ndc(self, points: np.ndarray) -> np.ndarray:
        """Normalised device coordinates ``(..., 2)`` of world points: -1..1 from left to right, bottom to top."""
        matrix = self._plotter.camera.GetCompositeProjectionTransformMatrix(self._window[0] / self._window[1], -1, 1)
        matrix = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
        clip = points @ matrix[:, :3].T + matrix[:, 3]
        return clip[..., :2] / clip[..., 3:]

    @staticmethod
    def _pixels(ndc: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``(x, y)`` image positions (top-left pixel centre at 0, 0) of NDC points in a ``size`` image."""
        return np.stack([(ndc[..., 0] + 1) / 2 * size[0] - 0.5, (1 - ndc[..., 1]) / 2 * size[1] - 0.5], -1)

    def _hidden(self, points: np.ndarray) -> np.ndarray:
        """Which of ``(K, 3)`` points lie behind the drawn surface by more than ``_depth_tolerance``.

        Compares each point's distance along the view direction with the depth buffer around its pixel: a
        point counts as visible if the surface within one pixel is not in front of it, so that landmarks on
        the silhouette (the jaw line, where the skin turns away steeply) stay visible.
        """
        from vtkmodules.util.numpy_support import vtk_to_numpy
        from vtkmodules.vtkCommonCore import vtkFloatArray

        camera = self._plotter.camera
        width, height = self._window
        col, row = np.round(self._pixels(self._ndc(points), self._window)).astype(int).T
        inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
        buffer = vtkFloatArray()
        self._plotter.render_window.GetZbufferData(0, 0, width - 1, height - 1, buffer)
        zbuffer = vtk_to_numpy(buffer).reshape(height, width)[::-1]  # OpenGL rows run bottom-up
        rows = np.clip(row[:, None] + np.repeat([-1, 0, 1], 3), 0, height - 1)  # each point's 3 x 3 pixels
        cols = np.clip(col[:, None] + np.tile([-1, 0, 1], 3), 0, width - 1)
        z = zbuffer[rows, cols].max(1).astype(np.float64)  # the farthest surface (1: none) near each point
        near, far = camera.GetClippingRange()
        surface = 2 * near * far / (near + far - (2 * z - 1) * (far - near))  # eye-space depth
        depth = (points - np.array(camera.GetPosition())) @ np.array(camera.GetDirectionOfProjection())
        return inside & (z < 1) & (depth > surface + self._depth_tolerance)

    def _draw(self, vertices: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        self._mesh.points = vertices
        self._mesh.point_data.active_normals = _vertex_normals(vertices, self.faces, self._face_to_vertex)
        self._plotter.renderer.ResetCameraClippingRange()
        self._plotter.render()
        image = np.array(self._plotter.screenshot(return_img=True)[..., :3], np.uint8)
        hidden = None if landmarks is None else self._hidden(landmarks)
        if self._window != self.size:  # area average: 2.25 samples per output pixel
            image = np.array(Image.fromarray(image).resize(self.size, Image.BOX))
        if landmarks is not None:
            _draw_dots(image, self.project(landmarks), self.landmark_radius, hollow=hidden)
        return image

    def _require_open(self) -> None:
        if self._plotter is None:
            raise RuntimeError("this MeshRenderer is closed")

    def _frame(self, bounds: np.ndarray) -> None:
        """Point the camera so the box ``bounds`` fills the frame (with ``margin``) from the chosen view."""
        self.set_camera(Camera.framing(bounds, self.size, VIEWS[self.view], VIEW_ANGLE, self.margin))
        lo, hi = bounds[0::2], bounds[1::2]
        self._depth_tolerance = 0.02 * float(np.linalg.norm(hi - lo))  # landmarks may sit a little inside the skin

    def _check_vertices(self, vertices: np.ndarray, ndim: int) -> np.ndarray:
        vertices = _check_points(vertices, "vertices", ndim)
        if vertices.shape[-2] != self.num_vertices:
            raise ValueError(f"vertices have {vertices.shape[-2]} points but the faces index "
                             f"{self.num_vertices} (faces.max() + 1)")
        return vertices


def _draw_dots(image: np.ndarray, xy: np.ndarray, radius: float, hollow: np.ndarray) -> None:
    """Draw anti-aliased ``LANDMARK_COLOR`` dots of ``radius`` pixels at ``(K, 2)`` positions into ``image``.

    Dots flagged ``hollow`` (landmarks behind the surface) are rings. A pixel is covered by its centre's
    distance from the dot, so nothing is drawn farther than ``radius + 0.5`` from a position.
    """
    height, width = image.shape[:2]
    color = np.array(LANDMARK_COLOR, np.float32)
    ring = max(1.0, radius / 2.5)
    reach = math.ceil(radius + 1)
    for (x, y), hollow_dot in zip(xy, hollow):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        x0, x1 = max(math.floor(x) - reach, 0), min(math.ceil(x) + reach + 1, width)
        y0, y1 = max(math.floor(y) - reach, 0), min(math.ceil(y) + reach + 1, height)
        if x0 >= x1 or y0 >= y1:
            continue
        rows, cols = np.mgrid[y0:y1, x0:x1]
        distance = np.hypot(cols - x, rows - y)
        if hollow_dot:
            alpha = np.clip(0.5 + ring / 2 - np.abs(distance - (radius - ring / 2)), 0, 1)
        else:
            alpha = np.clip(radius + 0.5 - distance, 0, 1)
        patch = image[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] = np.round(patch + alpha[..., None] * (color - patch)).astype(np.uint8)


def _check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"faces must be a non-empty integer (M, 3) array, got {faces.dtype} {faces.shape}")
    if faces.min() < 0:
        raise ValueError("faces contain negative vertex ids")
    return np.ascontiguousarray(faces, np.int64)


def _check_points(points: np.ndarray, name: str, ndim: int) -> np.ndarray:
    points = np.ascontiguousarray(points, np.float32)
    if points.ndim != ndim or points.shape[-1] != 3:
        shape = "(N, 3)" if ndim == 2 else "(F, N, 3)"
        raise ValueError(f"{name} must have shape {shape}, got {points.shape}")
    if not np.isfinite(points).all():
        raise ValueError(f"{name} contain NaN or infinity")
    return points


def _as_bounds(bounds: Sequence[float] | np.ndarray) -> np.ndarray:
    """``(xmin, xmax, ymin, ymax, zmin, zmax)`` from six numbers or from the box around ``(N, 3)`` points."""
    b = np.asarray(bounds, np.float64)
    if b.ndim == 2 and b.shape[1] == 3 and len(b):
        b = np.stack([b.min(0), b.max(0)], axis=1).ravel()
    if b.shape != (6,) or not np.isfinite(b).all() or (b[1::2] < b[0::2]).any():
        raise ValueError("bounds must be finite (xmin, xmax, ymin, ymax, zmin, zmax) or an (N, 3) point array, "
                         f"got shape {np.shape(bounds)}")
    return b


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray, face_to_vertex) -> np.ndarray:
    """Area-weighted vertex normals; unreferenced or degenerate vertices get a zero normal.

    ``face_to_vertex`` is the sparse ``(V, M)`` incidence matrix of ``faces`` (built once per renderer).
    """
    v0 = vertices[faces[:, 0]]
    face_normals = np.cross(vertices[faces[:, 1]] - v0, vertices[faces[:, 2]] - v0)
    normals = np.asarray(face_to_vertex @ face_normals, np.float32)
    length = np.sqrt((normals * normals).sum(1, keepdims=True))
    return normals / np.maximum(length, 1e-12)


# -- grids and files ----------------------------------------------------------------------------
def image_grid(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str] | None = None,
               ncols: int | None = None, background: int = 255) -> np.ndarray:
    """Tile equally sized ``(H, W, 3)`` uint8 images row by row, each caption centred under its tile."""
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if not images:
        raise ValueError("image_grid needs at least one image")
    if any(im.shape != images[0].shape for im in images):
        raise ValueError(f"all images must have the same shape, got {sorted({im.shape for im in images})}")
    grid, origins = grid_layout(len(images), images[0].shape[:2], labels, ncols, background)
    h, w = images[0].shape[:2]
    for (top, left), im in zip(origins, images):
        grid[top:top + h, left:left + w] = im
    return grid


def grid_layout(count: int, tile: tuple[int, int], labels: Sequence[str] | None = None, ncols: int | None = None,
                background: int = 255) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The empty captioned canvas for ``count`` tiles of ``(height, width)`` and each tile's ``(top, left)``.

    Tiles fill rows of ``ncols`` (default: a near-square grid); captions are centred under their tiles.
    ``image_grid`` pastes images into it; animated grids draw the captions once and paste every frame.
    """
    h, w = tile
    if count < 1:
        raise ValueError("a grid needs at least one tile")
    if labels is not None and len(labels) != count:
        raise ValueError(f"got {len(labels)} labels for {count} images")
    ncols = ncols or math.ceil(math.sqrt(count))
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(ncols, count)
    nrows = math.ceil(count / ncols)
    font_size = max(12, w // 22)
    caption = 0 if labels is None else round(font_size * 1.6)
    grid = np.full((nrows * (h + caption), ncols * w, 3), background, np.uint8)
    origins = [((i // ncols) * (h + caption), (i % ncols) * w) for i in range(count)]
    if labels is None:
        return grid, origins
    canvas = Image.fromarray(grid)
    draw, font = ImageDraw.Draw(canvas), _font(font_size)
    for (top, left), label in zip(origins, labels):
        text = _fit(draw, str(label), font, w - 4)
        draw.text((left + w / 2, top + h + caption / 2), text, fill=(20, 20, 20), font=font, anchor="mm")
    return np.array(canvas), origins


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _quiet_vtk() -> None:
    """Keep VTK's logger to errors: off screen, the X11 window class warns "bad X server connection"
    on every headless render before falling back to off-screen rendering, which is what we want."""
    from vtkmodules.vtkCommonCore import vtkLogger

    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_ERROR)


def gif_delays(count: int, fps: float) -> list[int]:
    """Frame delays in milliseconds for ``count`` GIF frames at ``fps``. GIF stores delays in whole
    centiseconds, so each delay is rounded such that the running total stays on the exact timeline:
    60 fps alternates 20, 20 and 10 ms (average 16.7 ms), where one rounded delay for every frame
    would play at 50 or 100 fps. Above 100 fps a delay would be 0, which players show as "as fast as
    possible" or 100 ms: a ``ValueError``. (Web browsers also slow delays under 20 ms down to 100 ms;
    for them, 50 fps or less, or MP4.)"""
    check_animation_fps(".gif", fps)
    ticks = [round(k * 100 / fps) for k in range(count + 1)]
    return [10 * (b - a) for a, b in zip(ticks, ticks[1:])]


MAX_FPS = {".gif": 100.0, ".mp4": 1000.0}


def check_animation_fps(suffix: str, fps: float) -> float:
    """``fps`` if an animation file of ``suffix`` can play at it: GIF up to 100 fps (10 ms, its smallest
    frame delay), MP4 up to 1000; otherwise a ``ValueError`` saying so."""
    limit = MAX_FPS.get(suffix.lower(), MAX_FPS[".mp4"])
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 0 < fps <= limit):
        raise ValueError(f"{suffix.lstrip('.').upper()} animations play at more than 0 and at most {limit:g} fps"
                         f"{' (a GIF frame lasts at least 10 ms)' if suffix.lower() == '.gif' else ''}, got {fps:g}")
    return float(fps)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels, so captions never overlap."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def save_image(path: str | os.PathLike, image: np.ndarray, overwrite: bool = False) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG or JPEG (by suffix), atomically."""
    path = Path(path)
    fmt = IMAGE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: unsupported image format {path.suffix or '(none)'!r}; "
                         f"use {', '.join(IMAGE_SUFFIXES)}")
    image = _check_image(image, "image")
    with atomic_file(path, overwrite) as tmp:
        Image.fromarray(image).save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


def save_animation(path: str | os.PathLike, frames: np.ndarray | Iterable[np.ndarray], fps: float = 30,
                   overwrite: bool = False) -> Path:
    """Write ``(F, H, W, 3)`` uint8 frames as a looping GIF or an H.264 MP4 (by suffix), atomically.

    ``frames`` may also be an iterable of ``(H, W, 3)`` frames (``render.grid_frames``): an MP4 is
    then written as they come, one frame in memory at a time (a GIF's palette needs them all).
    GIF timing follows ``gif_delays``; ``check_animation_fps`` gives the highest fps of each format.

    MP4 frames are padded by one edge row/column where needed, because yuv420p needs even sizes.
    """
    import imageio.v2 as imageio
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"{path}: unsupported animation format {suffix or '(none)'!r}; "
                         f"use {', '.join(ANIMATION_SUFFIXES)}")
    check_animation_fps(suffix, fps)
    if isinstance(frames, np.ndarray) or suffix == ".gif":
        frames = np.asarray(frames if isinstance(frames, np.ndarray) else list(frames))
        if frames.ndim != 4 or len(frames) == 0:
            raise ValueError(f"frames must have shape (F, H, W, 3) with F >= 1, got {frames.shape}")
        _check_image(frames[0], "frames[0]")
    if suffix == ".gif":
        with atomic_file(path, overwrite) as tmp:
            iio.imwrite(tmp, frames, extension=".gif", duration=gif_delays(len(frames), fps), loop=0)
        return path
    frames = iter(frames)
    first = _check_image(next(frames, np.zeros(0)), "frames[0]")
    h, w = first.shape[:2]
    with atomic_file(path, overwrite) as tmp:
        with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv420p", macro_block_size=1, quality=8) as writer:
            for frame in itertools.chain([first], frames):
                if frame.shape != first.shape:
                    raise ValueError(f"frames must all have one shape, got {frame.shape} after {first.shape}")
                writer.append_data(np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge"))
    return path


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"{name} must be a (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
