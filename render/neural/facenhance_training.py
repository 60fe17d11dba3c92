"""FacEnhance's training objective (the paper's Algorithm 1) and its training entry point.

A frame x_0 of a clip is noised to x_t with ε; the model sees x_t, the identity image, the noised
previous exact frame and the low-res frame, and is trained by MSE on its target: x_{t-Δ} of the same ε
(the paper's direct prediction, Δ = 1 in the paper), ε or x_0 itself; with ``residual``, x_0 is the
frame less the model's detail-transfer guess, scaled. For x_{t-Δ}, t is drawn from the
sampling grid {0, Δ, 2Δ, ...} (x_{-Δ} being x_0), the only time steps the sampler visits.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from render.neural.data import NeuralInputError
from render.neural.facenhance_data import ClipFrames, model_range
from render.neural.facenhance_model import KIND, FacEnhance, FacEnhanceConfig
from render.neural.io import CONFIG_FILE, config_from_dict


class FacEnhanceLoss(nn.Module):
    def __init__(self, model: FacEnhance):
        super().__init__()
        self.model = model
        ddpm, _ = model.schedulers()
        # ᾱ with ᾱ_{-Δ} = 1 in front, so that x_{t-Δ} of t = 0 is x_0 (the DDIM sampler's last step)
        self.register_buffer("alpha_bar", torch.cat([torch.ones(1), ddpm.alphas_cumprod.float()]), persistent=False)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = {key: model_range(value) for key, value in batch.items()}  # uint8 (B, S, S, 3) from ClipFrames
        c = self.model.config
        condition = self.model.encode(batch["low"], batch["identity_image"])
        x0 = self.model.diffused(batch["target"], condition)  # with ``residual``, the difference from the guess
        n, device = len(x0), x0.device
        if c.prediction == "previous":
            t = torch.randint(0, c.timesteps // c.stride, (n,), device=device) * c.stride
        else:
            t = torch.randint(0, c.timesteps, (n,), device=device)

        def noised(step: torch.Tensor) -> torch.Tensor:
            a = self.alpha_bar[step + 1].view(-1, 1, 1, 1)
            return a.sqrt() * x0 + (1 - a).sqrt() * noise

        noise = torch.randn_like(x0)
        previous = self.model.noise_previous(batch["previous"]) if c.previous_frame else None
        out = self.model(noised(t), t, condition, batch["identity_image"], previous)
        if c.prediction == "previous":
            target = noised((t - c.stride).clamp(min=-1))
        else:
            target = noise if c.prediction == "epsilon" else x0
        loss = F.mse_loss(out, target)
        return loss, {"mse": loss.item()}


def train_facenhance(clips: dict, out_dir, config, model_config: FacEnhanceConfig | None = None,
                     progress: bool = True, cpu: bool = True):
    """Train FacEnhance on the frames of ``clips`` (the training identities' clips, ``load_clips``) and
    save it, with its EMA weights, into ``out_dir``; rerunning resumes."""
    from render.neural.training import fit

    low, high = clips["low"].shape[2], clips["high"].shape[2]
    torch.manual_seed(config.seed)
    base = model_config or FacEnhanceConfig()
    model_config = FacEnhanceConfig(**{**base.__dict__, "size": high, "low_size": low})
    _check_same_model(Path(out_dir), model_config)
    model = FacEnhance(model_config)
    return fit(out_dir, FacEnhanceLoss(model), ClipFrames(clips), config,
               lambda d, m: m.save_pretrained(d), KIND, progress=progress, cpu=cpu)


def _check_same_model(out_dir: Path, config: FacEnhanceConfig) -> None:
    """A run resumes only into the model it trained (the training state has no say on the architecture
    or the prediction, and a changed prediction would load and silently train on)."""
    path = out_dir / CONFIG_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    if saved.get("kind") != KIND:
        return  # fit names the other kind
    old = config_from_dict(FacEnhanceConfig, saved["config"])
    changed = sorted(k for k, v in config.__dict__.items() if getattr(old, k) != v and k != "sampling_steps")
    if changed:
        raise NeuralInputError(f"{out_dir} holds a run of another model ({', '.join(changed)}); "
                               f"use another --out or the same options to resume")
