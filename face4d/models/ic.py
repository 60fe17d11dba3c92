"""The independent classifier (IC) of §5: one LSTM layer followed by a linear layer (as in Motion3DGAN).

The IC is trained on real training sequences only and then frozen; generated sequences are scored
by how often it recognises the requested label (accuracy) and by the Fréchet distance between its
features of generated and real sequences (FID, ``face4d.eval.metrics``). It is order-insensitive
("type I"): it predicts the expression label whatever the sequence type (N2E or E2N).

The LSTM reads the frames of a sequence as packed sequences, so padded frames are never seen; its
hidden state after the last valid frame summarises the sequence and the linear layer maps it to
class logits. Class ``k`` is ``LABEL_NAMES[k]`` (``face4d.data.labels.label_index``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from face4d.data.labels import LABEL_NAMES
from face4d.data.normalize import LandmarkNormalizer
from face4d.errors import Face4DError
from face4d.models.layers import Pretrained


@dataclass
class ICConfig:
    """Hyper-parameters of ``IndependentClassifier``; round-trips through JSON with ``to_dict``/``from_dict``.

    ``num_classes`` defaults to the 18 labels of ``LABEL_NAMES``. ``hidden`` (128) is the LSTM's
    state size: a small classifier is enough to tell 18 expressions apart from 68 x 3 landmark
    motion, and a small one is fast to train and less prone to overfit the few real sequences it
    learns from. ``normalizer`` is the input normalisation the IC was trained with: stored with
    the classifier because every sequence it scores later must be normalised the same way.
    """

    num_landmarks: int = 68
    num_classes: int = len(LABEL_NAMES)
    hidden: int = 128
    normalizer: LandmarkNormalizer | None = None

    def __post_init__(self) -> None:
        for name in ("num_landmarks", "num_classes", "hidden"):
            if getattr(self, name) < 1:
                raise Face4DError(f"ICConfig.{name} must be >= 1, got {getattr(self, name)}")
        if isinstance(self.normalizer, dict):
            self.normalizer = LandmarkNormalizer.from_dict(self.normalizer)

    def to_dict(self) -> dict[str, Any]:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["normalizer"] = None if self.normalizer is None else self.normalizer.to_dict()
        return values

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ICConfig:
        """Build from ``to_dict``'s output; unknown keys are an error, so a checkpoint written by
        another version cannot load into the wrong architecture."""
        unknown = set(data) - {field.name for field in fields(cls)}
        if unknown:
            raise Face4DError(f"unknown ICConfig keys: {sorted(unknown)}")
        return cls(**data)


class IndependentClassifier(Pretrained, nn.Module):
    """(B, F, N, 3) normalised landmarks and (B, F) validity -> (B, num_classes) logits.

    Valid frames must come first in each row (padding at the end), as in ``LandmarkSequences``.
    """

    kind = "ic"

    def __init__(self, config: ICConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ICConfig()
        self.lstm = nn.LSTM(self.config.num_landmarks * 3, self.config.hidden, num_layers=1, batch_first=True)
        self.linear = nn.Linear(self.config.hidden, self.config.num_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of ``x`` (B, F, N, 3); ``mask`` (B, F) is True on valid frames (None: all valid)."""
        landmarks = self.config.num_landmarks
        if x.ndim != 4 or tuple(x.shape[2:]) != (landmarks, 3):
            raise Face4DError(f"expected x of shape (B, F, {landmarks}, 3), got {tuple(x.shape)}")
        batch, frames = x.shape[:2]
        if mask is None:
            lengths = torch.full((batch,), frames, dtype=torch.long)
        else:
            if mask.shape != (batch, frames):
                raise Face4DError(f"expected mask of shape ({batch}, {frames}), got {tuple(mask.shape)}")
            mask = mask.to(dtype=torch.bool)
            lengths = mask.sum(dim=1)
            # Packing keeps the first ``length`` frames; a mask with holes would be silently misread.
            prefix = torch.arange(frames, device=mask.device)[None] < lengths[:, None]
            if not torch.equal(mask, prefix):
                raise Face4DError("mask must mark a prefix of each sequence (valid frames first, padding last)")
            if (lengths == 0).any():
                raise Face4DError("every sequence needs at least one valid frame")
        packed = pack_padded_sequence(x.reshape(batch, frames, -1), lengths.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n (1, B, hidden): the state after each row's last valid frame
        return self.linear(h_n[0])

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The features FID is computed on: the linear layer's output, as in the paper (§5), so they
        are ``num_classes``-dimensional (18-D for the 18 labels) and equal to the logits."""
        return self(x, mask)
