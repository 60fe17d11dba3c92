"""Local expression diffusion (Chen, Sub-r-pa, Fan & Yu): a text-conditioned DDPM of eye and mouth crops
that re-draws only those regions of a face with the expression a text describes.

One diffusers ``UNet2DConditionModel`` serves both regions: the region is a class embedding added to
the time embedding, the text embedding (a sentence encoder's vector, computed by the caller: render/
never embeds text) is the one token of the cross-attention in the lower blocks, as the paper brings its
text in "using a transformer attention block". T = 500 steps (the paper's ``t_n``). ``text_dropout``
of the training texts are the zero vector, the null text, so editing may use classifier-free guidance
(not in the paper; ``guidance=1`` is the paper's sampling).

Editing is the paper's Fig. 2 (SDEdit): each crop is noised to step ``t_i`` (``strength``, default
250 of 500), denoised by DDPM ancestral steps under the target text on a grid of ``steps`` time steps
from ``t_i`` to 0 (``steps = t_i`` is the paper's full chain), resized back into its box and blended
with a feathered mask (``local_expression_regions``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from render.neural.data import NeuralInputError, check_landmarks, to_tensor
from render.neural.io import load_model, save_model
from render.neural.local_expression_regions import MARGINS, REGIONS, boxes, crop, paste
from render.neural.precision import channels_last, sampling_context

KIND = "neural_region"
DEFAULT_STRENGTH = 250


@dataclass
class RegionConfig:
    size: int = 32
    """Side of the crops the UNet draws. The paper's are 64² from 256² faces; a 64² portrait's boxes are
    about 38 x 19 (eyes) and 19 x 15 (mouth) pixels, which 32² holds at a quarter of 64²'s cost."""
    regions: tuple[str, ...] = REGIONS
    text_dim: int = 384
    text_encoder: str = "minilm"
    """Name of the sentence encoder whose embeddings the model was trained on (face4d.text's name)."""
    channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    heads: int = 4
    attention_levels: int = 1
    """The lowest-resolution levels that attend to the text (self-attention at the larger ones would
    cost most of a step on a CPU)."""
    timesteps: int = 500
    beta_schedule: str = "linear"
    text_dropout: float = 0.1
    feather: float = 0.15
    """Share of a box's shorter side over which the pasted crop fades in (0: hard paste)."""
    margins: tuple[tuple[float, float], ...] = tuple(MARGINS[r] for r in REGIONS)
    """(m_x, m_y) of Eqs. 1-4 per region, in eye-centre distances."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.regions) - set(REGIONS))
        if unknown:
            raise NeuralInputError(f"unknown regions {unknown}; regions: {', '.join(REGIONS)}")
        self.margins = tuple(tuple(float(v) for v in m) for m in self.margins)
        if not 0 <= self.attention_levels <= len(self.channels):
            raise NeuralInputError(f"attention levels must be in 0..{len(self.channels)} (one per channel width), "
                                   f"got {self.attention_levels}")
        if self.size < 8 or self.size % 2 ** (len(self.channels) - 1):
            raise NeuralInputError(f"the crop size must be at least 8 and a multiple of {2 ** (len(self.channels) - 1)} "
                                   f"({len(self.channels)} UNet levels), got {self.size}")
        if len(self.margins) != len(self.regions):
            raise NeuralInputError(f"{len(self.regions)} regions but {len(self.margins)} margin pairs")


class RegionDiffusion(nn.Module):
    def __init__(self, config: RegionConfig):
        from diffusers import UNet2DConditionModel

        super().__init__()
        self.config = c = config
        plain, attend = len(c.channels) - c.attention_levels, c.attention_levels
        self.unet = UNet2DConditionModel(
            sample_size=c.size, in_channels=3, out_channels=3, block_out_channels=c.channels,
            layers_per_block=c.layers_per_block, norm_num_groups=8, cross_attention_dim=c.text_dim,
            attention_head_dim=c.channels[-1] // c.heads, num_class_embeds=len(c.regions),
            down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * attend,
            up_block_types=("CrossAttnUpBlock2D",) * attend + ("UpBlock2D",) * plain)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, region: torch.Tensor,
                text: torch.Tensor) -> torch.Tensor:
        """The predicted noise of (B, 3, S, S) crops at ``timesteps`` (B,), ``region`` indices (B,) and
        text embeddings (B, text_dim) (zeros: the null text)."""
        return self.unet(noisy, timesteps, encoder_hidden_states=text[:, None, :], class_labels=region).sample

    def scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.config.timesteps, beta_schedule=self.config.beta_schedule)

    def region_index(self, region: str) -> int:
        if region not in self.config.regions:
            raise NeuralInputError(f"unknown region {region!r}; the model draws {', '.join(self.config.regions)}")
        return self.config.regions.index(region)

    def boxes(self, landmarks: torch.Tensor, region: str) -> torch.Tensor:
        return boxes(landmarks, region, self.config.margins[self.region_index(region)])

    def check_strength(self, strength: int) -> int:
        if not 1 <= strength <= self.config.timesteps:
            raise NeuralInputError(f"strength (the noise step t_i) must be in 1..{self.config.timesteps}, "
                                   f"got {strength}")
        return int(strength)

    @torch.no_grad()
    def denoise(self, crops: torch.Tensor, region: torch.Tensor, text: torch.Tensor,
                strength: int = DEFAULT_STRENGTH, steps: int = 25, guidance: float = 1.0,
                seed: int = 0, precision: str = "auto") -> torch.Tensor:
        """SDEdit of (B, 3, S, S) crops in [-1, 1]: noised to step ``strength`` (t_i), then denoised
        under ``text`` (B, text_dim) with DDPM ancestral steps on ``steps`` time steps from t_i to 0.
        ``guidance`` > 1 is classifier-free guidance against the null text; ``precision`` the UNet's
        arithmetic (``render.neural.precision``; the sampler stays float32)."""
        strength = self.check_strength(strength)
        if steps < 1:
            raise NeuralInputError(f"steps must be at least 1, got {steps}")
        start = min(strength, self.config.timesteps - 1)
        grid = np.unique(np.round(np.linspace(start, 0, min(steps, start + 1))).astype(int))[::-1]
        scheduler = self.scheduler()
        scheduler.set_timesteps(timesteps=[int(t) for t in grid])
        generator = torch.Generator().manual_seed(seed)
        device = crops.device
        noise = torch.randn(crops.shape, generator=generator).to(device)
        x = scheduler.add_noise(crops, noise, torch.tensor([start]))
        null = torch.zeros_like(text)
        channels_last(self.unet, device)
        for t in scheduler.timesteps:
            tt = t.expand(len(x)).to(device)
            with sampling_context(device, precision):
                eps = self(x, tt, region, text).float()
                if guidance != 1:
                    unconditional = self(x, tt, region, null).float()
                    eps = unconditional + guidance * (eps - unconditional)
            x = scheduler.step(eps, t, x, generator=generator).prev_sample
        return x.clamp(-1, 1)

    @torch.no_grad()
    def edit(self, image: np.ndarray, landmarks: np.ndarray, regions: tuple[str, ...] | list[str],
             text, strength: int = DEFAULT_STRENGTH, steps: int = 25,
             guidance: float = 1.0, seed: int = 0, feather: float | None = None,
             return_crops: bool = False, precision: str = "auto"):
        """Images (B, 3, H, W) in [-1, 1]: uint8 ``image`` (H, W, 3) or (B, H, W, 3) of any size with its
        (68, 2) / (B, 68, 2) pixel ``landmarks``, its ``regions`` re-drawn under ``text`` (text_dim,) or
        (B, text_dim) embeddings, or a dict of them per region, and pasted back (``feather``: the config's
        by default, 0 for a hard paste); ``precision`` as in ``denoise``.
        ``return_crops`` also returns ``{region: (source crops, edited crops, boxes)}``."""
        rgb = np.asarray(image)
        rgb = rgb[None] if rgb.ndim == 3 else rgb
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise NeuralInputError(f"the image must be 8-bit RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
        marks = check_landmarks(landmarks)
        marks = marks[None] if marks.ndim == 2 else marks
        if len(marks) != len(rgb):
            raise NeuralInputError(f"{len(rgb)} images but {len(marks)} landmark sets")
        if not regions:
            raise NeuralInputError("no region to edit")
        device = next(self.parameters()).device
        images = to_tensor(rgb).to(device)
        texts = {r: self._text(text[r] if isinstance(text, dict) else text, len(images), device) for r in regions}
        marks = torch.as_tensor(marks).to(device)
        feather = self.config.feather if feather is None else feather
        out, parts = images, {}
        for k, region in enumerate(regions):  # every crop comes from the source; they are pasted in turn
            box = self.boxes(marks, region)
            if (box[:, 2:] < 2).any():
                raise NeuralInputError(f"the landmarks give a {region} box under 2 pixels wide or high; "
                                       f"are they the image's 68 iBUG points in pixels?")
            source = crop(images, box, self.config.size)
            index = torch.full((len(images),), self.region_index(region), device=device)
            edited = self.denoise(source, index, texts[region], strength, steps, guidance, seed + k, precision)
            out = paste(out, edited, box, feather)
            parts[region] = (source, edited, box)
        return (out, parts) if return_crops else out

    def _text(self, text, count: int, device) -> torch.Tensor:
        """(count, text_dim) embeddings on ``device`` from one or ``count`` of them."""
        text = torch.as_tensor(np.asarray(text, np.float32) if not torch.is_tensor(text) else text,
                               dtype=torch.float32).to(device)
        text = text[None] if text.ndim == 1 else text
        if text.shape[-1] != self.config.text_dim:
            raise NeuralInputError(f"text embeddings must have {self.config.text_dim} values "
                                   f"({self.config.text_encoder}), got {text.shape[-1]}")
        return text.expand(count, -1)

    def save_pretrained(self, directory) -> None:
        save_model(directory, KIND, self.config, self)

    @classmethod
    def from_pretrained(cls, directory, device="cpu") -> "RegionDiffusion":
        return load_model(directory, KIND, RegionConfig, cls, device)
