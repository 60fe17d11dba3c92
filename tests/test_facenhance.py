"""The recurrent video model (FacEnhance, ``render.neural.facenhance_*``) at 32² -> 64²: clip frames,
shapes and ablation switches, training targets that the sampler inverts, the recurrence (frame k is
the previous frame of k + 1), deterministic resumable training and the CLI's errors (slow: micro
models on a tiny synthetic clip folder, ``tests/neural_fixtures``)."""
import numpy as np
import pytest
import torch

from neural_fixtures import add_clips, make_portraits
from render.neural.data import NeuralInputError, to_tensor, to_uint8
from render.neural.facenhance_data import ClipFrames, load_clips
from render.neural.facenhance_model import FacEnhance, FacEnhanceConfig
from test_neural import face4d

MICRO = {"size": 64, "low_size": 32, "channels": (16, 16, 32), "dim": 16, "heads": 2, "encoder_widths": (8, 16),
         "timesteps": 100, "stride": 20}


@pytest.fixture(scope="module")
def clips_folder(tmp_path_factory):
    return add_clips(make_portraits(tmp_path_factory.mktemp("clips") / "data", identities=4, per_identity=2))


def test_clip_frames_chain_previous_frames(clips_folder):
    train, test = load_clips(clips_folder, "train"), load_clips(clips_folder, "test")
    assert train["low"].shape == (2, 4, 32, 32, 3) and train["high"].shape == (2, 4, 64, 64, 3)
    assert set(test["identity"]) == {2, 3} and set(train["identity"]) == {0, 1}
    frames = ClipFrames(train)
    assert len(frames) == 8
    first, third = frames[4], frames[6]  # clip 1, frames 0 and 2
    assert torch.equal(first["previous"], to_tensor(train["identity_high"][1]))
    assert torch.equal(third["previous"], to_tensor(train["high"][1, 1]))
    assert torch.equal(third["target"], to_tensor(train["high"][1, 2]))
    assert torch.equal(third["low"], to_tensor(train["low"][1, 2]))
    assert frames.batch([0, 5])["target"].shape == (2, 3, 64, 64)


def test_folder_without_clips_is_refused(tmp_path):
    with pytest.raises(NeuralInputError, match="holds no clips"):
        load_clips(make_portraits(tmp_path / "p", identities=3, per_identity=2, test_identities=1))


@pytest.mark.parametrize("options, inputs, attends", [({}, 3, True), ({"expression_encoder": False}, 4, False),
                                                       ({"previous_frame": False}, 2, True)])
def test_ablations_change_the_inputs(options, inputs, attends):
    model = FacEnhance(FacEnhanceConfig(**MICRO, **options))
    assert model.unet.config.in_channels == 3 * inputs * 4  # space-to-depth: 2x2 pixels -> 4x channels
    assert hasattr(model, "expression_cnn") == attends
    low, image = torch.zeros(2, 3, 32, 32), torch.zeros(2, 3, 64, 64)
    expression = model.encode(low)
    assert expression.shape == ((2, 64, 16) if attends else (2, 3, 64, 64))  # 32 / 2^2 = 8x8 tokens
    previous = image if model.config.previous_frame else None
    assert model(image, torch.tensor([5, 7]), expression, image, previous).shape == (2, 3, 64, 64)


def test_config_errors():
    with pytest.raises(NeuralInputError, match="prediction"):
        FacEnhanceConfig(prediction="x0")
    with pytest.raises(NeuralInputError, match="stride"):
        FacEnhanceConfig(timesteps=100, stride=30)
    model = FacEnhance(FacEnhanceConfig(**MICRO))
    assert model.sampling_steps(None) == 5
    with pytest.raises(NeuralInputError, match="own 5 steps"):
        model.sampling_steps(25)
    assert FacEnhance(FacEnhanceConfig(**MICRO, prediction="epsilon")).sampling_steps(7) == 7


class Oracle:
    """Stands in for the network: returns the exact training target for a known x_0, so that sampling
    with it must land on x_0 and the training loss of it must be zero."""

    def __init__(self, model: FacEnhance, x0: torch.Tensor):
        ddpm, _ = model.schedulers()
        self.model, self.x0, self.alpha_bar = model, x0, torch.cat([torch.ones(1), ddpm.alphas_cumprod.float()])

    def __call__(self, noisy, timesteps, *condition):
        c, a = self.model.config, self.alpha_bar[timesteps + 1].view(-1, 1, 1, 1)
        eps = (noisy - a.sqrt() * self.x0) / (1 - a).sqrt()
        if c.prediction == "epsilon":
            return eps
        prev = self.alpha_bar[(timesteps - c.stride).clamp(min=-1) + 1].view(-1, 1, 1, 1)
        return prev.sqrt() * self.x0 + (1 - prev).sqrt() * eps


@pytest.mark.parametrize("prediction", ["previous", "epsilon"])
def test_sampler_inverts_the_training_target(prediction, monkeypatch):
    from render.neural.facenhance_training import FacEnhanceLoss

    model = FacEnhance(FacEnhanceConfig(**MICRO, prediction=prediction))
    x0 = torch.rand(2, 3, 64, 64) * 1.6 - 0.8
    monkeypatch.setattr(model, "forward", Oracle(model, x0))
    image = torch.zeros(2, 3, 64, 64)
    out = model.sample(model.encode(torch.zeros(2, 3, 32, 32)), image, image, model.sampling_steps(None),
                       torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-3)
    batch = {"target": x0, "low": torch.zeros(2, 3, 32, 32), "identity_image": image, "previous": image}
    loss, _ = FacEnhanceLoss(model)(batch)
    assert loss.item() < 1e-8


def test_generation_is_recurrent_and_streams(clips_folder, monkeypatch):
    clips = load_clips(clips_folder, "test")
    model = FacEnhance(FacEnhanceConfig(**MICRO, previous_noise=0.0)).eval()
    seen, forward = [], model.forward

    def spy(noisy, t, expression, identity, previous):
        seen.append(previous.clone())
        return forward(noisy, t, expression, identity, previous)

    monkeypatch.setattr(model, "forward", spy)
    lows = iter(clips["low"][0])  # a one-pass iterator: frames are taken as they are needed
    video = model.generate(lows, clips["identity_high"][0], seed=3)
    first = next(video)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert len(seen) == 5 and np.array_equal(to_uint8(seen[0])[0], clips["identity_high"][0])
    frames = [first, *video]
    assert len(frames) == 4 and len(seen) == 20
    for k in range(3):  # every call of frame k + 1 reads frame k
        for call in seen[5 * (k + 1): 5 * (k + 2)]:
            assert np.array_equal(to_uint8(call)[0], frames[k])
    monkeypatch.setattr(model, "forward", forward)
    again = list(model.generate(clips["low"][0], clips["identity_high"][0], seed=3))
    assert all(np.array_equal(a, b) for a, b in zip(again, frames))
    with pytest.raises(NeuralInputError, match="low-res frame 0 is 64x64"):
        next(model.generate(clips["high"][0], clips["identity_high"][0]))


def _train(folder, out, steps, checkpoint_every=100, **options):
    from render.neural.facenhance_training import train_facenhance
    from render.neural.training import NeuralTrainConfig

    config = NeuralTrainConfig(steps=steps, batch_size=4, checkpoint_every=checkpoint_every, seed=5)
    return train_facenhance(load_clips(folder, "train"), out, config, FacEnhanceConfig(**MICRO, **options),
                            progress=False)


@pytest.mark.slow
def test_training_is_deterministic_and_resumes_exactly(clips_folder, tmp_path):
    from safetensors.torch import load_file

    full = _train(clips_folder, tmp_path / "full", 4)
    assert full.step == 4 and all(np.isfinite(full.losses))
    first = _train(clips_folder, tmp_path / "resumed", 2, checkpoint_every=2)
    second = _train(clips_folder, tmp_path / "resumed", 4, checkpoint_every=2)
    assert (first.start_step, second.start_step) == (0, 2)
    assert first.losses + second.losses == pytest.approx(full.losses, rel=1e-5)
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "resumed"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    model = FacEnhance.from_pretrained(tmp_path / "full")
    assert model.config == FacEnhanceConfig(**MICRO)
    with pytest.raises(NeuralInputError, match="another model"):
        _train(clips_folder, tmp_path / "full", 6, prediction="epsilon")  # not a resume of the same run


@pytest.mark.slow
def test_cli_trains_video_and_refuses_bad_input(clips_folder, tmp_path):
    out = tmp_path / "video"
    micro = ("--channels", "16,16,32", "--steps", 2, "--batch-size", 2, "--quiet")
    done = face4d("train", "neural-video", "--data", clips_folder, "--out", out, *micro)
    assert done.returncode == 0, done.stderr
    assert "neural-video at step 2" in done.stdout
    model = FacEnhance.from_pretrained(out)
    assert (model.config.size, model.config.low_size, model.config.channels) == (64, 32, (16, 16, 32))
    no_clips = make_portraits(tmp_path / "p", identities=3, per_identity=2, test_identities=1)
    for case in [("--data", no_clips, "--out", tmp_path / "x"),
                 ("--data", clips_folder, "--out", tmp_path / "x", "--stride", 7),
                 ("--data", clips_folder, "--out", out, "--prediction", "epsilon")]:
        done = face4d("train", "neural-video", *case, *micro)
        assert done.returncode == 2, (case, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("face4d: error:"), done.stderr
    assert not (tmp_path / "x").exists()
