"""The noise approximator ``eps_theta(x_t, t)`` of Fig. 1: a bidirectional transformer (BiT).

Each frame ``L_f`` of ``x_t`` becomes one token: the sum of a feature embedding (FE, a linear map of
its 68 x 3 coordinates), a positional encoding of its frame index (PE) and the embedding of the
diffusion timestep (TE). A non-causal transformer encoder lets every frame see the whole sequence
(the paper's reason for a BiT: temporal context in both directions) and a linear head maps each
token back to a 68 x 3 noise estimate. The network knows nothing of the noise schedule: it sees
integer timesteps only, so one set of weights serves the full and the respaced samplers.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

import torch
from torch import nn

from face4d.errors import Face4DError


class JSONConfig:
    """``to_dict``/``from_dict`` for the dataclass configs of the networks, which are stored as JSON
    beside their weights."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """Build from ``to_dict``'s output; unknown keys are an error, not silently dropped, so a
        checkpoint written by another version cannot load into the wrong architecture."""
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise Face4DError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
        return cls(**data)


def check_transformer_config(config: Any, extra_positive: tuple[str, ...] = ()) -> None:
    """Reject transformer hyper-parameters that would fail later, deep inside ``torch.nn``: the
    fields ``d_model``, ``layers``, ``heads``, ``ff``, ``max_frames`` (and ``extra_positive``) must be
    >= 1, ``heads`` must divide ``d_model``, and ``dropout`` lie in [0, 1)."""
    for name in (*extra_positive, "d_model", "layers", "heads", "ff", "max_frames"):
        if getattr(config, name) < 1:
            raise Face4DError(f"{type(config).__name__}.{name} must be >= 1, got {getattr(config, name)}")
    if config.d_model % config.heads:
        raise Face4DError(f"d_model ({config.d_model}) must be divisible by heads ({config.heads})")
    if not 0.0 <= config.dropout < 1.0:
        raise Face4DError(f"dropout must be in [0, 1), got {config.dropout}")


SKIPS = ("frame", "mean", "none")
"""The denoiser's skip paths from ``x_t`` to its output (``Denoiser``)."""


@dataclass
class DenoiserConfig(JSONConfig):
    """Hyper-parameters of ``Denoiser``; round-trips through JSON with ``to_dict``/``from_dict``.

    ``max_frames`` is the longest sequence the model accepts. The sinusoidal encodings are defined
    for any length, but lengths far beyond those seen in training are unlikely to work, so the
    limit is explicit rather than silently extrapolated.
    """

    num_landmarks: int = 68
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    ff: int = 512
    dropout: float = 0.1
    max_frames: int = 512
    skip: str = "frame"

    def __post_init__(self) -> None:
        check_transformer_config(self, ("num_landmarks",))
        if self.skip not in SKIPS:
            raise Face4DError(f"unknown skip path {self.skip!r}; use one of {', '.join(SKIPS)}")


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoids of integer ``positions`` (N,) -> (N, dim), ``[cos | sin]`` halves.

    Used both for diffusion timesteps (TE) and frame indices (PE): defined for any position, so
    sequences of any length need no learned table.
    """
    half = dim // 2
    frequencies = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=positions.device) / half
    )
    angles = positions.float()[:, None] * frequencies[None]
    embedding = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    if dim % 2:
        embedding = nn.functional.pad(embedding, (0, 1))
    return embedding


def timestep_mlp(d_model: int) -> nn.Sequential:
    """The timestep embedding (TE) applied to ``sinusoidal_embedding(t, d_model)``: an MLP, so the
    network can shape how the noise level enters every token."""
    return nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))


def transformer_encoder(d_model: int, heads: int, ff: int, dropout: float, layers: int) -> nn.TransformerEncoder:
    """The bidirectional (non-causal) transformer encoder of the BiTs, with a final LayerNorm."""
    layer = nn.TransformerEncoderLayer(
        d_model,
        heads,
        ff,
        dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,  # pre-norm: stable training without learning-rate warm-up
    )
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


def check_sequence_inputs(
    x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None, num_landmarks: int, max_frames: int
) -> torch.Tensor | None:
    """Validate a BiT's inputs -- ``x`` (B, F, N, 3), ``t`` (B,), ``mask`` (B, F) or None -- with
    messages that name the problem, and return ``mask`` as bool on ``x``'s device.

    Every sequence needs a valid frame: attention over keys that are all masked yields NaN.
    """
    if x.ndim != 4 or tuple(x.shape[2:]) != (num_landmarks, 3):
        raise Face4DError(f"expected x of shape (B, F, {num_landmarks}, 3), got {tuple(x.shape)}")
    batch, frames = x.shape[:2]
    if not 1 <= frames <= max_frames:
        raise Face4DError(f"sequence length {frames} is outside [1, max_frames={max_frames}]")
    if t.shape != (batch,):
        raise Face4DError(f"expected t of shape ({batch},), got {tuple(t.shape)}")
    if mask is None:
        return None
    if mask.shape != (batch, frames):
        raise Face4DError(f"expected mask of shape ({batch}, {frames}), got {tuple(mask.shape)}")
    mask = mask.to(device=x.device, dtype=torch.bool)
    if not mask.any(dim=1).all():
        raise Face4DError("every sequence needs at least one valid frame")
    return mask


class ClassTokenBiT(nn.Module):
    """The trunk of the guidance BiTs (Sec. 3.2): a bidirectional transformer over the frames of
    ``x_t`` that reads one vector per sequence from a learnable class token, as in BERT.

    Frames become tokens as in the denoiser (FE + PE); the class token is prepended, and the
    timestep embedding (TE) is added to every token, the class token included, so that its very
    first query already knows how noisy the frames it attends to are. ``pooled`` returns the class
    token's final hidden state (B, d_model); subclasses put their head on it: the label classifier
    (``face4d.models.classifier``) and the text guide (``face4d.models.text_guide``).

    ``config`` needs ``num_landmarks``, ``d_model``, ``layers``, ``heads``, ``ff``, ``dropout`` and
    ``max_frames``. Padded frames are excluded as attention keys, so neither their values nor their
    number change the output: a sequence gives the same vector alone or padded in a batch.
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = config
        d_model = config.d_model
        self.time_embedding = timestep_mlp(d_model)
        self.feature_embedding = nn.Linear(config.num_landmarks * 3, d_model)
        self.class_token = nn.Parameter(torch.empty(1, 1, d_model))
        nn.init.normal_(self.class_token, std=0.02)  # BERT's initialisation of its embeddings
        self.encoder = transformer_encoder(d_model, config.heads, config.ff, config.dropout, config.layers)

    def pooled(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The class token's hidden state (B, d_model) for ``x`` (B, F, N, 3) at training timesteps
        ``t`` (B,) long; ``mask`` (B, F) is True on valid frames (None: all valid)."""
        mask = check_sequence_inputs(x, t, mask, self.config.num_landmarks, self.config.max_frames)
        batch, frames = x.shape[:2]
        d_model = self.config.d_model
        positions = torch.arange(frames, device=x.device)
        frame_tokens = self.feature_embedding(x.reshape(batch, frames, -1)) + sinusoidal_embedding(
            positions, d_model
        )[None]
        tokens = torch.cat([self.class_token.expand(batch, -1, -1), frame_tokens], dim=1)
        tokens = tokens + self.time_embedding(sinusoidal_embedding(t, d_model))[:, None]
        padding = None
        if mask is not None:
            padding = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=x.device), ~mask], dim=1)
        hidden = self.encoder(tokens, src_key_padding_mask=padding)
        return hidden[:, 0]


class Denoiser(nn.Module):
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
    """

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

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise in ``x`` (B, F, N, 3) at timesteps ``t`` (B,) long; ``mask`` (B, F) is
        True on valid frames (None: all valid)."""
        mask = check_sequence_inputs(x, t, mask, self.config.num_landmarks, self.config.max_frames)
        batch, frames = x.shape[:2]
        d_model = self.config.d_model
        positions = torch.arange(frames, device=x.device)
        frames_flat = x.reshape(batch, frames, -1)
        time = self.time_embedding(sinusoidal_embedding(t, d_model))
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
