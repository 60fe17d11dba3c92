"""The numpy camera and rasteriser: pinhole maths, the previews' (VTK's) pixels, and z-buffered triangles."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from meshops.head import HeadModel
from render.camera import Camera, focal_from_view_angle
from render.raster import MeshRasterizer, box_downsample, composite, rasterize

SIZE = (96, 64)  # not square, so a swapped width/height shows up


def _camera(**kw) -> Camera:
    values = dict(target=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, roll=0.0, distance=10.0, focal=100.0, size=SIZE)
    return Camera(**{**values, **kw})


def test_frontal_camera_maps_axes_to_the_image():
    cam = _camera()
    np.testing.assert_allclose(cam.position, [0, 0, 10])
    xy = cam.project(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5]], float))
    np.testing.assert_allclose(xy[0], [48, 32])  # the target lands on the image centre
    np.testing.assert_allclose(xy[1], [48 + 10, 32])  # +x is to the right: focal * 1 / 10
    np.testing.assert_allclose(xy[2], [48, 32 - 10])  # +y is up, image y runs down
    np.testing.assert_allclose(cam.to_camera(np.array([0, 0, 5.0]))[2], 5.0)  # depth in front of the eye


def test_yaw_pitch_roll_conventions():
    side = _camera(yaw=90.0)
    np.testing.assert_allclose(side.position, [10, 0, 0], atol=1e-12)
    np.testing.assert_allclose(side.project(np.array([0, 0, 1.0])), [48 - 10, 32], atol=1e-9)  # +z now on the left
    above = _camera(pitch=30.0)
    assert above.position[1] == pytest.approx(10 * math.sin(math.radians(30)))
    np.testing.assert_allclose(above.project(np.zeros(3)), [48, 32], atol=1e-9)
    rolled = _camera(roll=90.0)  # counter-clockwise in the image: a point on the right goes to the top
    np.testing.assert_allclose(rolled.project(np.array([1.0, 0, 0])), [48, 32 - 10], atol=1e-9)
    rotation = _camera(yaw=17.0, pitch=-8.0, roll=5.0).rotation
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)


def test_scaling_and_field_of_view():
    cam = _camera(yaw=12.0, pitch=5.0)
    points = np.random.default_rng(0).normal(size=(20, 3))
    np.testing.assert_allclose(cam.scaled(2).project(points), 2 * cam.project(points), rtol=1e-12)
    assert cam.scaled(2).size == (192, 128)
    assert focal_from_view_angle(_camera(focal=focal_from_view_angle(20.0, 64)).view_angle, 64) == pytest.approx(
        focal_from_view_angle(20.0, 64))
    np.testing.assert_allclose(cam.as_vector(), [12, 5, 0, 10, 100, 0])


def test_framing_fits_the_box():
    box = np.array([-3.0, 3.0, -5.0, 5.0, -1.0, 1.0])
    cam = Camera.framing(box, (64, 64), margin=1.0)
    corners = np.array([[x, y, z] for x in box[:2] for y in box[2:4] for z in box[4:]])
    xy = cam.project(corners)
    assert xy[:, 1].min() == pytest.approx(0.0, abs=0.5) and xy[:, 1].max() <= 64
    assert (xy >= -1e-9).all() and (xy <= 64 + 1e-9).all()


@pytest.mark.parametrize("kw", [dict(distance=0.0), dict(focal=-1.0), dict(pitch=90.0), dict(yaw=float("nan"))])
def test_bad_cameras_are_refused(kw):
    with pytest.raises(ValueError):
        _camera(**kw)


# -- the rasteriser ------------------------------------------------------------------------------
def test_a_triangle_covers_the_pixel_centres_inside_it():
    cam = _camera(size=(64, 64), focal=64.0)
    # a triangle in the z = 0 plane; its image is an exact right triangle in pixel coordinates
    corners = np.array([[8, 32.25, 40], [8, 8, 40], [32.25, 8, 40]])  # (x, y) pixel, then depth
    world = np.stack([(corners[:, 0] - 32) * corners[:, 2] / 64, -(corners[:, 1] - 32) * corners[:, 2] / 64,
                      10 - corners[:, 2]], 1)
    fragments = rasterize(cam, world, np.array([[0, 2, 1]]), cull_back=False)
    cols, rows = np.meshgrid(np.arange(64) + 0.5, np.arange(64) + 0.5)
    expected = (cols >= 8) & (rows >= 8) & (cols + rows <= 40.25)
    assert (fragments.covered == expected).all()
    assert np.allclose(fragments.bary[fragments.covered].sum(1), 1, atol=1e-5)
    culled = rasterize(cam, world, np.array([[0, 2, 1]]))
    flipped = rasterize(cam, world, np.array([[0, 1, 2]]))
    assert culled.covered.any() != flipped.covered.any()  # exactly one winding faces the camera


def test_nearer_triangle_wins_whatever_the_order():
    cam = _camera(size=(32, 32), focal=32.0)
    quad = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float)
    near = np.c_[quad, np.full(4, 2.0)]
    far = np.c_[quad * 2, np.full(4, -2.0)]
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    for order in ((near, far), (far, near)):
        vertices = np.vstack(order)
        both = np.vstack([faces, faces + 4])
        fragments = rasterize(cam, vertices, both, cull_back=False)
        near_ids = {0, 1} if order[0] is near else {2, 3}
        centre = fragments.triangle[12:20, 12:20]
        assert set(np.unique(centre)) <= near_ids


def test_downsample_and_composite():
    image = np.arange(16, dtype=np.float32).reshape(4, 4)
    np.testing.assert_allclose(box_downsample(image, 2), [[2.5, 4.5], [10.5, 12.5]])
    rgba = np.zeros((1, 2, 4), np.float32)
    rgba[0, 0] = [0.5, 0.25, 0.0, 0.5]  # premultiplied half-covered pixel
    out = composite(rgba, np.ones((1, 2, 3), np.float32))
    np.testing.assert_array_equal(out[0, 0], [255, 191, 128])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])


# -- against the previews' VTK camera --------------------------------------------------------------
@pytest.fixture(scope="module")
def head() -> HeadModel:
    return HeadModel.load()


def _spheres(centres: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Octahedra of ``radius`` around ``centres``: a mesh of small blobs whose images sit at the projections."""
    unit = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
    tris = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    vertices = (centres[:, None] + radius * unit).reshape(-1, 3)
    faces = (tris[None] + 6 * np.arange(len(centres))[:, None, None]).reshape(-1, 3)
    return vertices, faces


@pytest.mark.slow
@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (18.0, -9.0, 4.0)])
def test_projection_matches_a_pyvista_render(head, angles):
    pytest.importorskip("pyvista")
    from render import MeshRenderer

    ids = [0, 8, 16, 19, 24, 30, 36, 45, 48, 54]  # well-separated landmarks
    centres = head.landmark_neutral[ids].astype(np.float64)
    vertices, faces = _spheres(centres, 0.25)
    size = (192, 160)
    base = Camera.framing(np.r_[-8, 8, -9, 8, 3, 13.0], size)
    cam = Camera(base.target, *angles, base.distance, base.focal, size)
    with MeshRenderer(faces, size=size, antialias="none", background=(0.0, 0.0, 0.0), color=(1.0, 1.0, 1.0)) as renderer:
        renderer.set_camera(cam)
        image = renderer.render(vertices)
        np.testing.assert_allclose(renderer.project(centres) + 0.5, cam.project(centres), atol=1e-6)
    blobs, count = ndimage.label(image.max(-1) > 40)
    assert count == len(ids)
    found = np.array(ndimage.center_of_mass(np.ones(blobs.shape), blobs, range(1, count + 1)))[:, ::-1] + 0.5
    expected = cam.project(centres)
    distance = np.linalg.norm(found[:, None] - expected[None], axis=-1).min(0)  # blob nearest each landmark
    assert distance.max() < 0.6


@pytest.mark.slow
def test_rasteriser_silhouette_matches_pyvista(head):
    pytest.importorskip("pyvista")
    from render import MeshRenderer

    size = (128, 112)
    base = Camera.framing(np.r_[-10, 10, -12, 12, -3, 13.0], size)
    cam = Camera(base.target, -15.0, 8.0, -3.0, base.distance, base.focal, size)
    with MeshRenderer(head.faces, size=size, antialias="none", background=(0.0, 0.0, 0.0)) as renderer:
        renderer.set_camera(cam)
        vtk_mask = renderer.render(head.neutral).max(-1) > 0
    rgba, _ = MeshRasterizer(head.faces, supersample=1).render(cam, head.neutral, np.ones_like(head.neutral))
    ours = rgba[..., 3] > 0.5
    differ = ours != vtk_mask
    assert differ.sum() < 0.01 * vtk_mask.sum()
    # where they differ, it is on the outline: within one pixel of the other's silhouette edge
    edge = ours ^ ndimage.binary_erosion(ours)
    assert (differ & ~ndimage.binary_dilation(edge, iterations=1)).sum() <= 3
