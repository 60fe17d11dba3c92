"""Numerical checks of face4d.diffusion (schedule, forward/reverse process, samplers) and of the
transformer noise model. Kept fast: analytic models and tiny networks only."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.models import Denoiser, DenoiserConfig

T = 2000


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(linear_beta_schedule(T))


def tiny_config(**overrides: object) -> DenoiserConfig:
    values = dict(num_landmarks=68, d_model=32, layers=2, heads=4, ff=64, dropout=0.0, max_frames=16)
    values.update(overrides)
    return DenoiserConfig(**values)


class GaussianOracle:
    """The optimal noise model for data x0 ~ N(mu, s^2 I): E[eps | x_t], in closed form.

    It reads the *training* schedule with the timesteps it is given, so it is only right if the
    sampler maps respaced indices back through ``timestep_map``.
    """

    def __init__(self, base: GaussianDiffusion, mu: float, s: float) -> None:
        self.alphas_cumprod = torch.from_numpy(base.alphas_cumprod)
        self.mu, self.s = mu, s
        self.calls: list[torch.Tensor] = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(t.clone())
        abar = self.alphas_cumprod[t].to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - abar.sqrt() * self.mu) * (1 - abar).sqrt() / (abar * self.s**2 + 1 - abar)


# ------------------------------------------------------------------------------ schedule


def test_linear_schedule_endpoints_and_length() -> None:
    betas = linear_beta_schedule()
    assert betas.dtype == np.float64 and betas.shape == (2000,)
    assert betas[0] == pytest.approx(1e-4, abs=1e-15) and betas[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.all(np.diff(betas) > 0)


def test_schedule_terminal_noise_is_near_isotropic(diffusion: GaussianDiffusion) -> None:
    """x_T must be ~N(0, I) for sampling from pure noise to be right (Sec. 3.1)."""
    assert diffusion.alphas_cumprod[-1] < 1e-8
    assert diffusion.alphas_cumprod_prev[0] == 1.0


# ------------------------------------------------------------------------ forward process


@pytest.mark.parametrize("t", [0, 100, 999, 1999])
def test_q_sample_mean_and_variance(diffusion: GaussianDiffusion, t: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1, 2, 3), 1.7, dtype=torch.float64)
    x_t = diffusion.q_sample(x0, torch.full((20000,), t), generator=generator)
    abar = diffusion.alphas_cumprod[t]
    assert x_t.mean().item() == pytest.approx(math.sqrt(abar) * 1.7, abs=0.01)
    assert x_t.var().item() == pytest.approx(1 - abar, rel=0.02, abs=1e-6)


@pytest.mark.parametrize("t", [1, 10, 500, 1999])
def test_posterior_matches_bayes_rule(diffusion: GaussianDiffusion, t: int) -> None:
    """q(x_{t-1} | x_t, x0) from the product of q(x_{t-1} | x0) and q(x_t | x_{t-1}) by hand."""
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 68, 3, generator=generator, dtype=torch.float64)
    x_t = torch.randn(3, 4, 68, 3, generator=generator, dtype=torch.float64)
    beta, abar_prev = diffusion.betas[t], diffusion.alphas_cumprod[t - 1]
    precision = 1 / (1 - abar_prev) + (1 - beta) / beta
    expected_var = 1 / precision
    expected_mean = expected_var * (
        math.sqrt(abar_prev) * x0 / (1 - abar_prev) + math.sqrt(1 - beta) * x_t / beta
    )
    mean, var = diffusion.q_posterior_mean_variance(x0, x_t, torch.full((3,), t))
    torch.testing.assert_close(mean, expected_mean, rtol=1e-10, atol=1e-10)
    assert var.shape == (3, 1, 1, 1)
    torch.testing.assert_close(var, torch.full_like(var, expected_var), rtol=1e-10, atol=0.0)


def test_posterior_at_first_step_is_x0(diffusion: GaussianDiffusion) -> None:
    x0, x_t = torch.randn(2, 3, 68, 3, dtype=torch.float64), torch.randn(2, 3, 68, 3, dtype=torch.float64)
    mean, var = diffusion.q_posterior_mean_variance(x0, x_t, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert torch.all(var == 0)


@pytest.mark.parametrize("t", [0, 1000, 1999])
def test_predict_x0_from_eps_inverts_q_sample(diffusion: GaussianDiffusion, t: int) -> None:
    x0, eps = torch.randn(4, 5, 68, 3, dtype=torch.float64), torch.randn(4, 5, 68, 3, dtype=torch.float64)
    steps = torch.full((4,), t)
    x_t = diffusion.q_sample(x0, steps, eps)
    torch.testing.assert_close(diffusion.predict_x0_from_eps(x_t, steps, eps), x0, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------------ reverse process


def test_p_mean_variance_is_eq7_with_beta_variance(diffusion: GaussianDiffusion) -> None:
    torch.manual_seed(2)
    eps = torch.randn(3, 4, 68, 3, dtype=torch.float64)
    x_t = torch.randn(3, 4, 68, 3, dtype=torch.float64)
    t = torch.tensor([0, 700, 1999])
    out = diffusion.p_mean_variance(lambda x, steps, mask=None: eps, x_t, t)
    beta = torch.from_numpy(diffusion.betas)[t].view(3, 1, 1, 1)
    abar = torch.from_numpy(diffusion.alphas_cumprod)[t].view(3, 1, 1, 1)
    eq7 = (x_t - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()
    torch.testing.assert_close(out["mean"], eq7, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["variance"], beta)
    torch.testing.assert_close(out["log_variance"], beta.log())
    torch.testing.assert_close(out["pred_x0"], diffusion.predict_x0_from_eps(x_t, t, eps))


def test_x0_guidance_corrects_the_mean_and_sees_the_network_graph(diffusion: GaussianDiffusion) -> None:
    """x0_guidance gets pred_x0 with its graph back to x_t (even under no_grad) and the step's mean
    is the posterior mean at what it returns."""
    torch.manual_seed(4)
    x_t = torch.randn(2, 3, 68, 3, dtype=torch.float64)
    t = torch.tensor([10, 900])
    model = lambda x, steps, mask=None: 0.5 * x  # noqa: E731 - pred_x0 is linear in x_t
    seen = {}

    def shift(pred_x0, x, steps):
        seen["grad"], = torch.autograd.grad(pred_x0.sum(), x, retain_graph=True)
        return pred_x0 + 1.0

    with torch.no_grad():
        out = diffusion.p_mean_variance(model, x_t, t, x0_guidance=shift)
    plain = diffusion.p_mean_variance(model, x_t, t)
    abar = torch.from_numpy(diffusion.alphas_cumprod)[t].view(2, 1, 1, 1)
    slope = (1 / abar.sqrt() - 0.5 * (1 / abar - 1).sqrt()).expand_as(x_t)  # d pred_x0 / d x_t
    torch.testing.assert_close(seen["grad"], slope)
    torch.testing.assert_close(out["pred_x0"], plain["pred_x0"] + 1.0)
    torch.testing.assert_close(out["mean"], diffusion.q_posterior_mean_variance(plain["pred_x0"] + 1.0, x_t, t)[0])
    assert not out["mean"].requires_grad and not out["pred_x0"].requires_grad


def test_log_prob_reverse_matches_normal_and_ignores_padding() -> None:
    torch.manual_seed(3)
    x, mean = torch.randn(2, 5, 68, 3), torch.randn(2, 5, 68, 3)
    log_variance = torch.tensor([-2.0, 0.5]).view(2, 1, 1, 1)
    std = torch.exp(0.5 * log_variance).expand_as(x)
    full = torch.distributions.Normal(mean, std).log_prob(x)
    torch.testing.assert_close(
        GaussianDiffusion.log_prob_reverse(x, mean, log_variance), full.flatten(1).sum(1), rtol=1e-5, atol=1e-3
    )
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    expected = (full * mask[:, :, None, None]).flatten(1).sum(1)
    moved = x.clone()
    moved[1, 3:] = 1e30  # a padded frame, however far off, contributes nothing
    torch.testing.assert_close(
        GaussianDiffusion.log_prob_reverse(moved, mean, log_variance, mask), expected, rtol=1e-5, atol=1e-3
    )


# ---------------------------------------------------------------------------- respacing


def test_respaced_keeps_alphas_cumprod_and_maps_timesteps(diffusion: GaussianDiffusion) -> None:
    spaced = diffusion.respaced(100)
    kept = spaced.timestep_map
    assert spaced.num_timesteps == 100 and kept[0] == 0 and kept[-1] == T - 1
    assert np.all(np.abs(np.diff(kept) - (T - 1) / 99) <= 1)
    np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)
    some = torch.tensor([0, 50, 99])
    torch.testing.assert_close(spaced.model_timesteps(some), torch.from_numpy(kept[some.numpy()]))
    # respacing a respaced diffusion composes the maps
    twice = spaced.respaced(10)
    np.testing.assert_allclose(twice.alphas_cumprod, diffusion.alphas_cumprod[twice.timestep_map], rtol=1e-12)
    assert diffusion.respaced(1).timestep_map.tolist() == [T - 1]


def test_respaced_full_length_equals_original(diffusion: GaussianDiffusion) -> None:
    same = diffusion.respaced(T)
    np.testing.assert_array_equal(same.timestep_map, np.arange(T))
    np.testing.assert_allclose(same.betas, diffusion.betas, rtol=1e-10)
    np.testing.assert_allclose(same.alphas_cumprod, diffusion.alphas_cumprod, rtol=1e-12)
    np.testing.assert_allclose(same.posterior_variance, diffusion.posterior_variance, rtol=1e-9)


@pytest.mark.parametrize("steps", [0, T + 1])
def test_respaced_rejects_bad_step_counts(diffusion: GaussianDiffusion, steps: int) -> None:
    with pytest.raises(ValueError):
        diffusion.respaced(steps)


# ----------------------------------------------------------------------------- samplers

MU, S = 1.5, 0.8
SHAPE = (3000, 1, 17, 3)


def test_oracle_strided_ddpm_recovers_gaussian(diffusion: GaussianDiffusion) -> None:
    """With the exact eps model the sampler must reproduce the data law. At K = 100 the exact
    linear-Gaussian recursion predicts std 0.805 for s = 0.8 (sigma^2 = beta is slightly large)."""
    sample = diffusion.respaced(100).p_sample_loop(
        GaussianOracle(diffusion, MU, S), SHAPE, generator=torch.Generator().manual_seed(4)
    )
    assert sample.mean().item() == pytest.approx(MU, abs=0.015)
    assert sample.std().item() == pytest.approx(S, rel=0.02)


def test_oracle_ddim_recovers_gaussian(diffusion: GaussianDiffusion) -> None:
    """Deterministic DDIM is first order: at K = 100 the exact recursion gives std 0.777 for 0.8."""
    sample = diffusion.respaced(100).ddim_sample_loop(
        GaussianOracle(diffusion, MU, S), SHAPE, generator=torch.Generator().manual_seed(5)
    )
    assert sample.mean().item() == pytest.approx(MU, abs=0.015)
    assert sample.std().item() == pytest.approx(S, rel=0.05)


def test_oracle_receives_original_timesteps(diffusion: GaussianDiffusion) -> None:
    spaced = diffusion.respaced(10)
    oracle = GaussianOracle(diffusion, MU, S)
    spaced.p_sample_loop(oracle, (2, 1, 1, 3))
    assert [int(t[0]) for t in oracle.calls] == spaced.timestep_map[::-1].tolist()


@pytest.mark.parametrize("loop", ["p_sample_loop", "ddim_sample_loop"])
def test_same_seed_same_samples(diffusion: GaussianDiffusion, loop: str) -> None:
    spaced = diffusion.respaced(20)
    oracle = GaussianOracle(diffusion, MU, S)
    kwargs = {"eta": 1.0} if loop == "ddim_sample_loop" else {}

    def draw(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return getattr(spaced, loop)(oracle, (3, 4, 68, 3), generator=generator, **kwargs)

    first, again, other = draw(7), draw(7), draw(8)
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_step_hook_contract_and_replacement(diffusion: GaussianDiffusion) -> None:
    spaced = diffusion.respaced(5)
    calls: list[dict[str, object]] = []
    replacements: list[torch.Tensor] = []

    def hook(x_prev, t_prev, x_t, t, out):  # type: ignore[no-untyped-def]
        calls.append({"t": t, "t_prev": t_prev, "x_t": x_t.clone(), "x_prev": x_prev.clone(), "out": out})
        replacements.append(torch.randn_like(x_prev))
        return replacements[-1]

    mask = torch.tensor([[True, True, False], [True, True, True]])
    result = spaced.p_sample_loop(GaussianOracle(diffusion, MU, S), (2, 3, 68, 3), mask=mask, step_hook=hook)

    assert [int(c["t"][0]) for c in calls] == [4, 3, 2, 1, 0]
    for call in calls:
        t, t_prev = call["t"], call["t_prev"]
        assert t.shape == (2,) and t.dtype == torch.long
        assert t_prev is None if int(t[0]) == 0 else torch.equal(t_prev, t - 1)
        out = call["out"]
        assert set(out) == {"mean", "variance", "log_variance", "pred_x0", "eps"}
        expected_log_variance = torch.from_numpy(spaced.reverse_log_variance)[t].float().view(2, 1, 1, 1)
        torch.testing.assert_close(out["log_variance"], expected_log_variance)
        assert torch.all(call["x_prev"][0, 2] == 0)  # padded frames are zero before the hook
    # each replacement (padded frames zeroed) is the next step's x_t, and the last one is returned
    for call, replacement in zip(calls[1:], replacements[:-1]):
        torch.testing.assert_close(call["x_t"], replacement * mask[:, :, None, None])
    torch.testing.assert_close(result, replacements[-1] * mask[:, :, None, None])


def test_step_hook_inpainting_keeps_known_frames(diffusion: GaussianDiffusion) -> None:
    """Alg. 3 written as a hook: known frames re-noised to x_prev's level, exact at the end."""
    spaced = diffusion.respaced(50)
    generator = torch.Generator().manual_seed(9)
    known = torch.randn(4, 1, 68, 3, generator=generator)

    def fill(x_prev, t_prev, x_t, t, out):  # type: ignore[no-untyped-def]
        x_prev = x_prev.clone()
        x_prev[:, :1] = known if t_prev is None else spaced.q_sample(known, t_prev, generator=generator)
        return x_prev

    oracle = GaussianOracle(diffusion, MU, S)
    result = spaced.p_sample_loop(oracle, (4, 6, 68, 3), generator=generator, step_hook=fill)
    assert torch.equal(result[:, :1], known)


def test_final_step_adds_no_noise(diffusion: GaussianDiffusion) -> None:
    spaced = diffusion.respaced(3)
    out_mean: list[torch.Tensor] = []

    def hook(x_prev, t_prev, x_t, t, out):  # type: ignore[no-untyped-def]
        out_mean.append(out["mean"])

    result = spaced.p_sample_loop(GaussianOracle(diffusion, MU, S), (2, 1, 68, 3), step_hook=hook)
    assert torch.equal(result, out_mean[-1])


# ----------------------------------------------------------------------------- training


def test_training_loss_ignores_padded_frames(diffusion: GaussianDiffusion) -> None:
    torch.manual_seed(10)
    model = Denoiser(tiny_config()).eval()
    x0, noise = torch.randn(2, 6, 68, 3), torch.randn(2, 6, 68, 3)
    t = torch.tensor([5, 1500])
    mask = torch.tensor([[True] * 6, [True, True, True, True, False, False]])
    loss = diffusion.training_loss(model, x0, mask=mask, t=t, noise=noise)
    x0_other, noise_other = x0.clone(), noise.clone()
    x0_other[1, 4:] = 100.0
    noise_other[1, 4:] = -50.0
    other = diffusion.training_loss(model, x0_other, mask=mask, t=t, noise=noise_other)
    torch.testing.assert_close(loss, other, rtol=1e-5, atol=1e-6)
    # and it is the per-frame average over valid frames only
    with torch.no_grad():
        eps = model(diffusion.q_sample(x0, t, noise), t, mask=mask)
    per_frame = ((eps - noise) ** 2).mean(dim=(2, 3))
    torch.testing.assert_close(loss.detach(), per_frame[mask].mean(), rtol=1e-5, atol=1e-6)
    full = diffusion.training_loss(model, x0, mask=torch.ones(2, 6, dtype=torch.bool), t=t, noise=noise)
    torch.testing.assert_close(full, diffusion.training_loss(model, x0, t=t, noise=noise))


def test_tiny_denoiser_overfits_one_sequence(diffusion: GaussianDiffusion) -> None:
    """Fixed (x0, t, eps) draws: the loss can go to ~0, so a large drop proves gradients flow."""
    torch.manual_seed(11)
    model = Denoiser(tiny_config(layers=1))
    x0 = torch.randn(1, 4, 68, 3).expand(8, -1, -1, -1)
    t, noise = torch.randint(0, T, (8,)), torch.randn(8, 4, 68, 3)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = diffusion.training_loss(model, x0, t=t, noise=noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


# ------------------------------------------------------------------------------ denoiser


@pytest.mark.parametrize("training", [False, True])
def test_denoiser_padding_does_not_influence_valid_frames(training: bool) -> None:
    """In eval (inference fast path) and train mode (autograd path; dropout 0 for determinism)."""
    torch.manual_seed(12)
    model = Denoiser(tiny_config()).train(training)
    valid = torch.randn(1, 5, 68, 3)
    t = torch.tensor([321])
    alone = model(valid, t)
    padded = torch.cat([valid, torch.randn(1, 3, 68, 3)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    first = model(padded, t, mask)
    padded[:, 5:] = 1e3 * torch.randn(1, 3, 68, 3)
    second = model(padded, t, mask)
    torch.testing.assert_close(first[:, :5], alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(second[:, :5], alone, rtol=1e-4, atol=1e-5)
    assert torch.all(first[:, 5:] == 0)


def test_denoiser_shapes_and_length_limit() -> None:
    model = Denoiser(tiny_config())
    for frames in (1, 7, 16):
        assert model(torch.randn(2, frames, 68, 3), torch.tensor([0, 1999])).shape == (2, frames, 68, 3)
    with pytest.raises(ValueError):
        model(torch.randn(1, 17, 68, 3), torch.tensor([0]))


def test_denoiser_config_json_round_trip() -> None:
    config = tiny_config(layers=3)
    assert DenoiserConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert DenoiserConfig().to_dict() == dict(
        num_landmarks=68, d_model=256, layers=4, heads=4, ff=512, dropout=0.1, max_frames=512, skip="frame",
        num_labels=0
    )
    with pytest.raises(ValueError):
        DenoiserConfig.from_dict({**config.to_dict(), "unexpected": 1})


def test_sampling_with_denoiser_and_padding(diffusion: GaussianDiffusion) -> None:
    """End to end with the real network: finite samples, padded frames zero."""
    torch.manual_seed(13)
    model = Denoiser(tiny_config()).eval()
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    sample = diffusion.respaced(4).p_sample_loop(model, (2, 6, 68, 3), mask=mask)
    assert torch.isfinite(sample).all() and torch.all(sample[1, 3:] == 0) and sample[1, :3].abs().sum() > 0


def test_x0_range_clamps_predictions_and_survives_respacing():
    from face4d.diffusion import GaussianDiffusion, linear_beta_schedule

    low, high = -np.ones((2, 3), np.float32), 2 * np.ones((2, 3), np.float32)
    diffusion = GaussianDiffusion(linear_beta_schedule(100), x0_range=(low, high))
    x_t = 5 * torch.randn(4, 3, 2, 3)
    t = torch.full((4,), 99)
    x0 = diffusion.predict_x0_from_eps(x_t, t, torch.zeros_like(x_t))
    assert x0.min() >= -1 and x0.max() <= 2 and (x0 == 2).any() and (x0 == -1).any()
    free = GaussianDiffusion(linear_beta_schedule(100)).predict_x0_from_eps(x_t, t, torch.zeros_like(x_t))
    inside = (free > -1) & (free < 2)
    torch.testing.assert_close(x0[inside], free[inside])  # predictions within the range are untouched
    for kept, bound in zip(diffusion.respaced(10).x0_range, (low, high)):
        np.testing.assert_array_equal(kept, bound)
    with pytest.raises(ValueError, match="low < high"):
        GaussianDiffusion(linear_beta_schedule(10), x0_range=(high, low))


# ------------------------------------------------------- predictions, variances, loss weights


class SampleOracle(GaussianOracle):
    """The same optimal model, answering with x_0 (``sample``) or v instead of eps."""

    def __init__(self, base: GaussianDiffusion, mu: float, s: float, prediction: str) -> None:
        super().__init__(base, mu, s)
        self.prediction = prediction

    def __call__(self, x_t, t, mask=None):
        eps = super().__call__(x_t, t, mask)
        abar = self.alphas_cumprod[t].to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        return x0 if self.prediction == "sample" else abar.sqrt() * eps - (1 - abar).sqrt() * x0


@pytest.mark.parametrize("prediction", ["sample", "v"])
def test_x0_and_v_predictions_give_the_epsilon_models_steps(diffusion: GaussianDiffusion, prediction: str) -> None:
    other = GaussianDiffusion(diffusion.betas, prediction=prediction)
    x_t, t = torch.randn(4, 2, 5, 3, dtype=torch.float64), torch.tensor([0, 30, 900, 1999])
    want = diffusion.p_mean_variance(GaussianOracle(diffusion, MU, S), x_t, t)
    got = other.p_mean_variance(SampleOracle(diffusion, MU, S, prediction), x_t, t)
    for key in ("mean", "pred_x0", "eps"):
        torch.testing.assert_close(got[key], want[key], rtol=1e-6, atol=1e-6)
    assert other.respaced(10).prediction == prediction


def test_oracle_posterior_variance_narrows_the_law(diffusion: GaussianDiffusion) -> None:
    """The posterior variance is the lower bound of the reverse step's (Ho et al. 2020, Sec. 3.2):
    with a strided chain it leaves out the uncertainty of x_0, so samples come out narrower than the
    data (0.75 for 0.8 at K = 100), where beta, the upper bound, is slightly wide."""
    spaced = diffusion.with_sampler("posterior").respaced(100)
    sample = spaced.sample_loop(GaussianOracle(diffusion, MU, S), SHAPE, generator=torch.Generator().manual_seed(4))
    assert sample.mean().item() == pytest.approx(MU, abs=0.015)
    assert 0.72 < sample.std().item() < 0.78
    assert np.all(spaced.reverse_variance <= spaced.betas + 1e-15)


def test_sample_loop_dispatches_on_eta(diffusion: GaussianDiffusion) -> None:
    oracle, shape = GaussianOracle(diffusion, MU, S), (2, 1, 4, 3)
    ddim = diffusion.with_sampler(eta=0.0).respaced(10)
    torch.testing.assert_close(ddim.sample_loop(oracle, shape, generator=torch.Generator().manual_seed(1)),
                               diffusion.respaced(10).ddim_sample_loop(oracle, shape, eta=0.0,
                                                                       generator=torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="unknown variance"):
        diffusion.with_sampler("wide")
    with pytest.raises(ValueError, match="eta must be in"):
        diffusion.with_sampler(eta=2.0)


def test_velocity_loss_sees_only_frame_to_frame_error(diffusion: GaussianDiffusion) -> None:
    """A prediction off by a constant has no velocity error; an alternating one has 4x its square."""
    sample = GaussianDiffusion(diffusion.betas, prediction="sample")
    x0, noise, t = torch.randn(2, 6, 68, 3), torch.randn(2, 6, 68, 3), torch.tensor([10, 700])
    shifted = lambda x, t, mask=None: x0 + 0.1  # noqa: E731
    plain = sample.training_loss(shifted, x0, t=t, noise=noise)
    torch.testing.assert_close(sample.training_loss(shifted, x0, t=t, noise=noise, velocity_weight=5.0), plain)
    signs = (-1.0) ** torch.arange(6).view(1, 6, 1, 1)
    alternating = lambda x, t, mask=None: x0 + 0.1 * signs  # noqa: E731
    loss = sample.training_loss(alternating, x0, t=t, noise=noise, velocity_weight=1.0)
    torch.testing.assert_close(loss, torch.tensor(0.01 + 0.04))
    with pytest.raises(ValueError, match="needs 'sample' or 'v'"):
        diffusion.training_loss(shifted, x0, velocity_weight=1.0)


def test_min_snr_weights_with_a_floor(diffusion: GaussianDiffusion) -> None:
    sample = GaussianDiffusion(diffusion.betas, prediction="sample")
    x0, noise = torch.randn(2, 3, 68, 3), torch.randn(2, 3, 68, 3)
    off = lambda x, t, mask=None: x0 + 0.1  # noqa: E731  error 0.01 per element
    snr = diffusion.alphas_cumprod / (1 - diffusion.alphas_cumprod)
    for t, weight in ((0, 5.0), (1999, snr[1999]), (600, min(5.0, snr[600]))):
        loss = sample.training_loss(off, x0, t=torch.tensor([t, t]), noise=noise, snr_gamma=5.0)
        assert loss.item() == pytest.approx(0.01 * weight, rel=1e-5)
    floored = sample.training_loss(off, x0, t=torch.tensor([1999, 1999]), noise=noise, snr_gamma=5.0, snr_floor=1.0)
    assert floored.item() == pytest.approx(0.01, rel=1e-5)


@pytest.mark.parametrize("skip", ["frame", "mean", "none"])
def test_skip_paths(skip: str) -> None:
    """With the tokens' head zeroed, what is left is the skip path: each frame's own input (frame),
    the mean frame, the same for every frame and blind to padding (mean), or nothing (none)."""
    torch.manual_seed(13)
    model = Denoiser(tiny_config(skip=skip)).eval()
    torch.nn.init.zeros_(model.output.weight)
    torch.nn.init.zeros_(model.output.bias)
    x, t = torch.randn(1, 5, 68, 3), torch.tensor([3])
    mask = torch.tensor([[True, True, True, False, False]])
    with torch.no_grad():
        out = model(x, t, mask=mask)
        if skip == "none":
            assert model.skip_gain is None and torch.all(out == 0)
            return
        gain = model.skip_gain(model.time_embedding(sinusoid(t))).view(1, 1, 68, 3)
    expected = gain * (x if skip == "frame" else x[:, :3].mean(dim=1, keepdim=True))
    torch.testing.assert_close(out[:, :3], expected.expand(1, 5, 68, 3)[:, :3], rtol=1e-5, atol=1e-6)
    assert torch.all(out[:, 3:] == 0)
    with pytest.raises(ValueError, match="unknown skip path"):
        tiny_config(skip="row")


def sinusoid(t: torch.Tensor) -> torch.Tensor:
    from face4d.models.denoiser import sinusoidal_embedding
    return sinusoidal_embedding(t, 32)
