"""FacEnhance (Bouzid & Ballihi, *Facial expression video enhancement with recurrent DDPM*): a low-resolution
frame, a high-resolution identity image and the previous generated frame give the high-resolution frame.

The paper's conditioning, on diffusers' ``UNet2DConditionModel``:

- the expression encoder ``E_exp`` (a CNN) reads the low-res frame; its grid of features are the tokens
  of the cross-attention at the UNet's lowest resolution (the paper's attention level);
- the identity image and the previous generated frame, noised (``previous + z``, z ~ N(0, σ²), so that
  only the layout survives and the model cannot copy details, whose errors would pile up over the
  frames), are concatenated with the noisy image.

Three parametrisations (``prediction``): ``"previous"``, the paper's, predicts the less noisy image
x_{t-Δ} directly (Δ = ``stride``; Δ = 1 is the paper's x_{t-1}, with as many sampling steps as training
steps; a larger Δ trains on the deterministic DDIM trajectory x_{t-Δ} = √ᾱ_{t-Δ} x_0 + √(1-ᾱ_{t-Δ}) ε of
the same ε, so that T/Δ model calls sample a frame; the UNet's output is added to x_t, so that the
model starts from copying its input, which a UNet otherwise spends long learning, and learns the step);
``"epsilon"`` predicts the noise and ``"sample"`` the clean frame, both sampled with diffusers' DDIM
scheduler at any number of steps. A clean-frame model need not pass x_t's noise through to its
output, which the other two must reproduce exactly at the last, low-noise steps; on a small training
budget that residual noise is what is left in their frames (docs/neural.md). The paper's ablations:
``expression_encoder=False`` leaves the low-res frame to the concatenated image alone (the upsampled
frame, or the residual model's guess, which is concatenated anyway), ``previous_frame=False``
drops the previous frame, ``previous_noise=0`` passes it unnoised.

Not in the paper:

- for the CPU budget (25 steps of a 128² frame within seconds on two cores), the UNet runs at half the
  resolution on space-to-depth input (``patch`` 2: each 2x2 block of pixels becomes 4x the channels,
  losslessly; the output is folded back the same way);
- ``residual``: the model diffuses the frame's difference from a *detail-transfer* guess, which is
  concatenated as well (as SR3 concatenates its upsampled input): the bicubic upsampling of the low-res
  frame plus the identity image's own fine detail (the identity image less the bicubic upsampling of
  its box-downsampled self). Where the face has not moved since the identity image the guess is that
  image, detail and all; where it has, the guess is the upsampled frame with the rest pose's detail
  on it, and the model learns to move that detail. What the low-res render already fixes is thus
  neither regenerated nor left to the sampler's noise (why: docs/neural.md).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from render.neural.ccfexp_model import unet_blocks  # cross-attention at the lowest level: the paper's place too
from render.neural.data import NeuralInputError, check_image, to_tensor, to_uint8
from render.neural.evaluators import ConvStack
from render.neural.facenhance_data import upsample
from render.neural.io import load_model, save_model

KIND = "facenhance"
PREDICTIONS = ("previous", "epsilon", "sample")


@dataclass
class FacEnhanceConfig:
    size: int = 128
    """The generated (and identity) frame's size."""
    low_size: int = 64
    """The low-res frame's size."""
    patch: int = 2
    """Space-to-depth factor: the UNet runs at size / patch."""
    channels: tuple[int, ...] = (32, 32, 48, 64)
    """UNet block widths; the lowest level (and the mid block) carries the cross-attention."""
    dim: int = 48
    """Token width of the expression encoder (the cross-attention context)."""
    heads: int = 4
    encoder_widths: tuple[int, ...] = (16, 32, 48)
    """The expression encoder's CNN; its token grid is low_size / 2^len."""
    prediction: str = "sample"
    """"sample" (the clean frame), "epsilon" or "previous" (the paper's x_{t-Δ}); why the default is
    "sample": docs/neural.md."""
    sampling_steps: int = 25
    """DDIM steps a frame when none are asked for (epsilon and sample): a setting of sampling alone,
    chosen for a trained model (the shipped one's: face4d/weights/README.md)."""
    stride: int = 40
    """Δ of the "previous" prediction: it samples in timesteps / stride model calls."""
    previous_noise: float = 0.5
    """σ of the noise added to the previous frame (in the [-1, 1] image range); 0 = not noised."""
    expression_encoder: bool = True
    previous_frame: bool = True
    residual: bool = True
    """Diffuse the difference from the detail-transfer guess (not in the paper)."""
    residual_scale: float = 10.0
    """The residual is diffused times this, so that it is not lost beside the unit noise (why:
    docs/neural.md); latent diffusion scales its latents for the same reason."""
    timesteps: int = 1000
    beta_schedule: str = "linear"
    """The paper's: betas from 1e-4 to 0.02, linearly."""

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise NeuralInputError(f"prediction must be one of {PREDICTIONS}, got {self.prediction!r}")
        if self.size % self.patch or self.timesteps % self.stride:
            raise NeuralInputError(f"need size % patch == 0 and timesteps % stride == 0, got size {self.size}, "
                                   f"patch {self.patch}, timesteps {self.timesteps}, stride {self.stride}")
        if self.residual_scale <= 0:
            raise NeuralInputError(f"residual_scale must be > 0, got {self.residual_scale}")
        if not 1 <= self.sampling_steps <= self.timesteps:
            raise NeuralInputError(f"sampling_steps must lie within 1..{self.timesteps}, got {self.sampling_steps}")
        if self.previous_noise < 0:
            raise NeuralInputError(f"previous_noise must be >= 0, got {self.previous_noise}")


def detail_guess(low: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
    """The residual model's guess of a frame: the low-res frame (B, 3, s, s) upsampled, plus the identity
    image's (B, 3, S, S) own detail, the identity image less the upsampling of its box-downsampled self."""
    size = identity.shape[-1]
    return upsample(low, size) + identity - upsample(F.avg_pool2d(identity, size // low.shape[-1]), size)


class FacEnhance(nn.Module):
    def __init__(self, config: FacEnhanceConfig):
        from diffusers import UNet2DConditionModel

        super().__init__()
        self.config = c = config
        images = 2 + c.previous_frame + self.concatenates_low  # noisy, identity, [previous], [guess or upsampled low]
        if c.expression_encoder:
            grid = (c.low_size // 2 ** len(c.encoder_widths)) ** 2
            self.expression_cnn = ConvStack(3, c.encoder_widths)
            self.expression_tokens = nn.Linear(c.encoder_widths[-1], c.dim)
            self.expression_position = nn.Parameter(torch.zeros(1, grid, c.dim))
        down, up = unet_blocks(len(c.channels))
        self.unet = UNet2DConditionModel(
            sample_size=c.size // c.patch, in_channels=3 * images * c.patch ** 2, out_channels=3 * c.patch ** 2,
            block_out_channels=c.channels, layers_per_block=1, down_block_types=down, up_block_types=up,
            cross_attention_dim=c.dim, attention_head_dim=c.dim // c.heads, norm_num_groups=8)
        if not c.expression_encoder:  # one learned token: the UNet's attention blocks stay, with nothing to read
            self.null_token = nn.Parameter(torch.zeros(1, 1, c.dim))

    @property
    def concatenates_low(self) -> bool:
        c = self.config
        return c.residual or not c.expression_encoder

    def encode(self, low: torch.Tensor, identity: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The condition of low-res frames (B, 3, s, s) of people shown by ``identity`` (B, 3, S, S): the
        expression encoder's cross-attention tokens (None without it) and the image concatenated to the
        noisy one (B, 3, S, S): the ``residual`` model's detail-transfer guess, otherwise the low-res
        frame upsampled (bicubic)."""
        c = self.config
        guess = detail_guess(low, identity) if c.residual else upsample(low, c.size)
        tokens = None
        if c.expression_encoder:
            feats = self.expression_cnn(low).flatten(2).transpose(1, 2)
            tokens = self.expression_tokens(feats) + self.expression_position
        return tokens, guess

    def diffused(self, frames: torch.Tensor, condition: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        """What the model diffuses for ``frames`` (B, 3, S, S): the frames, or (``residual``) their
        difference from the condition's guess, scaled."""
        c = self.config
        return (frames - condition[1]) * c.residual_scale if c.residual else frames

    def frames(self, diffused: torch.Tensor, condition: tuple[torch.Tensor | None, torch.Tensor]) -> torch.Tensor:
        """``diffused``'s inverse: the frames in [-1, 1]."""
        c = self.config
        return (condition[1] + diffused / c.residual_scale if c.residual else diffused).clamp(-1, 1)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: tuple[torch.Tensor | None, torch.Tensor],
                identity: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        """The model's prediction (x_{t-Δ}, ε or x_0, by ``prediction``, of the frame or of its residual)
        for ``noisy`` (B, 3, S, S) at ``timesteps``; ``condition`` from ``encode``, ``previous`` already
        noised (None without it)."""
        c = self.config
        tokens, guess = condition
        inputs = [noisy, identity] + ([previous] if c.previous_frame else []) + ([guess] if self.concatenates_low else [])
        if tokens is None:
            tokens = self.null_token.expand(len(noisy), -1, -1)
        x = F.pixel_unshuffle(torch.cat(inputs, 1), c.patch)
        out = F.pixel_shuffle(self.unet(x, timesteps, encoder_hidden_states=tokens).sample, c.patch)
        return noisy + out if c.prediction == "previous" else out  # x_{t-Δ} as a step from x_t

    def noise_previous(self, previous: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``previous + z`` (the paper's noised previous frame), in training and sampling alike."""
        if not self.config.previous_noise:
            return previous
        z = torch.randn(previous.shape, generator=generator, device=previous.device if generator is None else "cpu")
        return previous + self.config.previous_noise * z.to(previous.device)

    def schedulers(self):
        """The DDPM training schedule and the DDIM sampler made from the same configuration."""
        from diffusers import DDIMScheduler, DDPMScheduler

        c = self.config
        ddpm = DDPMScheduler(num_train_timesteps=c.timesteps, beta_schedule=c.beta_schedule,
                             prediction_type="sample" if c.prediction == "sample" else "epsilon",
                             clip_sample_range=3.0 * c.residual_scale if c.residual else 1.0)  # a [-1, 1] image less a guess in [-3, 3]
        return ddpm, DDIMScheduler.from_config(ddpm.config)

    def sampling_steps(self, steps: int | None) -> int:
        """The model calls per frame: any number for epsilon and sample, T/Δ (the grid it learned) for x_{t-Δ}."""
        c = self.config
        own = c.timesteps // c.stride
        if c.prediction == "previous":
            if steps not in (None, own):
                raise NeuralInputError(f"this model predicts x_(t-{c.stride}) and samples in its own {own} steps, "
                                       f"not {steps}")
            return own
        if steps is not None and not 1 <= steps <= c.timesteps:
            raise NeuralInputError(f"steps must lie within 1..{c.timesteps}, got {steps}")
        return c.sampling_steps if steps is None else steps

    @torch.no_grad()
    def sample(self, condition: tuple[torch.Tensor | None, torch.Tensor], identity: torch.Tensor,
               previous: torch.Tensor | None, steps: int, generator: torch.Generator) -> torch.Tensor:
        """One batch of frames (B, 3, S, S) in [-1, 1] from noise, the condition fixed (``encode``'s;
        ``previous`` already noised)."""
        _, ddim = self.schedulers()
        ddim.set_timesteps(steps)
        device = identity.device
        x = torch.randn(identity.shape, generator=generator).to(device)
        for t in ddim.timesteps:
            out = self(x, t.expand(len(x)).to(device), condition, identity, previous)
            x = out if self.config.prediction == "previous" else ddim.step(out, t, x).prev_sample
        return self.frames(x, condition)

    @torch.no_grad()
    def generate(self, lows: Iterable[np.ndarray], identity_image: np.ndarray, steps: int | None = None,
                 seed: int = 0, shared_noise: bool = True) -> Iterator[np.ndarray]:
        """The high-res video of the low-res frames ``lows`` (each (s, s, 3) uint8), one (S, S, 3) uint8
        frame at a time: frame n is conditioned on frame n-1 (the identity image for the first), so any
        number of frames streams in the memory of one. Deterministic for a ``seed``. A batch of videos
        runs together when ``identity_image`` is (B, S, S, 3) and each low frame (B, s, s, 3); frames
        are then (B, S, S, 3).

        ``shared_noise`` draws every frame from the same noise (x_T and the previous frame's z), so
        that consecutive frames differ by what their inputs change and not by a new draw of the
        sampler; fresh noise per frame (False) flickers (docs/results.md, *video*)."""
        c = self.config
        steps = self.sampling_steps(steps)
        device = next(self.parameters()).device
        batched = np.ndim(identity_image) == 4
        identity = torch.stack([to_tensor(check_image(image, c.size, "identity image"))
                                for image in (identity_image if batched else [identity_image])]).to(device)
        previous = identity
        generator = torch.Generator().manual_seed(seed)
        for n, low in enumerate(lows):
            if shared_noise:
                generator.manual_seed(seed)
            low = torch.stack([to_tensor(check_image(image, c.low_size, f"low-res frame {n}"))
                               for image in (low if batched else [low])]).to(device)
            if len(low) != len(identity):
                raise NeuralInputError(f"low-res frame {n} holds {len(low)} images for {len(identity)} videos")
            noised = self.noise_previous(previous, generator) if c.previous_frame else None
            previous = self.sample(self.encode(low, identity), identity, noised, steps, generator)
            frames = to_uint8(previous)
            yield frames if batched else frames[0]

    def save_pretrained(self, directory) -> None:
        save_model(directory, KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "FacEnhance":
        return load_model(directory, KIND, FacEnhanceConfig, cls, device)
