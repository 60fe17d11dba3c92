"""The noise-aware text guide ``BiT(x_t, t)`` of text control (Sec. 3.2, Alg. 2).

The label classifier's network with its softmax removed: the same class-token BiT
(``ClassTokenBiT``) reads one vector per noisy sequence, and a linear head projects it into the
space of a text encoder (``face4d.text``). As in MotionCLIP, it is trained to raise the cosine
similarity between that vector and the embedding ``E(c)`` of the sequence's text
(``face4d.training.text_guide_loss``), at every noise level of the schedule, since guidance differentiates it at
every reverse step. Guidance then raises ``cos(BiT(x, t-1), E(c))`` (``face4d.guidance.text_objective``).

The config records the text encoder (``text_encoder``, a name ``face4d.text.get_text_encoder``
takes) and its ``embedding_dim``: a guide is only meaningful with the encoder it was trained on,
which ``embed_texts`` enforces.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from face4d.errors import Face4DError
from face4d.models.layers import ClassTokenBiT, Pretrained, TransformerConfig, check_transformer_config
from face4d.text import DEFAULT_TEXT_ENCODER, TextEncoder, get_text_encoder


@dataclass
class TextGuideConfig(TransformerConfig):
    """Hyper-parameters of ``TextGuide``; round-trips through JSON with ``to_dict``/``from_dict``.

    ``text_encoder`` and ``embedding_dim`` name the embedding space of the output (the paper: CLIP,
    512-D; the default: all-MiniLM-L6-v2, 384-D). ``face4d.training.train_model`` fills both in
    from the encoder it trains with. The transformer's fields and defaults are ``TransformerConfig``'s,
    as the label classifier's.
    """

    embedding_dim: int = 384
    text_encoder: str = DEFAULT_TEXT_ENCODER

    def __post_init__(self) -> None:
        check_transformer_config(self, ("embedding_dim", "num_landmarks"))
        if not isinstance(self.text_encoder, str) or not self.text_encoder.strip():
            raise Face4DError(f"TextGuideConfig.text_encoder must name a text encoder, got {self.text_encoder!r}")


class TextGuide(Pretrained, ClassTokenBiT):
    """(B, F, N, 3) noisy landmarks, (B,) training timesteps, (B, F) validity -> (B, embedding_dim),
    a vector in the text encoder's space (not normalised; compare it by ``text_similarity``).

    Padded frames are excluded as attention keys: a sequence maps to the same vector alone or
    padded in a batch.
    """

    config: TextGuideConfig

    kind = "text_guide"

    def __init__(self, config: TextGuideConfig | None = None) -> None:
        config = config if config is not None else TextGuideConfig()
        super().__init__(config, config.embedding_dim)


def text_similarity(output: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """``cos(output, embedding)`` per sample (B,): ``output`` (B, D) from a ``TextGuide``,
    ``embedding`` (D,) (one text for every sample) or (B, D)."""
    if output.ndim != 2:
        raise Face4DError(f"expected guide outputs of shape (B, D), got {tuple(output.shape)}")
    embedding = embedding.to(device=output.device, dtype=output.dtype)
    if embedding.ndim == 1:
        embedding = embedding.expand_as(output)
    if embedding.shape != output.shape:
        raise Face4DError(f"text embeddings of shape {tuple(embedding.shape)} do not fit guide outputs of shape "
                          f"{tuple(output.shape)}; expected ({output.shape[1]},) or {tuple(output.shape)}")
    return nn.functional.cosine_similarity(output, embedding, dim=-1)


def embed_texts(guide: TextGuide, texts: Sequence[str] | str, encoder: TextEncoder | None = None) -> torch.Tensor:
    """Embeddings (N, D) of ``texts`` in ``guide``'s text space, on the guide's device.

    ``encoder`` defaults to the one the guide was trained with (``guide.config.text_encoder``); one
    given explicitly must be that one, with the same dimension, or the cosine would compare vectors
    of unrelated spaces.
    """
    config = guide.config
    if encoder is None:
        encoder = get_text_encoder(config.text_encoder)
    elif encoder.name != config.text_encoder:
        raise Face4DError(f"this text guide was trained with the text encoder {config.text_encoder!r}, "
                          f"not {encoder.name!r}")
    if encoder.dim != config.embedding_dim:
        raise Face4DError(f"text encoder {encoder.name!r} gives {encoder.dim}-D embeddings; this text guide "
                          f"expects {config.embedding_dim}-D")
    return encoder.encode(texts).to(next(guide.parameters()).device)
