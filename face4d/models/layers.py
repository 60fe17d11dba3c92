"""Pieces the transformer networks share (``Denoiser``, ``Classifier``, ``TextGuide``): their JSON
configs and the checks of their hyper-parameters, the timestep and frame-position embeddings, the
encoder stack, the input checks, the class-token transformer the guiding models are built on, and
``Pretrained``, the ``save_pretrained``/``from_pretrained`` pair of every model class.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Self

import torch
from torch import nn

from face4d.errors import Face4DError
from meshops.head import NUM_LANDMARKS

MAX_FRAMES = 512
"""Default longest sequence a landmark network accepts (``TransformerConfig.max_frames``): its
encodings are defined for any length, but one far beyond the training sequences is refused rather
than silently extrapolated."""


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


@dataclass
class TransformerConfig(JSONConfig):
    """The transformer fields of every landmark network's config (``DenoiserConfig``,
    ``ClassifierConfig``, ``TextGuideConfig``), which add their own. The defaults are the guiding
    models'; the denoiser is larger: telling expressions apart from a noisy sequence is an easier
    task than predicting all of its noise. ``max_frames`` is the longest sequence a model accepts."""

    num_landmarks: int = NUM_LANDMARKS
    d_model: int = 128
    layers: int = 3
    heads: int = 4
    ff: int = 256
    dropout: float = 0.1
    max_frames: int = MAX_FRAMES


class ClassTokenBiT(nn.Module):
    """The trunk of the guidance BiTs (Sec. 3.2): a bidirectional transformer over the frames of
    ``x_t`` that reads one vector per sequence from a learnable class token, as in BERT.

    Frames become tokens as in the denoiser (FE + PE); the class token is prepended, and the
    timestep embedding (TE) is added to every token, the class token included, so that its very
    first query already knows how noisy the frames it attends to are. ``pooled`` returns the class
    token's final hidden state (B, d_model) and ``forward`` a linear head's ``outputs`` values read
    from it: the label classifier's logits (``face4d.models.classifier``) and the text guide's
    vector (``face4d.models.text_guide``).

    ``config`` needs ``num_landmarks``, ``d_model``, ``layers``, ``heads``, ``ff``, ``dropout`` and
    ``max_frames``. Padded frames are excluded as attention keys, so neither their values nor their
    number change the output: a sequence gives the same vector alone or padded in a batch.
    """

    def __init__(self, config: Any, outputs: int) -> None:
        super().__init__()
        self.config = config
        d_model = config.d_model
        self.time_embedding = timestep_mlp(d_model)
        self.feature_embedding = nn.Linear(config.num_landmarks * 3, d_model)
        self.class_token = nn.Parameter(torch.empty(1, 1, d_model))
        nn.init.normal_(self.class_token, std=0.02)  # BERT's initialisation of its embeddings
        self.encoder = transformer_encoder(d_model, config.heads, config.ff, config.dropout, config.layers)
        self.head = nn.Linear(d_model, outputs)

    def forward(self, x: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The head's output (B, outputs) for ``x`` (B, F, N, 3) at timesteps ``t`` (B,) long; ``mask``
        (B, F) is True on valid frames (None: all valid)."""
        return self.head(self.pooled(x, t, mask))

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


class Pretrained:
    """``save_pretrained``/``from_pretrained`` (the names diffusers gives them) for a network with a
    ``config`` and a model ``kind`` of ``face4d.checkpoint.MODEL_KINDS``: a model directory holds
    its config.json and model.safetensors."""

    kind: str

    def save_pretrained(self, directory: str | os.PathLike, normalizer=None, extra: dict | None = None) -> Path:
        """Write this model as a model directory (``face4d.checkpoint.save_model``); ``normalizer``
        is the landmark normalisation it was trained with, ``extra`` more config.json entries."""
        from face4d.checkpoint import save_model

        return save_model(directory, self, self.kind, self.config.to_dict(), normalizer, extra)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, device: str | torch.device = "cpu") -> Self:
        """The model of a model directory of this kind, in eval mode on ``device``."""
        from face4d.checkpoint import load_pretrained

        model, _, _ = load_pretrained(directory, cls.kind, device)
        return model
