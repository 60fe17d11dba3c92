"""Non-diffusion baselines for the results tables, fitted on the training split.

``LabelGaussian`` is the conditional baseline of Table 1: a linear-Gaussian (probabilistic PCA)
model of whole sequences per label, the classical statistical model of motion. It conditions on
the label exactly (one model per label) but can only produce linear combinations of the training
motions of that label, so it shows what the diffusion model adds beyond the label's mean and main
modes of variation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from face4d.data.cutting import resample
from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError


@dataclass
class _GaussianModel:
    mean: np.ndarray  # (D,)
    components: np.ndarray  # (K, D): principal directions scaled by their standard deviation
    noise_std: float  # isotropic residual, the PPCA noise term


class LabelGaussian:
    """Per label, a PPCA model of sequences resampled to ``frames`` frames; samples are resampled
    to the requested length. ``rank`` principal components are kept per label (fewer if the label
    has fewer sequences)."""

    def __init__(self, models: dict[str, _GaussianModel], frames: int, fps: float) -> None:
        self.models, self.frames, self.fps = models, frames, fps

    @classmethod
    def fit(cls, train: LandmarkSequences, rank: int = 16, frames: int = 40) -> "LabelGaussian":
        if rank < 1 or frames < 2:
            raise Face4DError(f"rank must be >= 1 and frames >= 2, got {rank} and {frames}")
        models = {}
        for label in sorted(set(train.labels) - {""}):
            indices = np.flatnonzero(train.labels == label)
            x = np.stack([resample(train.sequence(i), frames).reshape(-1) for i in indices]).astype(np.float64)
            if len(x) < 2:
                raise Face4DError(f"label {label!r} has {len(x)} training sequence(s); a Gaussian needs two")
            mean = x.mean(0)
            _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
            variances = s**2 / (len(x) - 1)
            k = min(rank, len(variances) - 1) or 1
            noise = float(variances[k:].sum() / (x.shape[1] - k)) if len(variances) > k else 0.0
            components = vt[:k] * np.sqrt(np.maximum(variances[:k] - noise, 0.0))[:, None]
            models[label] = _GaussianModel(mean, components, float(np.sqrt(noise)))
        if not models:
            raise Face4DError("the training set has no labelled sequences")
        return cls(models, frames, train.fps)

    def sample(self, labels: list[str] | np.ndarray, frames: int, seed: int = 0) -> LandmarkSequences:
        """One sequence per entry of ``labels``, ``frames`` frames each."""
        rng = np.random.default_rng(seed)
        out = []
        for label in labels:
            if label not in self.models:
                raise Face4DError(f"no model for label {label!r}; fitted labels: {', '.join(self.models)}")
            m = self.models[label]
            x = m.mean + rng.standard_normal(len(m.components)) @ m.components
            x = x + m.noise_std * rng.standard_normal(x.shape)
            out.append(resample(x.reshape(self.frames, -1, 3), frames))
        return LandmarkSequences(landmarks=np.stack(out), lengths=np.full(len(out), frames),
                                 labels=list(labels), types=[""] * len(out), fps=self.fps)
