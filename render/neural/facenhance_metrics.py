"""Video metrics of the recurrent model, on clips (C, F, S, S, 3) uint8 with the exact high-res frames known:
content consistency in our identity encoder (ACD between consecutive frames, ACD-I to the identity
image, as in FacEnhance's tables, but as cosine distances of our unit embeddings), a temporal-flicker
score, and a Fréchet distance between short windows of frames in our evaluators' feature space (the
role FVD plays in the paper; it is not FVD, whose I3D features are not ours).
"""
from __future__ import annotations

import numpy as np
import torch

from render.neural.data import to_tensor
from render.neural.evaluators import Evaluators
from render.neural.metrics import frechet_distance

WINDOW = 4
"""Frames per window of the video Fréchet distance."""


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (..., S, S, 3) -> (..., size, size, 3) by box averaging (S a multiple of size): the
    evaluators were trained at the low size."""
    factor = images.shape[-2] // size
    if factor == 1:
        return images
    shape = images.shape[:-3] + (size, factor, size, factor, 3)
    return images.reshape(shape).astype(np.float32).mean((-4, -2)).round().astype(np.uint8)


@torch.no_grad()
def _per_frame(evaluators: Evaluators, fn, videos: np.ndarray, batch: int = 256) -> np.ndarray:
    """``fn`` of every frame of ``videos`` (..., S, S, 3), at the evaluators' size: (..., D)."""
    device = next(evaluators.parameters()).device
    frames = downsample(videos, evaluators.config.size).reshape(-1, *([evaluators.config.size] * 2), 3)
    out = np.concatenate([fn(to_tensor(frames[i:i + batch]).to(device)).cpu().numpy()
                          for i in range(0, len(frames), batch)])
    return out.reshape(*videos.shape[:-3], -1)


def identity_embeddings(evaluators: Evaluators, videos: np.ndarray) -> np.ndarray:
    return _per_frame(evaluators, evaluators.identity_embedding, videos)


def acd(embeddings: np.ndarray) -> float:
    """Mean cosine distance between the identity embeddings (C, F, D) of consecutive frames."""
    return float(1 - (embeddings[:, 1:] * embeddings[:, :-1]).sum(-1).mean())


def acd_identity(embeddings: np.ndarray, identity: np.ndarray) -> float:
    """Mean cosine distance of every frame's identity embedding (C, F, D) to its identity image's (C, D)."""
    return float(1 - (embeddings * identity[:, None]).sum(-1).mean())


def flicker(videos: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference (8-bit levels) between the generated and the true frame-to-frame change:
    change that the true motion does not make, which is what flicker is."""
    change = np.diff(videos.astype(np.float32), axis=1) - np.diff(truth.astype(np.float32), axis=1)
    return float(np.abs(change).mean())


def window_features(evaluators: Evaluators, videos: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """One vector per window of ``window`` consecutive frames (every start): the frames' mean feature
    (identity and expression) and their mean absolute change, so that it sees appearance and motion."""
    feats = _per_frame(evaluators, evaluators.features, videos)  # (C, F, D)
    rows = []
    for start in range(feats.shape[1] - window + 1):
        part = feats[:, start:start + window]
        rows.append(np.concatenate([part.mean(1), np.abs(np.diff(part, axis=1)).mean(1)], -1))
    return np.concatenate(rows)


def video_frechet(evaluators: Evaluators, videos: np.ndarray, truth_features: np.ndarray) -> float:
    return frechet_distance(window_features(evaluators, videos), truth_features)
