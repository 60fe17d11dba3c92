"""Training of local expression diffusion: every image of a batch gives its eye and its mouth crop
(cut on the batch's device from its landmarks), each with a text of its label for that region; the loss
is the paper's smooth-L1 (β = 1, Eq. 5) between the added and the predicted noise, at time steps drawn
from T = 500.

The texts are the caller's: ``text_table`` (labels + 1, regions, variants, dim) holds the embeddings of
a few descriptions per label (row 0: neutral, row k + 1: the manifest's label k) and region, so that
the eye crop of a "mouth open" image is described as neutral eyes; a step draws one variant per crop.

``fit`` writes the EMA weights (the paper's "EMA-based model") to ``out_dir`` at every checkpoint and
keeps the raw ones in its training state; when the run ends, ``export_raw`` writes those raw weights
as a model of their own in ``out_dir/raw`` (the paper's "UNet-based model").
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from render.neural.data import NeuralInputError, check_landmarks, to_tensor
from render.neural.local_expression_model import KIND, RegionConfig, RegionDiffusion
from render.neural.local_expression_regions import crop

RAW_DIR = "raw"


class RegionImages:
    """Portrait images with their landmarks and labels, batched by ``fit`` (``batch(indices)``)."""

    def __init__(self, images: dict[str, np.ndarray]):
        self.rgb = images["rgb"]
        self.landmarks = check_landmarks(images["landmarks"])
        self.label = np.asarray(images["label"], np.int64)

    def __len__(self) -> int:
        return len(self.rgb)

    def batch(self, indices) -> dict[str, torch.Tensor]:
        indices = np.asarray(indices)
        return {"target": to_tensor(self.rgb[indices]),
                "target_landmarks": torch.as_tensor(self.landmarks[indices]),
                "label": torch.as_tensor(self.label[indices])}


class RegionLoss(nn.Module):
    def __init__(self, model: RegionDiffusion, text_table: torch.Tensor):
        super().__init__()
        self.model = model
        c = model.config
        if text_table.ndim != 4 or text_table.shape[1] != len(c.regions) or text_table.shape[3] != c.text_dim:
            raise NeuralInputError(f"text table must be (labels + 1, {len(c.regions)}, variants, {c.text_dim}), "
                                   f"got {tuple(text_table.shape)}")
        self.register_buffer("texts", text_table.float(), persistent=False)
        self.register_buffer("alpha_bar", model.scheduler().alphas_cumprod.float(), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        m, images, marks = self.model, batch["target"], batch["target_landmarks"]
        device, n = images.device, len(images)
        crops = torch.cat([crop(images, m.boxes(marks, region), m.config.size) for region in m.config.regions])
        region = torch.arange(len(m.config.regions), device=device).repeat_interleave(n)
        label = (batch["label"] + 1).repeat(len(m.config.regions))
        variant = torch.randint(0, self.texts.shape[2], (len(crops),), device=device)
        text = self.texts[label, region, variant]
        keep = torch.rand(len(crops), device=device) >= m.config.text_dropout
        text = text * keep[:, None]
        t = torch.randint(0, m.config.timesteps, (len(crops),), device=device)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(crops)
        eps = m(a.sqrt() * crops + (1 - a).sqrt() * noise, t, region, text)
        loss = F.smooth_l1_loss(eps, noise, beta=1.0)  # Eq. 5
        return loss, {"smooth_l1": loss.item()}


def export_raw(out_dir: str | Path, model: RegionDiffusion) -> Path:
    """The raw (not averaged) weights of ``out_dir``'s training state as a model in ``out_dir/raw``."""
    from render.neural.training import STATE_TENSORS

    tensors = load_file(str(Path(out_dir) / STATE_TENSORS))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    model.save_pretrained(Path(out_dir) / RAW_DIR)
    return Path(out_dir) / RAW_DIR


def train_region(images: dict, text_table: torch.Tensor, out_dir, config, region_config: RegionConfig | None = None,
                 progress: bool = True, cpu: bool = True):
    """Train the region model on ``images`` (the training identities) into ``out_dir`` (EMA weights;
    raw ones in ``out_dir/raw``). ``text_table``: see the module docstring. Rerunning resumes."""
    from render.neural.training import fit

    region_config = dataclasses.replace(region_config or RegionConfig(), text_dim=int(text_table.shape[-1]))
    if int(np.max(images["label"])) + 2 > len(text_table):
        raise NeuralInputError(f"the text table has {len(text_table) - 1} labels; the images use label "
                               f"{int(np.max(images['label']))}")
    torch.manual_seed(config.seed)
    model = RegionDiffusion(region_config)
    result = fit(out_dir, RegionLoss(model, torch.as_tensor(text_table)), RegionImages(images), config,
                 lambda d, m: m.save_pretrained(d), KIND, progress=progress, cpu=cpu)
    if result.is_main:
        export_raw(out_dir, RegionDiffusion(region_config))
    return result
