"""Guided sampling as ``step_hook``s of ``GaussianDiffusion``'s samplers (Sec. 3.2, App. C Alg. 1).

After every reverse step the sampler's draw ``\\hat x_{t-1}`` is refined by a few Adagrad ascent
steps on

    lambda * log p_theta(x | x_t) + objective(x, t-1)                                    (Alg. 1/2)

starting from ``\\hat x_{t-1}``. The first term (fluency) keeps ``x`` plausible under the model's
own reverse step, the second (control) pulls it toward the condition. This is the scheme of
Diffusion-LM (Li et al. 2022) that the paper adopts, rather than the mean shift of classic
classifier guidance.

``GradientGuidance`` implements the refinement for any differentiable per-sample score
``objective(x, t_model, mask) -> (B,)``; label control is ``label_objective`` (``log p_phi(y | x,
t-1)``), text control is ``text_objective`` (``cos(BiT(x, t-1), E(c))``, Eq. 10). ``compose_hooks``
chains hooks, e.g. a guidance hook followed by one that re-imposes known frames (Alg. 3/4).
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from face4d.diffusion import GaussianDiffusion, StepHook
from face4d.errors import Face4DError
from face4d.models.classifier import Classifier, label_log_probs
from face4d.models.text_guide import TextGuide, text_similarity
from face4d.settings import TEXT_LAMBDA, GuidanceConfig  # noqa: F401 (their home is face4d.settings)

Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
"""``objective(x, t_model, mask) -> (B,)``: a score to maximise per sample, differentiable in ``x``
(B, F, ...); ``t_model`` (B,) are the *training* timesteps of ``x``'s noise level, ``mask`` the
(B, F) validity of frames or None."""

_ADAGRAD_EPS = 1e-10  # torch.optim.Adagrad's default


class GradientGuidance:
    """A ``StepHook`` that refines each ``x_{t-1}`` by Adagrad ascent on
    ``lam * log p_theta(x | x_t) + objective(x, t_model, mask)`` (Alg. 1 line 10).

    Args:
        diffusion: the diffusion that samples (respaced or not): it maps the hook's indices to the
            training timesteps given to ``objective`` and supplies the DDPM variances below.
        objective: the per-sample score to raise, e.g. ``label_objective(...)``.
        config: lambda, steps and learning rate; ``GuidanceConfig()`` when omitted.
        mask: the (B, F) validity mask passed to the sampler, if any (hooks do not receive it).

    Details:

    * The objective sees ``x`` at the noise level of ``x_{t-1}``: ``model_timesteps(t_prev)``, and
      timestep 0 for the final clean sample (``t_prev`` None), the least noisy level it knows.
    * ``log p_theta`` uses the step's ``out["mean"]`` and variance. DDIM's variance is 0 when
      ``eta == 0`` (and at its last step): ``x_{t-1}`` is then a point, its log-density undefined.
      There the DDPM variance of the same step, ``beta_t`` of ``diffusion``, stands in: it is what
      ancestral sampling would allow at that step, so lambda keeps its meaning across samplers,
      and the Adagrad step (scaled by the standard deviation) stays non-zero.
    * ``norm`` ``sample`` (the default) keeps one Adagrad accumulator per sample instead of one per
      coordinate: the step is the gradient scaled to an RMS of ``lr * sigma_t`` over the sample, so
      it keeps the gradient's shape across frames and landmarks. Per coordinate (``coordinate``,
      Diffusion-LM's and the paper's Adagrad) the first step moves every coordinate by the same
      ``lr * sigma_t`` whatever its gradient, so landmarks and frames the condition barely touches
      move as far as those it is about, in the direction of a near-zero, noisy gradient.
    * One Adagrad state per reverse step, reset at the next: the gradients' scale changes with
      ``t``. Within the step it accumulates, so when the fluency and control terms start to
      disagree the steps shrink instead of bouncing around their balance point. (Diffusion-LM
      recreated the optimizer at each of the three steps, which turns Adagrad into sign descent.)
    * Gradients are taken with respect to ``x`` only (``torch.autograd.grad``): no ``.grad`` of a
      network's parameters is written, and no optimizer state outside this hook exists. Put
      networks in ``eval()`` mode first, and do not sample under ``torch.inference_mode()``.
    """

    def __init__(
        self,
        diffusion: GaussianDiffusion,
        objective: Objective,
        config: GuidanceConfig | None = None,
        mask: torch.Tensor | None = None,
    ) -> None:
        self.diffusion = diffusion
        self.objective = objective
        self.config = config if config is not None else GuidanceConfig()
        self.mask = mask

    def __call__(self, x_prev: torch.Tensor, t_prev: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor,
                 out: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if self.config.steps == 0:
            return None
        mask = None if self.mask is None else self.mask.to(x_prev.device)
        t_model = self.diffusion.model_timesteps(t_prev) if t_prev is not None else torch.zeros_like(t)
        variance = self._prior_variance(out["variance"], t)
        log_variance = torch.log(variance)
        step = self.config.lr * variance.sqrt()
        x = x_prev.detach().clone()
        accumulator = torch.zeros_like(x)
        with torch.enable_grad():
            for _ in range(self.config.steps):
                x.requires_grad_(True)
                score = self.objective(x, t_model, mask)
                if score.shape != (x.shape[0],):
                    raise Face4DError(f"objective must return a (B,) score, got {tuple(score.shape)}")
                if self.config.lam:
                    score = score + self.config.lam * self.diffusion.log_prob_reverse(
                        x, out["mean"], log_variance, mask
                    )
                # Samples are independent, so the sum's gradient is each sample's own gradient.
                (gradient,) = torch.autograd.grad(score.sum(), x)
                accumulator = accumulator + self._squared(gradient, mask)
                x = (x.detach() + step * gradient / (accumulator.sqrt() + _ADAGRAD_EPS)).detach()
        return x

    def _squared(self, gradient: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """What Adagrad accumulates: the squared gradient per coordinate (``norm`` ``coordinate``),
        or its mean over each sample's valid frames and coordinates (``sample``)."""
        squared = gradient**2
        if self.config.norm == "coordinate":
            return squared
        dims = tuple(range(1, gradient.dim()))
        if mask is None:
            return squared.mean(dim=dims, keepdim=True).expand_as(gradient)
        valid = mask.to(squared.dtype).view(*mask.shape, *(1,) * (gradient.dim() - mask.dim())).expand_as(gradient)
        mean = (squared * valid).sum(dim=dims, keepdim=True) / valid.sum(dim=dims, keepdim=True).clamp_min(1)
        return mean.expand_as(gradient)

    def _prior_variance(self, variance: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The step's variance, with ``beta_t`` in place of zeros (deterministic DDIM steps)."""
        betas = torch.from_numpy(self.diffusion.betas).to(device=variance.device, dtype=variance.dtype)
        return torch.where(variance > 0, variance, betas[t.to(variance.device)].view_as(variance))


def label_objective(
    classifier: Classifier,
    labels: torch.Tensor,
    types: torch.Tensor | None = None,
    kind: str | None = None,
) -> Objective:
    """``log p_phi(y | x, t)`` of the requested ``labels`` (B,) as an ``Objective`` (Alg. 1).

    ``kind`` defaults to the classifier's. With a type-S classifier, ``types`` (B,) (0 = N2E,
    1 = E2N) asks for a label in a given order (the joint class); without, for the label in
    either order (the marginal over types). See ``label_log_probs``.
    """
    kind = classifier.config.kind if kind is None else kind
    labels = labels.long()

    def objective(x: torch.Tensor, t_model: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        log_probs = label_log_probs(classifier(x, t_model, mask=mask), kind, types)
        return log_probs.gather(1, labels.to(log_probs.device).view(-1, 1)).squeeze(1)

    return objective


def text_objective(guide: TextGuide, embedding: torch.Tensor) -> Objective:
    """``cos(BiT(x, t), E(c))`` per sample (B,), the control term of text control (Eq. 10, Alg. 2).

    ``embedding`` is the text embedding ``E(c)`` in ``guide``'s text space: (D,) for one text for
    every sample, or (B, D) for one per sample (``face4d.models.text_guide.embed_texts`` encodes
    texts with the guide's own encoder). A zero row would make the score zero everywhere, so empty
    embeddings are an error.

    Scale: as in the paper, the cosine enters the refinement unscaled, next to ``lam * log
    p_theta(x | x_t)``. It is bounded in [-1, 1] and its gradient fades as it saturates, unlike
    that of ``log p_phi(y | x)``, so the ``lam`` tuned for label control need not suit text control.
    Adagrad's step is invariant to a common scale of both terms, so weighting the cosine by ``s``
    is the same as dividing ``lam`` by ``s``: tune ``lam`` alone (lower = stronger text control).
    """
    dim = guide.config.embedding_dim
    if embedding.ndim not in (1, 2) or embedding.shape[-1] != dim:
        raise Face4DError(f"text embedding must be ({dim},) or (B, {dim}) for this guide, "
                          f"got {tuple(embedding.shape)}")
    if not (embedding.detach().norm(dim=-1) > 0).all():
        raise Face4DError("text embedding is zero; encode a non-empty text")
    embedding = embedding.detach()

    def objective(x: torch.Tensor, t_model: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return text_similarity(guide(x, t_model, mask=mask), embedding)

    return objective


def compose_hooks(*hooks: StepHook) -> StepHook:
    """One hook that runs ``hooks`` in order, each on the ``x_prev`` the previous ones left (e.g.
    label guidance, then re-imposing known frames). Returns None when none replaced ``x_prev``."""

    def composed(x_prev: torch.Tensor, t_prev: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor,
                 out: dict[str, torch.Tensor]) -> torch.Tensor | None:
        replaced = None
        for hook in hooks:
            replacement = hook(x_prev if replaced is None else replaced, t_prev, x_t, t, out)
            if replacement is not None:
                replaced = replacement
        return replaced

    return composed
