"""Label + semantic-encoder editing (Tang, Zhai & Liu, *Facial Expression Manipulation with
Conditional Diffusion Model*): a source image plus one of the 18 labels gives that person with that
expression.

The condition is the paper's: an embedding of the target label concatenated with a projection of a
small VAE's latent (the mean of its posterior) of the source image, mapped to the time-embedding width
and added to diffusers' ``UNet2DModel`` time embedding (its ``class_embed_type="identity"``).
``variant="label"`` is the paper's baseline without the semantic encoder. Not in the paper:
``source_input`` also concatenates the source image to the noisy image (the person's colours, light and
background at every pixel, which a small model trained on a CPU budget does not recover from a
64-number latent), and ``prediction="sample"`` has the UNet predict the clean image. The label embedding has one
extra row, the null label, which training puts in at ``label_dropout`` so that sampling can use
classifier-free guidance on the label (the source's latent stays in both branches).

Editing runs DDIM either from noise (``strength=1``) or, SDEdit-style, from the source noised to the
``strength`` fraction of the schedule, which keeps more of the source the lower it is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from render.neural.data import NeuralInputError, check_image, to_tensor
from render.neural.evaluators import ConvStack
from render.neural.io import load_model, save_model
from render.neural.precision import channels_last, sampling_context

KIND = "neural_edit"
VAE_KIND = "neural_vae"
VARIANTS = ("vae", "label")


@dataclass
class VAEConfig:
    size: int = 64
    widths: tuple[int, ...] = (32, 48, 64)
    latent: int = 64
    kl_weight: float = 1e-3


class SmallVAE(nn.Module):
    """A convolutional VAE of the portraits: its latent mean is the editing model's semantic code."""

    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = c = config
        self.grid = c.size // 2 ** len(c.widths)
        self.encoder = ConvStack(3, c.widths)
        self.to_stats = nn.Linear(c.widths[-1] * self.grid**2, 2 * c.latent)
        self.from_latent = nn.Linear(c.latent, c.widths[-1] * self.grid**2)
        layers, widths = [], list(c.widths[::-1]) + [c.widths[0]]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(a, b, 3, padding=1), nn.GroupNorm(8, b), nn.SiLU()]
        self.decoder = nn.Sequential(*layers, nn.Conv2d(c.widths[0], 3, 3, padding=1), nn.Tanh())

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.to_stats(self.encoder(image).flatten(1)).chunk(2, dim=-1)
        return mean, logvar.clamp(-10, 10)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(latent).view(len(latent), -1, self.grid, self.grid))

    def save_pretrained(self, directory) -> None:
        save_model(directory, VAE_KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "SmallVAE":
        return load_model(directory, VAE_KIND, VAEConfig, cls, device)


@dataclass
class EditConfig:
    size: int = 64
    labels: tuple[str, ...] = field(default_factory=tuple)
    variant: str = "vae"
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    label_dim: int = 128
    semantic_dim: int = 64
    vae: VAEConfig | None = None
    timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    label_dropout: float = 0.1
    source_input: bool = False
    """Concatenate the source image to the UNet's noisy input."""
    prediction: str = "epsilon"
    """What the UNet predicts: "epsilon" (the paper) or "sample" (the clean image)."""

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise NeuralInputError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.prediction not in ("epsilon", "sample"):
            raise NeuralInputError(f"prediction must be 'epsilon' or 'sample', got {self.prediction!r}")
        if isinstance(self.vae, dict):
            self.vae = VAEConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in self.vae.items()})
        if self.variant == "vae" and self.vae is None:
            self.vae = VAEConfig(size=self.size)


class EditModel(nn.Module):
    def __init__(self, config: EditConfig):
        from diffusers import UNet2DModel

        super().__init__()
        self.config = c = config
        time_dim = c.channels[0] * 4  # UNet2DModel's time-embedding width
        self.label_embedding = nn.Embedding(len(c.labels) + 1, c.label_dim)  # last row: the null label
        semantic = 0
        if c.variant == "vae":
            self.vae = SmallVAE(c.vae).requires_grad_(False)
            self.semantic = nn.Linear(c.vae.latent, c.semantic_dim)
            semantic = c.semantic_dim
        self.to_time = nn.Linear(c.label_dim + semantic, time_dim)
        levels = len(c.channels)
        self.unet = UNet2DModel(
            sample_size=c.size, in_channels=6 if c.source_input else 3, out_channels=3, block_out_channels=c.channels,
            layers_per_block=c.layers_per_block, norm_num_groups=8, class_embed_type="identity",
            down_block_types=("DownBlock2D",) * (levels - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (levels - 1))

    @property
    def null_label(self) -> int:
        return len(self.config.labels)

    def condition(self, labels: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        """The vector added to the time embedding: label embedding ⊕ projected VAE latent of the source."""
        parts = [self.label_embedding(labels)]
        if self.config.variant == "vae":
            with torch.no_grad():
                mean, _ = self.vae.encode(source)
            parts.append(self.semantic(mean))
        return self.to_time(torch.cat(parts, dim=-1))

    def forward(self, noisy, timesteps, condition, source: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's prediction (``config.prediction``); ``source`` (B, 3, S, S) is used with ``source_input``."""
        if self.config.source_input:
            noisy = torch.cat([noisy, source], 1)
        return self.unet(noisy, timesteps, class_labels=condition).sample

    def schedulers(self):
        from diffusers import DDIMScheduler, DDPMScheduler

        ddpm = DDPMScheduler(num_train_timesteps=self.config.timesteps, beta_schedule=self.config.beta_schedule,
                             prediction_type=self.config.prediction)
        return ddpm, DDIMScheduler.from_config(ddpm.config)

    def label_index(self, label: str) -> int:
        if label not in self.config.labels:
            raise NeuralInputError(f"unknown label {label!r}; valid labels: {', '.join(self.config.labels)}")
        return self.config.labels.index(label)

    @torch.no_grad()
    def edit(self, source, labels, steps: int = 25, strength: float = 1.0, guidance: float = 1.0,
             seed: int = 0, precision: str = "auto") -> torch.Tensor:
        """Edited images (B, 3, S, S) in [-1, 1]: the uint8 source images (B, S, S, 3) or one image,
        each with its target label (names or indices; one label for all sources, or one source for all
        labels). ``strength`` in (0, 1]: 1 starts from noise, less
        starts from the noised source (SDEdit); ``guidance`` > 1 is classifier-free guidance on the label;
        ``precision`` the UNet's arithmetic (``render.neural.precision``; the sampler stays float32)."""
        if not 0 < strength <= 1:
            raise NeuralInputError(f"strength must be in (0, 1], got {strength}")
        rgb = np.asarray(source)
        rgb = rgb[None] if rgb.ndim == 3 else rgb
        images = torch.stack([to_tensor(check_image(im, self.config.size, "source image")) for im in rgb])
        labels = [labels] if isinstance(labels, (str, int, np.integer)) else list(labels)
        if len(labels) == 1:
            labels = labels * len(images)
        elif len(images) == 1:  # one source, many labels
            images = images.expand(len(labels), -1, -1, -1)
        if len(labels) != len(images):
            raise NeuralInputError(f"{len(images)} source images and {len(labels)} labels: give one label, one "
                                   f"source, or as many of each")
        index = torch.tensor([self.label_index(x) if isinstance(x, str) else int(x) for x in labels])
        device = next(self.parameters()).device
        images, index = images.to(device), index.to(device)
        cond = self.condition(index, images)
        null = self.condition(torch.full_like(index, self.null_label), images) if guidance != 1 else None
        _, ddim = self.schedulers()
        ddim.set_timesteps(steps)
        timesteps = ddim.timesteps[steps - max(1, round(steps * strength)):]
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)).to(device)
        x = noise if strength == 1 else ddim.add_noise(images, noise, timesteps[:1])
        channels_last(self.unet, device)
        for t in timesteps:
            tt = t.expand(len(x)).to(device)
            with sampling_context(device, precision):
                out = self(x, tt, cond, images).float()
                if null is not None:
                    unconditional = self(x, tt, null, images).float()
                    out = unconditional + guidance * (out - unconditional)
            x = ddim.step(out, t, x).prev_sample
        return x.clamp(-1, 1)

    def save_pretrained(self, directory) -> None:
        save_model(directory, KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "EditModel":
        return load_model(directory, KIND, EditConfig, cls, device)

