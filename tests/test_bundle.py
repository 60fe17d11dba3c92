"""A bundle's bundle.json: the diffusion and the normaliser its members share, recorded once and read
when loading; a bundle without one still loads from its members' configs."""
import json
import shutil

import numpy as np
import pytest

from face4d import Face4DError
from face4d.checkpoint import BUNDLE_FILE, BUNDLE_MEMBERS, default_bundle, read_bundle, read_model_config, \
    write_bundle
from face4d.diffusion import DiffusionConfig, linear_beta_schedule
from face4d.generate import LandmarkGenerator


@pytest.fixture
def copy(bundle, tmp_path):
    """A writable copy of the test bundle (T=100, no bundle.json)."""
    return shutil.copytree(bundle, tmp_path / "bundle")


def edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_loads_without_bundle_json_from_the_members(copy):
    assert read_bundle(copy) is None
    generator = LandmarkGenerator.from_pretrained(copy)
    assert generator.diffusion.num_timesteps == 100 and generator.diffusion.prediction == "epsilon"
    np.testing.assert_array_equal(generator.diffusion.betas, linear_beta_schedule(100))


def test_write_bundle_records_the_shared_diffusion_and_normaliser_once(copy):
    before = LandmarkGenerator.from_pretrained(copy)
    path = write_bundle(copy)
    assert path == copy / BUNDLE_FILE
    stored = json.loads(path.read_text())
    assert stored["diffusion"] == {"schedule": "linear", "num_timesteps": 100, "beta_start": 1e-4, "beta_end": 0.02,
                                   "prediction": "epsilon"}
    assert stored["normalizer"] == read_model_config(copy / "denoiser")["normalizer"]
    after = LandmarkGenerator.from_pretrained(copy)
    np.testing.assert_array_equal(after.diffusion.betas, before.diffusion.betas)
    np.testing.assert_array_equal(after.normalizer.mean, before.normalizer.mean)
    a = before.generate("anger", frames=6, seed=1)
    b = after.generate("anger", frames=6, seed=1)
    np.testing.assert_array_equal(a.landmarks, b.landmarks)


def test_the_schedule_is_read_from_bundle_json(copy):
    for name in BUNDLE_MEMBERS:  # members trained on another schedule record its betas
        if (copy / name).is_dir():
            edit(copy / name / "config.json", lambda c: c["diffusion"].update(beta_start=1e-3, beta_end=0.05))
    write_bundle(copy)
    generator = LandmarkGenerator.from_pretrained(copy)
    np.testing.assert_allclose(generator.diffusion.betas, np.linspace(1e-3, 0.05, 100))
    # the sampler uses bundle.json's schedule: the denoiser's own config is not consulted for it
    edit(copy / BUNDLE_FILE, lambda b: b["diffusion"].update(beta_start=2e-3))
    with pytest.raises(Face4DError, match=r"denoiser: diffusion.beta_start is 0.001, bundle.json says 0.002"):
        LandmarkGenerator.from_pretrained(copy)


@pytest.mark.parametrize("change, message", [
    (lambda b: b["diffusion"].update(num_timesteps=2000), r"classifier_I|denoiser: diffusion.num_timesteps is 100, "
                                                            r"bundle.json says 2000"),
    (lambda b: b["diffusion"].update(prediction="sample"), r"denoiser: diffusion.prediction is 'epsilon', "
                                                           r"bundle.json says 'sample'"),
    (lambda b: b["normalizer"].update(scale=2.5), r"denoiser: trained with another landmark normaliser than "
                                                  r"bundle.json records"),
])
def test_members_disagreeing_with_bundle_json_are_one_clear_error(copy, change, message):
    write_bundle(copy)
    edit(copy / BUNDLE_FILE, change)
    with pytest.raises(Face4DError, match=message):
        LandmarkGenerator.from_pretrained(copy)


def test_a_member_disagreeing_with_the_denoiser_is_refused(copy):
    edit(copy / "classifier_S" / "config.json", lambda c: c["diffusion"].update(num_timesteps=50))
    with pytest.raises(Face4DError, match=r"classifier_S: diffusion.num_timesteps is 50, the denoiser says 100"):
        write_bundle(copy)
    with pytest.raises(Face4DError, match=r"classifier_S: diffusion.num_timesteps is 50, the denoiser says 100"):
        LandmarkGenerator.from_pretrained(copy)


@pytest.mark.parametrize("text, message", [
    ('{"format": "face4d-model"}', "not a face4d-bundle v1 file"),
    (None, r"invalid bundle config \(diffusion betas must satisfy"),
])
def test_a_broken_bundle_json_is_refused(copy, text, message):
    write_bundle(copy)
    if text is None:
        edit(copy / BUNDLE_FILE, lambda b: b["diffusion"].update(beta_end=2.0))
    else:
        (copy / BUNDLE_FILE).write_text(text)
    with pytest.raises(Face4DError, match=message):
        LandmarkGenerator.from_pretrained(copy)


def test_the_shipped_bundle_json_agrees_with_its_members():
    shipped = read_bundle(default_bundle())
    assert shipped is not None
    assert shipped.diffusion == DiffusionConfig(num_timesteps=2000, beta_start=1e-4, beta_end=0.02, prediction="sample")
    for name in BUNDLE_MEMBERS:
        config = read_model_config(default_bundle() / name)
        normalizer = None if config.get("normalizer") is None else shipped.normalizer.from_dict(config["normalizer"])
        shipped.check_member(config, normalizer, name)
