"""The label-control metrics of §5.1 (Table 1): IC accuracy w.r.t. the requested labels, and FID.

FID is the Fréchet distance between Gaussians fitted to the IC's features (its linear layer's
output, ``IndependentClassifier.features``) of generated and of real sequences: low when the
generated set matches the real one in quality *and* diversity. Accuracy says whether each
generated sequence shows the label it was asked for.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import linalg

from face4d.data.interchange import LandmarkSequences
from face4d.data.labels import label_index
from face4d.data.normalize import LandmarkNormalizer
from face4d.errors import Face4DError
from face4d.models.ic import IndependentClassifier


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between the
    Gaussians fitted to two feature sets of shape (N, D), computed as pytorch-fid does.

    With fewer samples than dimensions a covariance is singular and the square root of the
    product can come out non-finite or clearly complex; then ``eps`` is added to both diagonals
    and the root taken again. Small imaginary parts (round-off) are dropped. Round-off can also
    make the distance of near-identical sets slightly negative, so the result is clipped at 0.
    """
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise Face4DError(f"feature sets differ in dimension: {a.shape[1]} vs {b.shape[1]}")
    diff = a.mean(0) - b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not _real_enough(covmean):
        offset = np.eye(len(cov_a)) * eps
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
        if not _real_enough(covmean):
            raise Face4DError("the square root of the covariance product is not real; the features may be degenerate")
    distance = diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real)
    return max(float(distance), 0.0)


def _features(feats: np.ndarray, name: str) -> np.ndarray:
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise Face4DError(f"{name} must have shape (N, D) with N >= 2 (a covariance needs two samples), "
                          f"got {feats.shape}")
    if not np.isfinite(feats).all():
        raise Face4DError(f"{name} contains NaN or infinity")
    return feats


def _real_enough(matrix: np.ndarray) -> bool:
    """Finite, and any imaginary part on the diagonal is round-off (pytorch-fid's tolerance)."""
    return bool(np.isfinite(matrix).all()) and (
        not np.iscomplexobj(matrix) or np.allclose(np.diagonal(matrix).imag, 0, atol=1e-3))


def label_indices(labels: Sequence[str] | Sequence[int] | np.ndarray) -> np.ndarray:
    """Class indices (N,) int64 of label names (an unknown or empty name is an error); indices pass through."""
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind in "iu":
        return labels.astype(np.int64)
    return np.array([label_index(str(name)) for name in labels], np.int64)


@torch.no_grad()
def classify(model: IndependentClassifier, seqs: LandmarkSequences, normalizer: LandmarkNormalizer | None = None,
             batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The IC's predicted class indices (N,) int64 and FID features (N, num_classes) float32 for ``seqs``.

    ``normalizer`` defaults to the one stored in the IC's config: sequences must be normalised as
    the IC's training data was. The model runs in eval mode on its own device and is put back in
    the mode it was in.
    """
    normalizer = normalizer if normalizer is not None else model.config.normalizer
    if normalizer is None:
        raise Face4DError("no normaliser given and none stored in the classifier's config")
    if batch_size < 1:
        raise Face4DError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    features = []
    try:
        for start in range(0, len(seqs), batch_size):
            part = seqs.select(slice(start, start + batch_size))
            x = torch.as_tensor(normalizer.normalize(part.landmarks), device=device)
            mask = torch.as_tensor(np.arange(part.num_frames)[None] < part.lengths[:, None], device=device)
            features.append(model.features(x, mask).float().cpu().numpy())
    finally:
        model.train(was_training)
    features = np.concatenate(features)
    return features.argmax(1).astype(np.int64), features


def accuracy(pred: np.ndarray, labels: Sequence[str] | Sequence[int] | np.ndarray) -> float:
    """Fraction of predicted class indices that match ``labels`` (names or class indices)."""
    pred, target = np.asarray(pred).reshape(-1), label_indices(labels)
    if pred.shape != target.shape or not len(pred):
        raise Face4DError(f"need as many predictions as labels (at least one), got {len(pred)} and {len(target)}")
    return float((pred == target).mean())


def evaluate_sequences(model: IndependentClassifier, normalizer: LandmarkNormalizer | None,
                       generated: LandmarkSequences, reference: LandmarkSequences,
                       batch_size: int = 256) -> dict[str, float]:
    """Table 1's scores of ``generated``: ``accuracy`` of the IC w.r.t. the requested labels
    (``generated.labels``) and ``fid`` between the IC features of ``generated`` and ``reference``
    (the real test sequences).

    For the ground-truth row, score the test split itself; against itself its FID is 0 by
    definition, so a meaningful ground-truth FID compares it with another real set (e.g. the
    training split). ``normalizer`` None uses the one stored with the IC.
    """
    target = label_indices(generated.labels)
    if (target >= model.config.num_classes).any():
        raise Face4DError(f"some requested labels are outside the classifier's {model.config.num_classes} classes")
    pred, generated_features = classify(model, generated, normalizer, batch_size)
    _, reference_features = classify(model, reference, normalizer, batch_size)
    return {"accuracy": accuracy(pred, target), "fid": frechet_distance(generated_features, reference_features)}


# ------------------------------------------------- Tables 3 and 4: known frames and the join

def known_frame_error(filled: LandmarkSequences, given: LandmarkSequences, known: np.ndarray) -> float:
    """How far the known frames of ``filled`` moved from ``given``: the largest absolute
    difference over the known frames' coordinates, relative to the largest absolute coordinate
    there. ``known`` (N, F) bool marks them (F may exceed either batch's padded length)."""
    known = np.asarray(known, bool)
    if known.shape[0] != len(filled) or len(filled) != len(given):
        raise Face4DError(f"need one known-frame mask per sequence: {known.shape[0]} masks, {len(filled)} filled "
                          f"and {len(given)} given sequences")
    frames = min(filled.num_frames, given.num_frames)
    if known[:, frames:].any() or not known.any():
        raise Face4DError("the known frames must lie inside both batches, and there must be one")
    want = given.landmarks[:, :frames][known[:, :frames]].astype(np.float64)
    got = filled.landmarks[:, :frames][known[:, :frames]].astype(np.float64)
    return float(np.abs(got - want).max() / max(np.abs(want).max(), np.finfo(np.float64).tiny))


def frame_speeds(seq: np.ndarray) -> np.ndarray:
    """Speed between consecutive frames of ``seq`` (F, 68, 3): (F - 1,) values, the mean over
    landmarks of ``|x_{f+1} - x_f|`` (Euclidean), in the landmarks' units per frame (cm/frame)."""
    seq = np.asarray(seq, np.float64)
    return np.linalg.norm(np.diff(seq, axis=0), axis=-1).mean(axis=-1)


def join_speeds(seqs: LandmarkSequences) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence, the speed at its neutral end (between the neutral frame and its neighbour,
    where geometry-adaptive generation joins the enforced frame) and the mean speed between all
    other consecutive frames; both (N,) in cm/frame (``frame_speeds``). Needs 3 frames or more."""
    if (seqs.lengths < 3).any():
        raise Face4DError("the speed away from the join needs sequences of at least 3 frames")
    join, elsewhere = np.empty(len(seqs)), np.empty(len(seqs))
    for i, neutral in enumerate(seqs.neutral_frames(strict=True)):
        speeds = frame_speeds(seqs.sequence(i))
        at = 0 if neutral == 0 else len(speeds) - 1
        join[i], elsewhere[i] = speeds[at], np.delete(speeds, at).mean()
    return join, elsewhere
