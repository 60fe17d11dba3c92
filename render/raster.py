"""A vectorised numpy z-buffer rasteriser with Lambert/Blinn-Phong shading, for rendering many small images fast.

The previews' VTK renderer (``render.preview``) draws one scene per process and costs tens of
milliseconds per frame however small the image, plus the scene set-up: fine for a video, far too slow
for a training set of tens of thousands of 64 x 64 portraits. At that size most of the head's 28k
triangles cover a pixel or less, so this rasteriser treats all triangles at once instead of one by
one: every (triangle, pixel) pair inside a triangle's bounding box becomes one row of a few flat
arrays, barycentric coordinates and depths are computed for all rows together, and the nearest row of
every pixel wins through one ``np.minimum.at`` on a packed (depth, row) key. Barycentrics are
perspective-correct; colours and normals are interpolated per pixel (Phong shading), so the coarse
mesh does not look faceted. Anti-aliasing is supersampling: draw at ``supersample`` times the size and
box-average down.

It projects with ``render.camera.Camera``, the previews' camera, so its pixels line up with theirs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_matrix

from render.camera import Camera
from render.preview import _check_faces, _vertex_normals

_NEAR = 1e-3
_DEPTH_BITS = 30  # the packed key (depth << 32 | row) stays below 2**63


@dataclass
class Fragments:
    """What covers each pixel of an image: ``triangle`` (H, W) int32, the nearest triangle's index or
    -1 for none; ``bary`` (H, W, 3) float32, the pixel centre's perspective-correct barycentric
    coordinates in that triangle (zero where none); ``back`` (H, W) bool, whether that triangle faces
    away from the camera (the inside of the mesh seen through an opening, such as an open mouth)."""

    triangle: np.ndarray
    bary: np.ndarray
    back: np.ndarray

    @property
    def covered(self) -> np.ndarray:
        return self.triangle >= 0


@dataclass
class Light:
    """One directional light plus ambient light. ``direction`` points from the surface towards the
    light in camera space (x right, y up, z towards the viewer); it need not be normalised."""

    direction: tuple[float, float, float] = (-0.4, 0.5, 1.0)
    ambient: float = 0.3
    diffuse: float = 0.75
    specular: float = 0.08
    shininess: float = 16.0
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def rasterize(camera: Camera, vertices: np.ndarray, faces: np.ndarray, cull_back: bool = True,
              double_sided: np.ndarray | None = None) -> Fragments:
    """The ``Fragments`` of triangles ``faces`` (M, 3) over ``vertices`` (V, 3) seen by ``camera``.

    A pixel is covered when its centre lies inside a triangle (edges inclusive). With ``cull_back``,
    triangles whose vertices run clockwise in the image (facing away, for counter-clockwise meshes)
    are skipped, except those flagged in the boolean ``double_sided`` (M,). Triangles with a vertex
    behind the eye are skipped.
    """
    width, height = camera.size
    local = camera.to_camera(np.asarray(vertices, np.float64))
    xy = camera.image_coordinates(local)
    inv_z = 1.0 / np.maximum(local[:, 2], _NEAR)
    xs, ys = xy[faces, 0], xy[faces, 1]  # (M, 3) each
    x0, y0 = xs[:, 0], ys[:, 0]
    ex1, ey1, ex2, ey2 = xs[:, 1] - x0, ys[:, 1] - y0, xs[:, 2] - x0, ys[:, 2] - y0
    area = ex1 * ey2 - ey1 * ex2  # image y runs down: counter-clockwise in the world is negative here
    z = local[faces, 2]
    keep = (np.minimum(np.minimum(z[:, 0], z[:, 1]), z[:, 2]) > _NEAR) & (np.abs(area) > 1e-12)
    if cull_back:
        keep &= (area < 0) if double_sided is None else (area < 0) | double_sided
    lo_x = np.maximum(np.ceil(np.minimum(np.minimum(xs[:, 0], xs[:, 1]), xs[:, 2]) - 0.5), 0).astype(np.int64)
    lo_y = np.maximum(np.ceil(np.minimum(np.minimum(ys[:, 0], ys[:, 1]), ys[:, 2]) - 0.5), 0).astype(np.int64)
    hi_x = np.minimum(np.floor(np.maximum(np.maximum(xs[:, 0], xs[:, 1]), xs[:, 2]) - 0.5), width - 1).astype(np.int64)
    hi_y = np.minimum(np.floor(np.maximum(np.maximum(ys[:, 0], ys[:, 1]), ys[:, 2]) - 0.5), height - 1).astype(np.int64)
    span_x, span_y = hi_x - lo_x + 1, hi_y - lo_y + 1
    keep &= (span_x > 0) & (span_y > 0)
    ids = np.flatnonzero(keep)
    counts = span_x[ids] * span_y[ids]
    total = int(counts.sum())
    triangle = np.full(height * width, -1, np.int32)
    bary = np.zeros((height * width, 3), np.float32)
    if total == 0:
        return Fragments(triangle.reshape(height, width), bary.reshape(height, width, 3),
                         np.zeros((height, width), bool))

    # barycentrics as linear functions of the pixel centre, and the vertices' 1/depth, per kept triangle
    inv_area = 1.0 / area[ids]
    x0, y0, ex1, ey1, ex2, ey2 = (c[ids] for c in (x0, y0, ex1, ey1, ex2, ey2))
    coef = np.stack([ey2 * inv_area, -ex2 * inv_area, (y0 * ex2 - x0 * ey2) * inv_area,
                     -ey1 * inv_area, ex1 * inv_area, (x0 * ey1 - y0 * ex1) * inv_area,
                     *inv_z[faces[ids]].T], 1).astype(np.float32)
    # one row per (triangle, pixel of its bounding box)
    row = np.repeat(np.arange(len(ids)), counts)
    offset = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    nx = span_x[ids][row]
    px = lo_x[ids][row] + offset % nx
    py = lo_y[ids][row] + offset // nx
    c = coef[row]
    cx, cy = (px + 0.5).astype(np.float32), (py + 0.5).astype(np.float32)
    w1 = c[:, 0] * cx + c[:, 1] * cy + c[:, 2]
    w2 = c[:, 3] * cx + c[:, 4] * cy + c[:, 5]
    w0 = 1.0 - w1 - w2
    eps = -1e-6
    inside = np.flatnonzero((w0 >= eps) & (w1 >= eps) & (w2 >= eps))
    row, px, py, c = row[inside], px[inside], py[inside], c[inside]
    w = np.stack([w0[inside] * c[:, 6], w1[inside] * c[:, 7], w2[inside] * c[:, 8]], 1)  # perspective-correct
    inv_depth = w[:, 0] + w[:, 1] + w[:, 2]
    w /= inv_depth[:, None]

    # z-buffer: the smallest (quantised depth, row) key of each pixel wins
    pixel = py * width + px
    depth = 1.0 / inv_depth.astype(np.float64)
    z_lo, z_hi = depth.min(), depth.max()
    quantised = np.round((depth - z_lo) / max(z_hi - z_lo, 1e-12) * (2**_DEPTH_BITS - 1)).astype(np.int64)
    key = (quantised << 32) | np.arange(len(depth), dtype=np.int64)
    best = np.full(height * width, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, pixel, key)
    hit = np.flatnonzero(best != np.iinfo(np.int64).max)
    winner = best[hit] & 0xFFFFFFFF
    triangle[hit] = ids[row[winner]]
    bary[hit] = w[winner]
    back = np.zeros(height * width, bool)
    back[hit] = area[triangle[hit]] > 0
    return Fragments(triangle.reshape(height, width), bary.reshape(height, width, 3), back.reshape(height, width))


class MeshRasterizer:
    """Renders one triangle topology many times with per-vertex colours: the ``rasterize`` of this module
    plus shading and supersampling. ``render`` returns premultiplied RGBA, so that compositing over any
    background after the box filter is exact (``composite``).

    ``back_color``: ``None`` culls the triangles that face away; a colour draws them unlit in that colour,
    which is how a head mesh with a hole at the lips gets a dark mouth interior when the jaw opens.
    ``double_sided`` (M,) bool limits that to the flagged triangles (say, the back of the head, which
    is what shows through the mouth); the others are culled, which halves the work.
    """

    def __init__(self, faces: np.ndarray, supersample: int = 2,
                 back_color: tuple[float, float, float] | None = None, double_sided: np.ndarray | None = None):
        self.faces = _check_faces(faces)
        self.num_vertices = int(self.faces.max()) + 1
        if supersample < 1:
            raise ValueError(f"supersample must be at least 1, got {supersample}")
        self.supersample = int(supersample)
        self.back_color = None if back_color is None else np.asarray(back_color, np.float32)
        if double_sided is not None:
            double_sided = np.asarray(double_sided, bool)
            if double_sided.shape != (len(self.faces),):
                raise ValueError(f"double_sided must have shape ({len(self.faces)},), got {double_sided.shape}")
        self.double_sided = double_sided
        self._face_to_vertex = csr_matrix(
            (np.ones(self.faces.size, np.float32), (self.faces.ravel(), np.repeat(np.arange(len(self.faces)), 3))),
            shape=(self.num_vertices, len(self.faces)))

    def render(self, camera: Camera, vertices: np.ndarray, colors: np.ndarray,
               light: Light = Light()) -> tuple[np.ndarray, Fragments]:
        """Shade ``vertices`` (V, 3) with per-vertex ``colors`` (V, 3) in [0, 1] under ``light``.

        Returns the premultiplied RGBA image (H, W, 4) float32 at ``camera.size`` and the
        supersampled ``Fragments`` (for masks of parts of the mesh: ``coverage``).
        """
        vertices = np.asarray(vertices, np.float32)
        if vertices.shape != (self.num_vertices, 3):
            raise ValueError(f"vertices must have shape ({self.num_vertices}, 3), got {vertices.shape}")
        colors = np.asarray(colors, np.float32)
        if colors.shape != vertices.shape:
            raise ValueError(f"colors must have shape {vertices.shape}, got {colors.shape}")
        big = camera.scaled(self.supersample)
        if self.back_color is None:
            fragments = rasterize(big, vertices, self.faces)
        else:
            fragments = rasterize(big, vertices, self.faces, self.double_sided is not None, self.double_sided)
        covered = fragments.covered
        tri = self.faces[fragments.triangle[covered]]  # (P, 3) vertex ids of each covered pixel
        bary = fragments.bary[covered]
        normals = _vertex_normals(vertices, self.faces, self._face_to_vertex) @ big.rotation.T.astype(np.float32)
        normal = _interpolate(normals, tri, bary)  # camera space
        normal /= np.maximum(np.sqrt((normal * normal).sum(1, keepdims=True)), 1e-12)
        albedo = _interpolate(colors, tri, bary)
        to_light = np.asarray(light.direction, np.float32)
        to_light = to_light / np.linalg.norm(to_light)
        lambert = np.clip(normal @ to_light, 0.0, None)
        halfway = to_light + np.array([0.0, 0.0, 1.0], np.float32)  # orthographic approximation of the view
        halfway /= np.linalg.norm(halfway)
        specular = light.specular * np.clip(normal @ halfway, 0.0, None) ** light.shininess
        tint = np.asarray(light.color, np.float32)
        shaded = albedo * (light.ambient + light.diffuse * lambert)[:, None] * tint + specular[:, None] * tint
        rgba = np.zeros((*covered.shape, 4), np.float32)
        rgba[covered, :3] = np.clip(shaded, 0.0, 1.0)
        rgba[covered, 3] = 1.0
        if self.back_color is not None:
            rgba[fragments.back, :3] = self.back_color
        return box_downsample(rgba, self.supersample), fragments

    def coverage(self, fragments: Fragments, triangles: np.ndarray, back: bool = False) -> np.ndarray:
        """The fraction (H, W) float32 of each output pixel that the triangles flagged in the boolean
        ``triangles`` (M,) cover, from supersampled ``fragments``; with ``back``, every back-facing
        triangle counts too."""
        inside = np.zeros(fragments.triangle.shape, np.float32)
        covered = fragments.covered
        inside[covered] = triangles[fragments.triangle[covered]]
        if back:
            inside[fragments.back] = 1.0
        return box_downsample(inside, self.supersample)


def _interpolate(values: np.ndarray, tri: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Per-pixel values (P, C): per-vertex ``values`` (V, C) at the ``tri`` (P, 3) vertices, weighted by ``bary``."""
    return (values[tri[:, 0]] * bary[:, :1] + values[tri[:, 1]] * bary[:, 1:2]
            + values[tri[:, 2]] * bary[:, 2:])


def box_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Average ``factor`` x ``factor`` blocks of an (H, W, ...) image (H and W multiples of ``factor``)."""
    if factor == 1:
        return image
    h, w = image.shape[:2]
    return image.reshape(h // factor, factor, w // factor, factor, *image.shape[2:]).mean((1, 3))


def composite(rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Premultiplied ``rgba`` (H, W, 4) over ``background`` (H, W, 3) in [0, 1]: (H, W, 3) uint8."""
    out = rgba[..., :3] + (1.0 - rgba[..., 3:]) * background
    return np.round(np.clip(out, 0.0, 1.0) * 255).astype(np.uint8)
