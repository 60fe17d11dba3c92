"""Training of the label + VAE editing model: first the VAE on the portraits (reconstruction + KL, as
the paper pre-trains it), then the diffusion model with the VAE frozen.

The paper trains on single images with their own label. Here the source of the semantic code is
another image of the same person and the target is the noised image, so the latent carries the identity
and the label has to carry the expression. Where the data set has sources (``face4d dataset portraits
--sources``) the source is the same person in the same camera and light with another expression
(``PortraitPairs(identity="source")``): the pair then differs by the expression alone, the change the
label names. Otherwise it is the person's next image (``identity="other"``), whose other camera the model
cannot know and so blurs. Neutral images
(label -1) and ``label_dropout`` of the rest are given the null label (classifier-free guidance).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from render.neural.conditional_diffusion_model import KIND, VAE_KIND, EditConfig, EditModel, SmallVAE, VAEConfig
from render.neural.data import PortraitPairs


class VAELoss(nn.Module):
    def __init__(self, model: SmallVAE):
        super().__init__()
        self.model = model

    def forward(self, batch):
        x = batch["target"]
        mean, logvar = self.model.encode(x)
        latent = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        recon = F.mse_loss(self.model.decode(latent), x)
        kl = (-0.5 * (1 + logvar - mean**2 - logvar.exp()).sum(-1)).mean()
        return recon + self.model.config.kl_weight * kl, {"recon": recon.item(), "kl": kl.item()}


class EditLoss(nn.Module):
    def __init__(self, model: EditModel):
        super().__init__()
        self.model = model
        ddpm, _ = model.schedulers()
        self.register_buffer("alpha_bar", ddpm.alphas_cumprod.float(), persistent=False)

    def forward(self, batch):
        m, x0 = self.model, batch["target"]
        labels = batch["label"].clone()
        drop = (labels < 0) | (torch.rand(len(labels), device=x0.device) < m.config.label_dropout)
        labels[drop] = m.null_label
        t = torch.randint(0, m.config.timesteps, (len(x0),), device=x0.device)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        source = batch["identity_image"]
        out = m(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, m.condition(labels, source), source)
        loss = F.mse_loss(out, noise if m.config.prediction == "epsilon" else x0)
        return loss, {"mse": loss.item()}


def train_edit(images: dict, out_dir, config, labels, edit_config: EditConfig | None = None,
               vae_steps: int | None = None, progress: bool = True, cpu: bool = True):
    """Train the editing model on ``images`` (the training identities) into ``out_dir``; the VAE
    variant first trains its VAE into ``out_dir/vae`` (``vae_steps``, default ``config.steps``), unless
    the run starts from a trained model (``config.init``), whose VAE it keeps. Rerunning resumes either
    stage."""
    from render.neural.training import STATE_FILE, fit

    out_dir = Path(out_dir)
    size = int(images["rgb"].shape[1])
    base = edit_config or EditConfig()
    vae_config = base.vae and dataclasses.replace(base.vae, size=size)
    edit_config = dataclasses.replace(base, size=size, labels=tuple(labels), vae=vae_config)
    dataset = PortraitPairs(images, identity="source" if "source_rgb" in images else "other")
    vae = None
    # a warm-started run (no VAE stage) resumed without its --init: no VAE stage either, fit refuses it
    warm_run = (out_dir / STATE_FILE).is_file() and not (out_dir / "vae").is_dir()
    if edit_config.variant == "vae" and config.init is None and not warm_run:
        torch.manual_seed(config.seed)
        vae_run = dataclasses.replace(config, steps=vae_steps or config.steps)
        fit(out_dir / "vae", VAELoss(SmallVAE(edit_config.vae)), dataset, vae_run,
            lambda d, m: m.save_pretrained(d), VAE_KIND, progress=progress, cpu=cpu)
        vae = SmallVAE.from_pretrained(out_dir / "vae")
    torch.manual_seed(config.seed)
    model = EditModel(edit_config)
    if vae is not None:
        model.vae.load_state_dict(vae.state_dict())
    return fit(out_dir, EditLoss(model), dataset, config, lambda d, m: m.save_pretrained(d), KIND,
               progress=progress, cpu=cpu)

