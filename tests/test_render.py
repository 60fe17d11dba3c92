"""Preview rendering: the ICT head renders visibly, sequences share one camera, files are atomic."""
from __future__ import annotations

import subprocess
import sys

import imageio.v2 as imageio
from imageio.plugins.ffmpeg import FfmpegFormat
import numpy as np
import pytest
from PIL import Image

from meshops.head import HeadModel
from render import MeshRenderer, image_grid, save_animation, save_image

WIDTH, HEIGHT = 320, 256  # not square, so a swapped width/height shows up


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return HeadModel.load()


@pytest.fixture(scope="module")
def renderer(head):
    pytest.importorskip("pyvista")
    with MeshRenderer(head.faces, size=(WIDTH, HEIGHT), bounds=head.neutral[head.region_ids("face")]) as r:
        yield r


@pytest.fixture(scope="module")
def neutral_image(renderer, head) -> np.ndarray:
    return renderer.render(head.neutral)


def _foreground(image: np.ndarray) -> np.ndarray:
    return np.abs(image.astype(int) - image[0, 0]).sum(-1) > 15


def _red(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)


def test_render_package_does_not_import_face4d():
    code = "import sys, render; sys.exit(any(m.split('.')[0] == 'face4d' for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_neutral_head_is_visible(neutral_image):
    image = neutral_image
    assert image.shape == (HEIGHT, WIDTH, 3) and image.dtype == np.uint8
    assert image.std() > 10
    corner = image[:8, :8].reshape(-1, 3).astype(int)
    assert (corner == corner[0]).all()  # a flat background
    centre = image[HEIGHT // 2 - 10:HEIGHT // 2 + 10, WIDTH // 2 - 10:WIDTH // 2 + 10].reshape(-1, 3)
    assert np.abs(centre.mean(0) - corner[0]).sum() > 40
    assert 0.15 < _foreground(image).mean() < 0.8


def test_open_jaw_changes_the_lower_face(renderer, head, neutral_image):
    jaw = head.neutral + head.expression_basis[head.blendshape_index("jawOpen")]
    changed = np.abs(renderer.render(jaw).astype(int) - neutral_image).sum(-1) > 30
    rows = np.flatnonzero(_foreground(neutral_image).any(1))
    top, bottom = rows[0], rows[-1]
    middle = (top + bottom) // 2
    assert changed.mean() > 0.01
    assert changed[:top + (bottom - top) * 3 // 10].sum() < 0.02 * changed.sum()  # forehead untouched
    assert changed[middle:].sum() > 2 * changed[:middle].sum()


def test_landmarks_are_drawn_red(renderer, head, neutral_image):
    with_marks = renderer.render(head.neutral, landmarks=head.landmark_neutral)
    assert not _red(neutral_image).any()
    assert _red(with_marks).sum() > 68
    # the overlay is hidden again when the next frame has none
    np.testing.assert_array_equal(renderer.render(head.neutral), neutral_image)


def test_sequence_uses_one_camera(renderer, head, neutral_image):
    basis = head.expression_basis[head.blendshape_index("jawOpen")]
    meshes = head.neutral + np.array([0.0, 0.5, 1.0], np.float32)[:, None, None] * basis
    marks = meshes[:, head.landmark_ids]
    frames = renderer.render_sequence(meshes, landmarks=marks)
    assert frames.shape == (3, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    assert _red(frames).reshape(3, -1).any(1).all()
    assert len({f.tobytes() for f in frames}) == 3
    np.testing.assert_array_equal(renderer.render_sequence(meshes[:1])[0], neutral_image)


def test_renderer_frames_the_first_mesh_without_bounds(head):
    pytest.importorskip("pyvista")
    with MeshRenderer(head.faces, size=(64, 64), view="three_quarter") as r:
        assert 0.1 < _foreground(r.render(head.neutral)).mean() < 0.9
    with pytest.raises(RuntimeError, match="closed"):
        r.render(head.neutral)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((10, 3)), "faces index"),
    (np.zeros((14388, 2)), r"\(N, 3\)"),
    (np.full((14388, 3), np.nan), "NaN"),
])
def test_render_rejects_bad_vertices(renderer, bad, message):
    with pytest.raises(ValueError, match=message):
        renderer.render(bad)


def test_render_sequence_rejects_mismatched_landmarks(renderer, head):
    with pytest.raises(ValueError, match="frames"):
        renderer.render_sequence(head.neutral[None].repeat(2, 0), landmarks=head.landmark_neutral[None])
    with pytest.raises(ValueError, match=r"\(F, N, 3\)"):
        renderer.render_sequence(head.neutral)


def test_renderer_rejects_bad_arguments(head):
    pytest.importorskip("pyvista")
    with pytest.raises(ValueError, match="view"):
        MeshRenderer(head.faces, view="side")
    with pytest.raises(ValueError, match="faces"):
        MeshRenderer(head.faces.astype(np.float32))
    with pytest.raises(ValueError, match="bounds"):
        MeshRenderer(head.faces, bounds=(0, 1, 0, 1))


def test_image_grid_layout_and_captions():
    images = [np.full((40, 30, 3), 60 * i, np.uint8) for i in range(5)]
    plain = image_grid(images, ncols=2)
    assert plain.shape == (120, 60, 3)
    assert (plain[80:, 30:] == 255).all()  # the empty sixth cell
    captioned = image_grid(images, labels=[f"t{i}" for i in range(5)], ncols=2)
    caption = (captioned.shape[0] - 120) // 3
    assert captioned.shape[1] == 60 and caption >= 12
    strip = captioned[40:40 + caption, :30]
    assert (strip < 100).any() and (strip == 255).mean() > 0.5  # dark text on white
    np.testing.assert_array_equal(captioned[:40, :30], images[0])
    with pytest.raises(ValueError, match="labels"):
        image_grid(images, labels=["a"])
    with pytest.raises(ValueError, match="same shape"):
        image_grid([images[0], np.zeros((10, 10, 3), np.uint8)])


def _frames(count: int, height: int, width: int) -> np.ndarray:
    frames = np.full((count, height, width, 3), 230, np.uint8)
    for i in range(count):
        frames[i, 10:30, 5 + 8 * i:25 + 8 * i] = (200, 30, 30)
    return frames


def test_gif_round_trip(tmp_path):
    path = save_animation(tmp_path / "a.gif", _frames(5, 48, 64), fps=10)
    back = imageio.mimread(path)
    assert len(back) == 5 and back[0].shape[:2] == (48, 64)
    with Image.open(path) as gif:
        assert gif.info["loop"] == 0 and gif.info["duration"] == 100  # forever, at 10 fps


def test_mp4_round_trip_pads_odd_sizes(tmp_path):
    path = save_animation(tmp_path / "a.mp4", _frames(6, 49, 65), fps=12)
    with imageio.get_reader(path) as reader:
        assert reader.count_frames() == 6
        assert reader.get_data(0).shape == (50, 66, 3)


def test_save_image_round_trip_and_overwrite(tmp_path):
    image = _frames(1, 32, 48)[0]
    path = save_image(tmp_path / "a.png", image)
    np.testing.assert_array_equal(imageio.imread(path), image)
    with pytest.raises(FileExistsError):
        save_image(path, image)
    with pytest.raises(FileExistsError):
        save_animation(save_animation(tmp_path / "b.gif", _frames(2, 16, 16)), _frames(2, 16, 16))
    save_image(path, np.zeros_like(image), overwrite=True)
    assert imageio.imread(path).max() == 0
    assert save_image(tmp_path / "c.jpg", image).stat().st_size > 0


def test_failures_leave_nothing_behind(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="uint8"):
        save_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        save_animation(tmp_path / "a.gif", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unsupported"):
        save_animation(tmp_path / "a.avi", _frames(2, 16, 16))
    with pytest.raises(ValueError, match="unsupported"):
        save_image(tmp_path / "a.bmp", _frames(1, 16, 16)[0])

    def broken_append(self, frame, meta):  # fails after ffmpeg has opened the output file
        raise OSError("disk full")
    monkeypatch.setattr(FfmpegFormat.Writer, "_append_data", broken_append)
    with pytest.raises(OSError, match="disk full"):
        save_animation(tmp_path / "a.mp4", _frames(2, 16, 16))
    assert list(tmp_path.iterdir()) == []
