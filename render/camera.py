"""A numpy pinhole camera: the previews' camera without an OpenGL context.

Image-space models (landmark maps, the portrait data) need to know where a 3D point lands in a
picture, and need it for thousands of images, where a VTK scene per image is far too slow. This
module is that projection on its own. ``MeshRenderer`` frames its VTK camera with ``Camera.framing``,
so the two agree to floating-point precision (tests/test_camera.py checks both the maths and a
rendered image).

Conventions (those of VTK and of ``render.preview``): the world's up is ``+y``; at yaw 0 and pitch 0
the camera looks down ``-z`` at the target (so a head facing ``+z`` is seen from the front); yaw turns
the camera about ``+y`` (positive: the camera moves towards ``+x``), pitch raises it (positive: it
looks down on the target), roll turns the image about the line of sight (positive: counter-clockwise
as seen in the image). ``focal`` is in pixels, square pixels, the principal point at the image centre.

Image coordinates are continuous: ``x`` to the right, ``y`` down, the top-left corner of the image at
``(0, 0)``, so pixel ``(col, row)`` covers ``[col, col + 1) x [row, row + 1)`` and its centre is at
``(col + 0.5, row + 0.5)``. (``MeshRenderer.project`` counts from pixel centres instead: its values are
these minus 0.5.) The same camera at twice the size (``scaled(2)``) gives twice the coordinates,
which is what makes supersampled rendering line up.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

UP = np.array([0.0, 1.0, 0.0])


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking at ``target`` from ``distance`` along the direction set by ``yaw``,
    ``pitch`` and ``roll`` (degrees), with a focal length of ``focal`` pixels in an image of ``size``
    ``(width, height)``."""

    target: tuple[float, float, float]
    yaw: float
    pitch: float
    roll: float
    distance: float
    focal: float
    size: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", tuple(float(t) for t in np.asarray(self.target, np.float64).reshape(3)))
        object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        values = (*self.target, self.yaw, self.pitch, self.roll, self.distance, self.focal)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"camera parameters must be finite, got {values}")
        if self.distance <= 0 or self.focal <= 0 or min(self.size) < 1:
            raise ValueError(f"need distance > 0, focal > 0 and a size of at least 1 x 1 pixel, got distance "
                             f"{self.distance}, focal {self.focal}, size {self.size}")
        if abs(self.pitch) >= 90:
            raise ValueError(f"pitch must be within (-90, 90) degrees, got {self.pitch}")

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def framing(cls, bounds: Sequence[float] | np.ndarray, size: tuple[int, int], yaw: float = 0.0,
                view_angle: float = 20.0, margin: float = 1.08) -> "Camera":
        """The camera that frames the box ``bounds`` (``(xmin, xmax, ymin, ymax, zmin, zmax)``) from
        ``yaw`` so that it fills the image with ``margin``: the previews' camera. ``view_angle`` is the
        vertical field of view in degrees."""
        b = np.asarray(bounds, np.float64)
        lo, hi = b[0::2], b[1::2]
        centre = (lo + hi) / 2
        rotation = _rotation(yaw, 0.0, 0.0)
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        local = (corners - centre) @ rotation.T  # (right, up, back) coordinates
        half_w, half_h, near = np.abs(local[:, 0]).max(), np.abs(local[:, 1]).max(), local[:, 2].max()
        tan = math.tan(math.radians(view_angle) / 2)
        aspect = size[0] / size[1]
        distance = near + margin * max(half_h / tan, half_w / (tan * aspect), 1e-6)
        return cls(tuple(centre), yaw, 0.0, 0.0, float(distance), focal_from_view_angle(view_angle, size[1]), size)

    def scaled(self, factor: float) -> "Camera":
        """The same view in an image ``factor`` times as large (supersampling): coordinates scale by ``factor``."""
        size = (round(self.size[0] * factor), round(self.size[1] * factor))
        return Camera(self.target, self.yaw, self.pitch, self.roll, self.distance, self.focal * factor, size)

    # -- geometry -------------------------------------------------------------------------------
    @property
    def rotation(self) -> np.ndarray:
        """World-to-camera rotation (3, 3): its rows are the camera's right, up and back axes in the world."""
        return _rotation(self.yaw, self.pitch, self.roll)

    @property
    def position(self) -> np.ndarray:
        """The eye point in the world (3,)."""
        return np.asarray(self.target) + self.distance * self.rotation[2]

    @property
    def view_angle(self) -> float:
        """The vertical field of view in degrees (what VTK's ``camera.view_angle`` takes)."""
        return math.degrees(2 * math.atan(self.size[1] / 2 / self.focal))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """Camera-space coordinates ``(..., 3)`` of world points: right, up, and depth (distance in front
        of the eye along the line of sight, positive for visible points)."""
        local = (np.asarray(points, np.float64) - self.position) @ self.rotation.T
        local[..., 2] *= -1
        return local

    def project(self, points: np.ndarray) -> np.ndarray:
        """Image coordinates ``(..., 2)`` float ``(x, y)`` of world points ``(..., 3)`` (see the module docstring)."""
        points = np.asarray(points, np.float64)
        if points.shape[-1:] != (3,):
            raise ValueError(f"points must have shape (..., 3), got {points.shape}")
        local = self.to_camera(points)
        return self.image_coordinates(local)

    def image_coordinates(self, local: np.ndarray) -> np.ndarray:
        """Image coordinates ``(..., 2)`` of camera-space points from ``to_camera``."""
        depth = local[..., 2]
        x = self.size[0] / 2 + self.focal * local[..., 0] / depth
        y = self.size[1] / 2 - self.focal * local[..., 1] / depth
        return np.stack([x, y], -1)

    def as_vector(self) -> np.ndarray:
        """``[yaw, pitch, roll, distance, focal, 0]`` float32: the portrait data's per-image camera record
        (the target and size are the data set's, stored once)."""
        return np.array([self.yaw, self.pitch, self.roll, self.distance, self.focal, 0.0], np.float32)


def focal_from_view_angle(view_angle: float, height: int) -> float:
    """The focal length in pixels of a vertical field of view of ``view_angle`` degrees over ``height`` pixels."""
    if not 0 < view_angle < 180:
        raise ValueError(f"view_angle must be within (0, 180) degrees, got {view_angle}")
    return height / 2 / math.tan(math.radians(view_angle) / 2)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rows: the camera's right, up and back (target to eye) axes for these angles in degrees."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    back = np.array([math.sin(y) * math.cos(p), math.sin(p), math.cos(y) * math.cos(p)])
    right = np.cross(UP, back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    # roll turns the image counter-clockwise, i.e. the camera's axes clockwise about the line of sight
    right, up = math.cos(r) * right - math.sin(r) * up, math.sin(r) * right + math.cos(r) * up
    return np.stack([right, up, back])
