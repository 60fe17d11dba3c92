"""Decomposing a motion on prototypes (face4d.eval.composition): the measure behind the
compositional text prompts of docs/results.md."""
import numpy as np
import pytest

from face4d import Face4DError
from face4d.data.labels import LABEL_NAMES
from face4d.eval.composition import label_prototypes, mixture


@pytest.fixture(scope="module")
def prototypes(head):
    return label_prototypes(head)


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def test_label_prototypes_are_the_recipes_on_the_mean_face(prototypes, head):
    assert list(prototypes) == list(LABEL_NAMES)
    assert all(p.shape == (68, 3) for p in prototypes.values())
    sizes = {name: float(np.linalg.norm(p)) for name, p in prototypes.items()}
    assert min(sizes.values()) > 0.5 and sizes["mouth_extreme"] > sizes["eyebrow"]  # cm, summed over landmarks


def test_a_single_label_and_a_blend(prototypes, head):
    neutral = head.landmarks()
    single = mixture(neutral, neutral + 0.8 * prototypes["disgust"], prototypes)
    assert next(iter(single.shares)) == "disgust" and single.shares["disgust"] > 0.99 and single.residual < 1e-6
    blend = neutral + 0.5 * prototypes["disgust"] + 0.5 * prototypes["high_smile"]
    # the head also turns and shifts: the rigid part is not counted
    moved = (blend - neutral.mean(0)) @ _rotation(0.02).T + neutral.mean(0) + np.array([0.1, -0.05, 0.2])
    mix = mixture(neutral, moved, prototypes)
    share = mix.shares["disgust"] + mix.shares["high_smile"]
    assert share > 0.95 and min(mix.shares["disgust"], mix.shares["high_smile"]) > 0.25
    expected = np.linalg.norm(prototypes["disgust"]) / (np.linalg.norm(prototypes["disgust"])
                                                        + np.linalg.norm(prototypes["high_smile"]))
    assert mix.shares["disgust"] == pytest.approx(expected, abs=0.05)
    assert mix.residual < 0.05
    assert sum(mix.shares.values()) == pytest.approx(1.0)


def test_prompt_prototypes_and_errors(prototypes, head):
    neutral = head.landmarks()
    parts = {"a": prototypes["anger"], "b": prototypes["mouth_down"]}
    mix = mixture(neutral, neutral + 0.3 * parts["a"] + 0.6 * parts["b"], parts)
    assert list(mix.shares) == ["b", "a"] and mix.top(1) == f"b {mix.shares['b']:.2f}"
    unrelated = mixture(neutral, neutral + prototypes["eyebrow"], parts)
    assert unrelated.residual > 0.5  # the parts cannot explain a brow raise
    with pytest.raises(Face4DError, match="shape"):
        mixture(neutral[:10], neutral, parts)
    with pytest.raises(Face4DError, match="no prototypes"):
        mixture(neutral, neutral, {})
