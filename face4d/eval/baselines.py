"""Non-diffusion baselines for the results tables, fitted on the training split.

``LabelGaussian`` is the conditional baseline of Table 1: a linear-Gaussian (probabilistic PCA)
model of whole sequences per label, the classical statistical model of motion. It conditions on
the label exactly (one model per label) but can only produce linear combinations of the training
motions of that label, so it shows what the diffusion model adds beyond the label's mean and main
modes of variation.

``NearestText`` is the text-control baseline of Table 2: retrieval of the training sequence whose
text is nearest to the query in the text encoder's space. ``mean_imputation`` is the filling
baseline of Table 3 (the paper's).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from face4d.data.cutting import resample
from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.text import TextEncoder

TIES = ("random", "first")


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


def fit_length(seq: np.ndarray, frames: int) -> np.ndarray:
    """``seq`` (L, ...) cut to its first ``frames`` frames, or padded by holding its last frame."""
    seq = np.asarray(seq)
    if frames < 1 or len(seq) == 0:
        raise Face4DError(f"need a non-empty sequence and frames >= 1, got {len(seq)} frames and {frames}")
    if len(seq) >= frames:
        return seq[:frames]
    return np.concatenate([seq, np.repeat(seq[-1:], frames - len(seq), axis=0)])


class NearestText:
    """Text control by retrieval: for a query text, the training sequence whose text embedding is
    nearest to the query's by cosine, cut or padded to the asked length (``fit_length``).

    Training sequences share texts (every sequence of a label has the same raw text), so many are
    equally near. ``ties`` says which one is returned: ``"random"``, one drawn uniformly among them
    (a retrieved set then has the variety of the training data), or ``"first"``, the first in
    training order (one sequence per text: no variety at all). Sequences with an empty text are
    never returned.
    """

    def __init__(self, train: LandmarkSequences, texts: Sequence[str], encoder: TextEncoder,
                 ties: str = "random") -> None:
        if ties not in TIES:
            raise Face4DError(f"unknown tie rule {ties!r}; use one of {', '.join(TIES)}")
        texts = np.array([str(text).strip() for text in texts], dtype=np.str_)
        if len(texts) != len(train):
            raise Face4DError(f"need one text per training sequence: {len(texts)} texts, {len(train)} sequences")
        if not (texts != "").any():
            raise Face4DError("no training sequence has a text to retrieve it by")
        self.train, self.encoder, self.ties = train, encoder, ties
        self.vocabulary = sorted(set(texts.tolist()) - {""})
        self.members = [np.flatnonzero(texts == text) for text in self.vocabulary]
        self.embeddings = encoder.encode(self.vocabulary).double().numpy()

    def nearest(self, queries: Sequence[str], seed: int = 0) -> np.ndarray:
        """Index (N,) into the training set of the sequence retrieved for each query."""
        rng = np.random.default_rng(seed)
        similarity = self.encoder.encode(list(queries)).double().numpy() @ self.embeddings.T
        chosen = []
        for row in similarity:
            tied = np.sort(np.concatenate([self.members[k] for k in np.flatnonzero(row >= row.max() - 1e-6)]))
            chosen.append(tied[0] if self.ties == "first" else rng.choice(tied))
        return np.array(chosen, dtype=np.int64)

    def sample(self, queries: Sequence[str], frames: int, seed: int = 0) -> LandmarkSequences:
        """The retrieved sequences, ``frames`` frames each, with the retrieved sequences' labels and
        types and the queries as texts."""
        index = self.nearest(queries, seed)
        landmarks = np.stack([fit_length(self.train.sequence(i), frames) for i in index])
        return LandmarkSequences(landmarks=landmarks, lengths=np.full(len(index), frames),
                                 labels=self.train.labels[index], types=self.train.types[index], fps=self.train.fps,
                                 texts=list(queries))


def mean_imputation(seqs: LandmarkSequences, known: np.ndarray) -> LandmarkSequences:
    """The filling baseline of Table 3: every unknown frame of a sequence becomes the mean of its
    known frames (per landmark coordinate); known frames and padding are kept. ``known`` (N, F)
    bool, F the batch's padded length, with at least one known frame per sequence."""
    known = np.asarray(known, bool)
    if known.shape != seqs.landmarks.shape[:2] or not known.any(axis=1).all():
        raise Face4DError(f"need a known-frame mask of shape {seqs.landmarks.shape[:2]} with a known frame in "
                          f"every sequence, got {known.shape}")
    x = seqs.landmarks.astype(np.float64)
    weights = known[..., None, None]
    mean = (x * weights).sum(axis=1) / weights.sum(axis=1)
    keep = known | (np.arange(seqs.num_frames)[None] >= seqs.lengths[:, None])
    return replace(seqs, landmarks=np.where(keep[..., None, None], x, mean[:, None]).astype(np.float32))
