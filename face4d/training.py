"""The one training loop of face4d: the denoiser, the classifiers and the text guide differ only in
their loss.

``Trainer`` takes a network, a ``loss_fn(network, batch) -> scalar`` and a ``LandmarkSequences``
training set, and provides what every model needs: AdamW, gradient clipping, an exponential moving
average (EMA) of the weights, periodic checkpoints in the layout of ``face4d.checkpoint``, resuming,
and data parallelism under ``torchrun``.

Reproducibility rests on one rule: every random draw of step ``s`` comes from seeds derived from
``(seed, s)`` alone -- the batch from ``(seed, epoch)`` (its pick among per-sequence alternatives
from ``(seed, s)``), the loss's noise, timesteps and dropout from ``(seed, s, rank)``. A run is
therefore a pure function of its config and its step counter: resuming needs no saved RNG state
and is exact (on the CPU, bit for bit), and ranks of a data-parallel run draw different noise
without coordinating.

Batches (the ``batch`` argument of ``loss_fn``), B sequences trimmed to the longest of them:

* ``x0``: (B, F, 68, 3) float32, normalised landmarks, zero on padded frames
* ``mask``: (B, F) bool, True on valid frames
* ``lengths``: (B,) long
* ``label``: (B,) long, ``face4d.data.labels.label_index``; -1 where the label is unknown ("")
* ``type``: (B,) long, 0 for N2E and 1 for E2N (order of ``SEQUENCE_TYPES``); -1 where unknown
* one entry per ``Trainer(alternatives=...)`` key, e.g. ``text_embedding``: (B, D) float32 for the
  text guide, the embedding of one of each sequence's texts (zero where the text is unknown)

Data parallelism: under ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1 in the environment) the
trainer joins the process group (NCCL on CUDA, Gloo on the CPU), wraps the network in
``DistributedDataParallel`` and gives each rank its own 1/N of every batch, so ``batch_size`` is
the global batch. Only rank 0 writes checkpoints and shows progress; every rank reads ``out_dir``
to resume, so it must be on a file system all ranks share.
"""
from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from face4d.checkpoint import (
    MODEL_KINDS,
    STATE_FILE,
    STATE_TENSORS_FILE,
    check_state_dict,
    flatten_tensors,
    has_training_state,
    load_pretrained,
    load_training_state,
    save_model,
    save_training_state,
    unflatten_tensors,
)
from face4d.data.dataset import Dataset
from face4d.data.interchange import SEQUENCE_TYPES, LandmarkSequences
from face4d.data.labels import label_index
from face4d.data.normalize import LandmarkNormalizer
from face4d.diffusion import PREDICTIONS, DiffusionConfig, GaussianDiffusion
from face4d.errors import Face4DError
from face4d.models.classifier import ClassifierConfig, target_index
from face4d.models.denoiser import CONDITION_EMBEDDINGS, DenoiserConfig
from face4d.models.ic import ICConfig, IndependentClassifier
from face4d.models.text_guide import TextGuideConfig, text_similarity
from face4d.text import TEXT_MODES, get_text_encoder, sequence_text_embeddings
from meshops.atomic import LOCK_FILE, locked_dir

LossFn = Callable[[nn.Module, dict[str, torch.Tensor]], torch.Tensor]
"""``loss_fn(network, batch) -> scalar``; call ``network`` (it may be a DDP wrapper) for the forward
pass so that gradients are synchronised."""

_DATA_STREAM, _STEP_STREAM, _CHOICE_STREAM = 0, 1, 2

DENOISER_PREDICTION = "sample"
"""What ``face4d train denoiser`` teaches the network to predict by default; the paper: ``epsilon``.
Chosen by the ablation in docs/results.md (*Motion quality: ablation*)."""
DENOISER_VELOCITY_WEIGHT = 1.0
"""Default weight of the velocity term of the denoiser's loss; the paper: 0 (same ablation)."""
DENOISER_SNR_GAMMA = 5.0
"""Default Min-SNR-gamma weighting of the denoiser's loss (0: none, the paper's uniform weights)..."""
DENOISER_SNR_FLOOR = 0.0
"""...and the floor of its weights (``GaussianDiffusion.training_loss``)."""
DENOISER_CONDITION_DROPOUT = 0.15
"""Share of sequences a conditional denoiser sees without its condition (``diffusion_loss``)."""
M = TypeVar("M", bound=nn.Module)


@dataclass
class TrainConfig:
    """Optimisation settings, stored in checkpoints as JSON.

    Defaults follow the paper (Sec. 4: Adam at lr 1e-4, 200K iterations) except ``batch_size``
    (paper: 256), chosen to fit a single small GPU. ``grad_clip`` None disables clipping. The
    ``ema_decay`` is reached after a warm-up, ``min(ema_decay, (1 + n) / (10 + n))`` at update
    ``n``, so that short runs do not save weights that are mostly the random initialisation.
    ``steps``, ``checkpoint_every``, ``log_every`` and ``device`` may change when a run is
    resumed (e.g. to train longer); the other fields define the run and may not.
    """

    steps: int = 200_000
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_clip: float | None = 1.0
    checkpoint_every: int = 1000
    log_every: int = 50
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise Face4DError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise Face4DError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0:
            raise Face4DError(f"weight-decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise Face4DError(f"ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise Face4DError(f"grad-clip must be positive (or None to disable), got {self.grad_clip}")
        if self.seed < 0:
            raise Face4DError(f"seed must be >= 0, got {self.seed}")
        if self.device != "auto":
            parse_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise Face4DError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**data)

    def run_settings(self) -> dict[str, Any]:
        """The fields that shape the trajectory of the weights, which a resumed run must share."""
        resumable = {"steps", "checkpoint_every", "log_every", "device"}
        return {key: value for key, value in self.to_dict().items() if key not in resumable}


def parse_device(name: str) -> torch.device:
    """The device ``name`` stands for; a name torch does not know is a one-line error."""
    try:
        return torch.device(name)
    except (RuntimeError, TypeError):
        raise Face4DError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; a bare ``cuda`` is the rank's own GPU. An unknown
    name, a device type other than the CPU and CUDA, or CUDA on a build or machine without it is a
    one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = parse_device(name)
    if device.type not in ("cpu", "cuda"):
        raise Face4DError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise Face4DError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def run_lock(out_dir: str | os.PathLike) -> AbstractContextManager:
    """The lock a training run holds on its ``out_dir`` (``meshops.atomic.locked_dir``), so that a
    second run into the same directory is refused instead of silently replacing the first one's
    checkpoints. Taken by rank 0 only, the one process of a data-parallel run that writes there."""
    return locked_dir(out_dir) if int(os.environ.get("RANK", "0")) == 0 else nullcontext()


def seeded(seed: int, build: Callable[[], M]) -> M:
    """``build()`` with its random initial weights drawn from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _derived_seed(*words: int) -> int:
    """A 64-bit seed from a tuple of integers: independent streams for (seed, stream, step, ...)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1, np.uint64)[0])


def _differences(stored: Any, current: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON values, by key path."""
    if isinstance(stored, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(stored) | set(current)):
            found += _differences(stored.get(key), current.get(key), f"{path}.{key}" if path else key)
        return found
    if stored == current:
        return []
    path, shown = path or "settings", (repr(stored), repr(current))
    return [f"{path}: {shown[0]} (stored) != {shown[1]} (now)" if max(map(len, shown)) <= 40 else f"{path} differs"]


class CheckpointedRun:
    """What every training loop of the package shares: an EMA of the weights, checkpoints in the
    layout of ``face4d.checkpoint`` and exact resuming of the same run.

    A subclass sets ``model``, ``optimizer``, ``ema`` (a copy of the state dict), ``step``,
    ``out_dir``, ``kind``, ``model_config``, ``normalizer`` (None for models without one),
    ``extra``, ``config`` (a dataclass with ``ema_decay``, ``grad_clip`` and ``to_dict``), ``is_main`` and
    ``_run``, the JSON fingerprint a resumed run must match; then calls ``_resume`` once.
    """

    def _optimize(self, loss: torch.Tensor) -> None:
        """One optimiser step on ``loss`` (gradients clipped to ``config.grad_clip``), then the EMA."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1

    def _update_ema(self) -> None:
        """``ema = d * ema + (1 - d) * weights`` with the warmed-up decay ``d`` of update ``self.step``;
        integer buffers are copied."""
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for name, value in self.model.state_dict().items():
                average = self.ema[name]
                if average.is_floating_point():
                    average.mul_(decay).add_(value, alpha=1 - decay)
                else:
                    average.copy_(value)

    def save_checkpoint(self) -> None:
        """Write the training state and the model directory (EMA weights); rank 0 only."""
        if not self.is_main:
            return
        optimizer_tensors, optimizer_skeleton = flatten_tensors(self.optimizer.state_dict(), "optimizer")
        tensors = {
            **{f"model.{name}": value for name, value in self.model.state_dict().items()},
            **{f"ema.{name}": value for name, value in self.ema.items()},
            **optimizer_tensors,
        }
        save_training_state(self.out_dir, tensors, {
            "step": self.step, "run": self._run, "training": self.config.to_dict(), "optimizer": optimizer_skeleton,
        })
        save_model(self.out_dir, self.model, self.kind, self.model_config, self.normalizer,
                   extra={**self.extra, "training": self.config.to_dict(), "step": self.step}, state_dict=self.ema)

    def _resume(self) -> None:
        """Load ``out_dir``'s training state, if any, after checking that it is this run's."""
        if not has_training_state(self.out_dir):
            if self.out_dir.exists() and (not self.out_dir.is_dir()
                                          or any(p.name != LOCK_FILE for p in self.out_dir.iterdir())):
                raise Face4DError(f"{self.out_dir}: exists and holds no training state ({STATE_FILE}) to resume; "
                                  f"choose another output directory")
            return
        tensors, state = load_training_state(self.out_dir)
        differences = _differences(state.get("run"), self._run)
        if differences:
            raise Face4DError(f"{self.out_dir}: holds a run with other settings ({'; '.join(differences)}); "
                              f"resume it with its own settings or choose another output directory")
        for prefix, target in (("model.", self.model.state_dict()), ("ema.", self.ema)):
            stored = {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}
            check_state_dict(target, stored, f"{self.out_dir / STATE_TENSORS_FILE} ({prefix.rstrip('.')})")
            with torch.no_grad():
                for name, value in stored.items():
                    target[name].copy_(value)
        try:
            self.optimizer.load_state_dict(unflatten_tensors(state["optimizer"], tensors))
        except (KeyError, ValueError) as exc:
            raise Face4DError(f"{self.out_dir / STATE_FILE}: optimiser state does not fit the model ({exc})") from None
        self.step = int(state["step"])


class Trainer(CheckpointedRun):
    """Train ``model`` on ``data`` by minimising ``loss_fn``, checkpointing into ``out_dir``.

    An ``out_dir`` holding a training state (``last.json``) is resumed from its step, provided
    the run is the same: model kind and config, normaliser, ``extra``, the number of training
    sequences and ``config.run_settings()``; anything else is refused with the differences named.
    An ``out_dir`` that exists with other contents is refused rather than written into.
    ``kind``, ``model_config``, the normaliser and ``extra`` are saved in config.json so that
    ``face4d.checkpoint.load_model`` can rebuild the model; the saved weights are the EMA.
    Seed the model's initialisation (``seeded``) for a reproducible run.

    ``alternatives`` maps batch keys to per-sequence tensors (N, K, ...) of ``data``'s N sequences:
    each batch carries, under each key, one of the K alternatives of each of its sequences, drawn
    uniformly from ``(seed, step)`` (the text guide: the embeddings of a sequence's raw and enriched
    texts). They are not fingerprinted: name what they were computed from in ``extra``.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: LandmarkSequences,
        normalizer: LandmarkNormalizer,
        out_dir: str | os.PathLike,
        config: TrainConfig,
        kind: str,
        model_config: dict[str, Any],
        extra: dict[str, Any] | None = None,
        progress: bool = True,
        alternatives: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.config, self.loss_fn, self.normalizer = config, loss_fn, normalizer
        self.out_dir, self.kind, self.model_config = Path(out_dir), kind, model_config
        self.extra, self.progress = dict(extra or {}), progress
        self._run = json.loads(json.dumps({
            "kind": kind, "model_config": model_config, "normalizer": normalizer.to_dict(), "extra": self.extra,
            "sequences": len(data), "training": config.run_settings(),
        }))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if config.batch_size % self.world_size:
            raise Face4DError(f"batch size {config.batch_size} is not divisible by the {self.world_size} processes")
        self.device = resolve_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.is_main = self.rank == 0
        self._prepare_data(data, alternatives or {})

        self.model = model.to(self.device)
        self._owns_group = self.world_size > 1 and not dist.is_initialized()
        if self._owns_group:
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        try:
            self._network: nn.Module = self.model
            if self.world_size > 1:  # broadcasts rank 0's weights, so the EMA below starts alike everywhere
                self._network = DistributedDataParallel(
                    self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            self.ema = {name: value.detach().clone() for name, value in self.model.state_dict().items()}
            self.step = 0
            self._resume()
        except BaseException:
            self._leave_group()
            raise
        self.start_step = self.step

    # ------------------------------------------------------------------------------- data

    def _prepare_data(self, data: LandmarkSequences, alternatives: Mapping[str, torch.Tensor]) -> None:
        """Normalise once; padded frames go back to zero, the padding value the models expect."""
        lengths = torch.from_numpy(data.lengths)
        valid = torch.arange(data.num_frames)[None] < lengths[:, None]
        x = self.normalizer.normalize(torch.from_numpy(data.landmarks))
        self._x = torch.where(valid[:, :, None, None], x, torch.zeros_like(x))
        self._lengths = lengths
        self._labels = torch.tensor([label_index(name) if name else -1 for name in data.labels], dtype=torch.long)
        self._types = torch.tensor([SEQUENCE_TYPES.index(t) if t else -1 for t in data.types], dtype=torch.long)
        self._alternatives = {}
        for key, value in sorted(alternatives.items()):
            if value.ndim < 2 or value.shape[0] != len(data) or value.shape[1] < 1:
                raise Face4DError(f"alternatives {key!r} must be (N={len(data)}, K >= 1, ...), "
                                  f"got {tuple(value.shape)}")
            self._alternatives[key] = value.detach().cpu()

    def batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's part of the batch of ``step``.

        Sequences are visited in epochs: a fresh permutation per epoch, seeded by ``(seed,
        epoch)``, so every sequence is seen once per epoch and the batch depends on the step only.
        """
        n, size = len(self._x), self.config.batch_size
        positions = torch.arange(step * size, (step + 1) * size)
        epochs, offsets = positions // n, positions % n
        indices = torch.empty(size, dtype=torch.long)
        for epoch in epochs.unique().tolist():
            chosen = epochs == epoch
            generator = torch.Generator().manual_seed(_derived_seed(self.config.seed, _DATA_STREAM, epoch))
            indices[chosen] = torch.randperm(n, generator=generator)[offsets[chosen]]
        choices = {}
        if self._alternatives:
            generator = torch.Generator().manual_seed(_derived_seed(self.config.seed, _CHOICE_STREAM, step))
            for key, value in self._alternatives.items():  # sorted keys: a fixed order of draws
                choices[key] = torch.randint(value.shape[1], (size,), generator=generator)
                choices[key] = choices[key].view(self.world_size, -1)[self.rank]
        indices = indices.view(self.world_size, -1)[self.rank]
        lengths = self._lengths[indices]
        frames = int(lengths.max())
        batch = {
            "x0": self._x[indices, :frames],
            "mask": torch.arange(frames)[None] < lengths[:, None],
            "lengths": lengths,
            "label": self._labels[indices],
            "type": self._types[indices],
            **{key: value[indices, choices[key]] for key, value in self._alternatives.items()},
        }
        return {key: value.to(self.device) for key, value in batch.items()}

    # ---------------------------------------------------------------------------- training

    def fit(self) -> list[float]:
        """Train until ``config.steps``, checkpointing every ``checkpoint_every`` steps and at the
        end. Returns this rank's loss of each step run by this call. Call it once: it leaves the
        process group it joined."""
        config = self.config
        bar = tqdm(total=config.steps, initial=self.step, desc=f"training {self.kind}", unit="step",
                   disable=not (self.progress and self.is_main))
        history: list[float] = []
        pending: list[torch.Tensor] = []
        self.model.train()
        try:
            with torch.random.fork_rng(devices=[self.device.index] if self.device.type == "cuda" else []):
                while self.step < config.steps:
                    torch.manual_seed(_derived_seed(config.seed, _STEP_STREAM, self.step, self.rank))
                    loss = self.loss_fn(self._network, self.batch(self.step))
                    self._optimize(loss)
                    bar.update()
                    pending.append(loss.detach())
                    checkpoint = self.step % config.checkpoint_every == 0 or self.step == config.steps
                    if checkpoint or self.step % config.log_every == 0:
                        history += self._flush_losses(pending, bar)
                        pending = []
                    if checkpoint:
                        self.save_checkpoint()
        finally:
            bar.close()
            self._leave_group()
        return history

    def _leave_group(self) -> None:
        """Destroy the process group if this trainer created it; one the caller created is the caller's."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def _flush_losses(self, pending: list[torch.Tensor], bar: tqdm) -> list[float]:
        """Synchronise the losses since the last flush (one device sync per flush, not per step),
        show their mean over all ranks and stop every rank alike if it is not finite."""
        losses = torch.stack(pending).float()
        mean = losses.mean()
        if self.world_size > 1:
            dist.all_reduce(mean)
            mean = mean / self.world_size
        value = mean.item()
        if not math.isfinite(value):
            raise Face4DError(f"the loss became {value} before step {self.step}; lower --lr or check the data")
        bar.set_postfix(loss=f"{value:.4f}")
        return losses.tolist()


def _initialise_from(model: nn.Module, kind: str, source: str | os.PathLike, normalizer: LandmarkNormalizer) -> None:
    """Copy ``source``'s weights into ``model``: the same architecture, save for the condition
    embeddings of a conditional denoiser started from an unconditional one, which start at zero."""
    trained, _, trained_normalizer = load_pretrained(source, kind)
    if trained_normalizer is not None and trained_normalizer.to_dict() != normalizer.to_dict():
        raise Face4DError(f"{source}: trained on another dataset (its landmark normaliser differs)")
    weights, own = trained.state_dict(), model.state_dict()
    new = [name for name in own if name not in weights and name.split(".")[0] in CONDITION_EMBEDDINGS]
    check_state_dict({name: value for name, value in own.items() if name not in new}, weights,
                     f"{source}: another architecture than this run's")
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        for name in new:
            own[name].zero_()  # state_dict tensors share the parameters' storage


# ------------------------------------------------------------------------ the models' losses

def diffusion_loss(diffusion: GaussianDiffusion, velocity_weight: float = 0.0,
                   snr_gamma: float | None = None, snr_floor: float = 0.0,
                   condition_dropout: float | None = None) -> LossFn:
    """The denoiser's loss: Eq. 8 of the paper on the batch's valid frames, plus an optional velocity
    term (``GaussianDiffusion.training_loss``). With ``condition_dropout`` p the network (a
    conditional ``Denoiser``) also gets each sequence's label and order, except for a share p of the
    sequences that get neither (the unconditional model) and a share p of the rest that get the
    label alone (a label in either order)."""

    def loss(network: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        kwargs = None
        if condition_dropout is not None:
            drop_all = torch.rand(batch["label"].shape, device=batch["label"].device) < condition_dropout
            drop_order = drop_all | (torch.rand(batch["label"].shape, device=batch["label"].device) < condition_dropout)
            kwargs = {"label": torch.where(drop_all, -1, batch["label"]),
                      "order": torch.where(drop_order, -1, batch["type"])}
        return diffusion.training_loss(network, batch["x0"], batch["mask"], velocity_weight=velocity_weight,
                                       snr_gamma=snr_gamma, snr_floor=snr_floor, model_kwargs=kwargs)

    return loss


def classifier_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], diffusion: GaussianDiffusion
) -> torch.Tensor:
    """Cross-entropy of ``model`` on ``x_t = q_sample(x0, t)``, ``t`` uniform over ``diffusion``.

    ``batch`` holds ``x0`` (B, F, N, 3), ``mask`` (B, F) bool (optional), ``label`` (B,) long and
    ``type`` (B,) long (0 = N2E, 1 = E2N; needed by kind S). A negative label (or, for kind S,
    type) marks an unknown one: that sequence is left out of the average, and a batch without a
    known target gives a zero loss that still reaches every parameter (a data-parallel step needs
    one). ``t`` and the noise come from torch's global generator, as in
    ``GaussianDiffusion.training_loss``. Padded frames reach the model noised but masked, so they
    cannot affect the loss. ``model`` is a ``Classifier`` or a wrapper of one with ``.module``
    (``DistributedDataParallel``), called as given so that gradients synchronise. Bind
    ``diffusion`` with ``functools.partial`` to get a ``loss_fn(model, batch)``.
    """
    kind = getattr(model, "module", model).config.kind
    x0 = batch["x0"]
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device)
    logits = model(diffusion.q_sample(x0, t), diffusion.model_timesteps(t), mask=batch.get("mask"))
    labels = batch["label"].to(x0.device)
    types = batch.get("type")
    types = None if types is None else types.to(x0.device)
    known = labels >= 0
    if kind == "S" and types is not None:
        known &= types >= 0
    if not known.any():
        return logits.sum() * 0.0
    target = target_index(labels[known], None if types is None else types[known], kind)
    return nn.functional.cross_entropy(logits[known], target)


def text_guide_loss(
    model: nn.Module, batch: Mapping[str, torch.Tensor], diffusion: GaussianDiffusion
) -> torch.Tensor:
    """``mean(1 - cos(model(x_t, t), E(text)))`` on ``x_t = q_sample(x0, t)``, ``t`` uniform over
    ``diffusion`` (as ``classifier_loss``).

    ``batch`` holds ``x0`` (B, F, N, 3), ``mask`` (B, F) bool (optional) and ``text_embedding``
    (B, D), the embedding of each sequence's text. A zero embedding marks an unknown text: that
    sequence is left out of the average, and a batch without a known text gives a zero loss that
    still reaches every parameter (a data-parallel step needs one). ``t`` and the noise come from
    torch's global generator. ``model`` is a ``TextGuide`` or a wrapper of one with ``.module``
    (``DistributedDataParallel``), called as given. Bind ``diffusion`` with ``functools.partial``.
    """
    x0 = batch["x0"]
    t = torch.randint(0, diffusion.num_timesteps, (x0.shape[0],), device=x0.device)
    output = model(diffusion.q_sample(x0, t), diffusion.model_timesteps(t), mask=batch.get("mask"))
    target = batch["text_embedding"].to(device=output.device, dtype=output.dtype)
    known = target.norm(dim=-1) > 0
    if not known.any():
        return output.sum() * 0.0
    return (1.0 - text_similarity(output[known], target[known])).mean()


def ic_loss(model: IndependentClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the IC on a batch with ``x0`` (B, F, 68, 3) normalised landmarks, ``mask``
    (B, F) bool and ``label`` (B,) long class indices; a plain ``loss_fn(model, batch)`` for a
    generic training loop."""
    logits = model(batch["x0"], batch["mask"])
    return nn.functional.cross_entropy(logits, batch["label"].to(logits.device))


def train_model(
    kind: str,
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    train_config: TrainConfig,
    model_config: DenoiserConfig | ClassifierConfig | ICConfig | TextGuideConfig,
    num_timesteps: int = 2000,
    progress: bool = True,
    texts: str = "both",
    text_encoder: str | None = None,
    prediction: str = DENOISER_PREDICTION,
    velocity_weight: float | None = None,
    snr_gamma: float | None = None,
    snr_floor: float | None = None,
    condition_dropout: float = DENOISER_CONDITION_DROPOUT,
    init_from: str | os.PathLike | None = None,
) -> Trainer:
    """Train one of the package's models on a built dataset's train split (or resume ``out_dir``)
    and save it as a model directory of that ``kind``:

    * ``denoiser``: the unconditional noise model eps_theta (Eq. 8);
    * ``classifier``: the noise-aware classifier p_phi(y | x_t, t) that guides sampling (type I or S);
    * ``ic``: the independent LSTM classifier of the evaluation protocol (trained on clean data);
    * ``text_guide``: the noise-aware text guide BiT(x_t, t) of text control, trained towards the
      embeddings ``E(text)`` of each sequence's ``texts``: ``"raw"`` ("high smile"), ``"enriched"``
      ("from a neutral face to a high smile") or ``"both"`` (per step and sequence, one of the two
      at random). ``text_encoder`` (a name of ``face4d.text.get_text_encoder``) defaults to
      ``model_config.text_encoder``; the model config records the encoder used and its dimension,
      config.json's ``text`` entry the texts mode, and both are part of the run a resume must match.

    The diffusion models record ``diffusion.num_timesteps`` of the paper's linear schedule
    (``face4d.diffusion.DiffusionConfig``, with its default betas) in their config.json;
    ``face4d.checkpoint.write_bundle`` records the bundle's shared schedule once in its
    ``bundle.json``. The denoiser's ``prediction`` (``face4d.diffusion.PREDICTIONS``; the paper:
    ``epsilon``) is recorded in its config.json too, and ``velocity_weight`` (the weight of the loss on the
    predicted motion's frame-to-frame differences; the paper: 0), ``snr_gamma`` and ``snr_floor``
    (the weights of noise levels, ``GaussianDiffusion.training_loss``; the paper: uniform, 0) under
    ``loss``; unset, they are ours (``DENOISER_*``) for ``sample``/``v`` and the paper's for
    ``epsilon``. Other kinds ignore them. A conditional denoiser (``num_labels`` > 0) drops its
    condition for a share ``condition_dropout`` of the sequences (``diffusion_loss``).
    ``init_from`` starts a new run from another model directory's weights of the same kind,
    architecture and normaliser (a conditional denoiser from an unconditional one: its condition
    embeddings start at zero, so it starts as that model); it is recorded as part of the run.
    Returns the finished trainer (``step``, ``start_step``, ``model``).
    """
    if kind not in MODEL_KINDS:
        raise Face4DError(f"unknown model kind {kind!r}; known: {', '.join(MODEL_KINDS)}")
    config_cls, model_cls = MODEL_KINDS[kind]
    if not isinstance(model_config, config_cls):
        raise Face4DError(f"a {kind!r} model needs a {config_cls.__name__}, got a {type(model_config).__name__}")
    if kind == "text_guide" and texts not in TEXT_MODES:
        raise Face4DError(f"unknown texts mode {texts!r}; use one of {', '.join(TEXT_MODES)}")
    if kind != "text_guide" and text_encoder is not None:
        raise Face4DError("a text encoder is only used to train a text_guide")
    if kind != "denoiser":  # the guidance models see x_t only; they predict no part of it
        prediction, velocity_weight, snr_gamma, snr_floor = "epsilon", 0.0, 0.0, 0.0
    else:  # unset: ours for a sample- or v-predicting network, the paper's for an epsilon-predicting one
        ours = prediction != "epsilon"
        velocity_weight = (DENOISER_VELOCITY_WEIGHT if ours else 0.0) if velocity_weight is None else velocity_weight
        snr_gamma = (DENOISER_SNR_GAMMA if ours else 0.0) if snr_gamma is None else snr_gamma
        snr_floor = (DENOISER_SNR_FLOOR if ours else 0.0) if snr_floor is None else snr_floor
    if prediction not in PREDICTIONS:
        raise Face4DError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    if not snr_gamma >= 0:
        raise Face4DError(f"snr gamma must be >= 0 (0: none), got {snr_gamma}")
    if snr_gamma and not 0 <= snr_floor <= snr_gamma:
        raise Face4DError(f"snr floor must be in [0, snr gamma = {snr_gamma:g}], got {snr_floor}")
    if not velocity_weight >= 0:
        raise Face4DError(f"velocity weight must be >= 0, got {velocity_weight}")
    if velocity_weight and prediction == "epsilon":
        raise Face4DError("a velocity weight needs --prediction sample or v (with epsilon the predicted motion "
                          "carries the network's error times up to 2e4)")
    train = Dataset.load(data_dir).sequences("train")
    max_frames = getattr(model_config, "max_frames", None)
    if max_frames is not None and train.num_frames > max_frames:
        raise Face4DError(f"the training data has sequences of {train.num_frames} frames, more than the model's "
                          f"max_frames ({max_frames})")
    normalizer = LandmarkNormalizer.fit(train)
    schedule = DiffusionConfig(num_timesteps=num_timesteps, prediction=prediction)
    diffusion = schedule.build()
    extra: dict[str, Any] = {}
    alternatives = None
    if kind == "denoiser":
        conditional = bool(getattr(model_config, "num_labels", 0))
        if conditional and not 0.0 < condition_dropout < 1.0:
            raise Face4DError(f"condition dropout must be in (0, 1), got {condition_dropout}")
        loss = diffusion_loss(diffusion, velocity_weight, snr_gamma or None, snr_floor,
                              condition_dropout if conditional else None)
        extra["loss"] = {"velocity_weight": velocity_weight,
                         **({"snr_gamma": snr_gamma, "snr_floor": snr_floor} if snr_gamma else {}),
                         **({"condition_dropout": condition_dropout} if conditional else {})}
        low, high = normalizer.data_range(train)
        extra["x0_range"] = {"low": low.tolist(), "high": high.tolist()}
    elif kind == "classifier":
        loss = functools.partial(classifier_loss, diffusion=diffusion)
    elif kind == "text_guide":
        encoder = get_text_encoder(model_config.text_encoder if text_encoder is None else text_encoder)
        model_config = replace(model_config, text_encoder=encoder.name, embedding_dim=encoder.dim)
        alternatives = {"text_embedding": sequence_text_embeddings(train, encoder, texts)}
        extra["text"] = {"texts": texts}
        loss = functools.partial(text_guide_loss, diffusion=diffusion)
    else:
        model_config = replace(model_config, normalizer=normalizer)
        loss = ic_loss
    if kind != "ic":
        extra["diffusion"] = {"schedule": schedule.schedule, "num_timesteps": schedule.num_timesteps}
        if kind == "denoiser":
            extra["diffusion"]["prediction"] = prediction
    model = seeded(train_config.seed, lambda: model_cls(model_config))
    if init_from is not None:
        _initialise_from(model, kind, init_from, normalizer)
        extra["init_from"] = str(init_from)
    with run_lock(out_dir):
        trainer = Trainer(model, loss, train, normalizer, out_dir, train_config, kind, model_config.to_dict(),
                          extra=extra, progress=progress, alternatives=alternatives)
        trainer.fit()
    return trainer
