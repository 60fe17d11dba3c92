"""The neural renderer (``render.neural``): portrait data, landmark maps, metrics and the warp baseline
(fast); the models' shapes and ablation switches, deterministic resumable training, and the CLI
(slow: they train micro models at 32² on a tiny synthetic portrait folder, ``tests/neural_fixtures``)."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neural_fixtures import LABELS, brow_row, check_exact_resume, darkest_mouth, make_portraits
from face4d.errors import Face4DError
from render.neural import metrics
from render.neural.data import (NeuralInputError, PortraitPairs, check_image, check_landmarks,
                                landmark_maps, load_images, load_neutrals)

ROOT = Path(__file__).resolve().parents[1]
MICRO = {"channels": (16, 32), "dim": 32, "heads": 2, "encoder_widths": (16, 32, 32)}


@pytest.fixture(scope="module")
def portraits(tmp_path_factory):
    return make_portraits(tmp_path_factory.mktemp("portraits") / "data")


def test_render_init_does_not_import_neural():
    tree = ast.parse((ROOT / "render" / "__init__.py").read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and "neural" in m]


def test_load_images_split_and_pairs(portraits):
    train, test = load_images(portraits, "train"), load_images(portraits, "test")
    assert train["rgb"].shape == (24, 32, 32, 3) and train["rgb"].dtype == np.uint8
    assert set(train["identity"]) == {0, 1, 2, 3} and set(test["identity"]) == {4, 5}
    neutrals = load_neutrals(portraits)
    pairs = PortraitPairs(train, neutrals, identity="neutral")
    item = pairs[7]
    assert item["target"].shape == (3, 32, 32) and -1 <= item["target"].min() and item["target"].max() <= 1
    row = int(np.flatnonzero(neutrals["identity"] == train["identity"][7])[0])
    assert np.allclose(item["identity_landmarks"].numpy(), neutrals["landmarks"][row])
    other = PortraitPairs(train, identity="other")
    for i in range(len(other)):
        j = other.partner[i]
        assert j != i and train["identity"][j] == train["identity"][i]
    batch = other.batch([0, 3, 5])
    assert batch["target"].shape == (3, 3, 32, 32) and batch["label"].dtype == torch.long


def test_bad_inputs_are_one_line_errors(tmp_path, portraits):
    with pytest.raises(NeuralInputError, match="not a portrait dataset"):
        load_images(tmp_path)
    with pytest.raises(NeuralInputError, match="the model takes 32x32"):
        check_image(np.zeros((64, 64, 3), np.uint8), 32)
    with pytest.raises(NeuralInputError, match="RGB"):
        check_image(np.zeros((32, 32, 4), np.uint8), 32)
    with pytest.raises(NeuralInputError, match="uint8"):
        check_image(np.zeros((32, 32, 3), np.float32), 32)
    with pytest.raises(NeuralInputError, match=r"\(\.\.\., 68, 2\)"):
        check_landmarks(np.zeros((5, 68, 3)))
    with pytest.raises(NeuralInputError, match="neutrals"):
        PortraitPairs(load_images(portraits), None, identity="neutral")


def test_landmark_maps_peak_at_the_points():
    points = torch.tensor([[[10.5, 20.5]] * 68], dtype=torch.float32)
    points[0, 48:] = torch.tensor([5.5, 7.5])
    maps = landmark_maps(points, 32)
    assert maps.shape == (1, 5, 32, 32)
    assert maps[0, 0, 20, 10] == pytest.approx(1.0) and maps[0, 4, 7, 5] == pytest.approx(1.0)
    assert maps[0, 4, 20, 10] < 1e-3  # the mouth channel holds only the mouth's points


def test_metrics_numbers():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    noisy = np.clip(truth.astype(int) + rng.choice([-4, 4], truth.shape), 0, 255).astype(np.uint8)
    mse = ((noisy.astype(float) - truth) ** 2).mean(axis=(1, 2, 3))
    assert metrics.psnr(noisy, truth) == pytest.approx(np.mean(10 * np.log10(255**2 / mse)), rel=1e-6)
    assert metrics.ssim(truth, truth) == pytest.approx(1.0)
    assert metrics.ssim(noisy, truth) < 1.0
    lm = rng.uniform(0, 32, (4, 68, 2)).astype(np.float32)
    lm[:, 36], lm[:, 45] = [8, 12], [24, 12]  # inter-ocular distance 16
    shifted = lm.copy()
    shifted[:, 17:] += [1.6, 0]
    shifted[:, :17] += 50  # the jaw is not counted
    assert metrics.nme_inner(lm, lm) == 0
    assert metrics.nme_inner(shifted, lm) == pytest.approx(0.1, rel=1e-5)
    a = rng.normal(size=(500, 4))
    assert metrics.frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert metrics.frechet_distance(a + [2, 0, 0, 0], a) == pytest.approx(4, rel=1e-3)


def _tps(image: np.ndarray, landmarks: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``render.neural.warp.tps_warp`` on one uint8 image, the warp baseline's interface."""
    from render.neural.data import to_tensor, to_uint8
    from render.neural.warp import tps_warp

    batch = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]
    return to_uint8(tps_warp(to_tensor(image)[None], batch(landmarks), batch(target)))[0]


def _mouth_down():
    """A drawn face, its landmarks, and the same landmarks with the mouth 4 px lower."""
    from neural_fixtures import draw, template

    skin, background = np.array([200, 160, 140], np.float32), np.array([20, 40, 60], np.float32)
    source = template() * 64
    target = source.copy()
    target[48:68, 1] += 4  # mouth down by 4 px
    image, _ = draw(64, skin, background, source)
    expected, _ = draw(64, skin, background, target)
    return image, source, target, expected


@pytest.mark.parametrize("warp", [metrics.warp_baseline, _tps], ids=["piecewise-affine", "thin-plate-spline"])
def test_warps_move_features_to_the_target(warp):
    image, source, target, expected = _mouth_down()
    same = warp(image, source, source)
    assert np.abs(same.astype(int) - image).mean() < 1.0
    warped = warp(image, source, target)
    mouth = np.zeros((64, 64), bool)
    mouth[40:60, 16:48] = True
    err_warped = np.abs(warped.astype(int) - expected)[mouth].mean()
    err_unwarped = np.abs(image.astype(int) - expected)[mouth].mean()
    assert err_warped < 0.5 * err_unwarped


def test_tps_warp_keeps_the_border_and_a_closed_mouth_is_finite():
    from render.neural.data import to_tensor
    from render.neural.warp import tps_warp

    image, source, target, _ = _mouth_down()
    assert np.abs(_tps(image, source, target)[:4].astype(int) - image[:4]).max() <= 1
    closed = target.copy()  # coinciding target points: the inner lips of a closed mouth
    closed[65:68] = closed[61:64][::-1]
    batch = lambda a: torch.as_tensor(a, dtype=torch.float32)[None]
    assert torch.isfinite(tps_warp(to_tensor(image)[None], batch(source), batch(closed))).all()


def test_ccfexp_warp_input_and_sample_prediction():
    from render.neural.ccfexp_model import CCFExp, CCFExpConfig, predicted_x0

    torch.manual_seed(0)
    model = CCFExp(CCFExpConfig(size=32, **MICRO, warp_input=True, prediction="sample"))
    assert model.unet.config.in_channels == 3 + 5 + 3
    image, lm = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 68, 2) * 20 + 6
    condition = model.encode(image, lm, lm)
    assert torch.allclose(condition["maps"][:, 5:], image, atol=0.05)  # the same landmarks: the warp is the image
    ddpm, ddim = model.schedulers()
    assert ddpm.config.prediction_type == ddim.config.prediction_type == "sample"
    out = torch.rand(2, 3, 32, 32) * 4 - 2
    assert torch.equal(predicted_x0(torch.zeros_like(out), out, torch.full((2,), 0.5), "sample"), out.clamp(-1, 1))
    with pytest.raises(NeuralInputError, match="needs the landmarks"):
        CCFExp(CCFExpConfig(size=32, **MICRO, landmarks=False, warp_input=True))


@pytest.mark.parametrize("options, streams", [({}, 3), ({"landmarks": False}, 2), ({"cross_fusion": False}, 3)])
def test_ccfexp_ablations(options, streams):
    from render.neural.ccfexp_model import CCFExp, CCFExpConfig

    torch.manual_seed(0)
    model = CCFExp(CCFExpConfig(size=32, **MICRO, **options))
    grid = (32 // 8) ** 2
    tokens = (1 + grid) + grid + (68 if streams == 3 else 0)
    lm = torch.rand(2, 68, 2) * 32
    condition = model.encode(torch.rand(2, 3, 32, 32) * 2 - 1, lm, lm)
    assert condition["tokens"].shape == (2, tokens, 32)
    assert hasattr(model, "fusion") == options.get("cross_fusion", True)
    assert hasattr(model, "landmark_mlp") == options.get("landmarks", True)
    assert model.unet.config.in_channels == (8 if options.get("landmarks", True) else 3)
    assert model(torch.randn(2, 3, 32, 32), torch.tensor([3, 900]), condition).shape == (2, 3, 32, 32)


def test_edit_condition_and_label_errors():
    from render.neural.conditional_diffusion_model import EditConfig, EditModel, VAEConfig

    model = EditModel(EditConfig(size=32, labels=tuple(LABELS), channels=(16, 32), label_dim=16, semantic_dim=8,
                                 vae=VAEConfig(size=32, widths=(16, 32), latent=8)))
    source = torch.rand(2, 3, 32, 32) * 2 - 1
    cond = model.condition(torch.tensor([0, model.null_label]), source)
    assert cond.shape == (2, 64)  # the time embedding's width, 4 x channels[0]
    assert not any(p.requires_grad for p in model.vae.parameters())
    with pytest.raises(NeuralInputError, match="unknown label 'joy'"):
        model.edit(np.zeros((32, 32, 3), np.uint8), "joy", steps=2)
    with pytest.raises(NeuralInputError, match="strength"):
        model.edit(np.zeros((32, 32, 3), np.uint8), LABELS[0], steps=2, strength=0)
    face = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    many = model.edit(face, [LABELS[0], LABELS[5], LABELS[0]], steps=2)  # one source, many labels
    assert many.shape == (3, 3, 32, 32) and not torch.allclose(many[0], many[1])
    torch.testing.assert_close(many[:1], model.edit(face, LABELS[0], steps=2), atol=1e-4, rtol=0)
    with pytest.raises(NeuralInputError, match="2 source images and 3 labels"):
        model.edit(np.stack([face, face]), LABELS[:3], steps=2)
    label_only = EditModel(EditConfig(size=32, labels=tuple(LABELS), channels=(16, 32), variant="label"))
    assert not hasattr(label_only, "vae")


def test_edit_source_input_and_sample_prediction():
    from render.neural.conditional_diffusion_model import EditConfig, EditModel
    from render.neural.conditional_diffusion_training import EditLoss

    torch.manual_seed(0)
    model = EditModel(EditConfig(size=32, labels=tuple(LABELS), channels=(16, 32), variant="label",
                                 source_input=True, prediction="sample"))
    assert model.unet.config.in_channels == 6
    assert model.schedulers()[1].config.prediction_type == "sample"
    batch = {"target": torch.rand(2, 3, 32, 32) * 2 - 1, "identity_image": torch.rand(2, 3, 32, 32) * 2 - 1,
             "label": torch.tensor([0, -1])}
    loss, _ = EditLoss(model)(batch)
    loss.backward()
    assert model.unet.conv_in.weight.grad[:, 3:].abs().sum() > 0  # the source channels are read
    edited = model.edit(np.zeros((2, 32, 32, 3), np.uint8), LABELS[1], steps=2)
    assert edited.shape == (2, 3, 32, 32) and edited.abs().max() <= 1
    with pytest.raises(NeuralInputError, match="prediction"):
        EditConfig(labels=tuple(LABELS), prediction="v")


def test_export_model_halves_the_weights(tmp_path):
    from safetensors.torch import load_file
    from render.neural.ccfexp_model import CCFExp, CCFExpConfig
    from render.neural.io import export_model

    torch.manual_seed(0)
    model = CCFExp(CCFExpConfig(size=32, **MICRO, warp_input=True))
    model.save_pretrained(tmp_path / "full")
    export_model(tmp_path / "full", tmp_path / "half")
    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "half" / "model.safetensors")).values())
    half = CCFExp.from_pretrained(tmp_path / "half")
    assert half.config == model.config and next(half.parameters()).dtype == torch.float32
    for a, b in zip(model.state_dict().values(), half.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-4)
    with pytest.raises(FileExistsError):
        export_model(tmp_path / "full", tmp_path / "half")
    with pytest.raises(NeuralInputError, match="no trained model"):
        export_model(tmp_path / "none", tmp_path / "x")
    export_model(tmp_path / "full", tmp_path / "tuned", config_updates={"timesteps": 500})  # chosen after training
    assert CCFExp.from_pretrained(tmp_path / "tuned").config.timesteps == 500
    with pytest.raises(NeuralInputError, match=r"no fields \['stepz'\]"):
        export_model(tmp_path / "full", tmp_path / "y", config_updates={"stepz": 7})
    assert not (tmp_path / "y").exists()


def _train_micro(portraits, out, steps, checkpoint_every=100, init=None):
    from render.neural.ccfexp_model import CCFExpConfig
    from render.neural.ccfexp_training import train_ccfexp
    from render.neural.evaluators import EvaluatorConfig, Evaluators
    from render.neural.training import NeuralTrainConfig

    torch.manual_seed(0)  # untrained but fixed loss networks: what matters is that every run sees the same
    evaluators = Evaluators(EvaluatorConfig(size=32, widths=(16, 32), identities=4, labels=tuple(LABELS)))
    config = NeuralTrainConfig(steps=steps, batch_size=4, checkpoint_every=checkpoint_every, seed=3, init=init)
    return train_ccfexp(load_images(portraits, "train"), load_neutrals(portraits), out, config,
                        CCFExpConfig(**MICRO), evaluators=evaluators, progress=False)


@pytest.mark.slow
def test_ccfexp_training_is_deterministic_and_resumes_exactly(portraits, tmp_path):
    from safetensors.torch import load_file

    check_exact_resume(lambda out, steps, **kw: _train_micro(portraits, out, steps, **kw), tmp_path)
    _train_micro(portraits, tmp_path / "again", 4)
    full, again = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "again"))
    for key, value in full.items():
        assert torch.equal(value, again[key]), key


@pytest.mark.slow
def test_edit_training_starts_from_a_saved_model(portraits, tmp_path):
    import dataclasses
    import json

    from safetensors.torch import load_file

    from render.neural.conditional_diffusion_model import EditConfig
    from render.neural.conditional_diffusion_training import train_edit
    from render.neural.training import NeuralTrainConfig

    images, edit = load_images(portraits, "train"), EditConfig(channels=(16, 32), source_input=True)
    first = NeuralTrainConfig(steps=2, batch_size=4, seed=3)
    train_edit(images, tmp_path / "first", first, LABELS, edit, vae_steps=1, progress=False)
    # at lr 0 the warm run's weights and EMA stay exactly the saved ones; it keeps their VAE (no VAE stage)
    still = dataclasses.replace(first, steps=1, lr=0.0, init=str(tmp_path / "first"))
    train_edit(images, tmp_path / "still", still, LABELS, edit, progress=False)
    saved, warm = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("first", "still"))
    assert saved.keys() == warm.keys() and all(torch.equal(saved[k], warm[k]) for k in saved)
    assert not (tmp_path / "still" / "vae").exists()
    # a moving warm run stays near the saved weights; a cold one with the same seed starts elsewhere
    moving = dataclasses.replace(still, lr=1e-4, seed=4)
    train_edit(images, tmp_path / "warm", moving, LABELS, edit, progress=False)
    train_edit(images, tmp_path / "cold", dataclasses.replace(moving, init=None), LABELS, edit, vae_steps=1,
               progress=False)
    warm, cold = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("warm", "cold"))
    # a run saved before a setting existed (here: init) resumes with that setting's default
    state = json.loads((tmp_path / "cold" / "train_state.json").read_text())
    del state["settings"]["init"]
    (tmp_path / "cold" / "train_state.json").write_text(json.dumps(state))
    assert train_edit(images, tmp_path / "cold", dataclasses.replace(moving, init=None, steps=2), LABELS, edit,
                      vae_steps=1, progress=False).start_step == 1
    gap = {name: sum(float((run[k] - saved[k]).abs().max()) for k in saved) for name, run in
           (("warm", warm), ("cold", cold))}
    assert gap["warm"] < 0.01 * gap["cold"], gap
    with pytest.raises(NeuralInputError, match=r"other settings \(channels\)"):
        train_edit(images, tmp_path / "wide", still, LABELS, dataclasses.replace(edit, channels=(16, 48)),
                   progress=False)
    with pytest.raises(NeuralInputError, match="--init .* not 'ccfexp'"):
        _train_micro(portraits, tmp_path / "faces", 1, init=str(tmp_path / "first"))


@pytest.mark.slow
def test_ccfexp_bfloat16_sampling_stays_close_to_float32(head):
    from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
    from render.neural.ccfexp_model import CCFExp
    from render.neural.precision import sampling_context

    model = CCFExp.from_pretrained(ROOT / "face4d" / "weights" / "neural" / "ccfexp")
    renderer = PortraitRenderer(head)
    look = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=7).appearance[1]
    image, points, _ = renderer.render(head.vertices(None, None), look, renderer.camera(64))
    targets = points[None] + np.array([0.0, 1.5], np.float32) * (np.arange(68) >= 48)[:, None]
    full, half = (model.generate(image, points, targets, steps=10, precision=p) for p in ("float32", "bfloat16"))
    assert 0 < float((full - half).abs().max()) < 0.05 and float((full - half).abs().mean()) < 0.005
    with pytest.raises(NeuralInputError, match="precision must be one of"):
        sampling_context("cpu", "half")
    from face4d.commands.options import PRECISIONS
    from render.neural.precision import PRECISIONS as NEURAL_PRECISIONS
    assert PRECISIONS == NEURAL_PRECISIONS


@pytest.mark.slow
def test_ccfexp_generates_and_reloads(portraits, tmp_path):
    from render.neural.ccfexp_model import CCFExp

    _train_micro(portraits, tmp_path / "model", 2)
    model = CCFExp.from_pretrained(tmp_path / "model")
    neutrals, images = load_neutrals(portraits), load_images(portraits, "test")
    frames = model.generate(neutrals["rgb"][4], neutrals["landmarks"][4], images["landmarks"][:3], steps=3, seed=1)
    assert frames.shape == (3, 3, 32, 32) and frames.abs().max() <= 1
    again = model.generate(neutrals["rgb"][4], neutrals["landmarks"][4], images["landmarks"][:3], steps=3, seed=1)
    assert torch.equal(frames, again)
    with pytest.raises(NeuralInputError, match="32x32"):
        model.generate(np.zeros((64, 64, 3), np.uint8), neutrals["landmarks"][4], images["landmarks"][:1])


def face4d(*args, env_extra=None, launcher=("-m", "face4d.cli")):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *launcher, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_cli_trains_renders_and_edits(portraits, tmp_path):
    import imageio.v3 as iio

    ev, faces, edit = tmp_path / "ev", tmp_path / "faces", tmp_path / "edit"
    micro = ("--steps", 2, "--batch-size", 4, "--quiet")
    assert face4d("train", "neural-evaluators", "--data", portraits, "--out", ev, "--widths", "16,32",
                  *micro).returncode == 0
    done = face4d("train", "neural-faces", "--data", portraits, "--out", faces, "--evaluators", ev,
                  "--channels", "16,32", "--dim", "32", *micro)
    assert done.returncode == 0, done.stderr
    assert "neural-faces at step 2" in done.stdout
    assert face4d("train", "neural-edit", "--data", portraits, "--out", edit, "--channels", "16,32",
                  "--vae-steps", 1, *micro).returncode == 0
    warm = face4d("train", "neural-edit", "--data", portraits, "--out", tmp_path / "warm", "--channels", "16,32",
                  "--init", edit, *micro)
    assert warm.returncode == 0 and "neural-edit at step 2" in warm.stdout, warm.stderr
    wrong = face4d("train", "neural-edit", "--data", portraits, "--out", tmp_path / "wrong", "--init", faces, *micro)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1 and "--init" in wrong.stderr
    # a generated 3D sequence (cm, Y up) projected onto a portrait identity
    seq = np.zeros((1, 5, 68, 3), np.float32)
    from neural_fixtures import template
    seq[0, :, :, :2] = (template() - 0.5) * [12, -14]
    seq[0, 2:, 48:, 1] -= 0.5
    lm_file = tmp_path / "seq.npy"
    np.save(lm_file, seq[0])
    out = tmp_path / "faces.gif"
    done = face4d("render", lm_file, "--neural", "faces", "--neural-model", faces, "--portraits", portraits,
                  "--identity", 4, "--out", out, "--steps", 2, "--quiet")
    assert done.returncode == 0, done.stderr
    assert iio.imread(out).shape[-3:-1] == (32, 32)
    image = tmp_path / "face.png"
    iio.imwrite(image, load_neutrals(portraits)["rgb"][4])
    done = face4d("edit", image, "--label", LABELS[3], "--model", edit, "--out", tmp_path / "edited.png",
                  "--steps", 2, "--strength", 0.5)
    assert done.returncode == 0, done.stderr
    assert iio.imread(tmp_path / "edited.png").shape == (32, 32, 3)
    # bad inputs: one line, exit 2, nothing written
    big = tmp_path / "big.png"
    iio.imwrite(big, np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    blank = tmp_path / "blank.png"
    iio.imwrite(blank, np.full((32, 32, 3), 128, np.uint8))
    points = load_neutrals(portraits)["landmarks"][4]
    off_image, tiny = tmp_path / "off.npy", tmp_path / "tiny.npy"
    np.save(off_image, points + 40.0)
    np.save(tiny, points.mean(0) + (points - points.mean(0)) * 0.05)
    no_face = [("edit", blank, "--label", LABELS[0], "--model", edit, "--out", tmp_path / "x.png"),
               *(("render", lm_file, "--neural", "faces", "--neural-model", faces, "--identity-image", face_image,
                  "--identity-landmarks", lm, "--out", tmp_path / "x.gif")
                 for face_image, lm in ((image, off_image), (image, tiny), (blank, bad_points(tmp_path, points))))]
    grey = tmp_path / "grey.png"
    iio.imwrite(grey, np.zeros((32, 32), np.uint8))
    bad_lm = tmp_path / "bad.npy"
    np.save(bad_lm, np.zeros((68, 3), np.float32))
    cases = [("edit", image, "--label", "joy", "--model", edit, "--out", tmp_path / "x.png"),
             ("edit", big, "--label", LABELS[0], "--model", edit, "--out", tmp_path / "x.png"),
             ("edit", grey, "--label", LABELS[0], "--model", edit, "--out", tmp_path / "x.png"),
             ("edit", image, "--label", LABELS[0], "--model", tmp_path / "none", "--out", tmp_path / "x.png"),
             ("render", lm_file, "--neural", "faces", "--neural-model", faces, "--identity-image", image,
              "--identity-landmarks", bad_lm, "--out", tmp_path / "x.gif")]
    for case in cases + no_face:
        done = face4d(*case)
        assert done.returncode == 2, (case, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("face4d: error:"), done.stderr
        if case in no_face:
            assert "no face" in done.stderr, done.stderr
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.gif").exists()


def bad_points(tmp_path, points) -> Path:
    """``points`` saved as a landmark file (for an image that does not hold that face)."""
    path = tmp_path / "points.npy"
    np.save(path, points)
    return path


@pytest.mark.slow
def test_missing_extra_is_one_line(tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "diffusers.py").write_text("raise ImportError('blocked')\n")
    (blocker / "sitecustomize.py").write_text(
        "import importlib.util, sys\n_find = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda name, *a: None if name == 'diffusers' else _find(name, *a)\n")
    done = face4d("edit", tmp_path / "face.png", "--label", LABELS[0], "--model", tmp_path, "--out",
                  tmp_path / "x.png", env_extra={"PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"})
    assert done.returncode == 2
    assert done.stderr.strip() == "face4d: error: the neural renderer needs diffusers: pip install 'face4d[neural]'"


@pytest.mark.slow
def test_two_process_training_with_accelerate(portraits, tmp_path):
    ev = tmp_path / "ev"
    done = face4d("--num_processes", "2", "--cpu", "-m", "face4d.cli", "train", "neural-evaluators", "--data",
                  portraits, "--out", ev, "--widths", "16,32", "--steps", 2, "--batch-size", 4, "--quiet",
                  launcher=("-m", "accelerate.commands.launch"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("neural-evaluators at step 2") == 1  # the main process reports
    assert (ev / "model.safetensors").is_file()


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (18.0, -8.0, 4.0), (-15.0, 9.0, -3.0)])
def test_sequence_projection_recovers_the_portrait_camera(head, angles):
    """A sequence is drawn onto an identity image through the pinhole camera that puts its neutral
    frame on the image's landmarks: a portrait rendered at a yaw of up to 18 degrees gets its own
    camera back, so the expression frames land where that camera would put them (a frontal
    orthographic fit of the same neutral frame is off by pixels)."""
    from face4d.data.portraits import PortraitRenderer
    from face4d.neural import fit_camera, project_sequence

    camera = PortraitRenderer(head).camera(64, *angles)
    weights = np.zeros((2, head.num_expressions), np.float32)
    weights[1, head.blendshape_index("jawOpen")] = 0.8
    weights[1, head.blendshape_index("mouthSmile_L")] = 0.6
    frames = np.stack([head.landmarks(expression_weights=w) for w in weights])
    truth = camera.project(frames)
    fitted = fit_camera(frames[0], truth[0], 64)
    np.testing.assert_allclose([fitted.yaw, fitted.pitch, fitted.roll], angles, atol=0.5)
    projected = project_sequence(frames, truth[0], size=64)
    assert np.abs(projected - truth).max() < 0.05  # pixels
    with pytest.raises(Face4DError, match=r"\(F, 68, 3\)"):
        project_sequence(frames[0], truth[0], size=64)


@pytest.mark.slow
def test_shipped_ccfexp_draws_a_new_person_with_the_target_expression(head, tmp_path):
    """The shipped default, on a person of another portrait seed than its training data: the image is
    closer to the exact render than the identity image and than the piecewise-affine warp, the open
    mouth is dark inside; and the command line uses it when no --neural-model is given."""
    import imageio.v3 as iio
    from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
    from face4d.neural import neural_model
    from render.neural.ccfexp_model import CCFExp
    from render.neural.data import to_uint8

    renderer = PortraitRenderer(head)
    look = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=7).appearance[1]
    weights = np.zeros(53, np.float32)
    weights[head.blendshape_index("jawOpen")] = 0.7
    neutral, neutral_points, _ = renderer.render(head.vertices(None, None), look, renderer.camera(64))
    truth, points, _ = renderer.render(head.vertices(None, weights), look, renderer.camera(64, yaw=8.0))
    model = CCFExp.from_pretrained(neural_model(None, "ccfexp"))
    drawn = to_uint8(model.generate(neutral, neutral_points, points[None], steps=25))[0]
    psnr = lambda a: 10 * np.log10(255**2 / np.mean((a.astype(float) - truth) ** 2))
    warped = metrics.warp_baseline(neutral, neutral_points, points)
    assert psnr(drawn) > psnr(warped) > psnr(neutral)
    inner = points[60:68].mean(0).round().astype(int)  # between the inner lip contours
    assert drawn[inner[1] - 1:inner[1] + 2, inner[0] - 1:inner[0] + 2].mean() < 0.5 * neutral[inner[1], inner[0]].mean()
    image, lm, seq = tmp_path / "face.png", tmp_path / "face.npy", tmp_path / "seq.npy"
    iio.imwrite(image, neutral)
    np.save(lm, neutral_points)
    np.save(seq, np.repeat(head.landmark_neutral[None], 2, 0).astype(np.float32))
    done = face4d("render", seq, "--neural", "faces", "--identity-image", image, "--identity-landmarks", lm,
                  "--out", tmp_path / "faces.gif", "--steps", 2, "--quiet")
    assert done.returncode == 0, done.stderr
    assert iio.imread(tmp_path / "faces.gif").shape[-3:-1] == (64, 64)


@pytest.mark.slow
def test_shipped_edit_model_changes_the_named_features_and_keeps_the_person(head, tmp_path):
    """The shipped label editing model, on a person of another portrait seed than its training data:
    mouth_open opens a dark mouth and leaves the brows, eyebrow moves the brows and leaves the mouth
    closed, surprise raises the brows and opens the mouth, and the light
    and background stay the source's; the command line uses it when no --model is given."""
    import imageio.v3 as iio
    from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
    from face4d.neural import neural_model
    from render.neural.conditional_diffusion_model import EditModel
    from render.neural.data import to_uint8

    renderer = PortraitRenderer(head)
    look = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=7).appearance[1]
    source, points, mask = renderer.render(head.vertices(None, None), look, renderer.camera(64))
    model = EditModel.from_pretrained(neural_model(None, "edit", "--model"))
    eyebrow, surprise, mouth_open = to_uint8(model.edit(source, ["eyebrow", "surprise", "mouth_open"], steps=25,
                                                        guidance=2.0))
    assert darkest_mouth(mouth_open, points) < 0.5 * darkest_mouth(source, points)
    assert darkest_mouth(surprise, points) < 0.6 * darkest_mouth(source, points)
    assert darkest_mouth(eyebrow, points) > 0.8 * darkest_mouth(source, points)
    def brow_change(image):  # mean change of the band through the brows
        y = int(points[17:27, 1].mean())
        x = slice(int(points[17:27, 0].min()), int(points[17:27, 0].max()) + 1)
        return np.abs(image[y - 6:y + 4, x].astype(float) - source[y - 6:y + 4, x]).mean()

    # eyebrow is brows raised or lowered (face4d.data.labels): they move, the mouth label leaves them
    assert brow_change(eyebrow) > 4 * brow_change(mouth_open) and brow_change(mouth_open) < 2
    assert brow_row(surprise, points) < brow_row(source, points) - 0.6 < brow_row(mouth_open, points)
    background = mask == 0
    for edited in (mouth_open, eyebrow, surprise):
        assert np.abs(edited[background].astype(float) - source[background]).mean() < 4
    image = tmp_path / "face.png"
    iio.imwrite(image, source)
    done = face4d("edit", image, "--label", "happiness", "--out", tmp_path / "happy.png", "--steps", 2)
    assert done.returncode == 0, done.stderr
    assert iio.imread(tmp_path / "happy.png").shape == (64, 64, 3)
