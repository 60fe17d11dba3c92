"""The recurrent video model (FacEnhance, ``render.neural.facenhance_*``) at 32² -> 64²: clip frames,
shapes and ablation switches, training targets that the sampler inverts, the recurrence (frame k is
the previous frame of k + 1), deterministic resumable training and the CLI's errors (slow: micro
models on a tiny synthetic clip folder, ``tests/neural_fixtures``)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neural_fixtures import add_clips, check_exact_resume, make_portraits
from render.neural.data import NeuralInputError, to_tensor, to_uint8
from render.neural.facenhance_data import ClipFrames, load_clips, model_range
from render.neural.facenhance_model import FacEnhance, FacEnhanceConfig, detail_guess
from conftest import jaw_smile_animation
from face4d.cli import main

MICRO = {"size": 64, "low_size": 32, "channels": (16, 16, 32), "dim": 16, "heads": 2, "encoder_widths": (8, 16),
         "timesteps": 100, "stride": 20}


def face4d(capsys, *argv) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start per call)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_errors(capsys, cases) -> None:
    for case in cases:
        code, _, err = face4d(capsys, *case)
        assert code == 2, (case, err)
        assert len(err.strip().splitlines()) == 1 and err.startswith("face4d: error:"), err


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
    assert np.array_equal(first["previous"], train["identity_high"][1])
    assert np.array_equal(third["previous"], train["high"][1, 1])
    assert np.array_equal(third["target"], train["high"][1, 2])
    assert np.array_equal(third["low"], train["low"][1, 2])
    batch = frames.batch([0, 5, 4])
    assert np.array_equal(batch["previous"][2], train["identity_high"][1]) and batch["low"].dtype == torch.uint8
    assert torch.equal(model_range(batch["target"])[1], to_tensor(train["high"][1, 1]))


def test_folder_without_clips_is_refused(tmp_path):
    with pytest.raises(NeuralInputError, match="holds no clips"):
        load_clips(make_portraits(tmp_path / "p", identities=3, per_identity=2, test_identities=1))


@pytest.mark.parametrize("options, inputs, attends", [({}, 4, True), ({"residual": False}, 3, True),
                                                       ({"expression_encoder": False}, 4, False),
                                                       ({"expression_encoder": False, "residual": False}, 4, False),
                                                       ({"previous_frame": False}, 3, True)])
def test_ablations_change_the_inputs(options, inputs, attends):
    model = FacEnhance(FacEnhanceConfig(**MICRO, **options))
    assert model.unet.config.in_channels == 3 * inputs * 4  # space-to-depth: 2x2 pixels -> 4x channels
    assert hasattr(model, "expression_cnn") == attends
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    low = F.avg_pool2d(image, 2)
    condition = model.encode(low, image)
    tokens, guess = condition
    assert (tokens.shape == (2, 64, 16)) if attends else tokens is None  # 32 / 2^2 = 8x8 tokens
    if model.config.residual:  # the identity image's own low frame: the guess is the identity image
        assert torch.allclose(guess, image, atol=1e-5)
        assert torch.allclose(model.diffused(image + 0.01, condition), torch.full_like(image, 0.1), atol=1e-5)
        moved = model.encode(low.flip(-1), image)[1]  # elsewhere: upsampled low frame + the identity's detail
        detail = image - F.interpolate(low, scale_factor=2, mode="bicubic").clamp(-1, 1)
        assert torch.allclose(moved, F.interpolate(low.flip(-1), scale_factor=2, mode="bicubic").clamp(-1, 1) + detail,
                              atol=1e-5)
    else:
        assert model.diffused(image, condition) is image and guess.shape == image.shape
    previous = image if model.config.previous_frame else None
    assert model(image, torch.tensor([5, 7]), condition, image, previous).shape == (2, 3, 64, 64)


def test_config_errors():
    with pytest.raises(NeuralInputError, match="prediction"):
        FacEnhanceConfig(prediction="x0")
    with pytest.raises(NeuralInputError, match="stride"):
        FacEnhanceConfig(timesteps=100, stride=30)
    assert FacEnhanceConfig().prediction == "sample" and FacEnhanceConfig().residual  # the shipped default's
    model = FacEnhance(FacEnhanceConfig(**MICRO, prediction="previous"))
    assert model.sampling_steps(None) == 5
    with pytest.raises(NeuralInputError, match="own 5 steps"):
        model.sampling_steps(25)
    for prediction in ("epsilon", "sample"):
        model = FacEnhance(FacEnhanceConfig(**MICRO, prediction=prediction))
        assert model.sampling_steps(7) == 7 and model.sampling_steps(None) == 25
    assert FacEnhance(FacEnhanceConfig(**MICRO, sampling_steps=3)).sampling_steps(None) == 3
    for bad in ({"sampling_steps": 0}, {"residual_scale": 0.0}):
        with pytest.raises(NeuralInputError, match=next(iter(bad))):
            FacEnhanceConfig(**MICRO, **bad)


class Oracle:
    """Stands in for the network: returns the exact training target for a known frame x_0 (less the
    upsampled low frame of the condition, for a residual model), so that sampling with it must land on
    x_0 and the training loss of it must be zero."""

    def __init__(self, model: FacEnhance, x0: torch.Tensor):
        ddpm, _ = model.schedulers()
        self.model, self.x0, self.alpha_bar = model, x0, torch.cat([torch.ones(1), ddpm.alphas_cumprod.float()])

    def __call__(self, noisy, timesteps, condition, *rest):
        c, a = self.model.config, self.alpha_bar[timesteps + 1].view(-1, 1, 1, 1)
        x0 = self.model.diffused(self.x0, condition)
        eps = (noisy - a.sqrt() * x0) / (1 - a).sqrt()
        if c.prediction == "epsilon":
            return eps
        if c.prediction == "sample":
            return x0.expand_as(noisy)
        prev = self.alpha_bar[(timesteps - c.stride).clamp(min=-1) + 1].view(-1, 1, 1, 1)
        return prev.sqrt() * x0 + (1 - prev).sqrt() * eps


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize("prediction", ["previous", "epsilon", "sample"])
def test_sampler_inverts_the_training_target(prediction, residual, monkeypatch):
    from render.neural.facenhance_training import FacEnhanceLoss

    model = FacEnhance(FacEnhanceConfig(**MICRO, prediction=prediction, residual=residual))
    target = torch.randint(20, 236, (2, 64, 64, 3), dtype=torch.uint8)
    low = target[:, ::2, ::2]  # a low frame near the target: the residual is small but not zero
    x0 = model_range(target)
    monkeypatch.setattr(model, "forward", Oracle(model, x0))
    image = torch.rand(2, 3, 64, 64) * 2 - 1  # the identity image: its detail enters a residual guess
    out = model.sample(model.encode(model_range(low), image), image, image, model.sampling_steps(None),
                       torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-3)
    blank = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    batch = {"target": target, "low": low, "identity_image": blank, "previous": blank}
    loss, _ = FacEnhanceLoss(model)(batch)
    assert loss.item() < 1e-8


def test_generation_is_recurrent_and_streams(clips_folder, monkeypatch):
    clips = load_clips(clips_folder, "test")
    model = FacEnhance(FacEnhanceConfig(**MICRO, previous_noise=0.0, prediction="previous")).eval()
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
    check_exact_resume(lambda out, steps, **kw: _train(clips_folder, out, steps, **kw), tmp_path)
    model = FacEnhance.from_pretrained(tmp_path / "full")
    assert model.config == FacEnhanceConfig(**MICRO)
    with pytest.raises(NeuralInputError, match="another model"):
        _train(clips_folder, tmp_path / "full", 6, prediction="epsilon")  # not a resume of the same run


@pytest.mark.slow
def test_cli_trains_video_and_refuses_bad_input(clips_folder, tmp_path, capsys):
    out = tmp_path / "video"
    micro = ("--channels", "16,16,32", "--steps", 2, "--batch-size", 2, "--quiet")
    code, stdout, err = face4d(capsys, "train", "neural-video", "--data", clips_folder, "--out", out, *micro)
    assert code == 0, err
    assert "neural-video at step 2" in stdout
    model = FacEnhance.from_pretrained(out)
    assert (model.config.size, model.config.low_size, model.config.channels) == (64, 32, (16, 16, 32))
    no_clips = make_portraits(tmp_path / "p", identities=3, per_identity=2, test_identities=1)
    assert_one_line_errors(capsys, [("train", "neural-video", "--data", no_clips, "--out", tmp_path / "x", *micro),
                                    ("train", "neural-video", "--data", clips_folder, "--out", tmp_path / "x",
                                     "--stride", 7, *micro),
                                    ("train", "neural-video", "--data", clips_folder, "--out", out,
                                     "--prediction", "epsilon", *micro)])
    assert not (tmp_path / "x").exists()

def test_default_model_lookup(tmp_path, monkeypatch):
    from face4d import neural
    from face4d.errors import Face4DError

    monkeypatch.setattr(neural, "NEURAL_WEIGHTS", tmp_path)
    assert neural.neural_model(tmp_path / "mine", "video") == tmp_path / "mine"
    with pytest.raises(Face4DError, match="give --neural-model DIR"):
        neural.neural_model(None, "video")
    (tmp_path / "video").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "video" / name).write_text("{}")
    assert neural.neural_model(None, "video") == tmp_path / "video"


def test_low_res_frames_take_the_identity_images_colours(head):
    from face4d.neural import low_res_frames

    image = np.zeros((128, 128, 3), np.uint8)
    image[:] = (20, 120, 40)  # the background
    image[40:100, 30:98] = (200, 150, 120)  # the face
    low = next(low_res_frames([head.neutral], head, image, 64))
    assert low.shape == (64, 64, 3)
    assert np.abs(low[1, 1].astype(int) - (20, 120, 40)).max() <= 2
    centre = np.median(low[28:38, 20:44].reshape(-1, 3), axis=0)
    assert np.abs(centre - (200, 150, 120)).max() < 40  # skin under the light, not the fixed draw's tone


def test_side_by_side_scales_the_smaller_frame():
    from face4d.pipeline import side_by_side

    small, big = np.full((64, 64, 3), 7, np.uint8), np.full((128, 100, 3), 9, np.uint8)
    row = side_by_side(small, big)
    assert row.shape == (128, 228, 3) and (row[:, :128] == 7).all() and (row[:, 128:] == 9).all()
    tall = side_by_side(np.zeros((276, 256, 3), np.uint8), np.full((128, 128, 3), 5, np.uint8))
    assert tall.shape == (276, 512, 3) and (tall[:256, 256:] == 5).all()


def test_mesh_frames_decode_in_chunks_like_decode(head, monkeypatch):
    from face4d import pipeline
    from face4d.data.interchange import LandmarkSequences

    frames = jaw_smile_animation(head, 7)[:, head.landmark_ids]
    seqs = LandmarkSequences(frames[None], np.array([7]), np.array(["surprise"]), np.array(["N2E"]), fps=25.0)
    pipe = pipeline.Pipeline(head=head)
    whole = pipe.decode(seqs).meshes[0]
    monkeypatch.setattr(pipeline, "DECODE_FRAMES", 3)  # chunks of 3 frames, each decoded from the neutral frame
    count, meshes = pipe.mesh_frames(seqs)
    assert count == 7 and not isinstance(meshes, (list, np.ndarray))
    assert np.allclose(np.stack(list(meshes)), whole, atol=1e-4)


@pytest.mark.slow
def test_cli_renders_and_generates_neural_video(clips_folder, tmp_path, head, bundle, capsys):
    import imageio.v3 as iio

    model = tmp_path / "video"
    _train(clips_folder, model, 1, prediction="previous")  # x_(t-20): 5 calls a frame, and --steps 7 is refused
    face = tmp_path / "face.png"
    iio.imwrite(face, load_clips(clips_folder, "test")["identity_high"][0])
    seq = tmp_path / "seq.npy"
    np.save(seq, jaw_smile_animation(head, 3)[:, head.landmark_ids] * 1.0)
    out = tmp_path / "v.mp4"
    code, _, err = face4d(capsys, "render", seq, "--neural", "video", "--neural-model", model, "--identity-image", face,
                          "--out", out, "--fps", 10, "--quiet")
    assert code == 0, err
    frames = iio.imread(out)
    assert frames.shape == (3, 64, 128, 3)  # the 32² mesh render (scaled x2) beside the 64² frame
    gen = tmp_path / "gen"
    code, _, err = face4d(capsys, "generate", "--model", bundle, "--label", "surprise", "--frames", 3, "--out", gen,
                          "--preview", "mp4", "--size", 64, "--neural", "--neural-model", model, "--identity-image",
                          face, "--quiet")
    assert code == 0, err
    assert iio.imread(gen / "neural.mp4").shape[:3] == (3, iio.imread(gen / "preview.mp4").shape[1], 128)
    big = tmp_path / "big.png"
    iio.imwrite(big, np.zeros((128, 128, 3), np.uint8))
    bad = tmp_path / "x.mp4"
    video = ("render", seq, "--neural", "video", "--neural-model", model, "--out", bad)
    generate = ("generate", "--model", bundle, "--label", "surprise", "--out", tmp_path / "g2", "--neural",
                "--neural-model", model)
    assert_one_line_errors(capsys, [video, (*video, "--identity-image", big),
                                    (*video, "--identity-image", face, "--steps", 7),
                                    (*generate, "--identity-image", face),  # no --preview
                                    (*generate, "--identity-image", big, "--preview", "mp4")])
    assert not bad.exists() and not (tmp_path / "g2").exists()


@pytest.mark.slow
def test_shipped_video_model_follows_the_low_res_frames(head, tmp_path, capsys):
    """The shipped model on a person of another portrait seed than its training data, a jaw-and-smile
    animation rendered by one camera at 64² (the input) and 128² (the truth): it follows the motion
    (closer to the truth than the still identity image, and than bicubic upsampling and its own
    detail-transfer guess), opens the mouth with the input, flickers less than with fresh noise every
    frame, and the command line uses it when no --neural-model is given."""
    import imageio.v3 as iio
    from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
    from face4d.neural import neural_model
    from render.neural import metrics
    from render.neural.facenhance_data import bicubic
    from render.neural.facenhance_metrics import flicker

    renderer = PortraitRenderer(head)
    look = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=7).appearance[1]
    meshes = jaw_smile_animation(head, 8)
    low = np.stack([renderer.render(m, look, renderer.camera(64))[0] for m in meshes])
    truth = np.stack([renderer.render(m, look, renderer.camera(128))[0] for m in meshes])
    model = FacEnhance.from_pretrained(neural_model(None, "video"))
    video = np.stack(list(model.generate(low, truth[0])))[None]
    upsampled = bicubic(low, 128)[None]
    moved = slice(1, None)  # frame 0 is the identity image itself
    still = np.broadcast_to(truth[0], truth[moved].shape)
    assert metrics.psnr(video[0, moved], truth[moved]) > metrics.psnr(still, truth[moved]) + 1
    guess = to_uint8(detail_guess(to_tensor(low), to_tensor(truth[:1]).expand(len(low), -1, -1, -1)))
    assert metrics.psnr(video[0], truth) > max(metrics.psnr(upsampled[0], truth), metrics.psnr(guess, truth))
    mouth = (slice(80, 110), slice(44, 84))
    opened = truth[-1][mouth].astype(float).mean() - truth[0][mouth].astype(float).mean()
    drawn = video[0, -1][mouth].astype(float).mean() - video[0, 0][mouth].astype(float).mean()
    assert opened < -10 and drawn < 0.4 * opened  # the open mouth darkens, in the truth and the video
    fresh = np.stack(list(model.generate(low, truth[0], shared_noise=False)))[None]
    assert flicker(video, truth[None]) < flicker(fresh, truth[None])
    face = tmp_path / "face.png"
    iio.imwrite(face, truth[0])
    seq = tmp_path / "seq.npy"
    np.save(seq, meshes[:3, head.landmark_ids] * 1.0)
    code, _, err = face4d(capsys, "render", seq, "--neural", "video", "--identity-image", face,
                          "--out", tmp_path / "v.mp4", "--quiet")
    assert code == 0, err
    assert iio.imread(tmp_path / "v.mp4").shape == (3, 128, 256, 3)
