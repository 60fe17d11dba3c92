"""Tiny portrait folders in the issue-17 data contract, drawn with numpy: a skin-coloured oval per
identity with its 68 landmarks painted as region-coloured dots, moved by an expression per label.
Small and fast, for the tests of ``render.neural``; real portraits come from ``face4d dataset portraits``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

LABELS = [f"label_{i}" for i in range(18)]
REGION_COLOURS = np.array([[90, 60, 40], [40, 30, 20], [150, 90, 80], [250, 250, 250], [200, 40, 60]], np.float32)
REGION_OF = np.repeat(np.arange(5), [17, 10, 9, 12, 20])


def template() -> np.ndarray:
    """A 68-point face in the unit square, iBUG order (jaw, brows, nose, eyes, mouth)."""
    a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    jaw = np.stack([0.5 - 0.38 * np.cos(a), 0.45 + 0.42 * np.sin(a)], 1)
    brows = np.concatenate([np.stack([np.linspace(0.2, 0.42, 5), 0.3 - 0.03 * np.sin(np.linspace(0, np.pi, 5))], 1),
                            np.stack([np.linspace(0.58, 0.8, 5), 0.3 - 0.03 * np.sin(np.linspace(0, np.pi, 5))], 1)])
    nose = np.concatenate([np.stack([np.full(4, 0.5), np.linspace(0.38, 0.55, 4)], 1),
                           np.stack([np.linspace(0.43, 0.57, 5), np.full(5, 0.6)], 1)])
    e = np.linspace(0, 2 * np.pi, 7)[:6]
    eyes = np.concatenate([np.stack([c - 0.07 * np.cos(e), 0.4 - 0.03 * np.sin(e)], 1) for c in (0.33, 0.67)])
    m = np.linspace(0, 2 * np.pi, 13)[:12]
    mi = np.linspace(0, 2 * np.pi, 9)[:8]
    mouth = np.concatenate([np.stack([0.5 - 0.14 * np.cos(m), 0.75 - 0.05 * np.sin(m)], 1),
                            np.stack([0.5 - 0.09 * np.cos(mi), 0.75 - 0.02 * np.sin(mi)], 1)])
    return np.concatenate([jaw, brows, nose, eyes, mouth]).astype(np.float32)


def expression(label: int) -> np.ndarray:
    """A per-label displacement of the template: mouth opening/widening and brow raising."""
    d = np.zeros((68, 2), np.float32)
    if label < 0:
        return d
    rng = np.random.default_rng(1000 + label)
    open_, wide, brow = rng.uniform(-1, 1, 3)
    d[48:68, 1] += open_ * 0.04 * np.sign(template()[48:68, 1] - 0.75)
    d[48:68, 0] += wide * 0.05 * np.sign(template()[48:68, 0] - 0.5)
    d[17:27, 1] -= brow * 0.04
    return d


def draw(size: int, skin: np.ndarray, background: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centre, radius = landmarks[:17].mean(0), size * 0.4
    face = ((xx - centre[0]) / radius) ** 2 + ((yy - centre[1]) / (radius * 1.15)) ** 2 < 1
    img = np.where(face[..., None], skin, background).astype(np.float32)
    for point, region in zip(landmarks, REGION_OF):
        dot = (xx - point[0]) ** 2 + (yy - point[1]) ** 2 < (size / 40) ** 2
        img[dot] = REGION_COLOURS[region]
    return img.clip(0, 255).astype(np.uint8), face.astype(np.uint8)


def make_portraits(out: Path, size: int = 32, identities: int = 6, per_identity: int = 6, seed: int = 0,
                   test_identities: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {k: [] for k in ("rgb", "landmarks", "label", "identity", "weights", "mask", "camera")}
    neutrals = {k: [] for k in ("identity", "rgb", "landmarks", "mask")}
    for person in range(identities):
        skin = rng.uniform(120, 230, 3).astype(np.float32)
        background = rng.uniform(0, 255, 3).astype(np.float32)
        shape = template() + rng.normal(0, 0.01, (68, 2)).astype(np.float32)
        rgb, mask = draw(size, skin, background, shape * size)
        for k, v in zip(("identity", "rgb", "landmarks", "mask"), (person, rgb, shape * size, mask)):
            neutrals[k].append(v)
        for _ in range(per_identity):
            label = int(rng.integers(0, 18))
            shift = rng.normal(0, 0.02, 2).astype(np.float32)
            landmarks = (shape + expression(label) + shift) * size
            rgb, mask = draw(size, skin, background, landmarks)
            for k, v in zip(arrays, (rgb, landmarks, label, person, np.zeros(53), mask, np.zeros(6))):
                arrays[k].append(v)
    dtypes = {"rgb": np.uint8, "landmarks": np.float32, "label": np.int16, "identity": np.int32,
              "weights": np.float32, "mask": np.uint8, "camera": np.float32}
    np.savez(out / "images-00000.npz", **{k: np.asarray(v, dtypes[k]) for k, v in arrays.items()})
    np.savez(out / "neutrals.npz", **{k: np.asarray(v, dtypes[k]) for k, v in neutrals.items()})
    ids = list(range(identities))
    manifest = {"format": "face4d-portraits", "version": 1, "size": size, "clip_size": None,
                "images": identities * per_identity, "identities": identities, "clips": 0, "labels": LABELS,
                "seed": seed, "split": {"train": ids[:identities - test_identities],
                                        "test": ids[identities - test_identities:]},
                "shards": ["images-00000.npz"], "licence": "test data"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def add_clips(out: Path, sizes: tuple[int, int] = (32, 64), clips_per_identity: int = 1, frames: int = 4,
              seed: int = 0) -> Path:
    """Clips (the contract's ``clips-NNNNN.npz``, one shard per split) into a ``make_portraits`` folder:
    each identity's face opening into one label's expression over ``frames`` frames, at both sizes."""
    manifest = json.loads((out / "manifest.json").read_text())
    rng = np.random.default_rng(seed + 1)
    shards = []
    for split in ("train", "test"):
        arrays = {k: [] for k in ("low", "high", "landmarks_low", "landmarks_high", "identity", "label",
                                  "identity_high")}
        for person in manifest["split"][split]:
            skin = rng.uniform(120, 230, 3).astype(np.float32)
            background = rng.uniform(0, 255, 3).astype(np.float32)
            shape = template() + rng.normal(0, 0.01, (68, 2)).astype(np.float32)
            for _ in range(clips_per_identity):
                label = int(rng.integers(0, 18))
                clip = {k: [] for k in ("low", "high", "landmarks_low", "landmarks_high")}
                for t in np.linspace(0, 1, frames):
                    for name, size in zip(("low", "high"), sizes):
                        landmarks = (shape + t * expression(label)) * size
                        clip[name].append(draw(size, skin, background, landmarks)[0])
                        clip[f"landmarks_{name}"].append(landmarks)
                for k, v in clip.items():
                    arrays[k].append(np.asarray(v))
                arrays["identity"].append(person)
                arrays["label"].append(label)
                arrays["identity_high"].append(draw(sizes[1], skin, background, shape * sizes[1])[0])
        dtypes = {"identity": np.int32, "label": np.int16, "landmarks_low": np.float32, "landmarks_high": np.float32}
        name = f"clips-{len(shards):05d}.npz"
        np.savez(out / name, **{k: np.asarray(v, dtypes.get(k, np.uint8)) for k, v in arrays.items()})
        shards.append(name)
    manifest.update(clip_size=list(sizes), clips=len(manifest["split"]["train"] + manifest["split"]["test"])
                    * clips_per_identity, shards=manifest["shards"] + shards)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def check_exact_resume(train, root: Path, weights: tuple[str, ...] = ("model.safetensors",)) -> None:
    """``train(out, steps, checkpoint_every=...)`` run for 4 steps at once (``root/full``) and as 2 steps
    resumed to 4 (``root/resumed``): finite losses, the same losses, and the same ``weights`` files."""
    import torch
    from safetensors.torch import load_file

    full = train(root / "full", 4)
    assert full.step == 4 and len(full.losses) == 4 and all(np.isfinite(full.losses))
    first = train(root / "resumed", 2, checkpoint_every=2)
    second = train(root / "resumed", 4, checkpoint_every=2)
    assert (first.start_step, second.start_step, second.step) == (0, 2, 4)
    assert first.losses + second.losses == pytest.approx(full.losses, rel=1e-5)
    for name in weights:
        a, b = load_file(str(root / "full" / name)), load_file(str(root / "resumed" / name))
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), name


def darkest_mouth(image: np.ndarray, points: np.ndarray) -> float:
    """The darkest 3 x 3 patch around the lips (and below them, where a dropped jaw opens), in grey levels:
    an open mouth is dark inside."""
    x0, y0 = points[48:68].min(0).astype(int)
    x1, y1 = points[48:68].max(0).astype(int)
    grey = image[y0:y1 + 4, x0:x1 + 1].mean(-1)
    return min(grey[i:i + 3, j:j + 3].mean() for i in range(len(grey) - 2) for j in range(grey.shape[1] - 2))


def brow_row(image: np.ndarray, points: np.ndarray) -> float:
    """The mean row of the darkest pixel of each column through the brows: smaller is higher."""
    y = int(points[17:27, 1].mean())
    band = image[y - 6:y + 4, int(points[17:27, 0].min()):int(points[17:27, 0].max()) + 1].mean(-1)
    return y - 6 + band.argmin(0).mean()
