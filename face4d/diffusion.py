"""All the diffusion math of the landmark-sequence DDPM (paper Sec. 3.1 and 4), in one place.

The model is trained unconditionally; every form of conditioning (label/text guidance, filling of
known frames, geometry-adaptive generation, Appendix C algorithms 1-4) acts on the reverse process.
So this module exposes the pieces those tasks need -- the forward process ``q_sample``, one reverse
step's Gaussian ``p_mean_variance`` and its density ``log_prob_reverse`` -- and samplers with a
``step_hook`` that may replace every ``x_{t-1}`` and an ``x0_guidance`` that may correct every
step's estimate of ``x_0``. Networks live elsewhere (``face4d.models``): a
noise model here is any callable ``model(x_t, t, mask=mask) -> eps`` and knows nothing of the
schedule.

Conventions (those of OpenAI's guided-diffusion, so its code and ours read alike):

* Timesteps are 0-based. Index ``t`` in ``[0, num_timesteps)`` is the paper's step ``t + 1``:
  ``q_sample(x0, t)`` draws the paper's ``x_{t+1}``, and a reverse step at index ``t`` turns it into
  the paper's ``x_t``; the step at ``t == 0`` yields the clean sample ``x_0`` and adds no noise.
* Sequences are batched as ``(B, F, ...)`` (``(B, F, 68, 3)`` for landmarks) with an optional
  ``(B, F)`` bool ``mask`` that is True on valid frames; padded frames never enter a loss or a log
  density, and samplers keep them at zero (the interchange format's padding).
* The schedule is stored as float64 numpy arrays and gathered per timestep by ``extract``, so
  precision does not depend on the data's dtype or device.
* A respaced diffusion (``respaced``) has its own, shorter schedule and ``timestep_map`` from its
  indices to those of the schedule the network was trained on; the network is always called with
  ``model_timesteps(t)``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from face4d.errors import Face4DError
from face4d.settings import PREDICTIONS, VARIANCES

NoiseModel = Callable[..., torch.Tensor]
"""``model(x_t, t, mask=None) -> output``: ``t`` is a (B,) long tensor of *training* timesteps; the
output is the noise ``eps``, the clean sample ``x_0`` or the velocity ``v``, as the diffusion's
``prediction`` says."""

StepHook = Callable[
    [torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]],
    torch.Tensor | None,
]
"""``step_hook(x_prev, t_prev, x_t, t, out) -> x_prev | None``, called after every reverse step.

* ``x_t``: the sample the step started from, at index ``t`` ((B,) long tensor, indices of the
  sampling diffusion's own schedule; for a respaced diffusion ``diffusion.model_timesteps(t)`` gives
  the training timesteps that a network or classifier expects).
* ``x_prev``: the sample the step drew, the paper's ``\\hat x_{t-1}``.
* ``t_prev``: the index at which ``x_prev`` lies, ``t - 1``, so that ``diffusion.q_sample(x0,
  t_prev)`` draws the same noise level (Alg. 3 line 12); ``None`` at the last step, where
  ``x_prev`` is the clean sample ``x_0``.
* ``out``: the step's Gaussian ``p(x_prev | x_t)``, detached: ``"mean"`` and ``"variance"`` /
  ``"log_variance"`` (shape (B, 1, ...), broadcastable to ``x_t``; feed them to
  ``log_prob_reverse``), ``"pred_x0"`` (the model's estimate of ``x_0``) and ``"eps"`` (the model's
  noise estimate). DDIM's variance is 0 (log ``-inf``) when ``eta == 0`` and at ``t == 0``.

Returning a tensor replaces ``x_prev`` (e.g. the Adagrad refinement of Alg. 1, or known frames
re-noised by Alg. 3); returning ``None`` keeps it. The model ran under ``torch.no_grad()`` but the hook
does not, so it may differentiate with respect to ``x_prev`` (wrap in ``torch.enable_grad()`` if the
caller samples inside ``no_grad``). Padded frames are zeroed before and after the hook.
"""

X0Guidance = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``x0_guidance(pred_x0, x_t, t) -> pred_x0``: corrects the model's estimate of ``x_0`` before a
reverse step takes its mean from it (as guided-diffusion's ``denoised_fn``), but called with
autograd on from ``x_t`` through the noise model, so that it may differentiate ``pred_x0`` with
respect to ``x_t``: reconstruction guidance (``face4d.filling.KnownFrameReconstruction``) needs
exactly that. ``t`` holds indices of the sampling diffusion's schedule; the result is detached. A
guidance whose attribute ``differentiates`` is False is called without autograd (cheaper).
"""


def linear_beta_schedule(T: int = 2000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """The paper's schedule (Sec. 4, after Ho et al.): ``T`` betas linear from 1e-4 to 0.02, T = 2000."""
    if T < 1:
        raise ValueError(f"T must be >= 1, got {T}")
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


@dataclass(frozen=True)
class DiffusionConfig:
    """The diffusion a bundle's models share, as its ``bundle.json`` records it: the paper's linear
    schedule of ``num_timesteps`` betas from ``beta_start`` to ``beta_end``, and what the denoiser
    predicts (``PREDICTIONS``). A member's config.json records ``schedule`` and ``num_timesteps``
    (and the denoiser's ``prediction``); the betas it leaves out are these defaults, which every
    ``face4d train`` run has used."""

    schedule: str = "linear"
    num_timesteps: int = 2000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction: str = "epsilon"

    def __post_init__(self) -> None:
        if self.schedule != "linear":
            raise Face4DError(f"unknown diffusion schedule {self.schedule!r}; only 'linear' is supported")
        if not isinstance(self.num_timesteps, int) or isinstance(self.num_timesteps, bool) or self.num_timesteps < 1:
            raise Face4DError(f"diffusion.num_timesteps must be a positive integer, got {self.num_timesteps!r}")
        if not (isinstance(self.beta_start, (int, float)) and isinstance(self.beta_end, (int, float))
                and 0.0 < self.beta_start <= self.beta_end < 1.0):
            raise Face4DError(f"diffusion betas must satisfy 0 < beta_start <= beta_end < 1, got "
                              f"{self.beta_start!r} and {self.beta_end!r}")
        if self.prediction not in PREDICTIONS:
            raise Face4DError(f"unknown prediction {self.prediction!r}; use one of {', '.join(PREDICTIONS)}")

    @classmethod
    def from_dict(cls, data: Any) -> DiffusionConfig:
        """From a ``diffusion`` entry of bundle.json or of a member's config.json; unknown keys are an error."""
        if not isinstance(data, dict):
            raise Face4DError(f"diffusion must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise Face4DError(f"unknown diffusion keys: {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def build(self, x0_range: tuple[np.ndarray, np.ndarray] | None = None) -> GaussianDiffusion:
        """The ``GaussianDiffusion`` of this config (``x0_range``: the denoiser's clamp bounds)."""
        return GaussianDiffusion(linear_beta_schedule(self.num_timesteps, self.beta_start, self.beta_end),
                                 x0_range=x0_range, prediction=self.prediction)


def extract(arr: np.ndarray, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``arr[t]`` as a (B, 1, ..., 1) tensor with ``like``'s dtype and device, ready to broadcast.

    Gathered on the CPU in float64, then cast, so that devices without float64 work too.
    """
    values = torch.from_numpy(arr)[t.detach().cpu().long()]
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def _frame_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A (B, F) validity mask as a float (B, F, 1, ..., 1) tensor that broadcasts to ``like``."""
    if mask is None:
        return None
    if mask.shape != like.shape[:2]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match (B, F) = {tuple(like.shape[:2])}")
    return mask.to(device=like.device, dtype=like.dtype).view(*mask.shape, *([1] * (like.ndim - 2)))


def _zero_padded(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x`` with padded frames set to zero, the padding value of the interchange format."""
    weights = _frame_mask(mask, x)
    return x if weights is None else torch.where(weights > 0, x, torch.zeros_like(x))


def _randn(
    shape: tuple[int, ...],
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Standard normal noise, drawn on the generator's device so a seed gives the same numbers
    whatever device the sampling runs on."""
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype).to(device)


def _step_noise(x_t: torch.Tensor, t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The ``z`` of a reverse step: N(0, I), but 0 where ``t == 0`` -- the last step returns its
    mean, a sample of the data rather than of a noise level (Alg. 1 line 7)."""
    noise = _randn(tuple(x_t.shape), x_t.device, x_t.dtype, generator)
    return noise * (t != 0).to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))


def _model_device(model: NoiseModel) -> torch.device:
    """The device of a module's parameters; CPU for parameter-free callables (analytic models)."""
    if isinstance(model, torch.nn.Module):
        for parameter in model.parameters():
            return parameter.device
    return torch.device("cpu")


class GaussianDiffusion:
    """A DDPM with fixed variances ``sigma_t^2 = beta_t``; its network predicts ``eps`` (the paper),
    ``x_0`` or ``v`` (``prediction``), and every sampler works from the ``(x_0, eps)`` pair that
    output implies.

    Args:
        betas: (T,) variances of the forward steps, each in (0, 1).
        timestep_map: (T,) training timestep of each index; the identity when omitted. Only
            ``respaced`` needs to pass it.
        x0_range: optional ``(low, high)`` bounds, broadcastable to a sample, that every predicted
            ``x_0`` is clamped to (guided-diffusion's ``clip_denoised``, with the training data's
            range instead of images' [-1, 1]). Why: with T = 2000, ``abar_T`` is ~2e-9, so
            ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)`` multiplies the noise model's
            smallest error by up to ~2e4 early in sampling; a strided sampler's large steps carry that
            into the sample, which drifts out of the data's range and does not come back. Clamping
            to where data can be removes the blow-up without touching accurate predictions.
        variance: the reverse steps' variance, ``beta`` (the paper: ``sigma_t^2 = beta_t``) or
            ``posterior`` (the forward posterior's ``beta~_t``, smaller at the last steps, where
            ``beta`` leaves noise the network must remove in one step).
        eta: None for ancestral sampling (``sample_loop`` runs ``p_sample_loop``), or DDIM's
            ``eta`` (``sample_loop`` runs ``ddim_sample_loop``; 0: deterministic).
        prediction: what the network outputs, one of ``PREDICTIONS``. With ``sample`` (or ``v``)
            the network's error enters ``x_0`` directly instead of through ``1 / sqrt(abar_t)``, and
            a loss on ``x_0`` can also see its frame-to-frame differences (``velocity_weight``).
    """

    def __init__(self, betas: np.ndarray, timestep_map: np.ndarray | None = None,
                 x0_range: tuple[np.ndarray, np.ndarray] | None = None, prediction: str = "epsilon",
                 variance: str = "beta", eta: float | None = None) -> None:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0:
            raise ValueError(f"betas must be a non-empty 1-D array, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            raise ValueError("betas must lie in (0, 1)")
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
        self.prediction = prediction
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance {variance!r}; use one of {', '.join(VARIANCES)}")
        if eta is not None and not 0.0 <= eta <= 1.0:
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
        self.variance, self.eta = variance, eta
        self.betas = betas
        self.num_timesteps = int(betas.size)
        if timestep_map is None:
            timestep_map = np.arange(self.num_timesteps)
        self.timestep_map = np.asarray(timestep_map, dtype=np.int64)
        if self.timestep_map.shape != betas.shape:
            raise ValueError("timestep_map must have one entry per timestep")
        self.x0_range = None
        if x0_range is not None:
            low, high = (np.asarray(bound, dtype=np.float32) for bound in x0_range)
            if low.shape != high.shape or not np.all(low < high):
                raise ValueError("x0_range needs bounds of one shape with low < high")
            self.x0_range = (low, high)

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        # q(x_t | x_0), Eq. 3 / 6
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        # x_0 from (x_t, eps), Eq. 6 inverted
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, posterior_variance)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (
            (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)
        )
        # p(x_{t-1} | x_t) has variance sigma_t^2 = beta_t (Sec. 4), or the posterior's; its log at
        # t = 0, where the posterior variance is 0, takes the next step's value (as guided-diffusion)
        # since that step adds no noise anyway (``_step_noise``).
        if variance == "beta":
            self.reverse_variance = betas
        else:
            self.reverse_variance = np.append(self.posterior_variance[1], self.posterior_variance[1:]) \
                if betas.size > 1 else betas
        self.reverse_log_variance = np.log(self.reverse_variance)

    # ----------------------------------------------------------------------------- schedule

    def respaced(self, num_steps: int) -> GaussianDiffusion:
        """This diffusion restricted to ``num_steps`` evenly strided timesteps (first and last kept).

        As guided-diffusion's ``SpacedDiffusion``: the kept ``alphas_cumprod`` are unchanged, so
        ``q(x_t | x_0)`` is the same at every kept step, and the betas are recomputed as
        ``1 - abar_k / abar_{k-1}``, so a reverse step jumps between consecutive kept steps with
        ``sigma^2`` = its own beta. Sampling the result with ``p_sample_loop`` is the fast "strided
        DDPM"; the network keeps receiving the training timesteps via ``timestep_map``.
        """
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in [1, {self.num_timesteps}], got {num_steps}")
        # Spread down from the last step, so that num_steps == 1 keeps the pure-noise end. Rounding
        # half up (not numpy's half-to-even) keeps a stride >= 1 free of duplicates.
        kept = np.floor(np.linspace(self.num_timesteps - 1, 0, num_steps) + 0.5).astype(np.int64)[::-1]
        alphas_cumprod = self.alphas_cumprod[kept]
        betas = 1.0 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
        return GaussianDiffusion(betas, timestep_map=self.timestep_map[kept], x0_range=self.x0_range,
                                 prediction=self.prediction, variance=self.variance, eta=self.eta)

    def with_sampler(self, variance: str = "beta", eta: float | None = None) -> GaussianDiffusion:
        """This diffusion (same schedule and network interpretation) sampled with another reverse
        ``variance`` or, with ``eta`` not None, by DDIM."""
        return GaussianDiffusion(self.betas, timestep_map=self.timestep_map, x0_range=self.x0_range,
                                 prediction=self.prediction, variance=variance, eta=eta)

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The training timesteps of indices ``t`` of this schedule: what networks are called with."""
        return torch.from_numpy(self.timestep_map).to(t.device)[t.long()]

    # ----------------------------------------------------------------------- forward process

    def q_sample(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Draw ``x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)`` (Eq. 6).

        ``noise`` is drawn from ``generator`` when not given, so hooks sharing the sampler's
        generator stay repeatable.
        """
        if noise is None:
            noise = _randn(tuple(x0.shape), x0.device, x0.dtype, generator)
        return (
            extract(self.sqrt_alphas_cumprod, t, x0) * x0
            + extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (shaped as ``x_t``) and variance (B, 1, ...) of the forward posterior
        ``q(x_{t-1} | x_t, x_0)``: the target the reverse step imitates."""
        mean = (
            extract(self.posterior_mean_coef1, t, x_t) * x0 + extract(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, extract(self.posterior_variance, t, x_t)

    def predict_x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Invert Eq. 6: ``x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, clamped to ``x0_range``
        when this diffusion has one."""
        return self.clamp_x0(self._x0_of_eps(x_t, t, eps))

    def _x0_of_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t) * eps

    def x0_from_output(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The clean sample a network's ``output`` at ``(x_t, t)`` stands for, before any clamping."""
        if self.prediction == "sample":
            return output
        if self.prediction == "v":
            return extract(self.sqrt_alphas_cumprod, t, x_t) * x_t - extract(
                self.sqrt_one_minus_alphas_cumprod, t, x_t) * output
        return self._x0_of_eps(x_t, t, output)

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise that takes ``x0`` to ``x_t`` at ``t`` (Eq. 6 solved for ``eps``)."""
        return (extract(self.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t)

    def clamp_x0(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` clamped to ``x0_range`` when this diffusion has one."""
        if self.x0_range is None:
            return x0
        low, high = (torch.as_tensor(bound, dtype=x0.dtype, device=x0.device) for bound in self.x0_range)
        return torch.maximum(torch.minimum(x0, high), low)

    # ----------------------------------------------------------------------- reverse process

    def p_mean_variance(
        self, model: NoiseModel, x_t: torch.Tensor, t: torch.Tensor, x0_guidance: X0Guidance | None = None,
        **model_kwargs: Any
    ) -> dict[str, torch.Tensor]:
        """The Gaussian ``p_theta(x_{t-1} | x_t)`` of Eq. 5 with ``Sigma = beta_t I``.

        Its mean is the forward posterior mean at the predicted ``x_0``, which equals Eq. 7,
        ``(x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)`` unless ``x_0`` was clamped to
        ``x0_range`` or corrected by ``x0_guidance`` (see ``X0Guidance``; the model then runs with
        autograd on, whatever the caller's grad mode). Returns ``mean``, ``variance``,
        ``log_variance`` (B, 1, ...), ``pred_x0`` (the corrected one) and ``eps`` (the noise that
        ``pred_x0`` and ``x_t`` imply).
        """
        if x0_guidance is None or not getattr(x0_guidance, "differentiates", True):
            pred_x0 = self.clamp_x0(self.x0_from_output(self._output(model, x_t, t, **model_kwargs), x_t, t))
            if x0_guidance is not None:
                pred_x0 = x0_guidance(pred_x0, x_t, t).detach()
        else:
            with torch.enable_grad():
                x_in = x_t.detach().requires_grad_(True)
                x0 = self.clamp_x0(self.x0_from_output(self._output(model, x_in, t, **model_kwargs), x_in, t))
                pred_x0 = x0_guidance(x0, x_in, t).detach()
        eps = self.eps_from_x0(pred_x0, x_t, t)
        mean, _ = self.q_posterior_mean_variance(pred_x0, x_t, t)
        return {
            "mean": mean,
            "variance": extract(self.reverse_variance, t, x_t),
            "log_variance": extract(self.reverse_log_variance, t, x_t),
            "pred_x0": pred_x0,
            "eps": eps,
        }

    def _output(self, model: NoiseModel, x_t: torch.Tensor, t: torch.Tensor, **model_kwargs: Any) -> torch.Tensor:
        output = model(x_t, self.model_timesteps(t), **model_kwargs)
        if output.shape != x_t.shape:
            raise ValueError(f"model output shape {tuple(output.shape)} != input shape {tuple(x_t.shape)}")
        return output

    @staticmethod
    def log_prob_reverse(
        x: torch.Tensor,
        mean: torch.Tensor,
        log_variance: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``log p_theta(x | x_t)`` per sequence, (B,): a diagonal Gaussian log density summed over
        the elements of valid frames.

        This is the fluency term ``lambda * log p_theta(x_{t-1} | x_t)`` that label and text
        guidance (Eq. 10, Alg. 1-2) maximise together with the classifier; it is differentiable in
        ``x``. Pass ``out["mean"]`` and ``out["log_variance"]`` of the step being refined.
        """
        log_density = -0.5 * (
            math.log(2.0 * math.pi) + log_variance + (x - mean) ** 2 * torch.exp(-log_variance)
        )
        weights = _frame_mask(mask, x)
        if weights is not None:
            # where(), not a product: a padded frame far from the mean must not turn into 0 * inf.
            log_density = torch.where(weights > 0, log_density, torch.zeros_like(log_density))
        return log_density.flatten(1).sum(dim=1)

    def p_sample(self, model: NoiseModel, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 x0_guidance: X0Guidance | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One ancestral step (Alg. 1 lines 4-8): ``x_{t-1} = mean + sigma_t z``; returns it and
        ``p_mean_variance``'s dict."""
        out = self.p_mean_variance(model, x_t, t, x0_guidance, mask=mask)
        noise = _step_noise(x_t, t, generator)
        return out["mean"] + torch.exp(0.5 * out["log_variance"]) * noise, out

    def ddim_sample(self, model: NoiseModel, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None,
                    generator: torch.Generator | None = None, eta: float = 0.0,
                    x0_guidance: X0Guidance | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One DDIM step (Song et al., Eq. 12): deterministic for ``eta = 0``, DDPM-like for 1.

        ``x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - s^2) eps + s z`` with
        ``s^2 = eta^2 (1 - abar_{t-1}) / (1 - abar_t) (1 - abar_t / abar_{t-1})``.
        """
        out = self.p_mean_variance(model, x_t, t, x0_guidance, mask=mask)
        # out["eps"] is the noise that x_t and the (possibly clamped) x_0 imply: the step stays consistent.
        pred_x0, eps = out["pred_x0"], out["eps"]
        alpha_bar = extract(self.alphas_cumprod, t, x_t)
        alpha_bar_prev = extract(self.alphas_cumprod_prev, t, x_t)
        variance = eta**2 * (1 - alpha_bar_prev) / (1 - alpha_bar) * (1 - alpha_bar / alpha_bar_prev)
        mean = alpha_bar_prev.sqrt() * pred_x0 + (1 - alpha_bar_prev - variance).sqrt() * eps
        out = {**out, "mean": mean, "variance": variance, "log_variance": torch.log(variance)}
        return mean + variance.sqrt() * _step_noise(x_t, t, generator), out

    # ------------------------------------------------------------------------------ samplers

    def p_sample_loop(self, model: NoiseModel, shape: tuple[int, ...], mask: torch.Tensor | None = None,
                      generator: torch.Generator | None = None, progress: bool = False,
                      step_hook: StepHook | None = None, x_T: torch.Tensor | None = None,
                      device: torch.device | str | None = None,
                      x0_guidance: X0Guidance | None = None) -> torch.Tensor:
        """Ancestral sampling over every step of this schedule, from ``x_T`` (default N(0, I)) to
        ``x_0``. On ``respaced(K)`` it is the K-step strided DDPM.

        ``shape`` is (B, F, ...); ``mask`` (B, F) marks valid frames (given to the model and kept
        zero elsewhere); ``step_hook`` follows the ``StepHook`` contract (draw its noise from
        ``generator`` to keep a seed repeatable); ``x0_guidance`` corrects every step's ``x_0``
        estimate (``X0Guidance``); ``device`` defaults to the model's; samples are float32 unless
        ``x_T`` has another dtype. Put a network in ``eval()`` mode first (dropout).
        """
        return self._sample_loop(None, model, shape, mask, generator, progress, step_hook, x_T, device, x0_guidance)

    def ddim_sample_loop(self, model: NoiseModel, shape: tuple[int, ...], mask: torch.Tensor | None = None,
                         generator: torch.Generator | None = None, progress: bool = False,
                         step_hook: StepHook | None = None, x_T: torch.Tensor | None = None,
                         device: torch.device | str | None = None, eta: float = 0.0,
                         x0_guidance: X0Guidance | None = None) -> torch.Tensor:
        """DDIM sampling over every step of this schedule (use it on ``respaced(K)``); arguments
        as ``p_sample_loop``."""
        return self._sample_loop(eta, model, shape, mask, generator, progress, step_hook, x_T, device, x0_guidance)

    def sample_loop(self, model: NoiseModel, shape: tuple[int, ...], **kwargs: Any) -> torch.Tensor:
        """This diffusion's own sampler: ``p_sample_loop`` when ``eta`` is None, else DDIM with that
        ``eta``; keyword arguments as ``p_sample_loop``."""
        if self.eta is None:
            return self.p_sample_loop(model, shape, **kwargs)
        return self.ddim_sample_loop(model, shape, eta=self.eta, **kwargs)

    def _sample_loop(
        self,
        eta: float | None,
        model: NoiseModel,
        shape: tuple[int, ...],
        mask: torch.Tensor | None,
        generator: torch.Generator | None,
        progress: bool,
        step_hook: StepHook | None,
        x_T: torch.Tensor | None,
        device: torch.device | str | None,
        x0_guidance: X0Guidance | None,
    ) -> torch.Tensor:
        """The loop shared by both samplers (``eta`` None: DDPM, else DDIM with that ``eta``): reverse
        steps from the last index to 0, each followed by the hook, with padded frames held at zero."""
        device = torch.device(device) if device is not None else _model_device(model)
        if x_T is None:
            x = _randn(tuple(shape), device, torch.float32, generator)
        elif tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T shape {tuple(x_T.shape)} != requested shape {tuple(shape)}")
        else:
            x = x_T.to(device)
        if mask is not None:
            mask = mask.to(device)
        x = _zero_padded(x, mask)
        indices = range(self.num_timesteps - 1, -1, -1)
        for i in tqdm(indices, desc="sampling", disable=not progress):
            t = torch.full((shape[0],), i, dtype=torch.long, device=device)
            with torch.no_grad():
                if eta is None:
                    x_prev, out = self.p_sample(model, x, t, mask, generator, x0_guidance)
                else:
                    x_prev, out = self.ddim_sample(model, x, t, mask, generator, eta=eta, x0_guidance=x0_guidance)
            x_prev = _zero_padded(x_prev, mask)
            if step_hook is not None:
                replacement = step_hook(x_prev, t - 1 if i > 0 else None, x, t, out)
                if replacement is not None:
                    x_prev = _zero_padded(replacement.detach(), mask)
            x = x_prev
        return x

    # ------------------------------------------------------------------------------ training

    def training_loss(
        self,
        model: NoiseModel,
        x0: torch.Tensor,
        mask: torch.Tensor | None = None,
        t: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        velocity_weight: float = 0.0,
        snr_gamma: float | None = None,
        snr_floor: float = 0.0,
        model_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """The simple loss of Eq. 8: mean squared error between the network's output and its target
        (``eps``, ``x_0`` or ``v`` by ``prediction``), plus ``velocity_weight`` times the mean squared
        error of the predicted ``x_0``'s frame-to-frame differences (MDM's velocity loss).

        Why a velocity term: the per-element loss weighs a frame's error the same whether it is
        shared by its neighbours (a slightly different pose, harmless) or not (a tremble), while a
        sequence's motion is a small part of its variance; the difference term targets exactly the
        error an animation shows. It needs ``sample`` or ``v`` prediction: with ``epsilon`` the
        predicted ``x_0`` carries the network's error times ``1 / sqrt(abar_t)`` (up to ~2e4).

        ``snr_gamma`` weighs each sequence's errors by Min-SNR-gamma (Hang et al. 2023): as if the
        loss were on ``x_0`` with weight ``min(SNR_t, gamma)``, ``SNR_t = abar_t / (1 - abar_t)``. A
        uniform loss on ``x_0`` spends nearly all its weight on high noise levels, where a sequence's
        motion cannot be seen and only its mean is learnt; the fine motion is learnt at low noise.
        ``snr_floor`` raises the ``x_0`` weights to at least that value: Min-SNR alone gives the
        highest noise levels (``SNR_t`` ~ 1e-3 beyond t = 1200 of 2000) almost no weight, and a
        network that never learnt them starts every sample off the data and loses the expression.

        ``t`` is uniform over this schedule and ``noise`` standard normal (both from torch's global
        generator) unless given. Errors are averaged over the elements of valid frames (and valid
        pairs of consecutive frames) only, each of the batch weighing the same, so padding neither
        dilutes nor leaks into it. ``model_kwargs`` go to the network (a conditional one's condition).
        """
        if velocity_weight < 0:
            raise ValueError(f"velocity_weight must be >= 0, got {velocity_weight}")
        if velocity_weight and self.prediction == "epsilon":
            raise ValueError("a velocity loss needs 'sample' or 'v' prediction")
        batch = x0.shape[0]
        if t is None:
            t = torch.randint(0, self.num_timesteps, (batch,), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, self.model_timesteps(t), mask=mask, **(model_kwargs or {}))
        if self.prediction == "epsilon":
            target = noise
        elif self.prediction == "sample":
            target = x0
        else:
            target = extract(self.sqrt_alphas_cumprod, t, x0) * noise - extract(
                self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        weights = torch.ones(batch, 1, dtype=x0.dtype, device=x0.device)
        if snr_gamma is not None:
            snr = torch.from_numpy(self.alphas_cumprod / (1.0 - self.alphas_cumprod))[t.cpu()]
            x0_weight = torch.clamp(torch.clamp(snr, max=snr_gamma), min=snr_floor)
            scale = {"epsilon": snr, "sample": torch.ones_like(snr), "v": snr + 1.0}[self.prediction]
            weights = (x0_weight / scale).to(weights).view(batch, 1)
        loss = _masked_mean(weights * ((output - target) ** 2).flatten(2).mean(dim=2), mask)
        if velocity_weight:
            velocity_error = torch.diff(self.x0_from_output(output, x_t, t) - x0, dim=1)
            pairs = None if mask is None else mask[:, 1:] & mask[:, :-1]
            x0_weights = weights if snr_gamma is None else x0_weight.to(weights).view(batch, 1)
            loss = loss + velocity_weight * _masked_mean(x0_weights * (velocity_error ** 2).flatten(2).mean(dim=2), pairs)
        return loss


def _masked_mean(errors: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of (B, F) per-frame ``errors`` over the True entries of ``mask`` (all when None)."""
    weights = _frame_mask(mask, errors)
    if weights is None:
        return errors.mean()
    if not weights.any():
        raise ValueError("mask has no valid frame")
    # where(), not a product: whatever the model outputs on padded frames (even NaN) is dropped.
    return torch.where(weights > 0, errors, torch.zeros_like(errors)).sum() / weights.sum()
