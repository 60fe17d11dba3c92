import numpy as np
import pytest

from face4d import Face4DError
from face4d.cli import main
from face4d.data import load_sequences
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.guidance import GuidanceConfig

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

def test_generate_shapes_units_and_seeds(bundle, head):
    gen = LandmarkGenerator.from_pretrained(bundle)
    fast = SamplingConfig(steps=10)
    a = gen.generate("high_smile", frames=12, num=3, seed=5, sampling=fast)
    assert a.landmarks.shape == (3, 12, 68, 3) and a.labels.tolist() == ["high_smile"] * 3
    assert a.texts.tolist() == ["high smile"] * 3
    # denormalised into centimetres around the normaliser's mean face (untrained model: noise of ~1.5 cm)
    assert np.abs(a.landmarks.mean((0, 1)) - head.landmark_neutral).mean() < 3.0
    b = gen.generate("high_smile", frames=12, num=3, seed=5, sampling=fast)
    c = gen.generate("high_smile", frames=12, num=3, seed=6, sampling=fast)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)
    assert not np.allclose(a.landmarks, c.landmarks)
    unguided = gen.generate(None, frames=12, num=3, seed=5, sampling=fast)
    assert not np.allclose(a.landmarks, unguided.landmarks)  # guidance moved the samples
    typed = gen.generate("anger", frames=12, num=1, seed=5, sequence_type="E2N", sampling=fast)
    assert typed.types.tolist() == ["E2N"] and typed.texts_enriched[0] == "from an angry face to a neutral face"


def test_paper_sampler_runs_all_steps(bundle):
    gen = LandmarkGenerator.from_pretrained(bundle)
    calls = []
    original = gen.denoiser.forward
    gen.denoiser.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    gen.generate(None, frames=5, num=1, sampling=SamplingConfig(sampler="paper"))
    assert len(calls) == 100  # T of this bundle


@pytest.mark.parametrize("kwargs,message", [
    ({"label": "smirk"}, "unknown label 'smirk'; valid labels: bareteeth"),
    ({"frames": 0}, "frames must be between 1 and 64"),
    ({"frames": 65}, "frames must be between 1 and 64"),
    ({"num": 0}, "num must be >= 1"),
    ({"sequence_type": "N2E"}, "only enforced together with a label"),
    ({"label": "anger", "sequence_type": "X"}, "unknown sequence type"),
])
def test_bad_requests(bundle, kwargs, message):
    with pytest.raises(Face4DError, match=message):
        LandmarkGenerator.from_pretrained(bundle).generate(**kwargs)
    with pytest.raises(Face4DError, match="unknown sampler"):
        SamplingConfig(sampler="ddim2")


def test_bundle_errors(bundle, tmp_path):
    import shutil
    with pytest.raises(Face4DError, match="no config.json"):
        LandmarkGenerator.from_pretrained(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    data = (broken / "denoiser" / "model.safetensors").read_bytes()
    (broken / "denoiser" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(Face4DError, match="model.safetensors"):
        LandmarkGenerator.from_pretrained(broken)
    shutil.rmtree(broken / "classifier_I")
    shutil.copy(bundle / "denoiser" / "model.safetensors", broken / "denoiser" / "model.safetensors")
    with pytest.raises(Face4DError, match="no type I classifier"):
        LandmarkGenerator.from_pretrained(broken).generate("anger", frames=4, sampling=SamplingConfig(steps=2))


def test_cli_generate_writes_interchange_files(bundle, tmp_path, capsys):
    out = tmp_path / "samples"
    argv = ["generate", "--model", str(bundle), "--label", "mouth_open", "--frames", "8", "--num", "2", "--seed", "1",
            "--steps", "5", "--out", str(out), "--quiet"]
    assert main(argv) == 0 and "wrote 2 sequence(s)" in capsys.readouterr().out
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ["sequence_000.npz", "sequence_001.npz"]
    seq = load_sequences(files[0])
    assert seq.landmarks.shape == (1, 8, 68, 3) and seq.labels.tolist() == ["mouth_open"]
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert main([*argv[:-3], "--label", "grin", "--out", str(tmp_path / "x")]) == 2
    assert "valid labels" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["generate", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "y")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_guidance_config_reaches_the_hook(bundle):
    gen = LandmarkGenerator.from_pretrained(bundle)
    base = gen.generate("anger", frames=6, seed=2, sampling=SamplingConfig(steps=5))
    off = gen.generate("anger", frames=6, seed=2, sampling=SamplingConfig(steps=5, guidance=GuidanceConfig(steps=0)))
    none = gen.generate(None, frames=6, seed=2, sampling=SamplingConfig(steps=5))
    np.testing.assert_allclose(off.landmarks, none.landmarks, atol=1e-6)
    assert not np.allclose(base.landmarks, none.landmarks)


# ------------------------------------------------------------------------------ intensity

def test_scale_intensity_moves_frames_about_the_neutral_one():
    from face4d.data.interchange import LandmarkSequences
    from face4d.generate import scale_intensity

    rng = np.random.default_rng(0)
    marks = rng.standard_normal((2, 6, 68, 3)).astype(np.float32)
    marks[1, 5:] = 0.0  # padding of a 5-frame sequence
    seqs = LandmarkSequences(landmarks=marks, lengths=[6, 5], labels=["anger", "anger"], types=["N2E", "E2N"])
    half = scale_intensity(seqs, 0.5, ["N2E", "E2N"])
    np.testing.assert_allclose(half.landmarks[0], marks[0, :1] + 0.5 * (marks[0] - marks[0, :1]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(half.landmarks[1, :5], marks[1, 4:5] + 0.5 * (marks[1, :5] - marks[1, 4:5]),
                               rtol=1e-6, atol=1e-6)
    assert np.all(half.landmarks[1, 5:] == 0)  # padding stays padding
    still = scale_intensity(seqs, 0.0, ["N2E", "E2N"])
    np.testing.assert_array_equal(still.landmarks[0], np.broadcast_to(marks[0, 0], (6, 68, 3)))
    with pytest.raises(Face4DError, match="needs an N2E or E2N type per sequence"):
        scale_intensity(seqs, 0.5, ["N2E", ""])


def test_intensity_scales_the_amplitude_and_not_the_jitter_per_cm(bundle):
    from face4d.eval.motion import landmark_stats

    gen = LandmarkGenerator.from_pretrained(bundle)
    fast = SamplingConfig(steps=5)
    stats = {s: landmark_stats(gen.generate("anger", frames=10, num=2, seed=3, sequence_type="N2E", sampling=fast,
                                            intensity=s)) for s in (0.5, 1.0, 1.5)}
    for s in (0.5, 1.5):
        np.testing.assert_allclose(stats[s].apex_amplitude, s * stats[1.0].apex_amplitude, rtol=1e-4)
        np.testing.assert_allclose(stats[s].jitter / stats[s].apex_amplitude,
                                   stats[1.0].jitter / stats[1.0].apex_amplitude, rtol=1e-3)
    # without an order the type S classifier says which end is neutral; that end stays where it was
    free = gen.generate("anger", frames=10, num=2, seed=3, sampling=fast)
    scaled = gen.generate("anger", frames=10, num=2, seed=3, sampling=fast, intensity=0.0)
    for i, kind in enumerate(gen.infer_types(free)):
        end = 0 if kind == "N2E" else -1
        np.testing.assert_allclose(scaled.landmarks[i], np.broadcast_to(free.landmarks[i, end], (10, 68, 3)))


@pytest.mark.parametrize("value", [-0.1, 1.6, float("nan"), "strong"])
def test_bad_intensity_is_refused(bundle, value):
    with pytest.raises(Face4DError, match=r"intensity must be .*\[0, 1.5\]"):
        LandmarkGenerator.from_pretrained(bundle).generate("anger", frames=5, intensity=value)


def test_cli_intensity(bundle, tmp_path, capsys):
    base = ["generate", "--model", str(bundle), "--label", "anger", "--type", "N2E", "--frames", "6", "--steps", "3"]
    assert main([*base, "--out", str(tmp_path / "a"), "--intensity", "0.5"]) == 0
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    half, full = (load_sequences(tmp_path / name / "sequence_000.npz").landmarks[0] for name in ("a", "b"))
    np.testing.assert_allclose(half - half[0], 0.5 * (full - full[0]), rtol=1e-4, atol=1e-5)
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "c"), "--intensity", "2"]) == 2
    err = capsys.readouterr().err
    assert "intensity must be in [0, 1.5], got 2.0" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


@pytest.fixture(scope="module")
def conditional_bundle(bundle, tmp_path_factory):
    """``bundle`` with a tiny conditional denoiser (random label embeddings) and no classifiers."""
    import torch

    from face4d.checkpoint import load_pretrained, save_model
    from face4d.models import Denoiser, DenoiserConfig

    root = tmp_path_factory.mktemp("conditional")
    _, config, norm = load_pretrained(bundle / "denoiser", "denoiser")
    d_config = DenoiserConfig(**{**config["model_config"], "num_labels": 18})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(root / "denoiser", Denoiser(d_config), "denoiser", d_config.to_dict(), norm,
                   {"diffusion": config["diffusion"]})
    return root


def test_a_conditional_denoiser_steers_labels_itself(conditional_bundle, bundle):
    gen = LandmarkGenerator.from_pretrained(conditional_bundle)
    assert gen.conditional and not gen.classifiers
    sampling = SamplingConfig(steps=4)
    smile = gen.generate("high_smile", frames=8, num=2, seed=3, sampling=sampling).landmarks
    anger = gen.generate("anger", frames=8, num=2, seed=3, sampling=sampling).landmarks
    assert np.abs(smile - anger).max() > 1e-4  # the label reaches the network: no classifier here
    ordered = gen.generate("high_smile", frames=8, num=2, seed=3, sequence_type="E2N", sampling=sampling).landmarks
    assert np.abs(smile - ordered).max() > 1e-4
    scaled = gen.generate("high_smile", frames=8, num=2, seed=3,
                          sampling=SamplingConfig(steps=4, condition_scale=2.0)).landmarks
    assert np.abs(smile - scaled).max() > 1e-4
    with pytest.raises(Face4DError, match="no type I classifier"):  # the paper's way needs the classifier
        gen.generate("high_smile", frames=8, sampling=SamplingConfig(steps=4, label_control="classifier"))
    with pytest.raises(Face4DError, match="needs a conditional denoiser"):
        LandmarkGenerator.from_pretrained(bundle).generate(
            "high_smile", frames=8, sampling=SamplingConfig(steps=4, label_control="conditional"))
    for bad, message in (({"condition_scale": -1.0}, "condition scale"), ({"label_control": "x"}, "label control")):
        with pytest.raises(Face4DError, match=message):
            SamplingConfig(**bad)


def test_cli_label_control(conditional_bundle, tmp_path, capsys):
    base = ["generate", "--model", str(conditional_bundle), "--label", "surprise", "--frames", "8", "--steps", "3",
            "--quiet"]
    assert main([*base, "--condition-scale", "1.5", "--out", str(tmp_path / "a")]) == 0
    assert load_sequences(tmp_path / "a" / "sequence_000.npz").labels.tolist() == ["surprise"]
    assert main([*base, "--label-control", "classifier", "--out", str(tmp_path / "b")]) == 2
    assert "no type I classifier" in capsys.readouterr().err and not (tmp_path / "b").exists()
