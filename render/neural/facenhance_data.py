"""Portrait clips for the recurrent video model (FacEnhance): the ``clips-NNNNN.npz`` shards of a portrait
folder as one dict, and its frames as training items.

A clip holds the same face at two sizes (``low`` 64², ``high`` 128², rendered by one camera) and the
identity's neutral at the high size (``identity_high``). One training item is one frame ``n`` of one
clip: the low frame (the expression), the identity image, the previous exact high frame (for ``n = 0``
the identity image, which is what autoregressive sampling starts from) and the target high frame, as
uint8 tensors that the loss converts on the batch's device.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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
    """Every frame of every clip, as uint8 image tensors (``model_range`` makes them the models' floats,
    on the device): ``low`` (s, s, 3), the frame's low-res render; ``identity_image``, ``previous`` and
    ``target`` (S, S, 3). Index ``i`` is frame ``i % T`` of clip ``i // T``."""

    def __init__(self, clips: dict[str, np.ndarray]):
        self.clips = clips
        self.count, self.frames = clips["low"].shape[:2]
        if self.frames < 2:
            raise NeuralInputError("clips need at least two frames to train the recurrence")

    def __len__(self) -> int:
        return self.count * self.frames

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.batch([index]).items()}

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The items at ``indices`` stacked, the training loop's batch. It stays uint8: gathering bytes
        takes a few milliseconds, while converting a 64-frame batch to floats on one CPU thread takes
        tenths of a second, longer than a GPU step."""
        clip, frame = np.divmod(np.asarray(indices, np.int64), self.frames)
        high, identity = self.clips["high"], self.clips["identity_high"][clip]
        previous = high[clip, np.maximum(frame - 1, 0)]
        previous[frame == 0] = identity[frame == 0]  # the first frame's previous frame: the identity image
        return {"low": torch.as_tensor(self.clips["low"][clip, frame]), "identity_image": torch.as_tensor(identity),
                "previous": torch.as_tensor(previous), "target": torch.as_tensor(high[clip, frame])}


def model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (..., S, S, 3) -> float (..., 3, S, S) in [-1, 1] (``data.to_tensor`` for tensors on any device)."""
    return images.float().div(127.5).sub(1.0).movedim(-1, -3).contiguous()


def upsample(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, s, s) in [-1, 1] -> (B, 3, size, size), bicubic."""
    return F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


def bicubic(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, s, s, 3) images upsampled to (N, size, size, 3), bicubic: the non-learned baseline and
    the way a 64² model's frames are compared at the high size."""
    return to_uint8(upsample(to_tensor(images), size))
