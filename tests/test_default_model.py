"""The embedded default bundle: it loads offline from the installed package, and label guidance
makes the facial action it names (measured on the landmarks, with the 68-point scheme's indices)."""
import numpy as np
import pytest

from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.checkpoint import default_bundle

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

INNER_LIPS = (62, 66)  # centres of the upper and lower inner lip
MOUTH_CORNERS = (48, 54)
BROW, EYE = 19, 37  # a brow point and the upper eyelid below it


@pytest.fixture(scope="module")
def generator():
    return LandmarkGenerator.from_pretrained()


def _ranges(seqs):
    """Per sequence, how far the lip gap, mouth width and brow height travel from one end of the
    sequence to the other (N2E and E2N both run between neutral and apex), in cm; ends are averaged
    over 5 frames so that frame-to-frame jitter does not count as motion."""
    x = seqs.landmarks
    gap = np.linalg.norm(x[:, :, INNER_LIPS[0]] - x[:, :, INNER_LIPS[1]], axis=-1)
    width = np.linalg.norm(x[:, :, MOUTH_CORNERS[0]] - x[:, :, MOUTH_CORNERS[1]], axis=-1)
    brow = x[:, :, BROW, 1] - x[:, :, EYE, 1]
    def travel(v):
        return np.abs(v[:, -5:].mean(1) - v[:, :5].mean(1))

    return {"gap": travel(gap), "width": travel(width), "brow": travel(brow)}


def test_the_default_bundle_ships_with_the_package(generator):
    names = sorted(p.name for p in default_bundle().iterdir() if p.is_dir())
    assert {"denoiser", "classifier_I", "classifier_S"} <= set(names)
    assert set(generator.classifiers) == {"I", "S"}
    for name in names:
        weights = default_bundle() / name / "model.safetensors"
        assert weights.stat().st_size < 8 * 2**20  # shipped checkpoints stay small


def test_label_guidance_makes_the_named_action(generator):
    """From neutral to the expression (N2E, the order the package's meshes are made in): without an
    order a label may be met by a face that holds the expression throughout, which moves little."""
    sampling = SamplingConfig(steps=25)

    def ranges(label: str) -> dict[str, np.ndarray]:
        return _ranges(generator.generate(label, frames=40, num=8, seed=0, sequence_type="N2E", sampling=sampling))

    mouth, brows, smile = ranges("mouth_open"), ranges("eyebrow"), ranges("high_smile")
    # In the data the jaw opens ~1.9 cm for mouth_open, the brows rise ~0.4 cm for eyebrow and the
    # mouth widens ~1 cm for high_smile, while the other measures move a few millimetres at most.
    # With seed 0 the shipped model's medians were 2.23 cm (lip gap, mouth_open), 1.09 cm (mouth
    # width, high_smile) and 0.39 cm (brow, eyebrow); the other two labels moved the same measures
    # by 0.02-0.47, 0.02-0.21 and 0.012-0.021 cm.
    median = {name: {key: float(np.median(value)) for key, value in ranges.items()}
              for name, ranges in (("mouth", mouth), ("brows", brows), ("smile", smile))}
    assert median["mouth"]["gap"] > 1.0 and median["mouth"]["gap"] > 4 * median["brows"]["gap"]
    assert median["mouth"]["gap"] > 1.3 * median["smile"]["gap"]  # a smile parts the lips too
    assert median["brows"]["brow"] > 0.2
    assert median["brows"]["brow"] > 2 * max(median["mouth"]["brow"], median["smile"]["brow"])
    assert median["smile"]["width"] > 0.8 and median["smile"]["width"] > 4 * median["brows"]["width"]
    assert median["smile"]["width"] > 4 * median["mouth"]["width"]


def test_default_motion_is_steady(generator):
    """No tremble: the data's jitter is ~0.0015 cm/frame^2 (the paper's configuration, trained the
    same way, gave 0.2); the shipped model gave 0.0009-0.0049 for these labels with seed 0."""
    from face4d.eval.motion import landmark_stats

    for label in ("mouth_open", "eyebrow"):
        seqs = generator.generate(label, frames=40, num=4, seed=0, sampling=SamplingConfig(steps=25))
        assert landmark_stats(seqs).mean("jitter") < 0.01


def test_samples_are_faces_in_centimetres(generator):
    seqs = generator.generate(None, frames=30, num=2, seed=1, sampling=SamplingConfig(steps=25))
    mean_face = generator.normalizer.mean
    # every frame lies near the mean face: a person's face, not noise (faces differ by ~1 cm)
    assert np.abs(seqs.landmarks - mean_face).mean() < 1.5
    # and moves smoothly: frame-to-frame steps are far below the face's size
    assert np.abs(np.diff(seqs.landmarks, axis=1)).max() < 1.0
