"""Portrait data for the image models: shard folders (the issue-17 contract) read into dicts of numpy
arrays, torch Datasets of (identity image, target image) pairs, and landmark rasterisation.

A portrait folder holds ``manifest.json``, ``images-NNNNN.npz`` shards and ``neutrals.npz``; the
real-data loaders (``render.neural.realdata``) return the same dicts without neutrals. Pairs always
come from one identity: the target is an image, the identity image is the identity's neutral (CCFExp,
whose identity image shows the person at rest), the image's own source where the data set has sources
(the person with another expression in the same camera and light: the editing model's pairs), or
another image of the same person.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

FORMAT = "face4d-portraits"
IMAGE_KEYS = ("rgb", "landmarks", "label", "identity", "weights", "mask", "camera",
              "source_rgb", "source_landmarks", "source_label")
NEUTRAL_KEYS = ("identity", "rgb", "landmarks", "mask")
NUM_LANDMARKS = 68
# iBUG-68 regions, one heat-map channel each: jaw, brows, nose, eyes, mouth.
REGIONS = ((0, 17), (17, 27), (27, 36), (36, 48), (48, 68))
INNER = slice(17, 68)
"""The 51 inner landmarks (brows, nose, eyes, mouth) that the NME is computed on."""


class NeuralInputError(ValueError):
    """Input the neural models cannot work with (a bad folder, image or landmark array); face4d turns
    it into its one-line error."""


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise NeuralInputError(f"{directory} is not a portrait dataset (no manifest.json)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise NeuralInputError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def _select(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {key: value[keep] for key, value in arrays.items()}


def load_images(directory: str | os.PathLike, split: str | None = None) -> dict[str, np.ndarray]:
    """All image shards of a folder as one dict (the contract's keys); ``split`` ("train"/"test")
    keeps the identities of that part of the manifest's identity split."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    parts: dict[str, list[np.ndarray]] = {}
    for name in (n for n in manifest["shards"] if n.startswith("images-")):  # clips-* hold the clips
        with np.load(directory / name, allow_pickle=False) as shard:
            for key in IMAGE_KEYS:
                if key in shard:
                    parts.setdefault(key, []).append(shard[key])
    if "rgb" not in parts:
        raise NeuralInputError(f"{directory} holds no image shards")
    images = {key: np.concatenate(value) for key, value in parts.items()}
    if split is not None:
        images = _select(images, np.isin(images["identity"], manifest["split"][split]))
    return images


def load_neutrals(directory: str | os.PathLike) -> dict[str, np.ndarray] | None:
    """``neutrals.npz`` as a dict, or None for a folder without one."""
    path = Path(directory) / "neutrals.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in NEUTRAL_KEYS}


def check_image(rgb: np.ndarray, size: int, what: str = "image") -> np.ndarray:
    """An (S, S, 3) uint8 image of the model's size, or one line saying what is wrong."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise NeuralInputError(f"{what} must be RGB (H, W, 3), got shape {rgb.shape}")
    if rgb.shape[:2] != (size, size):
        raise NeuralInputError(f"{what} is {rgb.shape[1]}x{rgb.shape[0]}; the model takes {size}x{size} images")
    if rgb.dtype != np.uint8:
        raise NeuralInputError(f"{what} must be 8-bit (uint8), got {rgb.dtype}")
    return rgb


def check_landmarks(landmarks: np.ndarray, what: str = "landmarks") -> np.ndarray:
    """(..., 68, 2) finite pixel coordinates, or one line saying what is wrong."""
    landmarks = np.asarray(landmarks, dtype=np.float32)
    if landmarks.ndim < 2 or landmarks.shape[-2:] != (NUM_LANDMARKS, 2):
        raise NeuralInputError(f"{what} must have shape (..., 68, 2) in pixels, got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise NeuralInputError(f"{what} hold NaN or infinite values")
    return landmarks


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [-1, 1], the models' image range."""
    image = torch.as_tensor(np.asarray(rgb), dtype=torch.float32).div(127.5).sub(1.0)
    return image.movedim(-1, -3).contiguous()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """float (..., 3, S, S) in [-1, 1] -> uint8 (..., S, S, 3)."""
    return image.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).movedim(-3, -1).cpu().numpy()


def landmark_maps(landmarks: torch.Tensor, size: int, sigma: float = 1.0) -> torch.Tensor:
    """(B, 68, 2) pixel landmarks -> (B, 5, S, S) Gaussian heat maps, one channel per face region
    (jaw, brows, nose, eyes, mouth), so that a convolution sees where each feature is. ``sigma`` is in
    pixels at 64², scaled with the image size."""
    sigma = sigma * size / 64
    centres = torch.arange(size, dtype=landmarks.dtype, device=landmarks.device) + 0.5
    dx = (centres[None, None, :] - landmarks[..., 0:1]) ** 2  # (B, 68, S)
    dy = (centres[None, None, :] - landmarks[..., 1:2]) ** 2
    channels = []
    for start, stop in REGIONS:
        d2 = dy[:, start:stop, :, None] + dx[:, start:stop, None, :]  # (B, n, S, S)
        channels.append(torch.exp(-d2.min(dim=1).values / (2 * sigma**2)))
    return torch.stack(channels, dim=1)


def next_of_same(identity: np.ndarray) -> np.ndarray:
    """For each row, the next row of the same identity (cyclically; itself for a lone row): the
    deterministic partner of an image, shared by the "other" pairs and the data set's sources."""
    partner = np.arange(len(identity))
    for person in np.unique(identity):
        rows = np.flatnonzero(identity == person)
        partner[rows] = np.roll(rows, -1)
    return partner


class PortraitPairs(torch.utils.data.Dataset):
    """(identity image, target image) pairs of one person, one per target image.

    ``identity="neutral"`` pairs each target with its identity's neutral image (needs ``neutrals``);
    ``identity="source"`` with its own source image (needs the ``source_*`` keys of a data set built with
    sources); ``identity="other"`` with the next image of the same identity (deterministic, so training
    is reproducible). Items are dicts of tensors: ``target`` / ``identity_image`` (3, S, S) in [-1, 1],
    ``target_landmarks`` / ``identity_landmarks`` (68, 2) pixels, ``label`` (-1 for neutral) and
    ``identity``.
    """

    def __init__(self, images: dict[str, np.ndarray], neutrals: dict[str, np.ndarray] | None = None,
                 identity: str = "neutral"):
        if identity not in ("neutral", "source", "other"):
            raise ValueError(f"identity must be 'neutral', 'source' or 'other', got {identity!r}")
        if identity == "neutral" and neutrals is None:
            raise NeuralInputError("pairs with neutral identity images need the dataset's neutrals.npz")
        if identity == "source" and "source_rgb" not in images:
            raise NeuralInputError("pairs with source images need a data set built with sources "
                                   "(face4d dataset portraits --sources)")
        self.images, self.neutrals, self.mode = images, neutrals, identity
        ids = images["identity"]
        if identity == "source":
            self.partner = np.arange(len(ids))
        elif identity == "neutral":
            row = {int(i): r for r, i in enumerate(neutrals["identity"])}
            missing = sorted(set(ids.tolist()) - set(row))
            if missing:
                raise NeuralInputError(f"identities {missing[:5]} have no neutral image")
            self.partner = np.array([row[int(i)] for i in ids])
        else:
            self.partner = next_of_same(ids)
            lone = np.flatnonzero(self.partner == np.arange(len(ids)))
            if len(lone):
                raise NeuralInputError(f"identity {ids[lone[0]]} has a single image; pairs need two")
        self.size = int(images["rgb"].shape[1])

    def __len__(self) -> int:
        return len(self.images["rgb"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        source = self.neutrals if self.mode == "neutral" else self.images
        prefix = "source_" if self.mode == "source" else ""
        j = self.partner[index]
        return {"target": to_tensor(self.images["rgb"][index]),
                "target_landmarks": torch.as_tensor(self.images["landmarks"][index], dtype=torch.float32),
                "identity_image": to_tensor(source[prefix + "rgb"][j]),
                "identity_landmarks": torch.as_tensor(source[prefix + "landmarks"][j], dtype=torch.float32),
                "label": torch.tensor(int(self.images["label"][index]), dtype=torch.long),
                "identity": torch.tensor(int(self.images["identity"][index]), dtype=torch.long)}

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The items at ``indices`` stacked, the training loop's batch."""
        return torch.utils.data.default_collate([self[int(i)] for i in indices])
