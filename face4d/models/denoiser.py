"""The noise approximator ``eps_theta(x_t, t)`` of Fig. 1: a bidirectional transformer (BiT).

Each frame ``L_f`` of ``x_t`` becomes one token: the sum of a feature embedding (FE, a linear map of
its 68 x 3 coordinates), a positional encoding of its frame index (PE) and the embedding of the
diffusion timestep (TE). A non-causal transformer encoder lets every frame see the whole sequence
(the paper's reason for a BiT: temporal context in both directions) and a linear head maps each
token back to a 68 x 3 noise estimate. The network knows nothing of the noise schedule: it sees
integer timesteps only, so one set of weights serves the full and the respaced samplers.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from face4d.data.interchange import SEQUENCE_TYPES
from face4d.errors import Face4DError
from face4d.models.layers import Pretrained, TransformerConfig, check_sequence_inputs, check_transformer_config, \
    sinusoidal_embedding, timestep_mlp, transformer_encoder
from face4d.settings import SKIPS

CONDITION_EMBEDDINGS = ("label_embedding", "order_embedding")
"""The modules a conditional ``Denoiser`` has beyond an unconditional one of the same config."""


@dataclass
class DenoiserConfig(TransformerConfig):
    """Hyper-parameters of ``Denoiser``; round-trips through JSON with ``to_dict``/``from_dict``.

    ``max_frames`` is the longest sequence the model accepts. The sinusoidal encodings are defined
    for any length, but lengths far beyond those seen in training are unlikely to work, so the
    limit is explicit rather than silently extrapolated.
    """

    d_model: int = 256
    layers: int = 4
    ff: int = 512
    skip: str = "frame"
    num_labels: int = 0

    def __post_init__(self) -> None:
        check_transformer_config(self, ("num_landmarks",))
        if self.skip not in SKIPS:
            raise Face4DError(f"unknown skip path {self.skip!r}; use one of {', '.join(SKIPS)}")
        if self.num_labels < 0:
            raise Face4DError(f"num_labels must be >= 0 (0: unconditional), got {self.num_labels}")


class Denoiser(Pretrained, nn.Module):
    """The network of the DDPM: (B, F, N, 3) noisy landmarks, (B,) timesteps, (B, F) validity ->
    (B, F, N, 3), the noise, the clean sequence or ``v`` as the diffusion's ``prediction`` says.

    Padded frames are excluded as attention keys (``src_key_padding_mask``), so they cannot
    influence valid frames, and their outputs are set to zero.

    A frame's token (``d_model`` wide) is narrower than the frame (``3N`` = 204 coordinates), so
    the output, a linear map of the tokens, cannot carry a whole frame. ``config.skip`` adds a path
    around that bottleneck, with per-coordinate gains ``g(t)`` that are a linear map of the timestep
    embedding (an EDM-style ``c_skip``, Karras et al. 2022):

    * ``frame``: ``g(t) * x_t`` per frame. What an epsilon-predicting network needs: without it its
      error has a floor (~(204 - d_model) / 204 of the noise's variance), which the sampler
      amplifies by ``1 / sqrt(alpha_bar_t)`` -- over 10^4 at T = 2000 -- into exploding samples.
      But it also hands every frame's own noise to the output, where it stays as a tremble.
    * ``mean``: ``g(t)`` times the sequence's mean frame. For a network predicting the clean
      sequence: the mean carries the person (most of a frame's 204 coordinates) with its noise
      averaged over the frames and, being the same for every frame, no frame-to-frame noise; the
      tokens only model the motion, which is low-dimensional.
    * ``none``: the tokens alone; the person's shape is then limited by their width.

    With ``config.num_labels`` > 0 the network also takes a label and an order (``N2E``/``E2N``),
    each embedded and added to the timestep embedding; index -1 stands for "not given". Trained
    with both dropped for some sequences and the order alone for others, one network is the
    unconditional model (text control, filling), the label model with a free order, and the label
    and order model; ``conditioned`` makes the classifier-free-guided noise model of a batch. Why a
    label input at all, when the paper steers an unconditional model: at high noise levels an
    unconditional network's clean-sequence estimate is the mean over all expressions, which cancel
    out towards the neutral face, and the guided classifier has to restore the amplitude; it does so
    unevenly across labels (over-acting some twice, under-acting others), which the motion
    benchmark's per-label rows measure (docs/results.md).
    """

    kind = "denoiser"

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else DenoiserConfig()
        d_model, frame_size = self.config.d_model, self.config.num_landmarks * 3
        self.time_embedding = timestep_mlp(d_model)
        self.skip_gain = nn.Linear(d_model, frame_size) if self.config.skip != "none" else None
        self.feature_embedding = nn.Linear(frame_size, d_model)
        self.encoder = transformer_encoder(
            d_model, self.config.heads, self.config.ff, self.config.dropout, self.config.layers
        )
        self.output = nn.Linear(d_model, frame_size)
        if self.config.num_labels:
            self.label_embedding = nn.Embedding(self.config.num_labels + 1, d_model)
            self.order_embedding = nn.Embedding(len(SEQUENCE_TYPES) + 1, d_model)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                label: torch.Tensor | None = None, order: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise in ``x`` (B, F, N, 3) at timesteps ``t`` (B,) long; ``mask`` (B, F) is
        True on valid frames (None: all valid). A conditional network also reads ``label`` and
        ``order`` (B,) long (label and ``SEQUENCE_TYPES`` indices, -1 or None: not given)."""
        mask = check_sequence_inputs(x, t, mask, self.config.num_landmarks, self.config.max_frames)
        batch, frames = x.shape[:2]
        d_model = self.config.d_model
        positions = torch.arange(frames, device=x.device)
        frames_flat = x.reshape(batch, frames, -1)
        time = self.time_embedding(sinusoidal_embedding(t, d_model))
        if self.config.num_labels:
            time = time + self.label_embedding(_index(label, batch, self.config.num_labels, x.device)) \
                + self.order_embedding(_index(order, batch, len(SEQUENCE_TYPES), x.device))
        elif label is not None or order is not None:
            raise Face4DError("this denoiser is unconditional: it takes no label or order")
        tokens = (
            self.feature_embedding(frames_flat)
            + sinusoidal_embedding(positions, d_model)[None]
            + time[:, None]
        )
        hidden = self.encoder(tokens, src_key_padding_mask=None if mask is None else ~mask)
        output = self.output(hidden)
        if self.config.skip == "frame":
            output = output + self.skip_gain(time)[:, None] * frames_flat
        elif self.config.skip == "mean":
            weights = torch.ones(batch, frames, 1, device=x.device) if mask is None else mask[..., None].to(x.dtype)
            mean = (frames_flat * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True)
            output = output + self.skip_gain(time)[:, None] * mean
        output = output.view_as(x)
        if mask is not None:
            output = torch.where(mask[:, :, None, None], output, torch.zeros_like(output))
        return output

    def conditioned(self, label: torch.Tensor, order: torch.Tensor | None = None, scale: float = 1.0) -> nn.Module:
        """The noise model ``model(x_t, t, mask)`` of a batch asking for ``label`` (and ``order``), with
        classifier-free guidance ``uncond + scale * (cond - uncond)`` (Ho & Salimans 2022): ``scale`` 1
        is the conditional model itself (one pass), larger exaggerates the condition."""
        if not self.config.num_labels:
            raise Face4DError("this denoiser is unconditional; steer it with the classifiers instead")
        return _Conditioned(self, label, order, scale)


class _Conditioned(nn.Module):
    """``Denoiser.conditioned``'s noise model: a module, so that samplers find its device."""

    def __init__(self, denoiser: Denoiser, label: torch.Tensor, order: torch.Tensor | None, scale: float) -> None:
        super().__init__()
        self.denoiser, self.label, self.order, self.scale = denoiser, label, order, scale

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        conditional = self.denoiser(x, t, mask, label=self.label, order=self.order)
        if self.scale == 1.0:
            return conditional
        unconditional = self.denoiser(x, t, mask)
        return unconditional + self.scale * (conditional - unconditional)


def _index(values: torch.Tensor | None, batch: int, count: int, device: torch.device) -> torch.Tensor:
    """Embedding indices of ``values`` (B,) with -1 (and None for the whole batch) as ``count``, "not given"."""
    if values is None:
        return torch.full((batch,), count, dtype=torch.long, device=device)
    values = values.to(device=device, dtype=torch.long)
    if values.shape != (batch,) or bool(((values < -1) | (values >= count)).any()):
        raise Face4DError(f"condition indices must be ({batch},) in [-1, {count}), got {values.tolist()}")
    return torch.where(values < 0, torch.full_like(values, count), values)
