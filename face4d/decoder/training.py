"""Training the mesh decoders on the dataset's exact meshes.

A training example is one frame of one sequence: the person's neutral mesh ``M`` (their identity
weights, zero expression), the landmark displacements ``dL_f = L_f - L_n`` from the sequence's
neutral frame ``n`` (its first frame, or its last for an E2N sequence), and the target
``dM_f = M_f - M``, with ``M_f`` rebuilt from the stored identity and expression weights by
``HeadModel.vertices``. A step takes ``batch_size / frames_per_mesh`` sequences and
``frames_per_mesh`` frames of each, so the mesh encoder runs once per sequence and the decoder on
every frame, as at inference.

The loss is S2D's: an L1 reconstruction of the displacements, weighted towards the landmarks,
``mean_v w_v |dM_hat_v - dM_v|_1`` with ``w_v = 1 + landmark_weight * exp(-d_v^2 / (2 sigma^2))``
(``d_v`` the distance of template vertex ``v`` to its nearest landmark) normalised to mean 1.

Which data: the identity split's ``train`` people only, and by default only the expression split's
``train`` labels (``labels="expression_train"``), so that one model serves both columns of
Table 5: unseen people (identity split) and unseen motions (expression split). Datasets with
head motion are refused: ``dL`` would then carry the rigid motion, which the decoder does not model.

The loop follows ``face4d.training``'s rules: a run is a pure function of its config and the step
(the batch of step ``s`` is drawn from ``(seed, s)`` alone, the model contains no randomness), so
resuming from the periodic checkpoint (``last.safetensors``/``last.json``) is exact, on the CPU bit
for bit; the saved weights (``model.safetensors``) are an EMA of the raw ones; an output directory
holding anything but this run's state is refused.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences
from face4d.decoder.model import MLPDecoderConfig, SpiralDecoderConfig, build_decoder, kind_of
from face4d.decoder.topology import DecoderTopology
from face4d.errors import Face4DError
from face4d.training import CheckpointedRun, TrainConfig, resolve_device, run_lock, seeded
from meshops.head import HeadModel

LABEL_CHOICES = ("expression_train", "all")
_BATCH_STREAM = 7


@dataclass
class DecoderTrainConfig(TrainConfig):
    """Optimisation settings of a decoder run, stored in its checkpoints: ``TrainConfig``'s, with the
    decoder's defaults, plus the frames per mesh, S2D's landmark weighting and the labels trained on.

    ``batch_size`` counts frames; it must be a multiple of ``frames_per_mesh``. As for every model,
    ``steps``, ``checkpoint_every``, ``log_every`` and ``device`` may change when a run is resumed;
    the other fields define the run.
    """

    steps: int = 20_000
    batch_size: int = 32
    lr: float = 1e-3
    checkpoint_every: int = 500
    log_every: int = 25
    device: str = "cpu"
    frames_per_mesh: int = 8
    landmark_weight: float = 1.0
    landmark_sigma: float = 1.0
    labels: str = "expression_train"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.frames_per_mesh < 1:
            raise Face4DError(f"frames-per-mesh must be >= 1, got {self.frames_per_mesh}")
        if self.batch_size % self.frames_per_mesh:
            raise Face4DError(f"batch-size ({self.batch_size}) must be a multiple of frames-per-mesh "
                              f"({self.frames_per_mesh})")
        if self.landmark_weight < 0 or not self.landmark_sigma > 0:
            raise Face4DError("landmark-weight must be >= 0 and landmark-sigma > 0")
        if self.labels not in LABEL_CHOICES:
            raise Face4DError(f"labels must be one of {LABEL_CHOICES}, got {self.labels!r}")

    @property
    def meshes_per_step(self) -> int:
        return self.batch_size // self.frames_per_mesh


# ------------------------------------------------------------------------------------- data

@dataclass
class DecoderData:
    """The sequences a decoder learns from: landmarks plus the weights that rebuild their meshes."""

    identity_weights: np.ndarray  # (N, K)
    expression_weights: np.ndarray  # (N, F, E)
    landmarks: np.ndarray  # (N, F, 68, 3)
    lengths: np.ndarray  # (N,)
    neutral_frame: np.ndarray  # (N,)

    @classmethod
    def from_sequences(cls, seqs: LandmarkSequences, source: str = "data") -> "DecoderData":
        if seqs.identity_weights is None or seqs.expression_weights is None:
            raise Face4DError(f"{source}: the sequences carry no blendshape weights, so their meshes cannot be "
                              f"rebuilt to train or evaluate a decoder")
        if seqs.head_pose is not None and np.abs(seqs.head_pose).max() > 0:
            raise Face4DError(f"{source}: the sequences have rigid head motion; decoders are trained and evaluated "
                              f"on data without it (build the dataset without --head-motion)")
        return cls(seqs.identity_weights, seqs.expression_weights, seqs.landmarks, seqs.lengths,
                   seqs.neutral_frames())

    def __len__(self) -> int:
        return len(self.lengths)

    def pick(self, step: int, seed: int, meshes: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Sequence ids (G,) and frame ids (G, K) of ``step``: sequences in epochs (a fresh permutation
        per epoch, from ``(seed, epoch)``), frames uniformly among each one's valid frames."""
        n = len(self)
        positions = np.arange(step * meshes, (step + 1) * meshes)
        epochs, offsets = positions // n, positions % n
        sequences = np.empty(meshes, np.int64)
        for epoch in np.unique(epochs):
            chosen = epochs == epoch
            perm = np.random.default_rng([seed, _BATCH_STREAM, 0, int(epoch)]).permutation(n)
            sequences[chosen] = perm[offsets[chosen]]
        rng = np.random.default_rng([seed, _BATCH_STREAM, 1, step])
        frame_ids = (rng.random((meshes, frames)) * self.lengths[sequences][:, None]).astype(np.int64)
        return sequences, frame_ids

    def examples(self, head: HeadModel, sequences: np.ndarray, frame_ids: np.ndarray,
                 device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(M (G, V, 3), dL (G, K, 68, 3), dM (G, K, V, 3))`` of the chosen frames, exact meshes."""
        rows = sequences[:, None]
        identity = torch.from_numpy(self.identity_weights[sequences]).to(device)
        expression = torch.from_numpy(self.expression_weights[rows, frame_ids]).to(device)
        neutral = head.vertices(identity)
        frames = head.vertices(identity[:, None], expression)
        landmarks = self.landmarks[rows, frame_ids] - self.landmarks[sequences, self.neutral_frame[sequences]][:, None]
        return neutral, torch.from_numpy(landmarks).to(device), frames - neutral[:, None]


def load_training_data(data_dir: str | os.PathLike, labels: str = "expression_train",
                       split: str = "train") -> tuple[DecoderData, dict[str, Any]]:
    """The decoder's training sequences of a built dataset and a description of them (for the run's
    fingerprint): identity split ``split``, restricted to the expression split's train labels
    unless ``labels == "all"``."""
    if labels not in LABEL_CHOICES:
        raise Face4DError(f"labels must be one of {LABEL_CHOICES}, got {labels!r}")
    dataset = Dataset.load(data_dir)
    if dataset.config is not None and dataset.config.head_motion:
        raise Face4DError(f"{dataset.root}: was built with head motion; decoders are trained and evaluated on "
                          f"data without it (build the dataset without --head-motion)")
    chosen = dataset.manifest["splits"]["expression"]["train_labels"] if labels == "expression_train" else None
    seqs = dataset.sequences(split, chosen)
    description = {"dataset_seed": dataset.manifest["seed"], "dataset_sequences": len(dataset), "split": split,
                   "labels": labels, "sequences": len(seqs)}
    return DecoderData.from_sequences(seqs, str(dataset.root)), description


def vertex_weights(topology: DecoderTopology, landmark_weight: float, sigma: float) -> torch.Tensor:
    """S2D's per-vertex loss weights (V,): more weight near the landmarks, mean 1."""
    d = torch.from_numpy(topology.landmark_distance)
    w = 1.0 + landmark_weight * torch.exp(-0.5 * (d / sigma) ** 2)
    return w / w.mean()


def reconstruction_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted L1 of displacements (..., V, 3): ``mean(w_v * |predicted_v - target_v|_1)``."""
    return ((predicted - target).abs().sum(-1) * weights).mean()


# ---------------------------------------------------------------------------------- trainer

class DecoderTrainer(CheckpointedRun):
    """Train a decoder on ``data`` into ``out_dir`` (resuming a run found there); see the module docstring."""

    def __init__(self, model: nn.Module, data: DecoderData, out_dir: str | os.PathLike, config: DecoderTrainConfig,
                 head: HeadModel | None = None, extra: dict[str, Any] | None = None, progress: bool = True):
        self.model, self.data, self.config = model, data, config
        self.out_dir, self.progress = Path(out_dir), progress
        self.head = HeadModel.load() if head is None else head
        self.kind = kind_of(model.config)
        self.model_config = model.config.to_dict()
        self.extra, self.normalizer, self.is_main = dict(extra or {}), None, True
        self._run = json.loads(json.dumps({"kind": self.kind, "model_config": self.model_config, "extra": self.extra,
                                           "sequences": len(data), "training": config.run_settings()}))
        self.device = resolve_device(config.device)
        self.model.to(self.device)
        self.weights = vertex_weights(model.topology, config.landmark_weight, config.landmark_sigma).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
        self.step = 0
        self._resume()
        self.start_step = self.step

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sequences, frame_ids = self.data.pick(step, self.config.seed, self.config.meshes_per_step,
                                              self.config.frames_per_mesh)
        return self.data.examples(self.head, sequences, frame_ids, self.device)

    def fit(self) -> list[float]:
        """Train until ``config.steps``; returns the loss of each step run by this call."""
        config = self.config
        bar = tqdm(total=config.steps, initial=self.step, desc=f"training {self.kind}", unit="step",
                   disable=not self.progress)
        history: list[float] = []
        pending: list[torch.Tensor] = []
        errors: list[torch.Tensor] = []
        self.model.train()
        try:
            while self.step < config.steps:
                neutral, delta_landmarks, target = self.batch(self.step)
                predicted = self.model(neutral, delta_landmarks)
                loss = reconstruction_loss(predicted, target, self.weights)
                self._optimize(loss)
                bar.update()
                pending.append(loss.detach())
                with torch.no_grad():
                    errors.append((predicted - target).norm(dim=-1).mean())
                checkpoint = self.step % config.checkpoint_every == 0 or self.step == config.steps
                if checkpoint or self.step % config.log_every == 0:
                    losses = torch.stack(pending).tolist()
                    if not all(math.isfinite(x) for x in losses):
                        raise Face4DError(f"the loss became {losses[-1]} before step {self.step}; lower --lr")
                    bar.set_postfix(loss=f"{np.mean(losses):.4f}", err_mm=f"{10 * torch.stack(errors).mean():.3f}")
                    history += losses
                    pending, errors = [], []
                if checkpoint:
                    self.save_checkpoint()
        finally:
            bar.close()
        self.model.eval()
        return history


def train_decoder(data_dir: str | os.PathLike, out_dir: str | os.PathLike, train_config: DecoderTrainConfig,
                  model_config: SpiralDecoderConfig | MLPDecoderConfig, head: HeadModel | None = None,
                  progress: bool = True) -> DecoderTrainer:
    """Train (or resume) a decoder on a built dataset into the model directory ``out_dir``; returns
    the finished trainer (``step``, ``start_step``, ``model``). See the module docstring for the data."""
    head = HeadModel.load() if head is None else head
    data, description = load_training_data(data_dir, train_config.labels)
    topology = DecoderTopology.from_head(head)
    model = seeded(train_config.seed, lambda: build_decoder(model_config, topology))
    with run_lock(out_dir):
        trainer = DecoderTrainer(model, data, out_dir, train_config, head, extra={"data": description},
                                 progress=progress)
        trainer.fit()
    return trainer
