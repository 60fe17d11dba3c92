"""Checks of the noise-aware classifier (face4d.models.classifier) and of label guidance as a
sampler hook (face4d.guidance, Alg. 1). Kept fast: tiny networks, analytic noise models, short
respaced schedules."""
from __future__ import annotations

import json

import pytest
import torch
from torch import Tensor

from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.errors import Face4DError
from face4d.guidance import GradientGuidance, GuidanceConfig, Objective, compose_hooks, label_objective
from face4d.models import Denoiser, DenoiserConfig
from face4d.models.classifier import (
    Classifier,
    ClassifierConfig,
    label_log_probs,
    target_index,
    type_index,
)
from face4d.training import classifier_loss

T = 2000


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion(linear_beta_schedule(T))


def tiny_classifier(**overrides: object) -> Classifier:
    values = dict(d_model=32, layers=2, heads=4, ff=64, dropout=0.0, max_frames=16)
    values.update(overrides)
    return Classifier(ClassifierConfig(**values))


class GaussianOracle:
    """The optimal noise model for data x0 ~ N(mu, s^2 I), in closed form (as in test_diffusion)."""

    def __init__(self, base: GaussianDiffusion, mu: float = 0.0, s: float = 1.0) -> None:
        self.alphas_cumprod = torch.from_numpy(base.alphas_cumprod)
        self.mu, self.s = mu, s

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t].to(x_t.dtype).view(-1, *([1] * (x_t.ndim - 1)))
        return (x_t - abar.sqrt() * self.mu) * (1 - abar).sqrt() / (abar * self.s**2 + 1 - abar)


class MixtureOracle:
    """The optimal noise model for an equal mixture of N(+m, s^2 I) (class 0) and N(-m, s^2 I)
    (class 1): the responsibility-weighted noise estimates of the two Gaussians."""

    def __init__(self, base: GaussianDiffusion, m: float, s: float) -> None:
        self.alphas_cumprod = torch.from_numpy(base.alphas_cumprod)
        self.m, self.s = m, s

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        abar = self.alphas_cumprod[t].to(x_t.dtype).view(-1, 1, 1, 1)
        variance = abar * self.s**2 + 1 - abar
        offsets = [x_t - abar.sqrt() * mu for mu in (self.m, -self.m)]
        log_likelihoods = torch.stack([-(d**2).flatten(1).sum(1) / (2 * variance.flatten()) for d in offsets], 1)
        weights = torch.softmax(log_likelihoods, dim=1).view(-1, 2, 1, 1, 1)
        eps = torch.stack([d * (1 - abar).sqrt() / variance for d in offsets], 1)
        return (weights * eps).sum(1)


def squared_distance(c: float) -> Objective:
    """The analytic objective -||x - c||^2."""

    def objective(x: torch.Tensor, t_model: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return -((x - c) ** 2).flatten(1).sum(1)

    return objective


# ---------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("kind, outputs", [("I", 18), ("S", 36)])
def test_classifier_shapes_and_length_limit(kind: str, outputs: int) -> None:
    model = tiny_classifier(kind=kind)
    assert model.config.num_outputs == outputs
    for frames in (1, 7, 16):
        assert model(torch.randn(3, frames, 68, 3), torch.tensor([0, 10, 1999])).shape == (3, outputs)
    with pytest.raises(Face4DError):
        model(torch.randn(1, 17, 68, 3), torch.tensor([0]))
    with pytest.raises(Face4DError):
        model(torch.randn(2, 4, 68, 3), torch.tensor([0, 1]), mask=torch.tensor([[True] * 4, [False] * 4]))


def test_classifier_config_json_round_trip_and_validation() -> None:
    config = ClassifierConfig(kind="S", layers=1)
    assert ClassifierConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert ClassifierConfig().to_dict() == dict(
        num_classes=18, kind="I", num_landmarks=68, d_model=128, layers=3, heads=4, ff=256, dropout=0.1, max_frames=512
    )
    for bad in ({"kind": "X"}, {"num_classes": 0}, {"d_model": 30, "heads": 4}, {"dropout": 1.0}):
        with pytest.raises(Face4DError):
            ClassifierConfig(**bad)
    with pytest.raises(Face4DError):
        ClassifierConfig.from_dict({**config.to_dict(), "unexpected": 1})


@pytest.mark.parametrize("training", [False, True])
def test_classifier_padding_invariance(training: bool) -> None:
    """Logits of a sequence alone equal those of it padded, whatever the padding holds; in eval
    (inference fast path) and train mode (autograd path; dropout 0 for determinism)."""
    torch.manual_seed(0)
    model = tiny_classifier().train(training)
    valid = torch.randn(1, 5, 68, 3)
    t = torch.tensor([321])
    alone = model(valid, t)
    padded = torch.cat([valid, torch.randn(1, 3, 68, 3)], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    first = model(padded, t, mask)
    padded[:, 5:] = 1e3 * torch.randn(1, 3, 68, 3)
    torch.testing.assert_close(first, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model(padded, t, mask), alone, rtol=1e-4, atol=1e-5)


def test_type_s_target_indexing_and_marginals() -> None:
    labels, types = torch.tensor([0, 0, 5, 17]), torch.tensor([0, 1, 1, 0])
    assert target_index(labels, types, "S").tolist() == [0, 1, 11, 34]
    assert target_index(labels, types, "I").tolist() == labels.tolist()
    assert target_index(labels, None, "I").tolist() == labels.tolist()
    assert (type_index("N2E"), type_index("E2N")) == (0, 1)
    for bad in (lambda: target_index(labels, None, "S"), lambda: target_index(labels, types + 1, "S"),
                lambda: type_index("N2N"), lambda: target_index(labels, types, "Q")):
        with pytest.raises(Face4DError):
            bad()

    torch.manual_seed(1)
    logits = torch.randn(4, 36)
    joint = torch.log_softmax(logits, dim=-1)
    marginal = label_log_probs(logits, "S")
    assert marginal.shape == (4, 18)
    torch.testing.assert_close(marginal.exp().sum(-1), torch.ones(4))
    torch.testing.assert_close(marginal.exp(), joint.exp()[:, 0::2] + joint.exp()[:, 1::2])
    known = label_log_probs(logits, "S", types)
    torch.testing.assert_close(known.gather(1, labels[:, None])[:, 0], joint.gather(1, target_index(labels, types, "S")[:, None])[:, 0])
    torch.testing.assert_close(label_log_probs(logits[:, :18], "I"), torch.log_softmax(logits[:, :18], -1))
    with pytest.raises(Face4DError):
        label_log_probs(logits[:, :18], "I", types)


@pytest.mark.parametrize("kind", ["I", "S"])
def test_classifier_loss_is_cross_entropy_and_ignores_padded_frames(diffusion: GaussianDiffusion, kind: str) -> None:
    torch.manual_seed(2)
    model = tiny_classifier(kind=kind).eval()
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    batch = {"x0": torch.randn(2, 6, 68, 3), "mask": mask, "label": torch.tensor([3, 12]), "type": torch.tensor([1, 0])}
    torch.manual_seed(3)
    loss = classifier_loss(model, batch, diffusion)
    other = dict(batch, x0=batch["x0"].clone())
    other["x0"][1, 4:] = 100.0
    torch.manual_seed(3)
    torch.testing.assert_close(classifier_loss(model, other, diffusion), loss)
    # the same draws by hand: t uniform, then the noise of q_sample
    torch.manual_seed(3)
    t = torch.randint(0, T, (2,))
    x_t = diffusion.q_sample(batch["x0"], t, torch.randn(2, 6, 68, 3))
    logits = model(x_t, t, mask)
    expected = torch.nn.functional.cross_entropy(logits, target_index(batch["label"], batch["type"], kind))
    torch.testing.assert_close(loss, expected)


class Wrapper(torch.nn.Module):
    """Stands in for DistributedDataParallel: the classifier under ``.module``."""

    def __init__(self, module: Classifier) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.module(*args, **kwargs)


def test_classifier_loss_skips_unknown_targets_and_unwraps(diffusion: GaussianDiffusion) -> None:
    """Label or (kind S) type -1 = unknown: left out of the average; none known: a zero loss that
    still backpropagates."""
    torch.manual_seed(4)
    model = tiny_classifier(kind="S").eval()
    batch = {"x0": torch.randn(3, 4, 68, 3), "label": torch.tensor([-1, 4, 9]), "type": torch.tensor([0, -1, 1])}
    torch.manual_seed(5)
    loss = classifier_loss(Wrapper(model), batch, diffusion)
    torch.manual_seed(5)
    t = torch.randint(0, T, (3,))
    logits = model(diffusion.q_sample(batch["x0"], t, torch.randn(3, 4, 68, 3)), t)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits[2:], torch.tensor([19])))
    unknown = classifier_loss(model, {**batch, "label": torch.full((3,), -1)}, diffusion)
    unknown.backward()
    assert unknown.item() == 0.0 and all(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------------------ guidance


def test_guidance_pulls_samples_toward_higher_scores(diffusion: GaussianDiffusion) -> None:
    """objective = -||x - c||^2: guided samples from N(0, I) end nearer c than unguided ones with
    the same seed, with both DDPM and deterministic DDIM (variance 0: the beta_t stand-in)."""
    sampler = diffusion.respaced(20)
    oracle, shape, c = GaussianOracle(diffusion), (64, 3, 2, 3), 1.5
    hook = GradientGuidance(sampler, squared_distance(c))

    def mean_distance(x: Tensor) -> float:
        return (x - c).pow(2).flatten(1).sum(1).mean().item()

    for loop in (sampler.p_sample_loop, sampler.ddim_sample_loop):
        plain = loop(oracle, shape, generator=torch.Generator().manual_seed(4))
        guided = loop(oracle, shape, generator=torch.Generator().manual_seed(4), step_hook=hook)
        assert torch.isfinite(guided).all()
        assert mean_distance(guided) < 0.7 * mean_distance(plain)


def test_huge_lambda_keeps_the_reverse_step(diffusion: GaussianDiffusion) -> None:
    """A huge lambda lets the fluency term win: at a DDIM step (x_prev is the step's mean) the
    refined x stays at x_prev, while the default lambda moves it; at a DDPM step the objective
    loses all influence and x only moves toward the step's mean."""
    torch.manual_seed(5)
    sampler, oracle = diffusion.respaced(20), GaussianOracle(diffusion)
    x_t, t = torch.randn(8, 3, 2, 3), torch.full((8,), 10)
    objective = squared_distance(3.0)
    huge, default = GuidanceConfig(lam=1e8), GuidanceConfig()
    sigma = sampler.betas[10] ** 0.5

    x_prev, out = sampler.ddim_sample(oracle, x_t, t)
    stays = GradientGuidance(sampler, objective, huge)(x_prev, t - 1, x_t, t, out)
    moves = GradientGuidance(sampler, objective, default)(x_prev, t - 1, x_t, t, out)
    assert (stays - x_prev).abs().max() < 1e-3 * default.lr * sigma
    assert (moves - x_prev).abs().mean() > default.lr * sigma

    x_prev, out = sampler.p_sample(oracle, x_t, t, generator=torch.Generator().manual_seed(6))
    pulled = GradientGuidance(sampler, objective, huge)(x_prev, t - 1, x_t, t, out)
    prior_only = GradientGuidance(sampler, squared_distance(0.0), huge)(x_prev, t - 1, x_t, t, out)
    torch.testing.assert_close(pulled, prior_only, rtol=0, atol=1e-4 * sigma)
    assert torch.all((pulled - out["mean"]).abs() <= (x_prev - out["mean"]).abs() + 1e-6)
    rms = (pulled - x_prev).flatten(1).pow(2).mean(1).sqrt()
    assert torch.all(rms <= huge.steps * huge.lr * sigma * (1 + 1e-5))
    per_coordinate = GuidanceConfig(lam=1e8, norm="coordinate")
    pulled = GradientGuidance(sampler, objective, per_coordinate)(x_prev, t - 1, x_t, t, out)
    assert (pulled - x_prev).abs().max() <= huge.steps * huge.lr * sigma * (1 + 1e-5)


def linear_objective(weights: Tensor) -> Objective:
    """objective = <weights, x>: a constant gradient ``weights`` (zero on padded frames)."""

    def objective(x: Tensor, t_model: Tensor, mask: Tensor | None) -> Tensor:
        return (x * weights).flatten(1).sum(1)

    return objective


def test_sample_norm_keeps_the_gradients_shape_and_coordinate_norm_takes_its_sign(
        diffusion: GaussianDiffusion) -> None:
    """With a constant gradient g and no fluency term, one Adagrad step moves a sample by
    lr * sigma * g / rms(g) (``sample``: rms over the sample's valid frames, so padding does not
    enlarge it) or by lr * sigma * sign(g) (``coordinate``)."""
    sampler = diffusion.respaced(20)
    t = torch.full((2,), 10)
    sigma = sampler.betas[10] ** 0.5
    weights = torch.randn(2, 4, 68, 3)
    weights[1, 2:] = 0.0
    mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2])
    x = torch.randn(2, 4, 68, 3)
    out = {"mean": x, "variance": torch.full((2, 1, 1, 1), sampler.betas[10])}
    config = GuidanceConfig(lam=0.0, steps=1, lr=0.4)
    moved = GradientGuidance(sampler, linear_objective(weights), config, mask=mask)(x, t - 1, x, t, out) - x
    for b, frames in ((0, 4), (1, 2)):
        g = weights[b, :frames]
        torch.testing.assert_close(moved[b, :frames], config.lr * sigma * g / g.pow(2).mean().sqrt(),
                                   rtol=1e-4, atol=1e-7)
    assert torch.all(moved[1, 2:] == 0)
    coordinate = GuidanceConfig(lam=0.0, steps=1, lr=0.4, norm="coordinate")
    moved = GradientGuidance(sampler, linear_objective(weights), coordinate, mask=mask)(x, t - 1, x, t, out) - x
    torch.testing.assert_close(moved[0], coordinate.lr * sigma * weights[0].sign(), rtol=1e-4, atol=1e-7)


def test_respaced_guidance_with_networks_and_padding(diffusion: GaussianDiffusion) -> None:
    """End to end with a tiny denoiser and classifier on a respaced schedule: the classifier sees
    the training timestep of x_{t-1} (0 for the final sample), padded frames stay zero, and no
    parameter of either network receives a gradient."""
    torch.manual_seed(7)
    denoiser = Denoiser(DenoiserConfig(d_model=32, layers=1, heads=4, ff=64, dropout=0.0, max_frames=16)).eval()
    classifier = tiny_classifier(kind="S").eval()
    sampler = diffusion.respaced(5)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    seen: list[list[int]] = []
    log_prob = label_objective(classifier, torch.tensor([2, 7]), types=torch.tensor([0, 1]))

    def recording(x: torch.Tensor, t_model: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        seen.append(t_model.tolist())
        return log_prob(x, t_model, mask)

    hook = GradientGuidance(sampler, recording, GuidanceConfig(steps=2), mask=mask)
    sample = sampler.p_sample_loop(denoiser, (2, 6, 68, 3), mask=mask, step_hook=hook)
    assert torch.isfinite(sample).all() and torch.all(sample[1, 3:] == 0)
    kept = sampler.timestep_map.tolist()  # training timesteps of indices 0..4
    expected = [kept[i - 1] for i in range(4, 0, -1)] + [0]
    assert seen == [[step, step] for step in expected for _ in range(2)]
    assert all(p.grad is None for p in (*denoiser.parameters(), *classifier.parameters()))


def test_label_objective_matches_label_log_probs() -> None:
    torch.manual_seed(8)
    classifier = tiny_classifier(kind="S").eval()
    x, t = torch.randn(3, 4, 68, 3), torch.tensor([0, 100, 1999])
    labels, types = torch.tensor([1, 4, 17]), torch.tensor([1, 0, 1])
    logits = classifier(x, t)
    joint = torch.log_softmax(logits, -1).gather(1, target_index(labels, types, "S")[:, None])[:, 0]
    torch.testing.assert_close(label_objective(classifier, labels, types)(x, t, None), joint)
    marginal = label_log_probs(logits, "S").gather(1, labels[:, None])[:, 0]
    torch.testing.assert_close(label_objective(classifier, labels)(x, t, None), marginal)


def test_compose_hooks_chains_replacements() -> None:
    calls: list[str] = []

    def keep(x_prev: Tensor, t_prev: Tensor | None, x_t: Tensor, t: Tensor, out: dict[str, Tensor]) -> None:
        calls.append("keep")

    def add_one(x_prev: Tensor, t_prev: Tensor | None, x_t: Tensor, t: Tensor, out: dict[str, Tensor]) -> Tensor:
        calls.append("add")
        return x_prev + 1

    x, t = torch.zeros(2, 3), torch.tensor([4, 4])
    assert torch.equal(compose_hooks(keep, add_one, keep, add_one)(x, t - 1, x, t, {}), x + 2)
    assert calls == ["keep", "add", "keep", "add"]
    assert compose_hooks(keep, keep)(x, None, x, t, {}) is None


def test_guidance_config_validation_and_zero_steps(diffusion: GaussianDiffusion) -> None:
    for bad in ({"lam": -1.0}, {"steps": -1}, {"lr": 0.0}, {"norm": "frame"}):
        with pytest.raises(Face4DError):
            GuidanceConfig(**bad)
    x = torch.randn(2, 3, 2, 3)
    hook = GradientGuidance(diffusion, squared_distance(1.0), GuidanceConfig(steps=0))
    out = {"mean": x, "variance": torch.ones(2, 1, 1, 1)}
    assert hook(x, None, x, torch.tensor([0, 0]), out) is None


def test_trained_classifier_steers_mixture_samples_to_requested_class(diffusion: GaussianDiffusion) -> None:
    """Data: an equal mixture of N(+1, 0.3^2) (class 0) and N(-1, 0.3^2) (class 1) sequences. A tiny
    classifier trained for 150 steps with classifier_loss guides the oracle of the mixture: the
    unguided sampler lands in each class about half the time, the guided one in the requested
    class more than 80% of the time."""
    torch.manual_seed(9)
    frames, landmarks, m, s, n = 4, 1, 1.0, 0.3, 200
    classifier = tiny_classifier(num_classes=2, num_landmarks=landmarks, d_model=16, layers=1, heads=2, ff=32)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=3e-3)
    for _ in range(150):
        label = torch.randint(0, 2, (128,))
        x0 = (1 - 2 * label.float()).view(-1, 1, 1, 1) * m + s * torch.randn(128, frames, landmarks, 3)
        loss = classifier_loss(classifier, {"x0": x0, "label": label, "type": torch.zeros_like(label)}, diffusion)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    classifier.eval()

    sampler, oracle, shape = diffusion.respaced(50), MixtureOracle(diffusion, m, s), (n, frames, landmarks, 3)

    def in_class_0(x: Tensor) -> float:
        return (x.flatten(1).mean(1) > 0).float().mean().item()

    plain = sampler.p_sample_loop(oracle, shape, generator=torch.Generator().manual_seed(10))
    assert 0.35 < in_class_0(plain) < 0.65
    for target in (0, 1):
        hook = GradientGuidance(sampler, label_objective(classifier, torch.full((n,), target)))
        guided = sampler.p_sample_loop(oracle, shape, generator=torch.Generator().manual_seed(10), step_hook=hook)
        fraction = in_class_0(guided) if target == 0 else 1 - in_class_0(guided)
        assert fraction > 0.8
    assert all(p.grad is None for p in classifier.parameters())
