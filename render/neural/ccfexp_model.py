"""CCFExp (Gao & Xia, *Cycle Cross-Fusion Expression Generative Model*): an identity image plus target
landmarks gives that person with that expression.

The paper's three condition encoders, adapted to what a landmark animation gives at inference time
(an identity image and 68 target points, no image of the target expression):

- identity ``E_ID``: a CNN on the identity image; its grid of features are tokens (the paper's
  7x7 IR-50 map) and its pooled vector ``f_ID`` joins the time-step embedding (the paper's final
  feature "incorporated with timesteps", here diffusers' projection class embedding);
- expression deviation ``E_Exp = Conv[F_face(target) - F_id(identity)]`` (DLN's deviation): two CNNs
  of the same structure, on the landmark heat maps of the target and of the identity's own
  landmarks, so that the tokens hold the expression and not the face's shape;
- landmarks ``E_LM``: one token per target landmark (its normalised position and index).

Cyclic cross-fusion: identity queries attend to expression keys/values, expression to landmarks,
landmarks to identity; the three results (added to their queries) are concatenated into the
cross-attention context of diffusers' ``UNet2DConditionModel``. Ablations (the paper's table):
``landmarks=False`` drops the landmark tokens, the landmark maps and the landmark loss (fusion is then
identity <-> expression); ``cross_fusion=False`` concatenates the raw tokens. Not in the paper:
``landmark_input`` also concatenates the target's heat maps to the noisy image (spatial conditioning,
which a 64² model needs to place features to the pixel), ``warp_input`` the identity image warped to
the target landmarks (``render.neural.warp``), and ``prediction="sample"`` has the UNet predict the
clean image instead of the noise (the identity and landmark losses then read its output directly).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from render.neural.data import REGIONS, NeuralInputError, check_image, check_landmarks, landmark_maps, to_tensor
from render.neural.evaluators import ConvStack
from render.neural.io import load_model, save_model
from render.neural.precision import channels_last, sampling_context
from render.neural.warp import tps_warp

KIND = "ccfexp"


@dataclass
class CCFExpConfig:
    size: int = 64
    channels: tuple[int, ...] = (32, 64, 64)
    """UNet block widths; the lowest level (and the mid block) carries the attention."""
    layers_per_block: int = 1
    dim: int = 64
    """Token width: the cross-attention context and the fused features."""
    heads: int = 4
    encoder_widths: tuple[int, ...] = (32, 48, 64)
    """The identity and expression CNNs; the token grid is size / 2^len."""
    landmarks: bool = True
    cross_fusion: bool = True
    landmark_input: bool = True
    warp_input: bool = False
    """Concatenate the identity image warped to the target landmarks (needs ``landmarks``)."""
    prediction: str = "epsilon"
    """What the UNet predicts: "epsilon" (the paper) or "sample" (the clean image)."""
    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"


def unet_blocks(levels: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Cross-attention at the lowest level only: self-attention over the 32² grid cost two thirds of a
    64² step on the CPU, and the target's landmark maps already place features at full resolution."""
    down = ("DownBlock2D",) * (levels - 1) + ("CrossAttnDownBlock2D",)
    up = ("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1)
    return down, up


class CCFExp(nn.Module):
    def __init__(self, config: CCFExpConfig):
        from diffusers import UNet2DConditionModel

        super().__init__()
        self.config = c = config
        if c.prediction not in ("epsilon", "sample"):
            raise NeuralInputError(f"prediction must be 'epsilon' or 'sample', got {c.prediction!r}")
        if c.warp_input and not c.landmarks:
            raise NeuralInputError("the warped identity image (--warp-input) needs the landmarks (not --no-landmarks)")
        grid = (c.size // 2 ** len(c.encoder_widths)) ** 2
        self.identity_cnn = ConvStack(3, c.encoder_widths)
        self.identity_tokens = nn.Linear(c.encoder_widths[-1], c.dim)
        self.identity_global = nn.Linear(c.encoder_widths[-1], c.dim)
        self.identity_position = nn.Parameter(torch.zeros(1, grid + 1, c.dim))
        self.face_cnn = ConvStack(len(REGIONS), c.encoder_widths)
        self.neutral_cnn = ConvStack(len(REGIONS), c.encoder_widths)
        self.deviation = nn.Conv2d(c.encoder_widths[-1], c.dim, 1)
        self.expression_position = nn.Parameter(torch.zeros(1, grid, c.dim))
        if c.landmarks:
            self.landmark_mlp = nn.Sequential(nn.Linear(2, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
            self.landmark_index = nn.Parameter(torch.zeros(1, 68, c.dim))
        if c.cross_fusion:
            streams = 3 if c.landmarks else 2
            self.fusion = nn.ModuleList(nn.MultiheadAttention(c.dim, c.heads, batch_first=True) for _ in range(streams))
            self.fusion_norm = nn.ModuleList(nn.LayerNorm(c.dim) for _ in range(streams))
        down, up = unet_blocks(len(c.channels))
        self.unet = UNet2DConditionModel(
            sample_size=c.size, in_channels=3 + (len(REGIONS) if self.uses_maps else 0) + (3 if c.warp_input else 0),
            out_channels=3,
            block_out_channels=c.channels, layers_per_block=c.layers_per_block, down_block_types=down,
            up_block_types=up, cross_attention_dim=c.dim, attention_head_dim=c.dim // c.heads,
            norm_num_groups=8, class_embed_type="projection", projection_class_embeddings_input_dim=c.dim)

    @property
    def uses_maps(self) -> bool:
        return self.config.landmarks and self.config.landmark_input

    def encode(self, identity_image: torch.Tensor, identity_landmarks: torch.Tensor,
               target_landmarks: torch.Tensor) -> dict[str, torch.Tensor]:
        """The condition of a batch: cross-attention tokens, the identity vector, the target's maps."""
        c = self.config
        feats = self.identity_cnn(identity_image)
        flat = feats.flatten(2).transpose(1, 2)
        identity = torch.cat([self.identity_global(flat.mean(1, keepdim=True)), self.identity_tokens(flat)], 1)
        identity = identity + self.identity_position
        target_maps = landmark_maps(target_landmarks, c.size)
        deviation = self.face_cnn(target_maps) - self.neutral_cnn(landmark_maps(identity_landmarks, c.size))
        expression = self.deviation(deviation).flatten(2).transpose(1, 2) + self.expression_position
        streams = [identity, expression]
        if c.landmarks:
            points = target_landmarks / c.size - 0.5
            streams.append(self.landmark_mlp(points) + self.landmark_index)
        if c.cross_fusion:  # stream i's queries read stream i+1 (identity -> expression -> landmarks -> identity)
            fused = []
            for i, (attention, norm) in enumerate(zip(self.fusion, self.fusion_norm)):
                query, other = norm(streams[i]), streams[(i + 1) % len(streams)]
                fused.append(streams[i] + attention(query, other, other, need_weights=False)[0])
            streams = fused
        spatial = [target_maps * 2 - 1] if self.uses_maps else []
        if c.warp_input:
            spatial.append(tps_warp(identity_image, identity_landmarks, target_landmarks))
        return {"tokens": torch.cat(streams, 1), "identity": identity[:, 0],
                "maps": torch.cat(spatial, 1) if spatial else None}

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: dict[str, torch.Tensor]) -> torch.Tensor:
        """The UNet's prediction (the noise, or the clean image: ``config.prediction``) for ``noisy``
        (B, 3, S, S) at ``timesteps`` under ``condition``."""
        if condition["maps"] is not None:
            noisy = torch.cat([noisy, condition["maps"]], 1)
        return self.unet(noisy, timesteps, encoder_hidden_states=condition["tokens"],
                         class_labels=condition["identity"]).sample

    def schedulers(self):
        """The DDPM training schedule and the DDIM sampler made from the same configuration."""
        from diffusers import DDIMScheduler, DDPMScheduler

        ddpm = DDPMScheduler(num_train_timesteps=self.config.timesteps, beta_schedule=self.config.beta_schedule,
                             prediction_type=self.config.prediction)
        return ddpm, DDIMScheduler.from_config(ddpm.config)

    @torch.no_grad()
    def generate(self, identity_image, identity_landmarks, target_landmarks, steps: int = 25,
                 seed: int = 0, batch_size: int = 16, progress: bool = False, precision: str = "auto") -> torch.Tensor:
        """Images (F, 3, S, S) in [-1, 1] of the identity (one uint8 (S, S, 3) image and its (68, 2)
        landmarks) with each of the F target landmark sets (F, 68, 2), by DDIM from noise. The same
        seed gives every frame the same starting noise, which keeps a sequence's frames consistent.
        ``precision``: the UNet's arithmetic (``render.neural.precision``; "auto" is bfloat16 on a CPU
        that has it natively); the conditions and the sampler stay in float32."""
        from tqdm.auto import tqdm

        size = self.config.size
        identity = to_tensor(check_image(identity_image, size, "identity image"))[None]
        identity_lm = torch.as_tensor(check_landmarks(identity_landmarks, "identity landmarks"))[None]
        targets = torch.as_tensor(check_landmarks(target_landmarks, "target landmarks")).reshape(-1, 68, 2)
        _, ddim = self.schedulers()
        ddim.set_timesteps(steps)
        device = next(self.parameters()).device
        channels_last(self.unet, device)
        start = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(seed))
        out = []
        for i in tqdm(range(0, len(targets), batch_size), disable=not progress, desc="neural frames"):
            lm = targets[i:i + batch_size].to(device)
            n = len(lm)
            condition = self.encode(identity.to(device).expand(n, -1, -1, -1),
                                    identity_lm.to(device).expand(n, -1, -1), lm)
            x = start.to(device).expand(n, -1, -1, -1).clone()
            for t in ddim.timesteps:
                with sampling_context(device, precision):
                    prediction = self(x, t.expand(n).to(device), condition)
                x = ddim.step(prediction.float(), t, x).prev_sample
            out.append(x.clamp(-1, 1).cpu())
        return torch.cat(out)

    def save_pretrained(self, directory) -> None:
        save_model(directory, KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "CCFExp":
        return load_model(directory, KIND, CCFExpConfig, cls, device)


def predicted_x0(noisy: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor,
                 prediction: str = "epsilon") -> torch.Tensor:
    """x̂_0 from the UNet's output, clipped to the image range: x̂_0 = (x_t - sqrt(1 - ᾱ_t) ε̂) / sqrt(ᾱ_t)
    (the paper's Eq. 7) for a noise prediction, the output itself for a sample prediction."""
    if prediction == "sample":
        return output.clamp(-1, 1)
    a = alpha_bar.view(-1, 1, 1, 1)
    return ((noisy - (1 - a).sqrt() * output) / a.sqrt()).clamp(-1, 1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1)
