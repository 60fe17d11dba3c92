"""Table 5: per-vertex error of mesh decoders on the dataset's exact meshes.

Protocol (one training run per model serves both columns). Models are trained on the identity
split's ``train`` people and the expression split's ``train`` labels only
(``face4d train decoder``, default ``--labels expression_train``). Then:

* **identity split**: the identity split's ``test`` people (never seen), performing the training
  labels: unseen faces, seen motions;
* **expression split**: the ``train`` people performing the held-out labels (default
  ``mouth_extreme, cheeks_in, fear``): seen faces, unseen motions;
* **retargeting**: the ``test`` people's held-out-label sequences, each applied to the neutral
  mesh of *another* test person: unseen face, unseen motion, and a landmark sequence that is not
  the mesh's own. The ground truth is that person's mesh with the sequence's expression weights
  (in the morphable head, an expression displaces a face the same way whatever the identity).

The error of a frame is the Euclidean distance between each predicted and true vertex, in mm
(the head model's cm x 10); a column gives its mean +- std over every vertex of every valid frame
of its sequences (neutral frames included), over the whole head or the face region only.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from face4d.data.dataset import Dataset
from face4d.decoder.rbf import rbf_displacements
from face4d.decoder.retarget import decode_displacements
from face4d.decoder.training import DecoderData
from meshops.head import HeadModel

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``predict(neutral (V, 3), dL (F, 68, 3)) -> dM (F, V, 3)``, centimetres."""
MM = 10.0


@dataclass
class RunningMoments:
    """Running mean and standard deviation of values added in batches (float64 sums)."""

    total: float = 0.0
    squares: float = 0.0
    count: int = 0

    def add(self, values: np.ndarray) -> None:
        self.total += values.sum()
        self.squares += (values ** 2).sum()
        self.count += values.size

    @property
    def mean_std(self) -> tuple[float, float]:
        if not self.count:
            return float("nan"), float("nan")
        mean = self.total / self.count
        return mean, float(np.sqrt(max(self.squares / self.count - mean ** 2, 0.0)))


@dataclass
class ErrorStats:
    """Running mean and std of per-vertex errors (mm), over the whole mesh and over the face region."""

    whole: RunningMoments = field(default_factory=RunningMoments)
    face: RunningMoments = field(default_factory=RunningMoments)
    frames: int = 0

    def add(self, errors: np.ndarray, face_ids: np.ndarray) -> None:
        """Add the errors (F, V) of F frames, in mesh units (cm)."""
        errors = np.asarray(errors, np.float64) * MM
        self.frames += len(errors)
        self.whole.add(errors)
        self.face.add(errors[..., face_ids])

    @property
    def mean_std(self) -> tuple[float, float]:
        return self.whole.mean_std

    @property
    def face_mean_std(self) -> tuple[float, float]:
        return self.face.mean_std


def decoder_predictor(model: torch.nn.Module) -> Predictor:
    return lambda neutral, delta: decode_displacements(model, neutral, delta)


def rbf_predictor(landmark_ids: np.ndarray, **options) -> Predictor:
    return lambda neutral, delta: rbf_displacements(neutral, landmark_ids, delta, **options)


def zero_predictor(neutral: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """The neutral mesh itself: the error of not deforming at all, for scale."""
    return np.zeros((len(delta), *np.shape(neutral)), np.float32)


def fit_linear(data: DecoderData, head: HeadModel, frames: int = 4000, ridge: float = 1e-4,
               seed: int = 0) -> Predictor:
    """Closed-form least squares (ridge) ``dM = dL A``, fitted on ``frames`` random training frames:
    the best linear map from landmark displacements to vertex displacements, for reference."""
    rng = np.random.default_rng(seed)
    sequences = rng.integers(len(data), size=frames)
    frame_ids = (rng.random(frames) * data.lengths[sequences]).astype(np.int64)
    gram, moment = 0.0, 0.0
    for start in range(0, frames, 250):  # in chunks: a frame of the full head is 43k numbers
        part = slice(start, start + 250)
        _, delta_l, delta_m = data.examples(head, sequences[part], frame_ids[part, None])
        x = delta_l.reshape(len(delta_l), -1).double()
        gram = gram + x.T @ x
        moment = moment + x.T @ delta_m.reshape(len(delta_m), -1).double()
    gram += ridge * torch.trace(gram) / len(gram) * torch.eye(len(gram), dtype=gram.dtype)
    a = torch.linalg.solve(gram, moment).float().numpy()
    return lambda neutral, delta: (delta.reshape(len(delta), -1) @ a).reshape(len(delta), -1, 3)


def split_data(dataset: Dataset, split: str, labels: str) -> DecoderData:
    """Sequences of identity split ``split`` with the expression split's ``labels`` part (train/test)."""
    chosen = dataset.manifest["splits"]["expression"][f"{labels}_labels"]
    return DecoderData.from_sequences(dataset.sequences(split, chosen), str(dataset.root))


def _limit(count: int, max_sequences: int | None, seed: int = 0) -> np.ndarray:
    if max_sequences is None or count <= max_sequences:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, max_sequences, replace=False))


def evaluate(predict: Predictor, data: DecoderData, head: HeadModel, max_sequences: int | None = None,
             retarget: bool = False) -> ErrorStats:
    """Errors of ``predict`` on every valid frame of ``data``'s sequences (at most ``max_sequences``,
    a fixed random choice). ``retarget``: sequence ``i`` drives the neutral mesh of the next
    sequence of another person (cyclically), as in the module docstring."""
    stats = ErrorStats()
    face_ids = head.region_ids("face")
    chosen = _limit(len(data), max_sequences)
    for position, i in enumerate(chosen):
        f, n = int(data.lengths[i]), int(data.neutral_frame[i])
        target_id = data.identity_weights[i]
        if retarget:
            others = [j for j in np.roll(chosen, -position - 1) if not np.array_equal(data.identity_weights[j],
                                                                                       data.identity_weights[i])]
            if not others:
                continue
            target_id = data.identity_weights[others[0]]
        neutral = head.vertices(target_id)
        truth = head.vertices(target_id[None], data.expression_weights[i, :f]) - neutral
        delta = data.landmarks[i, :f] - data.landmarks[i, n]
        stats.add(np.linalg.norm(predict(neutral, delta) - truth, axis=-1), face_ids)
    return stats


def decode_time(predict: Predictor, head: HeadModel, frames: int = 40, repeats: int = 5,
                seed: int = 0) -> tuple[float, float]:
    """Median wall time and median process CPU time (s) of ``predict`` on one ``frames``-frame
    sequence on the full head. On a busy machine the wall time counts the waits for a core; the
    CPU time (all threads) is what the work itself costs."""
    rng = np.random.default_rng(seed)
    neutral = head.vertices(rng.standard_normal(head.num_identity).astype(np.float32))
    delta = (rng.standard_normal((frames, 68, 3)) * 0.2).astype(np.float32)
    predict(neutral, delta)  # warm-up (caches, allocator)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        predict(neutral, delta)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall)), float(np.median(cpu))
