"""Local expression diffusion (``render.neural.local_expression_*``): box rules and crops on known
landmarks, paste-back and its seam, the smooth-L1 loss, the region texts (fast); resumable training,
SDEdit editing and the CLI on micro models at 32² (slow)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from neural_fixtures import brow_row, check_exact_resume, darkest_mouth, make_portraits
from render.neural.data import NeuralInputError, load_images, load_neutrals
from render.neural.local_expression_regions import boxes, crop, paste, paste_mask, seam_score
from test_neural import face4d

MICRO = {"size": 32, "channels": (8, 16, 16), "heads": 2, "text_dim": 12}


def _landmarks(eye_right=(20.0, 30.0), eye_left=(44.0, 30.0), mouth=((24.0, 50.0), (40.0, 50.0))) -> torch.Tensor:
    """68 points whose eye centres and mouth corners are the given ones (the rest at the image centre)."""
    points = torch.full((68, 2), 32.0)
    points[36:42] = torch.tensor(eye_right)
    points[42:48] = torch.tensor(eye_left)
    points[48], points[54] = torch.tensor(mouth[0]), torch.tensor(mouth[1])
    return points


def test_boxes_follow_equations_1_to_4():
    lm = _landmarks()
    d = 24.0  # eye-centre distance
    eyes = boxes(lm, "eyes")
    assert eyes.tolist() == pytest.approx([20 - 0.5 * d, 30 - 0.5 * d, 24 + d, d])
    mouth = boxes(lm, "mouth")
    assert mouth.tolist() == pytest.approx([24 - 0.1 * d, 50 - 0.4 * d, 16 + 0.2 * d, 0.8 * d])
    # the paper's pixels (eyes m = 50, mouth m_x = 10, m_y = 40) at an eye distance of 100 px
    big = _landmarks((110, 130), (210, 130), ((120, 220), (200, 220)))
    assert boxes(big, "eyes").tolist() == pytest.approx([60, 80, 200, 100])
    assert boxes(big, "mouth").tolist() == pytest.approx([110, 180, 100, 80])
    batch = torch.stack([lm, lm + 5])
    assert boxes(batch, "eyes")[1].tolist() == pytest.approx((eyes + torch.tensor([5, 5, 0, 0])).tolist())
    with pytest.raises(ValueError, match="unknown region"):
        boxes(lm, "nose")


def test_crop_samples_the_box_at_pixel_centres():
    H = W = 64
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    coords = torch.stack([xs, ys, xs * 0])[None] / 64  # an image that stores its own pixel positions
    box = torch.tensor([[10.0, 20.0, 16.0, 8.0]])
    out = crop(coords, box, 8) * 64
    # crop pixel (i, j) is the box point (x + (j + 0.5) w / 8, y + (i + 0.5) h / 8)
    assert out[0, 0, 0].tolist() == pytest.approx([10 + (j + 0.5) * 2 for j in range(8)], abs=1e-4)
    assert out[0, 1, :, 0].tolist() == pytest.approx([20 + (i + 0.5) for i in range(8)], abs=1e-4)
    # a box far larger than the crop reads an area-averaged image: a fine checkerboard becomes grey
    checker = ((xs.long() + ys.long()) % 2).float()[None, None]
    grey = crop(checker, torch.tensor([[0.0, 0.0, 64.0, 64.0]]), 8)
    assert grey.sub(0.5).abs().max() < 1e-6


def test_paste_puts_the_crop_back_and_feathers_its_border():
    ys, xs = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    image = torch.stack([xs / 32 - 1, ys / 32 - 1, (xs + ys) / 64 - 1])[None]  # bilinear resampling is exact on it
    box = torch.tensor([[12.0, 16.0, 32.0, 24.0]])
    # pasting a box's own crop back leaves the image as it was
    again = paste(image, crop(image, box, 64), box, feather=0)
    inside = paste_mask(box, (64, 64), 0)[0, 0] > 0
    assert inside.sum() == 32 * 24
    assert torch.allclose(again, image, atol=1e-5)
    assert torch.equal(again[0][:, ~inside], image[0][:, ~inside])
    mask = paste_mask(box, (64, 64), 0.25)[0, 0]
    assert mask[~inside].max() == 0 and mask[28, 28] == 1 and 0 < mask[16, 28] < mask[18, 28] < 1
    # a brighter crop: the hard paste makes a step at the border, the feathered one a ramp
    bright = crop(image, box, 32) + 0.3
    hard, soft = paste(image, bright, box, 0), paste(image, bright, box, 0.25)
    assert seam_score(hard, image, box) > 2 * seam_score(soft, image, box)
    assert seam_score(image, image, box) == 0


def test_loss_is_smooth_l1_of_the_noise():
    from render.neural.local_expression_model import RegionConfig, RegionDiffusion
    from render.neural.local_expression_training import RegionImages, RegionLoss

    torch.manual_seed(0)
    model = RegionDiffusion(RegionConfig(**MICRO))
    loss_fn = RegionLoss(model, torch.randn(3, 2, 2, MICRO["text_dim"]))
    images = {"rgb": np.random.default_rng(0).integers(0, 255, (64, 32, 32, 3), dtype=np.uint8),
              "landmarks": np.tile(_landmarks().numpy()[None] / 2, (64, 1, 1)),
              "label": np.zeros(64, np.int16)}
    batch = RegionImages(images).batch(np.arange(64))
    loss, logs = loss_fn(batch)
    assert np.isfinite(loss.item()) and logs["smooth_l1"] == loss.item()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    # a model that predicts no noise: Eq. 5 with beta = 1 gives E[huber(z)] for z ~ N(0, 1), not MSE's 1
    model.forward = lambda noisy, *a: torch.zeros_like(noisy)
    expected = integrate.quad(lambda z: stats.norm.pdf(z) * (0.5 * z * z if abs(z) < 1 else abs(z) - 0.5),
                              -np.inf, np.inf)[0]
    assert loss_fn(batch)[0].item() == pytest.approx(expected, abs=0.01)
    with pytest.raises(NeuralInputError, match="text table"):
        RegionLoss(model, torch.randn(3, 1, 2, MICRO["text_dim"]))


def test_config_refuses_crops_the_unet_cannot_halve_and_missing_attention_levels():
    from render.neural.local_expression_model import RegionConfig, RegionDiffusion

    with pytest.raises(NeuralInputError, match="multiple of 4"):
        RegionConfig(size=30, channels=(8, 16, 16))
    with pytest.raises(NeuralInputError, match=r"attention levels must be in 0\.\.3"):
        RegionConfig(channels=(8, 16, 16), attention_levels=4)
    model = RegionDiffusion(RegionConfig(**{**MICRO, "size": 16, "attention_levels": 2}))
    x = torch.randn(2, 3, 16, 16)
    assert model(x, torch.tensor([3, 400]), torch.tensor([0, 1]), torch.randn(2, 12)).shape == x.shape


def test_region_texts_describe_each_region():
    from face4d.data.labels import LABEL_NAMES
    from face4d.data.region_texts import REGION_TEXTS, all_texts, text_table

    assert set(REGION_TEXTS) == {"neutral", *LABEL_NAMES}
    table = text_table(["mouth_open", "eyebrow", "surprise"])  # from the stored embeddings
    assert table.shape == (4, 2, 2, 384)
    assert torch.allclose(table.norm(dim=-1), torch.ones(4, 2, 2), atol=1e-5)
    assert torch.equal(table[1, 0], table[0, 0])  # an open mouth has neutral eyes
    assert torch.equal(table[2, 1], table[0, 1])  # a brow movement has a neutral mouth
    assert not torch.equal(table[3, 0], table[0, 0]) and not torch.equal(table[3, 1], table[0, 1])
    assert len(all_texts()) == len(set(all_texts()))


@pytest.mark.slow
def test_stored_text_embeddings_are_the_encoders():
    from face4d.data import region_texts
    from face4d.text import get_text_encoder

    texts = region_texts.all_texts()
    stored = region_texts.embed(texts)
    assert torch.allclose(stored, get_text_encoder().encode(texts), atol=1e-5)


@pytest.fixture(scope="module")
def portraits(tmp_path_factory):
    """The tiny portrait folder with face4d's label names, which the region texts are written for."""
    from face4d.data.labels import LABEL_NAMES

    folder = make_portraits(tmp_path_factory.mktemp("region") / "data")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "labels": list(LABEL_NAMES)}))
    return folder


def _train(portraits, out, steps, checkpoint_every=100):
    from render.neural.local_expression_model import RegionConfig
    from render.neural.local_expression_training import train_region
    from render.neural.training import NeuralTrainConfig

    table = torch.randn(19, 2, 2, MICRO["text_dim"], generator=torch.Generator().manual_seed(1))
    config = NeuralTrainConfig(steps=steps, batch_size=4, checkpoint_every=checkpoint_every, seed=5)
    return train_region(load_images(portraits, "train"), table, out, config, RegionConfig(**MICRO), progress=False)


@pytest.mark.slow
def test_training_resumes_exactly_and_keeps_raw_and_ema_weights(portraits, tmp_path):
    from safetensors.torch import load_file

    check_exact_resume(lambda out, steps, **kw: _train(portraits, out, steps, **kw), tmp_path,
                       weights=("model.safetensors", "raw/model.safetensors"))
    ema, raw = load_file(str(tmp_path / "full" / "model.safetensors")), load_file(
        str(tmp_path / "full" / "raw" / "model.safetensors"))
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


@pytest.mark.slow
def test_sdedit_changes_only_the_regions_and_grows_with_strength(portraits, tmp_path):
    from render.neural.local_expression_model import RegionDiffusion

    _train(portraits, tmp_path / "m", 2)
    model = RegionDiffusion.from_pretrained(tmp_path / "m")
    neutrals = load_neutrals(portraits)
    image, marks = neutrals["rgb"][4], neutrals["landmarks"][4]
    text = torch.randn(MICRO["text_dim"])
    source = torch.as_tensor(image).permute(2, 0, 1).float() / 127.5 - 1
    changes = {}
    for strength in (1, 250, 500):
        out, parts = model.edit(image, marks, ("eyes", "mouth"), text, strength=strength, steps=4, return_crops=True)
        assert out.shape == (1, 3, 32, 32)
        outside = torch.ones(32, 32, dtype=torch.bool)
        for _, _, box in parts.values():
            outside &= paste_mask(box, (32, 32), 0)[0, 0] == 0
        assert torch.allclose(out[0][:, outside], source[:, outside], atol=1e-5)
        changes[strength] = (out[0] - source).abs().mean().item()
    assert changes[1] < changes[250] < changes[500]
    again = model.edit(image, marks, ("mouth",), text, strength=250, steps=4)
    assert torch.equal(again, model.edit(image, marks, ("mouth",), text, strength=250, steps=4))
    with pytest.raises(NeuralInputError, match="1..500"):
        model.edit(image, marks, ("mouth",), text, strength=0)
    with pytest.raises(NeuralInputError, match="12 values"):
        model.edit(image, marks, ("mouth",), torch.zeros(5))
    with pytest.raises(NeuralInputError, match="unknown region"):
        model.edit(image, marks, ("nose",), text)
    with pytest.raises(NeuralInputError, match="under 2 pixels"):
        model.edit(image, np.full((68, 2), 16, np.float32), ("eyes",), text)


def test_model_defaults_to_the_shipped_one(tmp_path, monkeypatch):
    from face4d import neural
    from face4d.errors import Face4DError

    monkeypatch.setattr(neural, "NEURAL_WEIGHTS", tmp_path)
    with pytest.raises(Face4DError, match=r"no default 'region' model ships .* give --model DIR .*neural-region"):
        neural.neural_model(None, "region", "--model")
    (tmp_path / "region").mkdir()
    (tmp_path / "region" / "config.json").write_text("{}")
    (tmp_path / "region" / "model.safetensors").write_bytes(b"")
    assert neural.neural_model(None, "region", "--model") == tmp_path / "region"
    assert neural.neural_model("elsewhere", "region", "--model") == Path("elsewhere")


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path):
    import imageio.v3 as iio

    image = tmp_path / "face.png"
    iio.imwrite(image, np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "x.png"
    cases = [("edit", image, "--text", "a smile", "--label", "anger", "--out", out),
             ("edit", image, "--text", "a smile", "--out", out),  # no landmarks
             ("edit", "--text", "a smile", "--out", out),
             ("edit", image, "--text", "a smile", "--region", "nose", "--out", out)]
    for case in cases:
        done = face4d(*case)
        assert done.returncode == 2, (case, done.stderr)
        assert done.stderr.strip().splitlines()[-1].startswith(("face4d: error:", "face4d edit: error:")), done.stderr
    assert not out.exists()


@pytest.mark.slow
def test_cli_trains_and_edits_regions(portraits, tmp_path):
    import imageio.v3 as iio

    model = tmp_path / "region"
    done = face4d("train", "neural-region", "--data", portraits, "--out", model, "--channels", "8,16,16",
                  "--crop-size", 16, "--attention-levels", 2, "--steps", 2, "--batch-size", 4, "--quiet")
    assert done.returncode == 0, done.stderr
    assert "neural-region at step 2" in done.stdout and (model / "raw" / "model.safetensors").is_file()
    config = json.loads((model / "config.json").read_text())["config"]
    assert (config["size"], config["attention_levels"]) == (16, 2), config
    neutrals = load_neutrals(portraits)
    image = tmp_path / "face.png"
    iio.imwrite(image, neutrals["rgb"][4])
    (tmp_path / "face.pts").write_text("version: 1\nn_points: 68\n{\n" + "\n".join(
        f"{x} {y}" for x, y in neutrals["landmarks"][4]) + "\n}\n")
    done = face4d("edit", image, "--text", "a wide smile", "--region", "mouth", "--model", model,
                  "--out", tmp_path / "edited.png", "--steps", 2)
    assert done.returncode == 0, done.stderr
    edited = iio.imread(tmp_path / "edited.png")
    assert edited.shape == (32, 32, 3) and not np.array_equal(edited, neutrals["rgb"][4])
    done = face4d("edit", "--portraits", portraits, "--identity", 4, "--text", "surprised eyes", "--region", "eyes",
                  "--model", model, "--out", tmp_path / "p.png", "--steps", 2, "--hard-paste")
    assert done.returncode == 0, done.stderr
    cases = [("edit", image, "--text", "a smile", "--model", model, "--out", tmp_path / "edited.png"),  # exists
             ("edit", image, "--text", "a smile", "--model", model, "--strength", 501, "--out", tmp_path / "x.png"),
             ("edit", image, "--text", " ", "--model", model, "--out", tmp_path / "x.png"),
             ("edit", image, "--text", "a smile", "--model", tmp_path, "--out", tmp_path / "x.png"),
             ("edit", "--portraits", portraits, "--identity", 99, "--text", "a smile", "--model", model,
              "--out", tmp_path / "x.png")]
    for case in cases:
        done = face4d(*case)
        assert done.returncode == 2, (case, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("face4d: error:"), done.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_shipped_region_model_opens_the_mouth_and_keeps_the_rest(head, tmp_path):
    """The shipped region model at the Pipeline's defaults, on a person of another portrait seed than its
    training data: "an open mouth" darkens the mouth, wide surprised eyes raise the brows, nothing
    outside the boxes changes, bfloat16 sampling stays close to float32, and the command line uses it
    when no --model is given."""
    import imageio.v3 as iio
    from face4d.data.portraits import PortraitConfig, PortraitPlan, PortraitRenderer
    from face4d.data.region_texts import embed
    from face4d.neural import neural_model
    from face4d.pipeline import Pipeline
    from render.neural.local_expression_model import RegionDiffusion

    renderer = PortraitRenderer(head)
    look = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=7).appearance[1]
    source, points, _ = renderer.render(head.vertices(None, None), look, renderer.camera(64))
    pipeline = Pipeline()
    opened = pipeline.edit_region(source, points, "an open mouth", region="mouth")
    surprised = pipeline.edit_region(source, points, "wide surprised eyes with raised brows", region="eyes")
    assert darkest_mouth(opened, points) < 0.65 * darkest_mouth(source, points)
    assert brow_row(surprised, points) < brow_row(source, points) - 0.5
    model = RegionDiffusion.from_pretrained(neural_model(None, "region", "--model"))
    for edited, region in ((opened, "mouth"), (surprised, "eyes")):
        outside = paste_mask(model.boxes(torch.as_tensor(points)[None], region), (64, 64), 0)[0, 0].numpy() == 0
        assert np.array_equal(edited[outside], source[outside]) and not np.array_equal(edited, source)
    text = embed(["an open mouth"], model.config.text_encoder)[0]
    full, half = (model.edit(source, points, ("mouth",), text, steps=10, guidance=5, precision=p)
                  for p in ("float32", "bfloat16"))
    assert 0 < float((full - half).abs().max()) < 0.05 and float((full - half).abs().mean()) < 0.005
    image = tmp_path / "face.png"
    iio.imwrite(image, source)
    np.save(tmp_path / "face.npy", points)
    done = face4d("edit", image, "--text", "a wide smile", "--region", "mouth", "--out", tmp_path / "smile.png",
                  "--steps", 2)
    assert done.returncode == 0, done.stderr
    assert iio.imread(tmp_path / "smile.png").shape == (64, 64, 3)
