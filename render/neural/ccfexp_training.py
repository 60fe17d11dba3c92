"""CCFExp's training objective (the paper's Algorithm 1) and its training entry point.

First pass: noise the target x_0 to x_t, predict the noise (MSE), recover x̂_0 (Eq. 7), and add the
time-dependent identity loss (DCFace: -t/T cos(F(x_id), F(x̂_0)) - (T-t)/T cos(F(x_0), F(x̂_0)), so
early, noisy steps lean on the identity image and late ones on the target) and the landmark loss
||D(x̂_0) - D(x_0)||², with F and D the frozen identity encoder and landmark regressor trained on
renders (``render.neural.evaluators``). Cycle step: x̂_0 (detached) is noised again at the same t with
fresh noise, denoised, and the same three terms are taken on x̂'_0 against x_0; the loss is
first + σ second (``cycle_weight`` 0 is the paper's "without the cycle loss" ablation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from render.neural.ccfexp_model import CCFExp, CCFExpConfig, cosine, predicted_x0
from render.neural.data import PortraitPairs
from render.neural.evaluators import Evaluators

KIND = "ccfexp"


@dataclass
class CCFExpLossConfig:
    identity_weight: float = 0.05
    """λ of the time-dependent identity loss."""
    landmark_weight: float = 1.0
    """γ of the landmark loss (on landmarks / image size); off when the model has no landmarks."""
    cycle_weight: float = 0.5
    """σ of the cycle step's loss; 0 skips the cycle step."""


class CCFExpLoss(nn.Module):
    def __init__(self, model: CCFExp, evaluators: Evaluators | None, config: CCFExpLossConfig):
        super().__init__()
        self.model, self.config = model, config
        self.evaluators = evaluators
        if evaluators is not None:
            evaluators.requires_grad_(False).eval()
        elif config.identity_weight or (config.landmark_weight and model.config.landmarks):
            raise ValueError("the identity and landmark losses need the trained evaluators")
        ddpm, _ = model.schedulers()
        self.register_buffer("alpha_bar", ddpm.alphas_cumprod.float(), persistent=False)

    def _terms(self, x0_hat, batch, t, reference) -> tuple[torch.Tensor, torch.Tensor]:
        """Identity and landmark losses of x̂_0 (zero where switched off)."""
        zero = x0_hat.new_zeros(())
        ident = landmarks = zero
        if self.evaluators is None:
            return ident, landmarks
        if self.config.identity_weight:
            emb = self.evaluators.identity_embedding(x0_hat)
            w = t.float() / self.model.config.timesteps
            ident = (-w * cosine(reference["identity_image"], emb)
                     - (1 - w) * cosine(reference["target"], emb)).mean()
        if self.config.landmark_weight and self.model.config.landmarks:
            size = self.model.config.size
            landmarks = F.mse_loss(self.evaluators.landmarks(x0_hat) / size, reference["landmarks"] / size)
        return ident, landmarks

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        c, x0 = self.config, batch["target"]
        t = torch.randint(0, self.model.config.timesteps, (len(x0),), device=x0.device)
        a = self.alpha_bar[t].view(-1, 1, 1, 1)
        condition = self.model.encode(batch["identity_image"], batch["identity_landmarks"], batch["target_landmarks"])
        reference = {}
        if self.evaluators is not None:
            with torch.no_grad():
                reference = {"identity_image": self.evaluators.identity_embedding(batch["identity_image"]),
                             "target": self.evaluators.identity_embedding(x0),
                             "landmarks": self.evaluators.landmarks(x0)}
        total, logs = x0.new_zeros(()), {}
        source, passes = x0, ("first", "cycle") if c.cycle_weight else ("first",)
        for name in passes:
            noise = torch.randn_like(x0)
            noisy = a.sqrt() * source + (1 - a).sqrt() * noise
            out = self.model(noisy, t, condition)
            prediction = self.model.config.prediction
            x0_hat = predicted_x0(noisy, out, self.alpha_bar[t], prediction)
            mse = F.mse_loss(out, noise if prediction == "epsilon" else source)
            ident, lm = self._terms(x0_hat, batch, t, reference)
            loss = mse + c.identity_weight * ident + c.landmark_weight * lm
            total = total + (1.0 if name == "first" else c.cycle_weight) * loss
            logs.update({f"{name}_mse": mse.item(), f"{name}_id": ident.item(), f"{name}_lm": lm.item()})
            source = x0_hat.detach()
        return total, {k: v for k, v in logs.items() if k in ("first_mse", "first_id", "first_lm", "cycle_mse")}


def train_ccfexp(images: dict, neutrals: dict, out_dir, config, model_config: CCFExpConfig | None = None,
                 loss_config: CCFExpLossConfig | None = None, evaluators: Evaluators | None = None,
                 progress: bool = True, cpu: bool = True):
    """Train CCFExp on (neutral, target) pairs of ``images`` (the training identities; without
    ``neutrals``, as from the real-data loaders, another image of the same person is the identity
    image) and save it, with its EMA weights, into ``out_dir``; rerunning resumes."""
    from render.neural.training import fit

    size = int(images["rgb"].shape[1])
    torch.manual_seed(config.seed)
    model = CCFExp(CCFExpConfig(**{**(model_config or CCFExpConfig()).__dict__, "size": size}))
    loss = CCFExpLoss(model, evaluators, loss_config or CCFExpLossConfig())
    pairs = PortraitPairs(images, neutrals, identity="other" if neutrals is None else "neutral")  # real data: no neutrals
    return fit(out_dir, loss, pairs, config,
               lambda d, m: m.save_pretrained(d), KIND, progress=progress, cpu=cpu)
