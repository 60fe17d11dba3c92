"""Landmark normalisation for training: ``x_norm = (x - mean) / scale``.

``mean`` is the average landmark set (68, 3) over every valid frame of the training data and
``scale`` one scalar, the standard deviation of all centred coordinates. One scalar (rather than
one per coordinate) keeps the face's proportions, so Gaussian noise of the diffusion process is
isotropic in centimetres, and it makes the transform trivially invertible. A model stores its
normaliser as JSON beside its weights; generated samples are mapped back with ``denormalize``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from face4d.data.interchange import NUM_LANDMARKS, LandmarkSequences
from face4d.errors import Face4DError


@dataclass
class LandmarkNormalizer:
    mean: np.ndarray  # (68, 3)
    scale: float

    def __post_init__(self) -> None:
        self.mean = np.asarray(self.mean, np.float32).reshape(NUM_LANDMARKS, 3)
        self.scale = float(self.scale)
        if not (np.isfinite(self.mean).all() and np.isfinite(self.scale) and self.scale > 0):
            raise Face4DError("a normaliser needs a finite mean and a positive finite scale")

    @classmethod
    def fit(cls, seqs: LandmarkSequences) -> "LandmarkNormalizer":
        """Statistics over the valid (non-padded) frames of ``seqs``."""
        valid = np.arange(seqs.num_frames)[None] < seqs.lengths[:, None]
        frames = seqs.landmarks[valid].astype(np.float64)  # (total frames, 68, 3)
        mean = frames.mean(0)
        return cls(mean, float(np.sqrt(((frames - mean) ** 2).mean())))

    def data_range(self, seqs: LandmarkSequences) -> tuple[np.ndarray, np.ndarray]:
        """Per-coordinate minimum and maximum (68, 3) of ``seqs``' valid frames, normalised: where the
        samplers may clamp a predicted clean sequence (``GaussianDiffusion.x0_range``)."""
        valid = np.arange(seqs.num_frames)[None] < seqs.lengths[:, None]
        frames = self.normalize(seqs.landmarks[valid])
        return frames.min(0), frames.max(0)

    def normalize(self, x):
        """Works on numpy arrays and torch tensors of shape (..., 68, 3)."""
        return (x - self._like(self.mean, x)) / self.scale

    def denormalize(self, x):
        return x * self.scale + self._like(self.mean, x)

    @staticmethod
    def _like(array: np.ndarray, x):
        if isinstance(x, np.ndarray):
            return array
        import torch
        return torch.as_tensor(array, dtype=x.dtype, device=x.device)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale}

    @classmethod
    def from_dict(cls, values: dict) -> "LandmarkNormalizer":
        return cls(np.asarray(values["mean"]), values["scale"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "LandmarkNormalizer":
        return cls.from_dict(json.loads(text))
