"""Landmark-guided mesh decoders (§3.3, Eq. 11): neutral mesh M + landmark displacements dL_f -> dM_f.

``SpiralDecoder`` is the paper's encoder-decoder:

* encoder: five spiral convolutions with mesh pooling between them, over the neutral mesh ``M``,
  give per-vertex features ``F_e`` of the coarsest level (70 vertices on the ICT head);
* cross-attention (Eq. 11): the query ``FC(dL_f)`` attends over ``F_e`` as keys and values,
  ``softmax(FC(dL_f) F_e^T / sqrt(d)) F_e`` (split into ``heads`` heads); a linear layer maps the
  result to the identity-aware ``z_id``, and ``z = lambda_theta * z_id + dL_f`` with a learnable
  scalar ``lambda_theta``;
* decoder (as Sparse2Dense, S2D): a linear layer and five spiral convolutions with mesh unpooling
  give ``dM_f``; ``M_f = M + dM_f``.

``identity`` selects the variant: ``"attention"`` (the paper), ``"pooled"`` (the same encoder
without attention: ``z_id`` is a linear map of the mean of ``F_e``, one code per mesh) and
``"none"`` (S2D: ``z = dL_f``, the neutral mesh is not seen at all). ``MLPDecoder`` is the
linear/MLP baseline of Table 5 ([10]: linear, non-linearity, linear, fed the concatenation of a
linear code of the neutral mesh with ``dL_f``).

Two choices beyond the paper, both for every variant:

* ``zero_at_rest`` (default on): the decoder's output for a frame is ``D(z(dL_f)) - D(z(0))``, one
  extra rest frame per mesh, so a frame whose landmarks do not move leaves the mesh exactly as it
  is, whatever the weights. It costs one decoded frame per sequence.
* Every unpooling is fused with the spiral convolution after it (``meshops.spiralconv.SpiralConv``):
  both are linear, so ``SpiralConv(Up x)`` is one sparse matrix applied to ``x W`` at the coarser level --
  exactly the same function at a quarter of the multiply-adds, with no gather over the finer mesh.
  This keeps a 40-frame sequence on the 14k-vertex head well under half a second on a CPU.

Coordinates are in the head model's units (centimetres); the ``*_scale`` fields bring inputs and
outputs to about unit spread. Spirals and pooling matrices are not stored with the weights: they
are rebuilt from the template through the ``meshops`` caches, and the config keeps the topology's
and the hierarchy's fingerprints to refuse another mesh.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from face4d.data.interchange import NUM_LANDMARKS
from face4d.decoder.topology import DecoderTopology
from face4d.errors import Face4DError
from face4d.models.layers import JSONConfig
from meshops.cache import content_key
from meshops.hierarchy import MeshHierarchy, cached_hierarchy
from meshops.spiral import cached_spiral_indices
from meshops.spiralconv import SparseOperator, SpiralConv

IDENTITY_MODES = ("attention", "pooled", "none")


def _positive(config: Any, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise Face4DError(f"{type(config).__name__}.{name} must be positive, got {value}")


@dataclass
class DecoderConfig(JSONConfig):
    """What every decoder's config holds: the scales that bring landmark displacements, the
    identity input and the output displacements to about unit spread, ``zero_at_rest``, the number
    of landmarks, and the topology fingerprint (filled in when the model is first built; a stored
    one must match the mesh)."""

    landmark_scale: float = 0.25
    identity_scale: float = 0.4
    displacement_scale: float = 0.25
    zero_at_rest: bool = True
    num_landmarks: int = NUM_LANDMARKS
    topology: dict | None = None

    def __post_init__(self) -> None:
        _positive(self, "landmark_scale", "identity_scale", "displacement_scale", "num_landmarks")


@dataclass
class SpiralDecoderConfig(DecoderConfig):
    """Hyper-parameters of ``SpiralDecoder``, stored as JSON beside its weights.

    ``encoder_channels`` has one entry per hierarchy level (fine to coarse: one spiral layer each,
    pooling between them); ``decoder_channels`` one per level above the finest (coarse to fine),
    the final layer to xyz at full resolution being implied. ``topology`` and ``hierarchy`` are
    fingerprints filled in when the model is first built; a stored one must match the mesh.
    """

    identity: str = "attention"
    encoder_channels: tuple[int, ...] = (8, 16, 32, 64, 64)
    decoder_channels: tuple[int, ...] = (64, 64, 32, 16)
    spiral_length: int = 9
    dilation: int = 1
    hierarchy_factors: tuple[float, ...] = (4.0, 4.0, 4.0, 4.0)
    heads: int = 4
    lambda_init: float = 0.1
    template_scale: float = 5.0
    hierarchy: dict | None = None

    def __post_init__(self) -> None:
        self.encoder_channels = tuple(int(c) for c in self.encoder_channels)
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.hierarchy_factors = tuple(float(f) for f in self.hierarchy_factors)
        if self.identity not in IDENTITY_MODES:
            raise Face4DError(f"unknown identity mode {self.identity!r}; expected one of {IDENTITY_MODES}")
        levels = len(self.hierarchy_factors) + 1
        if len(self.hierarchy_factors) < 1 or any(f <= 1 for f in self.hierarchy_factors):
            raise Face4DError(f"hierarchy_factors must be one or more factors > 1, got {self.hierarchy_factors}")
        if len(self.encoder_channels) != levels or len(self.decoder_channels) != levels - 1:
            raise Face4DError(f"{levels} hierarchy levels need {levels} encoder channels and {levels - 1} decoder "
                              f"channels, got {len(self.encoder_channels)} and {len(self.decoder_channels)}")
        if min(self.encoder_channels + self.decoder_channels) < 1:
            raise Face4DError("every channel count must be >= 1")
        super().__post_init__()
        _positive(self, "spiral_length", "dilation", "heads", "template_scale")
        if self.identity == "attention" and self.encoder_channels[-1] % self.heads:
            raise Face4DError(f"the last encoder channel count ({self.encoder_channels[-1]}) must be divisible by "
                              f"heads ({self.heads})")


@dataclass
class MLPDecoderConfig(DecoderConfig):
    """Hyper-parameters of ``MLPDecoder`` (the linear/MLP baseline): ``hidden`` units and an
    ``identity_latent``-sized code of the neutral mesh (0: none)."""

    hidden: int = 128
    identity_latent: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "hidden")
        if self.identity_latent < 0:
            raise Face4DError(f"identity_latent must be >= 0, got {self.identity_latent}")


def hierarchy_fingerprint(hierarchy: MeshHierarchy) -> dict[str, Any]:
    return {"levels": [int(n) for n in hierarchy.num_vertices],
            "sha256": content_key("face4d-decoder-hierarchy", *hierarchy.faces)}


def _flat(delta_landmarks: torch.Tensor, num_landmarks: int) -> torch.Tensor:
    if delta_landmarks.shape[-2:] != (num_landmarks, 3):
        raise Face4DError(f"landmark displacements must be (..., {num_landmarks}, 3), got "
                          f"{tuple(delta_landmarks.shape)}")
    return delta_landmarks.reshape(*delta_landmarks.shape[:-2], num_landmarks * 3)


class _Decoder(nn.Module):
    """What the two decoders share: the topology check, input checks and the rest-frame trick."""

    config: Any
    kind: str

    def __init__(self, topology: DecoderTopology):
        super().__init__()
        self.topology = topology
        self.register_buffer("template", torch.from_numpy(topology.template.copy()), persistent=False)

    def _check_inputs(self, neutral: torch.Tensor, delta_landmarks: torch.Tensor) -> None:
        v = self.topology.num_vertices
        if neutral.ndim != 3 or tuple(neutral.shape[1:]) != (v, 3):
            raise Face4DError(f"neutral meshes must be (G, {v}, 3), got {tuple(neutral.shape)}")
        n = self.config.num_landmarks
        if delta_landmarks.ndim != 4 or delta_landmarks.shape[0] != neutral.shape[0] \
                or tuple(delta_landmarks.shape[2:]) != (n, 3):
            raise Face4DError(f"landmark displacements must be (G={neutral.shape[0]}, K, {n}, 3), "
                              f"got {tuple(delta_landmarks.shape)}")

    def forward(self, neutral: torch.Tensor, delta_landmarks: torch.Tensor) -> torch.Tensor:
        """Displacements ``dM`` (G, K, V, 3) of K frames of each of G neutral meshes (G, V, 3),
        from their landmark displacements ``dL`` (G, K, 68, 3); all in centimetres."""
        self._check_inputs(neutral, delta_landmarks)
        return self.decode(self.encode(neutral), delta_landmarks)

    def decode(self, context: Any, delta_landmarks: torch.Tensor) -> torch.Tensor:
        """``forward`` with the neutral meshes already encoded (``encode``), so a sequence's mesh is
        encoded once and decoded in chunks of frames."""
        if self.config.zero_at_rest:
            rest = delta_landmarks.new_zeros(delta_landmarks[:, :1].shape)
            out = self._decode(context, torch.cat([delta_landmarks, rest], dim=1))
            return out[:, :-1] - out[:, -1:]
        return self._decode(context, delta_landmarks)

    def encode(self, neutral: torch.Tensor) -> Any:
        raise NotImplementedError

    def _decode(self, context: Any, delta_landmarks: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# ------------------------------------------------------------------------------------ models

class SpiralDecoder(_Decoder):
    """The paper's landmark-guided encoder-decoder; see the module docstring."""

    kind = "spiral_decoder"

    def __init__(self, config: SpiralDecoderConfig, topology: DecoderTopology, cache_dir=None):
        super().__init__(topology)
        topology.check_fingerprint(config.topology, "decoder config")
        hierarchy = cached_hierarchy(topology.template, topology.faces, config.hierarchy_factors, cache_dir=cache_dir)
        fingerprint = hierarchy_fingerprint(hierarchy)
        if config.hierarchy is not None and config.hierarchy != fingerprint:
            if list(config.hierarchy.get("levels", [])) != fingerprint["levels"]:
                raise Face4DError(f"the mesh hierarchy rebuilt here has levels {fingerprint['levels']} vertices, the "
                                  f"decoder was trained with {config.hierarchy.get('levels')} (another "
                                  f"fast-simplification version?); retrain it or install the version it used")
            warnings.warn("the mesh hierarchy rebuilt here differs from the one the decoder was trained with "
                          "(another fast-simplification version?); its output may be degraded", stacklevel=2)
        self.config = replace(config, topology=topology.fingerprint, hierarchy=config.hierarchy or fingerprint)
        c = self.config
        sizes = hierarchy.num_vertices
        levels = len(sizes)
        spirals = [cached_spiral_indices(f, len(v), c.spiral_length, c.dilation, cache_dir=cache_dir)
                   for v, f in zip(hierarchy.vertices, hierarchy.faces)]
        self.num_coarse = sizes[-1]
        self.act = nn.ELU()

        template = torch.from_numpy(topology.template.copy())
        self.register_buffer("template_features", (template - template.mean(0)) / c.template_scale, persistent=False)
        if c.identity != "none":
            channels = (6, *c.encoder_channels)
            self.encoder = nn.ModuleList(SpiralConv(channels[i], channels[i + 1], spirals[i]) for i in range(levels))
            self.down = nn.ModuleList(SparseOperator(m) for m in hierarchy.down)
            d = c.encoder_channels[-1]
            if c.identity == "attention":
                self.query = nn.Linear(c.num_landmarks * 3, d)
            self.to_latent = nn.Linear(d, c.num_landmarks * 3)
            self.lam = nn.Parameter(torch.tensor(float(c.lambda_init)))
        dec = c.decoder_channels
        self.from_latent = nn.Linear(c.num_landmarks * 3, sizes[-1] * dec[0])
        # A spiral layer at the coarsest level, then one per finer level, each fused with the
        # unpooling before it; the last one, to xyz at full resolution, has no activation.
        self.decoder = nn.ModuleList(
            [SpiralConv(dec[0], dec[0], spirals[-1])]
            + [SpiralConv(dec[i - 1], dec[i], spirals[levels - 1 - i], hierarchy.up[levels - 1 - i])
               for i in range(1, levels - 1)])
        self.last = SpiralConv(dec[-1], 3, spirals[0], hierarchy.up[0])

    def encode(self, neutral: torch.Tensor) -> torch.Tensor | None:
        """Features ``F_e`` (G, V_coarse, d) of the neutral meshes (G, V, 3); None for ``identity="none"``."""
        c = self.config
        if c.identity == "none":
            return None
        x = torch.cat([(neutral - self.template) / c.identity_scale,
                       self.template_features.to(neutral.dtype).expand_as(neutral)], dim=-1)
        x = x.permute(1, 2, 0).contiguous()  # (V, 6, G)
        for i, conv in enumerate(self.encoder):
            x = self.act(conv(x))
            if i < len(self.down):
                x = self.down[i](x)
        return x.permute(2, 0, 1)  # (G, V_coarse, d)

    def latent(self, features: torch.Tensor | None, delta_landmarks: torch.Tensor) -> torch.Tensor:
        """``z = lambda * z_id + dL`` (G, K, 204), in the scaled landmark units."""
        c = self.config
        z = _flat(delta_landmarks, c.num_landmarks) / c.landmark_scale
        if c.identity == "none":
            return z
        if c.identity == "pooled":
            z_id = self.to_latent(features.mean(dim=1))[:, None]
        else:
            g, k = z.shape[:2]
            h, d = c.heads, features.shape[-1]
            q = self.query(z).view(g, k, h, d // h)
            kv = features.view(g, features.shape[1], h, d // h)
            attention = torch.softmax(torch.einsum("gkhd,gvhd->gkhv", q, kv) / math.sqrt(d // h), dim=-1)
            z_id = self.to_latent(torch.einsum("gkhv,gvhd->gkhd", attention, kv).reshape(g, k, d))
        return self.lam * z_id + z

    def _decode(self, features: torch.Tensor | None, delta_landmarks: torch.Tensor) -> torch.Tensor:
        c = self.config
        z = self.latent(features, delta_landmarks)
        g, k = z.shape[:2]
        x = self.from_latent(z).view(g * k, self.num_coarse, c.decoder_channels[0]).permute(1, 2, 0).contiguous()
        for conv in self.decoder:
            x = self.act(conv(x))
        x = self.last(x) * c.displacement_scale  # (V, 3, G * K)
        return x.permute(2, 0, 1).reshape(g, k, -1, 3)


class MLPDecoder(_Decoder):
    """Linear/MLP baseline: ``dM = Linear(ELU(Linear([E(M), dL])))`` with ``E`` a linear code of
    the neutral mesh's offset from the template ([10], adapted as in the paper's §6)."""

    kind = "mlp_decoder"

    def __init__(self, config: MLPDecoderConfig, topology: DecoderTopology, cache_dir=None):
        super().__init__(topology)
        topology.check_fingerprint(config.topology, "decoder config")
        self.config = c = replace(config, topology=topology.fingerprint)
        v = topology.num_vertices
        self.encoder = nn.Linear(v * 3, c.identity_latent) if c.identity_latent else None
        self.hidden = nn.Linear(c.num_landmarks * 3 + c.identity_latent, c.hidden)
        self.out = nn.Linear(c.hidden, v * 3)
        self.act = nn.ELU()

    def encode(self, neutral: torch.Tensor) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        return self.encoder(((neutral - self.template) / self.config.identity_scale).flatten(1))

    def _decode(self, code: torch.Tensor | None, delta_landmarks: torch.Tensor) -> torch.Tensor:
        c = self.config
        z = _flat(delta_landmarks, c.num_landmarks) / c.landmark_scale
        if code is not None:
            z = torch.cat([z, code[:, None].expand(*z.shape[:2], code.shape[-1])], dim=-1)
        out = self.out(self.act(self.hidden(z))) * c.displacement_scale
        return out.view(*z.shape[:2], self.topology.num_vertices, 3)


DECODER_KINDS: dict[str, tuple[type, type]] = {
    SpiralDecoder.kind: (SpiralDecoderConfig, SpiralDecoder),
    MLPDecoder.kind: (MLPDecoderConfig, MLPDecoder),
}

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "full": (SpiralDecoder.kind, {"identity": "attention"}),
    "pooled": (SpiralDecoder.kind, {"identity": "pooled"}),
    "no_attention": (SpiralDecoder.kind, {"identity": "none"}),
    "mlp": (MLPDecoder.kind, {}),
}
"""``face4d train decoder --variant``: model kind and config overrides. ``no_attention`` is the
S2D-like decoder (landmark displacements only); ``pooled`` keeps the mesh encoder without attention."""


def make_config(variant: str, **overrides: Any) -> SpiralDecoderConfig | MLPDecoderConfig:
    """The config of a ``VARIANTS`` entry with ``overrides`` applied."""
    if variant not in VARIANTS:
        raise Face4DError(f"unknown decoder variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    kind, fields = VARIANTS[variant]
    return DECODER_KINDS[kind][0](**{**fields, **overrides})


def build_decoder(config: SpiralDecoderConfig | MLPDecoderConfig, topology: DecoderTopology,
                  cache_dir=None) -> _Decoder:
    for kind, (config_cls, model_cls) in DECODER_KINDS.items():
        if isinstance(config, config_cls):
            return model_cls(config, topology, cache_dir=cache_dir)
    raise Face4DError(f"not a decoder config: {type(config).__name__}")


def kind_of(config: SpiralDecoderConfig | MLPDecoderConfig) -> str:
    return next(kind for kind, (config_cls, _) in DECODER_KINDS.items() if isinstance(config, config_cls))


__all__ = ["DECODER_KINDS", "IDENTITY_MODES", "MLPDecoder", "MLPDecoderConfig", "SpiralDecoder", "SpiralDecoderConfig",
           "VARIANTS", "build_decoder", "make_config"]
