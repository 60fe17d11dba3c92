"""Portrait clips for the recurrent video model (FacEnhance): the ``clips-NNNNN.npz`` shards of a portrait
folder as one dict, and its frames as training items.

A clip holds the same face at two sizes (``low`` 64², ``high`` 128², rendered by one camera) and the
identity's neutral at the high size (``identity_high``). One training item is one frame ``n`` of one
clip: the low frame (the expression), the identity image, the previous exact high frame (for ``n = 0``
the identity image, which is what autoregressive sampling starts from) and the target high frame.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from render.neural.data import NeuralInputError, read_manifest, to_tensor, to_uint8

CLIP_KEYS = ("low", "high", "landmarks_low", "landmarks_high", "identity", "label", "identity_high")
OPTIONAL_KEYS = ("camera",)
"""Loaded when every shard has them (rendered portraits do; the real-data loaders' clips do not)."""


def load_clips(directory: str | os.PathLike, split: str | None = None) -> dict[str, np.ndarray]:
    """All clip shards of a portrait folder as one dict (the contract's clip keys); ``split``
    ("train"/"test") keeps the clips of that part of the manifest's identity split."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    parts: dict[str, list[np.ndarray]] = {}
    for name in (n for n in manifest["shards"] if n.startswith("clips-")):
        with np.load(directory / name, allow_pickle=False) as shard:
            for key in CLIP_KEYS + tuple(k for k in OPTIONAL_KEYS if k in shard):
                parts.setdefault(key, []).append(shard[key])
    if "low" not in parts:
        raise NeuralInputError(f"{directory} holds no clips (build it with 'face4d dataset portraits --clips N')")
    count = len(parts["low"])
    clips = {key: np.concatenate(value) for key, value in parts.items() if len(value) == count}
    if split is not None:
        keep = np.isin(clips["identity"], manifest["split"][split])
        clips = {key: value[keep] for key, value in clips.items()}
        if not keep.any():
            raise NeuralInputError(f"{directory} holds no {split} clips")
    return clips


class ClipFrames(torch.utils.data.Dataset):
    """Every frame of every clip, as ``(low, identity, previous, target)`` tensors in [-1, 1]:
    ``low`` (3, s, s), the others (3, S, S). Index ``i`` is frame ``i % T`` of clip ``i // T``."""

    def __init__(self, clips: dict[str, np.ndarray]):
        self.clips = clips
        self.count, self.frames = clips["low"].shape[:2]
        if self.frames < 2:
            raise NeuralInputError("clips need at least two frames to train the recurrence")

    def __len__(self) -> int:
        return self.count * self.frames

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip, frame = divmod(int(index), self.frames)
        high, identity = self.clips["high"][clip], self.clips["identity_high"][clip]
        return {"low": to_tensor(self.clips["low"][clip, frame]), "identity_image": to_tensor(identity),
                "previous": to_tensor(high[frame - 1] if frame else identity), "target": to_tensor(high[frame])}

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The items at ``indices`` stacked, the training loop's batch: gathered by numpy in one go, as the
        batch assembly on one CPU thread must keep up with a GPU step."""
        clip, frame = np.divmod(np.asarray(indices, np.int64), self.frames)
        high, identity = self.clips["high"], self.clips["identity_high"][clip]
        first = (frame == 0)[:, None, None, None]
        return {"low": to_tensor(self.clips["low"][clip, frame]), "identity_image": to_tensor(identity),
                "previous": to_tensor(np.where(first, identity, high[clip, np.maximum(frame - 1, 0)])),
                "target": to_tensor(high[clip, frame])}


def bicubic(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, s, s, 3) images upsampled to (N, size, size, 3), bicubic: the non-learned baseline and
    the way a 64² model's frames are compared at the high size."""
    from torch.nn.functional import interpolate

    return to_uint8(interpolate(to_tensor(images), size=(size, size), mode="bicubic", align_corners=False))
