"""Image metrics of the neural renderers, on portraits where the exact ground truth of every pair is
known: PSNR / SSIM (scikit-image), landmark NME, identity cosine, label accuracy, a Fréchet distance
in *our own* evaluators' feature space (not Inception's, so it is not FID and is not comparable to
published FIDs), CCFExp's transfer-and-back cycle, and the non-learned baseline to beat: a
piecewise-affine warp of the identity image from its landmarks to the target's.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from render.neural.data import INNER, to_tensor
from render.neural.evaluators import Evaluators

LEFT_EYE_CORNER, RIGHT_EYE_CORNER = 36, 45
"""Outer eye corners (iBUG-68): the inter-ocular distance that normalises the NME."""


def psnr(images: np.ndarray, truth: np.ndarray) -> float:
    """Mean PSNR (dB) of uint8 images (N, S, S, 3) against the ground truth."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(np.mean([peak_signal_noise_ratio(t, x, data_range=255) for x, t in zip(images, truth)]))


def ssim(images: np.ndarray, truth: np.ndarray) -> float:
    """Mean SSIM (colour, 7x7 windows) of uint8 images against the ground truth."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(t, x, channel_axis=-1, data_range=255)
                          for x, t in zip(images, truth)]))


def nme_inner(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean error of the 51 inner landmarks over the inter-ocular (outer eye corner) distance."""
    error = np.linalg.norm(predicted[:, INNER] - truth[:, INNER], axis=-1).mean(-1)
    iod = np.linalg.norm(truth[:, LEFT_EYE_CORNER] - truth[:, RIGHT_EYE_CORNER], axis=-1)
    return float(np.mean(error / iod))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) (FID's formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root)))


@torch.no_grad()
def _apply(evaluators: Evaluators, fn, images: np.ndarray, batch: int = 64) -> np.ndarray:
    device = next(evaluators.parameters()).device
    return np.concatenate([fn(to_tensor(images[i:i + batch]).to(device)).cpu().numpy()
                           for i in range(0, len(images), batch)])


def landmarks_of(evaluators: Evaluators, images: np.ndarray) -> np.ndarray:
    return _apply(evaluators, evaluators.landmarks, images)


def identity_cosine(evaluators: Evaluators, images: np.ndarray, reference: np.ndarray) -> float:
    """Mean cosine of the identity embeddings of paired images."""
    a = _apply(evaluators, evaluators.identity_embedding, images)
    b = _apply(evaluators, evaluators.identity_embedding, reference)
    return float((a * b).sum(-1).mean())


def label_accuracy(evaluators: Evaluators, images: np.ndarray, labels: np.ndarray) -> float:
    """Share of images whose predicted class (among the labels, neutral excluded) is their label."""
    logits = _apply(evaluators, evaluators.label_logits, images)[:, 1:]
    return float((logits.argmax(-1) == np.asarray(labels)).mean())


def features(evaluators: Evaluators, images: np.ndarray) -> np.ndarray:
    return _apply(evaluators, evaluators.features, images)


def warp_baseline(identity_rgb: np.ndarray, identity_landmarks: np.ndarray, target_landmarks: np.ndarray) -> np.ndarray:
    """The identity image warped piecewise-affinely so that its landmarks land on the target's (the
    image border pinned), uint8 like the input."""
    from skimage.transform import PiecewiseAffineTransform, warp

    size = identity_rgb.shape[0]
    edge = np.linspace(0, size - 1, 5)
    border = np.concatenate([np.stack([edge, np.zeros(5)], 1), np.stack([edge, np.full(5, size - 1)], 1),
                             np.stack([np.zeros(3), edge[1:-1]], 1), np.stack([np.full(3, size - 1), edge[1:-1]], 1)])
    # skimage's warp takes the inverse map: output (target) positions -> input (identity) positions;
    # its pixel centres are at integers, ours at +0.5.
    src = np.concatenate([target_landmarks - 0.5, border])
    dst = np.concatenate([identity_landmarks - 0.5, border])
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = PiecewiseAffineTransform.from_estimate(src, dst)
    else:
        transform = PiecewiseAffineTransform()
        transform.estimate(src, dst)
    out = warp(identity_rgb, transform, output_shape=identity_rgb.shape[:2], mode="edge")
    return (out * 255).round().astype(np.uint8)


def expression_transfer(source_neutral: np.ndarray, source_target: np.ndarray, other_neutral: np.ndarray) -> np.ndarray:
    """The landmarks of another person making the source's expression: the other's neutral plus the
    source's displacement from its neutral (the cycle metric's transfer)."""
    return other_neutral + (source_target - source_neutral)
