"""Real-data loaders: iBUG .pts image folders and per-frame .npy video folders, on small hand-made samples."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from render.neural.realdata import (RealDataError, crop_box, load_image_folder, load_video_folders, read_pts)


def _points(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """68 landmarks spread over the middle of a (width, height) image, pixel-centre-at-0.5 convention."""
    return np.c_[rng.uniform(0.3, 0.7, 68) * width, rng.uniform(0.25, 0.75, 68) * height].astype(np.float32)


def _coded_image(width: int, height: int) -> np.ndarray:
    """Red encodes the column and green the row (smoothly), so a resampled pixel tells where it came from."""
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([cols / width * 255, rows / height * 255, np.full_like(cols, 128)], -1).round().astype(np.uint8)


def _write_pts(path, points: np.ndarray, origin: float = 1.0) -> None:
    lines = ["version: 1", "n_points:  68", "{"] + [f"{x - 0.5 + origin:.3f} {y - 0.5 + origin:.3f}" for x, y in points]
    path.write_text("\n".join(lines + ["}"]) + "\n")


def test_pts_round_trip_and_origin(tmp_path):
    points = _points(np.random.default_rng(0), 120, 90)
    _write_pts(tmp_path / "a.pts", points)
    np.testing.assert_allclose(read_pts(tmp_path / "a.pts"), points, atol=1e-3)
    _write_pts(tmp_path / "b.pts", points, origin=0.0)
    np.testing.assert_allclose(read_pts(tmp_path / "b.pts", origin=0.0), points, atol=1e-3)


@pytest.mark.parametrize("text, message", [
    ("version: 2\nn_points: 68\n{\n}\n", "version: 1"),
    ("version: 1\nn_points: 5\n{\n}\n", "n_points: 68"),
    ("version: 1\nn_points: 68\n" + "1 2\n" * 68, "enclosed"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "1 x\n}\n", "point 68 is not two numbers"),
    ("version: 1\nn_points: 68\n{\n" + "1 2\n" * 67 + "}\n", "has 67 points"),
    ("version: 1\nn_points: 68\n{\n" + "1 2 3\n" * 68 + "}\n", "point 1 is not two numbers"),
])
def test_malformed_pts_files_name_the_problem(tmp_path, text, message):
    path = tmp_path / "bad.pts"
    path.write_text(text)
    with pytest.raises(RealDataError, match=message) as info:
        read_pts(path)
    assert "bad.pts" in str(info.value) and "\n" not in str(info.value)


def test_image_folder_crops_faces_and_moves_landmarks(tmp_path):
    rng = np.random.default_rng(1)
    sizes = {"alice/1.png": (160, 120), "alice/2.jpg": (100, 140), "bob/1.png": (90, 90), "loose.bmp": (64, 80)}
    originals = {}
    for name, (w, h) in sizes.items():
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        image = _coded_image(w, h)
        Image.fromarray(image).convert("L" if name == "bob/1.png" else "RGB").save(path)
        originals[name] = (image, _points(rng, w, h))
        _write_pts(path.with_suffix(".pts"), originals[name][1])
    data = load_image_folder(tmp_path, size=48)
    assert list(data["names"]) == sorted(sizes)
    assert data["rgb"].shape == (4, 48, 48, 3) and data["rgb"].dtype == np.uint8
    assert data["landmarks"].shape == (4, 68, 2) and data["landmarks"].dtype == np.float32
    assert data["label"].tolist() == [-1] * 4 and data["label"].dtype == np.int16
    assert data["identity"].tolist() == [0, 0, 1, 2]  # one folder per person, loose files each their own
    for k, name in enumerate(data["names"]):
        if name == "bob/1.png":
            continue  # saved grey: the colour code is gone
        image, points = originals[name]
        w, h = sizes[name]
        # the colour under each moved landmark is the colour under the original one (crop and resize agree)
        moved = data["landmarks"][k]
        inside = (moved > 2).all(1) & (moved < 46).all(1)
        got = data["rgb"][k][moved[inside, 1].astype(int), moved[inside, 0].astype(int)][:, :2].astype(float)
        want = np.c_[points[inside, 0] / w, points[inside, 1] / h] * 255
        assert np.abs(got - want).max() < 255 * 3 / min(w, h) + 6 + (4 if name.endswith(".jpg") else 0)
        left, top, side = crop_box(points)
        assert side == pytest.approx(1.6 * np.ptp(points, 0).max())
        np.testing.assert_allclose(moved, (points - [left, top]) * 48 / side, atol=2e-3)  # .pts keep 3 decimals
    assert (data["rgb"][2, ..., 0] == data["rgb"][2, ..., 1]).all()  # the grey image became grey RGB


def test_image_folder_errors(tmp_path):
    with pytest.raises(RealDataError, match="no such folder"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(RealDataError, match="no images"):
        load_image_folder(tmp_path)
    Image.fromarray(_coded_image(40, 40)).save(tmp_path / "a.png")
    with pytest.raises(RealDataError, match="no landmark file a.pts"):
        load_image_folder(tmp_path)
    _write_pts(tmp_path / "a.pts", _points(np.random.default_rng(0), 40, 40))
    with pytest.raises(RealDataError, match="size must be"):
        load_image_folder(tmp_path, size=3)
    (tmp_path / "b.png").write_bytes(b"not an image")
    _write_pts(tmp_path / "b.pts", _points(np.random.default_rng(0), 40, 40))
    with pytest.raises(RealDataError, match="b.png: not a readable image"):
        load_image_folder(tmp_path)


def _write_video(folder, frames: int, rng, size=(80, 60)) -> np.ndarray:
    folder.mkdir(parents=True)
    points = _points(rng, *size)
    track = []
    for t in range(frames):
        Image.fromarray(_coded_image(*size)).save(folder / f"frame_{t:03d}.png")
        moved = points + [t * 1.5, 0]  # the face drifts right
        np.save(folder / f"frame_{t:03d}.npy", moved)
        track.append(moved)
    return np.stack(track)


def test_video_folders_share_one_crop_per_video(tmp_path):
    rng = np.random.default_rng(2)
    tracks = [_write_video(tmp_path / name, 4, rng) for name in ("v0", "v1")]
    data = load_video_folders(tmp_path, size=32, high_size=64)
    assert data["low"].shape == (2, 4, 32, 32, 3) and data["high"].shape == (2, 4, 64, 64, 3)
    assert data["landmarks_low"].shape == (2, 4, 68, 2) and data["identity_high"].shape == (2, 64, 64, 3)
    assert data["identity"].tolist() == [0, 1] and data["label"].tolist() == [-1, -1]
    np.testing.assert_allclose(data["landmarks_high"], 2 * data["landmarks_low"], rtol=1e-5)
    np.testing.assert_array_equal(data["identity_high"], data["high"][:, 0])
    for k, track in enumerate(tracks):  # one box per video: the drift survives the crop
        left, top, side = crop_box(track)
        np.testing.assert_allclose(data["landmarks_low"][k], (track - [left, top]) * 32 / side, atol=1e-4)
    assert "high" not in load_video_folders(tmp_path, size=32)


def test_video_folder_errors(tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(RealDataError, match="no video folders"):
        load_video_folders(tmp_path)
    _write_video(tmp_path / "a", 3, rng)
    _write_video(tmp_path / "b", 5, rng)
    with pytest.raises(RealDataError, match="3 to 5 frames; pass frames=T"):
        load_video_folders(tmp_path)
    assert load_video_folders(tmp_path, frames=3)["low"].shape[:2] == (2, 3)
    with pytest.raises(RealDataError, match="fewer than 4 frames"):
        load_video_folders(tmp_path, frames=4)
    np.save(tmp_path / "a" / "frame_001.npy", np.zeros((68, 3)))
    with pytest.raises(RealDataError, match=r"frame_001.npy: landmarks must be a numeric \(68, 2\) array"):
        load_video_folders(tmp_path, frames=3)
    (tmp_path / "a" / "frame_001.npy").unlink()
    with pytest.raises(RealDataError, match="frame_001.npy: missing"):
        load_video_folders(tmp_path, frames=3)


def test_realdata_imports_neither_torch_nor_face4d():
    import subprocess
    import sys

    code = ("import sys, render.neural.realdata; "
            "sys.exit(any(m.split('.')[0] in ('face4d', 'torch', 'diffusers') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
