"""The evaluation tools of §5: Fréchet distance, the independent classifier (IC) and its scores."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from face4d.data import ExpressionSynthesizer, LandmarkNormalizer, LandmarkSequences, SynthConfig
from face4d.errors import Face4DError
from face4d.eval import (ICConfig, IndependentClassifier, accuracy, classify, evaluate_sequences, frechet_distance,
                         ic_loss, label_indices)

LABELS = ("mouth_open", "high_smile", "eyebrow")


# -- Fréchet distance ---------------------------------------------------------------------------

def test_frechet_distance_of_identical_sets_is_zero():
    feats = np.random.default_rng(0).standard_normal((500, 6))
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_shifted_sets_is_squared_mean_difference():
    feats = np.random.default_rng(1).standard_normal((500, 6)) @ np.diag([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.3, 1.5])
    # Equal covariances: the trace term vanishes and only |mu_a - mu_b|^2 remains.
    assert frechet_distance(feats, feats + shift) == pytest.approx(shift @ shift, rel=1e-6)


def test_frechet_distance_is_symmetric():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((300, 5)), 2 * rng.standard_normal((200, 5)) + 1
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-6)
    # Independent draws of two Gaussians: close to the closed form 5 * (1 + 4 - 2 * 2) + 5 = 10.
    assert frechet_distance(a, b) == pytest.approx(10.0, rel=0.3)


def test_frechet_distance_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 18)), rng.standard_normal((7, 18))
    distance = frechet_distance(a, b)
    assert np.isfinite(distance) and distance > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)


def test_frechet_distance_rejects_bad_features():
    rng = np.random.default_rng(4)
    with pytest.raises(Face4DError, match="dimension"):
        frechet_distance(rng.standard_normal((10, 3)), rng.standard_normal((10, 4)))
    with pytest.raises(Face4DError, match="N >= 2"):
        frechet_distance(rng.standard_normal((1, 3)), rng.standard_normal((10, 3)))


# -- the classifier ------------------------------------------------------------------------------

def _padded_batch(rng: np.random.Generator, lengths: list[int], frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(rng.standard_normal((len(lengths), frames, 68, 3)), dtype=torch.float32)
    mask = torch.arange(frames)[None] < torch.as_tensor(lengths)[:, None]
    return x, mask


def test_ic_ignores_padding():
    torch.manual_seed(0)
    model = IndependentClassifier(ICConfig(hidden=16)).eval()
    x, mask = _padded_batch(np.random.default_rng(5), [6, 3, 1], 6)
    logits = model(x, mask)
    assert logits.shape == (3, 18)
    garbage = torch.where(mask[:, :, None, None], x, torch.full_like(x, 1e3))
    torch.testing.assert_close(model(garbage, mask), logits)
    for i, n in enumerate([6, 3, 1]):
        alone = model.features(x[i:i + 1, :n], None)  # no mask: every frame valid
        torch.testing.assert_close(alone, logits[i:i + 1], rtol=1e-5, atol=1e-6)


def test_ic_rejects_masks_that_are_not_a_prefix():
    model = IndependentClassifier(ICConfig(hidden=8))
    x, mask = _padded_batch(np.random.default_rng(6), [4, 4], 4)
    mask[0, 1] = False
    with pytest.raises(Face4DError, match="prefix"):
        model(x, mask)
    with pytest.raises(Face4DError, match="at least one valid frame"):
        model(x, torch.zeros(2, 4, dtype=torch.bool))


def test_ic_config_round_trips_through_json_with_its_normalizer():
    normalizer = LandmarkNormalizer(np.arange(204, dtype=np.float32).reshape(68, 3), 2.5)
    config = ICConfig(hidden=32, normalizer=normalizer)
    back = ICConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert back.hidden == 32 and back.num_classes == 18
    np.testing.assert_array_equal(back.normalizer.mean, normalizer.mean)
    assert back.normalizer.scale == 2.5
    assert ICConfig.from_dict(ICConfig().to_dict()).normalizer is None
    with pytest.raises(Face4DError, match="unknown ICConfig keys"):
        ICConfig.from_dict({"layers": 2})


def test_label_indices_and_accuracy():
    np.testing.assert_array_equal(label_indices(["bareteeth", "surprise"]), [0, 17])
    assert accuracy(np.array([0, 17, 3]), ["bareteeth", "surprise", "eyebrow"]) == pytest.approx(2 / 3)
    with pytest.raises(Face4DError, match="unknown label"):
        label_indices(["", "eyebrow"])


# -- a small trained IC ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(head) -> dict:
    """An IC trained for 150 steps on 192 sequences of three labels (both types, variable lengths)."""
    config = SynthConfig(labels=LABELS, variable_length=True, min_frames=20, max_frames=30)
    synth = ExpressionSynthesizer(head, config, seed=0)
    train, _ = synth.generate(range(192))
    test, _ = synth.generate(range(1000, 1096))
    normalizer = LandmarkNormalizer.fit(train)
    x = torch.as_tensor(normalizer.normalize(train.landmarks))
    mask = torch.as_tensor(np.arange(train.num_frames)[None] < train.lengths[:, None])
    label = torch.as_tensor(label_indices(train.labels))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = IndependentClassifier(ICConfig(hidden=64, normalizer=normalizer))
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(150):
            idx = torch.randint(len(x), (32,))
            loss = ic_loss(model, {"x0": x[idx], "mask": mask[idx], "label": label[idx]})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {"model": model, "synth": synth, "train": train, "test": test}


def test_trained_ic_classifies_held_out_sequences(trained):
    model, test = trained["model"], trained["test"]
    model.train()
    pred, features = classify(model, test, batch_size=40)  # several batches of different padded lengths
    assert model.training  # the caller's mode is restored
    assert features.shape == (len(test), 18) and pred.shape == (len(test),)
    assert accuracy(pred, test.labels) > 0.8


def test_fid_separates_real_from_corrupted_sequences(trained):
    model, test, train = trained["model"], trained["test"], trained["train"]
    real = evaluate_sequences(model, None, test, train)  # ground-truth row: test against another real set
    assert real["accuracy"] > 0.8
    # Mode collapse: every sequence shows "mouth_open" whatever label was requested.
    collapsed, _ = trained["synth"].generate(range(1000, 1096), label="mouth_open")
    collapsed = replace(collapsed, labels=test.labels)
    collapse = evaluate_sequences(model, None, collapsed, test)
    assert collapse["accuracy"] < 0.5
    assert collapse["fid"] > 10 * real["fid"]
    noise = np.random.default_rng(7).normal(0, 2.0, test.landmarks.shape).astype(np.float32)  # 2 cm jitter
    noisy = replace(test, landmarks=test.landmarks + noise)
    assert evaluate_sequences(model, None, noisy, test)["fid"] > 10 * real["fid"]


def test_evaluate_sequences_needs_known_requested_labels(trained):
    model, test = trained["model"], trained["test"]
    unlabelled = LandmarkSequences(test.landmarks, test.lengths, np.full(len(test), ""), test.types)
    with pytest.raises(Face4DError, match="unknown label"):
        evaluate_sequences(model, None, unlabelled, test)
    with pytest.raises(Face4DError, match="no normaliser"):
        classify(IndependentClassifier(ICConfig(hidden=8)), test)
