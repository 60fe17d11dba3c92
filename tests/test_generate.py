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
