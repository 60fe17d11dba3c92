"""Headless CPU previews of face meshes: a fixed-camera renderer, captioned grids and image/video files.

The renderer keeps one off-screen pyvista plotter and one mesh and only swaps the vertex positions per
frame, so a sequence costs one draw per frame rather than one scene build. Vertex normals are
recomputed here from each frame's geometry, so shading follows the deformation whatever pyvista does
with its own smooth-shading filter. pyvista is imported only when a renderer is built: grids and
file writing work without it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from meshops.atomic import atomic_file

SKIN = (0.87, 0.70, 0.60)
BACKGROUND = (0.94, 0.94, 0.94)
VIEWS = {"front": 0.0, "three_quarter": 35.0}  # camera azimuth in degrees about the up (+y) axis
VIEW_ANGLE = 20.0  # a narrow, portrait-lens field of view: little perspective distortion of the face
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
ANIMATION_SUFFIXES = (".gif", ".mp4")


class MeshRenderer:
    """Render one triangle mesh topology many times from a fixed camera.

    ``size`` is ``(width, height)`` in pixels; images come back as ``(height, width, 3)`` uint8.
    ``bounds`` fixes what the camera frames: six numbers ``(xmin, xmax, ymin, ymax, zmin, zmax)`` or
    an ``(N, 3)`` array of points (say, the neutral mesh's face region). Without it the camera is
    fitted to the first mesh rendered (all frames of the first sequence) and then kept, so that
    frames of one renderer are always comparable.
    """

    def __init__(self, faces: np.ndarray, size: tuple[int, int] = (512, 512), view: str = "front",
                 bounds: Sequence[float] | np.ndarray | None = None, color: Sequence[float] = SKIN,
                 background: Sequence[float] = BACKGROUND, margin: float = 1.08):
        import pyvista as pv

        self.faces = _check_faces(faces)
        self.num_vertices = int(self.faces.max()) + 1
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"size must be (width, height) of at least 8 pixels each, got {size}")
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")
        self.size = (int(size[0]), int(size[1]))
        self.view = view
        self.margin = float(margin)
        self._framed = False
        self._plotter = pv.Plotter(off_screen=True, window_size=self.size, lighting="none")
        self._plotter.set_background(background)
        # MSAA smooths the silhouette at ~2x the cost; FXAA is unsupported on EGL and SSAA is slower still.
        self._plotter.enable_anti_aliasing("msaa")
        for position, intensity in (((-1.0, 1.2, 1.5), 0.75), ((1.5, -0.3, 1.0), 0.35), ((0.0, 0.0, 1.0), 0.15)):
            self._plotter.add_light(pv.Light(position=position, light_type="camera light", intensity=intensity))

        cells = np.hstack([np.full((len(self.faces), 1), 3, np.int64), self.faces]).ravel()
        self._mesh = pv.PolyData(np.zeros((self.num_vertices, 3), np.float32), cells)
        self._mesh.point_data.active_normals = np.zeros((self.num_vertices, 3), np.float32)
        actor = self._plotter.add_mesh(self._mesh, color=color, ambient=0.18, diffuse=0.85, specular=0.12,
                                       specular_power=18.0)
        actor.prop.interpolation = "phong"  # per-pixel lighting: no faceting on the coarse ICT mesh
        self._marks = pv.PolyData(np.zeros((1, 3), np.float32))
        self._marks_actor = self._plotter.add_mesh(self._marks, color="red", lighting=False,
                                                   render_points_as_spheres=True,
                                                   point_size=max(4.0, min(self.size) / 75))
        self._marks_actor.visibility = False
        if bounds is not None:
            self._frame(_as_bounds(bounds))

    # -- rendering ----------------------------------------------------------------------------
    def render(self, vertices: np.ndarray, landmarks: np.ndarray | None = None) -> np.ndarray:
        """Render one mesh ``(V, 3)``, optionally with ``(K, 3)`` landmarks as red dots; ``(H, W, 3)`` uint8."""
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
    def _draw(self, vertices: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        import pyvista as pv

        self._mesh.points = vertices
        self._mesh.point_data.active_normals = _vertex_normals(vertices, self.faces)
        self._marks_actor.visibility = landmarks is not None
        if landmarks is not None:
            # Lift the dots towards the camera so that the surface they lie on does not hide them.
            to_camera = self._camera_position - landmarks
            to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
            self._marks.copy_from(pv.PolyData(landmarks + self._lift * to_camera))
        self._plotter.renderer.ResetCameraClippingRange()
        self._plotter.render()
        return np.array(self._plotter.screenshot(return_img=True)[..., :3], np.uint8)

    def _require_open(self) -> None:
        if self._plotter is None:
            raise RuntimeError("this MeshRenderer is closed")

    def _frame(self, bounds: np.ndarray) -> None:
        """Point the camera so the box ``bounds`` fills the frame (with ``margin``) from the chosen view."""
        lo, hi = bounds[0::2], bounds[1::2]
        centre = (lo + hi) / 2
        azimuth = math.radians(VIEWS[self.view])
        back = np.array([math.sin(azimuth), 0.0, math.cos(azimuth)])  # from the focal point to the camera
        up = np.array([0.0, 1.0, 0.0])
        right = np.cross(up, back)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        corners -= centre
        half_w, half_h = np.abs(corners @ right).max(), np.abs(corners @ up).max()
        near = (corners @ back).max()
        tan = math.tan(math.radians(VIEW_ANGLE) / 2)
        aspect = self.size[0] / self.size[1]
        distance = near + self.margin * max(half_h / tan, half_w / (tan * aspect), 1e-6)
        camera = self._plotter.camera
        camera.focal_point = tuple(centre)
        camera.position = tuple(centre + distance * back)
        camera.up = tuple(up)
        camera.view_angle = VIEW_ANGLE
        self._camera_position = centre + distance * back
        self._lift = 0.005 * float(np.linalg.norm(hi - lo))
        self._framed = True

    def _check_vertices(self, vertices: np.ndarray, ndim: int) -> np.ndarray:
        vertices = _check_points(vertices, "vertices", ndim)
        if vertices.shape[-2] != self.num_vertices:
            raise ValueError(f"vertices have {vertices.shape[-2]} points but the faces index "
                             f"{self.num_vertices} (faces.max() + 1)")
        return vertices


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


def _vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals; unreferenced or degenerate vertices get a zero normal."""
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    ids = faces.ravel()
    normals = np.stack([np.bincount(ids, np.repeat(face_normals[:, c], 3), len(vertices)) for c in range(3)], 1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return (normals / np.maximum(length, 1e-12)).astype(np.float32)


# -- grids and files ----------------------------------------------------------------------------
def image_grid(images: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str] | None = None,
               ncols: int | None = None, background: int = 255) -> np.ndarray:
    """Tile equally sized ``(H, W, 3)`` uint8 images row by row, each caption centred under its tile."""
    images = [_check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w = images[0].shape[:2]
    if any(im.shape != images[0].shape for im in images):
        raise ValueError(f"all images must have the same shape, got {sorted({im.shape for im in images})}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"got {len(labels)} labels for {len(images)} images")
    ncols = ncols or math.ceil(math.sqrt(len(images)))
    if ncols < 1:
        raise ValueError(f"ncols must be at least 1, got {ncols}")
    ncols = min(ncols, len(images))
    nrows = math.ceil(len(images) / ncols)
    font_size = max(12, w // 22)
    caption = 0 if labels is None else round(font_size * 1.6)
    grid = np.full((nrows * (h + caption), ncols * w, 3), background, np.uint8)
    for i, im in enumerate(images):
        top, left = (i // ncols) * (h + caption), (i % ncols) * w
        grid[top:top + h, left:left + w] = im
    if labels is None:
        return grid
    canvas = Image.fromarray(grid)
    draw, font = ImageDraw.Draw(canvas), _font(font_size)
    for i, label in enumerate(labels):
        text = _fit(draw, str(label), font, w - 4)
        centre = ((i % ncols) * w + w / 2, (i // ncols) * (h + caption) + h + caption / 2)
        draw.text(centre, text, fill=(20, 20, 20), font=font, anchor="mm")
    return np.asarray(canvas)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


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


def save_animation(path: str | os.PathLike, frames: np.ndarray, fps: float = 30,
                   overwrite: bool = False) -> Path:
    """Write ``(F, H, W, 3)`` uint8 frames as a looping GIF or an H.264 MP4 (by suffix), atomically.

    MP4 frames are padded by one edge row/column where needed, because yuv420p needs even sizes.
    """
    import imageio.v2 as imageio
    import imageio.v3 as iio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in ANIMATION_SUFFIXES:
        raise ValueError(f"{path}: unsupported animation format {suffix or '(none)'!r}; "
                         f"use {', '.join(ANIMATION_SUFFIXES)}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"frames must have shape (F, H, W, 3) with F >= 1, got {frames.shape}")
    _check_image(frames[0], "frames[0]")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    with atomic_file(path, overwrite) as tmp:
        if suffix == ".gif":
            iio.imwrite(tmp, frames, extension=".gif", duration=1000 / fps, loop=0)
        else:
            h, w = frames.shape[1:3]
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    pixelformat="yuv420p", macro_block_size=1, quality=8) as writer:
                for frame in frames:
                    writer.append_data(frame)
    return path


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(f"{name} must be a (H, W, 3) uint8 array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)
