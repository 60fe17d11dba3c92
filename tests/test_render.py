"""Preview rendering: the ICT head renders visibly, sequences share one camera, landmark dots sit where the
camera projects them, grids tile and hold frames, files are atomic and read back."""
from __future__ import annotations

import subprocess
import sys

import imageio.v2 as imageio
from imageio.plugins.ffmpeg import FfmpegFormat
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from meshops.head import HeadModel
from render import (MeshRenderer, image_grid, render_grid, render_sequence, render_side_by_side, save_animation,
                    save_image)

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

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


# -- the camera's projection and the landmark overlay ------------------------------------------------
def _near(mask: np.ndarray, xy: np.ndarray, radius: float) -> np.ndarray:
    """Which pixels of ``mask``'s shape lie within ``radius`` of any of the ``(K, 2)`` points ``xy``."""
    rows, cols = np.indices(mask.shape)
    d2 = (cols[..., None] - xy[:, 0]) ** 2 + (rows[..., None] - xy[:, 1]) ** 2
    return (d2 <= radius ** 2).any(-1)


@pytest.mark.parametrize("view, antialias", [("front", "ssaa"), ("three_quarter", "none"), ("front", "msaa")])
def test_projection_lines_up_with_the_rendered_mesh(head, view, antialias):
    """The projected vertices cover the rendered head, to its silhouette's pixel, in every view and mode."""
    pytest.importorskip("pyvista")
    lower_face = head.neutral[head.landmark_ids[2:15]]  # off-centre framing: a flipped axis cannot hide
    bounds = np.concatenate([lower_face, head.neutral[head.landmark_ids[[8]]] - [0, 6, 0]])
    with MeshRenderer(head.faces, size=(96, 72), view=view, bounds=bounds, antialias=antialias) as r:
        image = r.render(head.neutral)
        xy = r.project(head.neutral)
    assert xy.shape == (head.num_vertices, 2)
    foreground = _foreground(image)
    col, row = np.round(xy).astype(int).T
    inside = (col >= 0) & (col < 96) & (row >= 0) & (row < 72)
    assert 0.3 < inside.mean() < 0.95  # the head is cut by the frame
    # every vertex lands on the head or, on the silhouette, within a pixel of it (a one-pixel shift fails)
    assert binary_dilation(foreground)[row[inside], col[inside]].all()
    assert foreground[row[inside], col[inside]].mean() > 0.97
    projected = np.zeros_like(foreground)
    projected[row[inside], col[inside]] = True
    rows, cols = np.flatnonzero(foreground.any(1)), np.flatnonzero(foreground.any(0))
    prow, pcol = np.flatnonzero(projected.any(1)), np.flatnonzero(projected.any(0))
    assert abs(rows[0] - prow[0]) <= 1 and abs(rows[-1] - prow[-1]) <= 1
    assert abs(cols[0] - pcol[0]) <= 1 and abs(cols[-1] - pcol[-1]) <= 1


def test_landmarks_project_onto_the_face(renderer, head, neutral_image):
    xy = renderer.project(head.landmark_neutral)
    col, row = np.round(xy).astype(int).T
    assert _foreground(neutral_image)[row, col].all()
    assert xy[8, 1] > xy[57, 1] > xy[33, 1] > xy[27, 1] > xy[19, 1]  # chin, lip, nose, bridge, brow: top-down
    assert xy[36, 0] < xy[39, 0] < xy[27, 0] < xy[42, 0] < xy[45, 0]  # the eye corners, left to right
    np.testing.assert_allclose(renderer.project(head.landmark_neutral[None])[0], xy)  # any leading shape


def test_overlay_dots_sit_at_projected_positions(renderer, head, neutral_image):
    jaw = head.neutral + head.expression_basis[head.blendshape_index("jawOpen")]
    marks = jaw[head.landmark_ids]
    plain, dotted = renderer.render(jaw), renderer.render(jaw, landmarks=marks)
    xy = renderer.project(marks)
    col, row = np.round(xy).astype(int).T
    assert _red(dotted)[row, col].all()  # every dot, visible from the front, is filled at its projection
    changed = (dotted != plain).any(-1)
    reach = renderer.landmark_radius + 1
    assert not (changed & ~_near(changed, xy, reach)).any()  # and nothing else changed
    mouth = _near(changed, xy[48:68], reach)
    assert changed[mouth].mean() > 0.3 and changed.sum() > 68  # the lips' 20 dots are drawn too


def test_landmarks_behind_the_surface_are_rings(head):
    pytest.importorskip("pyvista")
    back_of_head = head.neutral[np.argmin(head.neutral[:, 2])]
    nose_tip = head.landmark_neutral[30]
    with MeshRenderer(head.faces, size=(512, 512)) as r:
        image = r.render(head.neutral, landmarks=np.stack([nose_tip, back_of_head]))
        (x0, y0), (x1, y1) = np.round(r.project(np.stack([nose_tip, back_of_head]))).astype(int)
        radius = round(r.landmark_radius)
    red = _red(image)
    assert red[y0, x0] and red[y0 - 1:y0 + 2, x0 - 1:x0 + 2].all()  # visible: a filled dot
    ring = red[y1 - radius:y1 + radius + 1, x1 - radius:x1 + radius + 1]
    assert not red[y1, x1] and ring.sum() >= 6  # hidden behind the face: a ring, open in the middle


def test_project_needs_a_camera(head):
    pytest.importorskip("pyvista")
    with MeshRenderer(head.faces, size=(32, 32)) as r:
        with pytest.raises(RuntimeError, match="camera"):
            r.project(head.landmark_neutral)
        r.render(head.neutral)
        with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
            r.project(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="antialias"):
        MeshRenderer(head.faces, antialias="fxaa")


def test_supersampling_smooths_only_the_edges(head):
    pytest.importorskip("pyvista")
    images = {}
    for mode in ("ssaa", "none"):
        with MeshRenderer(head.faces, size=(96, 96), antialias=mode) as r:
            images[mode] = r.render(head.neutral).astype(int)
    diff = np.abs(images["ssaa"] - images["none"]).sum(-1)
    edge = _foreground(images["none"].astype(np.uint8)) != _foreground(images["ssaa"].astype(np.uint8))
    assert diff.mean() < 6 and np.median(diff) < 4
    background = images["none"][0, 0]
    blend = lambda im: ((np.abs(im - background).sum(-1) > 15) & (np.abs(im - background).sum(-1) < 120)).sum()
    assert blend(images["ssaa"]) > blend(images["none"])  # more in-between colours along the silhouette
    assert edge.mean() < 0.02


# -- sequences, grids, side by side -----------------------------------------------------------------
TILE = (64, 48)  # (width, height)


@pytest.fixture(scope="module")
def jaw_sequence(head) -> np.ndarray:
    basis = head.expression_basis[head.blendshape_index("jawOpen")]
    return head.neutral + np.linspace(0, 1, 4, dtype=np.float32)[:, None, None] * basis


@pytest.fixture(scope="module")
def sequence_frames(head, jaw_sequence) -> np.ndarray:
    return render_sequence(jaw_sequence, head.faces, size=TILE, progress=False)


def test_render_sequence_frames(sequence_frames):
    frames = sequence_frames
    assert frames.shape == (4, TILE[1], TILE[0], 3) and frames.dtype == np.uint8
    centre = frames[:, TILE[1] // 2 - 4:TILE[1] // 2 + 4, TILE[0] // 2 - 4:TILE[0] // 2 + 4]
    assert _foreground(frames[0])[TILE[1] // 2 - 4:TILE[1] // 2 + 4, TILE[0] // 2 - 4:TILE[0] // 2 + 4].all()
    assert np.abs(centre.astype(int) - frames[0, 0, 0]).sum(-1).min() > 40  # the face, not the background
    assert len({f.tobytes() for f in frames}) == 4  # the jaw moves every frame


def test_render_sequence_matches_the_renderer(renderer, head, neutral_image):
    bounds = head.neutral[head.region_ids("face")]
    frames = render_sequence(head.neutral[None], head.faces, size=(WIDTH, HEIGHT), bounds=bounds, progress=False)
    np.testing.assert_array_equal(frames[0], neutral_image)
    marks = render_sequence(head.neutral[None], head.faces, size=(WIDTH, HEIGHT), bounds=bounds, progress=False,
                            landmarks=head.landmark_neutral[None])
    np.testing.assert_array_equal(marks[0], renderer.render(head.neutral, head.landmark_neutral))


def test_render_sequence_frames_every_frame(head):
    """Without bounds the camera fits the whole sequence, not just its first frame."""
    far = head.neutral + np.array([12.0, 0, 0], np.float32)
    frames = render_sequence(np.stack([head.neutral, far]), head.faces, size=TILE, progress=False)
    assert frames.shape[0] == 2
    for frame in frames:
        fg = _foreground(frame)
        assert fg.any() and not fg[:, 0].any() and not fg[:, -1].any()  # each head fully inside the frame


def test_render_sequence_progress_bar(head, capsys):
    render_sequence(head.neutral[None], head.faces, size=(16, 16), progress=True)
    assert "rendering" in capsys.readouterr().err
    render_sequence(head.neutral[None], head.faces, size=(16, 16), progress=False)
    assert capsys.readouterr().err == ""


def test_render_grid_tiles_and_holds_the_last_frame(head, jaw_sequence, sequence_frames):
    seqs = [jaw_sequence, jaw_sequence[:2], jaw_sequence[:1]]
    bounds = jaw_sequence.reshape(-1, 3)
    plain = render_grid(seqs, head.faces, columns=2, size=TILE, bounds=bounds, progress=False)
    w, h = TILE
    assert plain.shape == (4, 2 * h, 2 * w, 3) and plain.dtype == np.uint8
    np.testing.assert_array_equal(plain[:, :h, :w], sequence_frames)  # one camera, as for one sequence
    np.testing.assert_array_equal(plain[:2, :h, w:], sequence_frames[:2])
    np.testing.assert_array_equal(plain[2:, :h, w:], sequence_frames[[1, 1]])  # held
    np.testing.assert_array_equal(plain[:, h:, :w], sequence_frames[[0, 0, 0, 0]])
    assert (plain[:, h:, w:] == 255).all()  # the empty fourth cell
    # the default camera frames all sequences together: here the same box as ``bounds``
    np.testing.assert_array_equal(render_grid(seqs, head.faces, columns=2, size=TILE, progress=False), plain)

    labelled = render_grid(seqs, head.faces, labels=["a", "bb", "ccc"], size=TILE, bounds=bounds, progress=False)
    caption = labelled.shape[1] // 2 - h
    assert labelled.shape == (4, 2 * (h + caption), 2 * w, 3) and caption >= 12
    np.testing.assert_array_equal(labelled[:, :h, :w], sequence_frames)
    strip = labelled[0, h:h + caption, :w]
    assert (strip < 100).any()  # a caption under the first tile
    np.testing.assert_array_equal(labelled[:, h + caption:2 * h + caption, :w], plain[:, h:, :w])


def test_render_grid_overlays_landmarks_per_sequence(head, jaw_sequence):
    marks = jaw_sequence[:, head.landmark_ids]
    grid = render_grid([jaw_sequence, jaw_sequence], head.faces, columns=2, size=TILE, landmarks=[marks, None],
                       progress=False)
    w = TILE[0]
    assert _red(grid[:, :, :w]).reshape(4, -1).any(1).all()
    assert not _red(grid[:, :, w:]).any()


def test_render_side_by_side(head, jaw_sequence):
    reference = jaw_sequence[::-1][:3]
    pair = render_side_by_side(jaw_sequence, reference, head.faces, size=TILE, progress=False)
    grid = render_grid([jaw_sequence, reference], head.faces, labels=["generated", "reference"], columns=2,
                       size=TILE, progress=False)
    np.testing.assert_array_equal(pair, grid)
    w, h = TILE
    assert pair.shape[0] == 4 and pair.shape[2] == 2 * w and pair.shape[1] > h
    np.testing.assert_array_equal(pair[3, :h, w:], pair[2, :h, w:])  # the shorter reference holds its last frame
    assert not np.array_equal(pair[0, :h, :w], pair[0, :h, w:])  # open jaw against closed
    with pytest.raises(ValueError, match="pair"):
        render_side_by_side(jaw_sequence, reference, head.faces, landmarks=[None])


@pytest.mark.parametrize("call, message", [
    (lambda h, s: render_sequence(s[0], h.faces), r"frames must have shape \(F, N, 3\)"),
    (lambda h, s: render_sequence(s[:0], h.faces), "at least one frame"),
    (lambda h, s: render_sequence(s[:, :100], h.faces), "faces index 14388"),
    (lambda h, s: render_sequence(s, h.faces, landmarks=s[:2, :68]), "landmarks have 2 frames"),
    (lambda h, s: render_sequence(s, h.faces, landmarks=s[:, :68, :2]), r"landmarks must have shape"),
    (lambda h, s: render_sequence(s, h.faces[:, :2]), "faces"),
    (lambda h, s: render_sequence(s, h.faces, size=(4, 4)), "size"),
    (lambda h, s: render_sequence(s, h.faces, bounds=(0, 1)), "bounds"),
    (lambda h, s: render_grid([], h.faces), "non-empty list"),
    (lambda h, s: render_grid(s, h.faces), r"got one array \(4, 14388, 3\): put a single sequence in a list"),
    (lambda h, s: render_grid([s[0]], h.faces), r"sequences\[0\] must have shape \(F, N, 3\)"),
    (lambda h, s: render_grid([s, s[:, :10]], h.faces), r"sequences\[1\] have 10 vertices"),
    (lambda h, s: render_grid([s, s], h.faces, labels=["one"]), "1 labels for 2"),
    (lambda h, s: render_grid([s, s], h.faces, landmarks=[None]), "one entry"),
    (lambda h, s: render_grid([s, s], h.faces, landmarks=[None, s[:1, :68]]), r"landmarks\[1\] have 1 frames"),
    (lambda h, s: render_grid([s], h.faces, columns=0), "columns"),
])
def test_render_functions_reject_bad_input(head, jaw_sequence, call, message):
    with pytest.raises(ValueError, match=message):
        call(head, jaw_sequence)


def test_rendered_previews_write_and_read_back(tmp_path, sequence_frames):
    frames = np.concatenate([sequence_frames, sequence_frames[-2::-1]])  # 7 frames of 64 x 48, jaw down and up
    frames = np.concatenate([frames, frames[-1:]])  # and one repeated: 8
    mp4 = save_animation(tmp_path / "p.mp4", frames, fps=25)
    gif = save_animation(tmp_path / "p.gif", frames, fps=25)
    with imageio.get_reader(mp4) as reader:
        assert reader.count_frames() == 8 and reader.get_meta_data()["fps"] == 25
        first = reader.get_data(0)
    assert first.shape == (48, 64, 3) and np.abs(first.astype(int) - frames[0]).mean() < 6  # lossy, but the same
    back = imageio.mimread(gif)
    assert back[0].shape[:2] == (48, 64)
    # GIF stores a repeated frame once, showing it twice as long: the playing time is kept
    assert len(back) == 7
    with Image.open(gif) as im:
        durations = [im.seek(i) or im.info["duration"] for i in range(im.n_frames)]
    assert durations == [40] * 6 + [80]
    with pytest.raises(FileExistsError, match="overwrite"):
        save_animation(mp4, frames[:2])
    save_animation(mp4, frames[:2], overwrite=True)
    with imageio.get_reader(mp4) as reader:
        assert reader.count_frames() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.gif", "p.mp4"]  # no temporaries left
