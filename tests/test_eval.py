"""The evaluation tools of §5: Fréchet distance, the independent classifier (IC) and its scores."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from face4d.data import ExpressionSynthesizer, LandmarkNormalizer, LandmarkSequences, SynthConfig
from face4d.errors import Face4DError
from face4d.eval import (ICConfig, IndependentClassifier, accuracy, classify, evaluate_sequences, frechet_distance,
                         label_indices)
from face4d.training import ic_loss

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

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


# -- the results harness: one sample per test sequence, baselines, report sections ----------------

def _reference(lengths, labels):
    n, f = len(lengths), max(lengths)
    return LandmarkSequences(landmarks=np.zeros((n, f, 68, 3)), lengths=lengths, labels=labels, types=["N2E"] * n)


def test_generate_like_matches_lengths_order_and_labels():
    from face4d.eval.protocol import generate_like

    ref = _reference([5, 3, 5, 4, 3], ["eyebrow", "anger", "fear", "eyebrow", "sadness"])
    calls = []

    def sample(indices, frames, seed):
        calls.append((indices.tolist(), frames, seed))
        x = np.zeros((len(indices), frames, 68, 3))
        x[:, :, 0, 0] = indices[:, None]  # remember which reference each sample was made for
        return LandmarkSequences(landmarks=x, lengths=np.full(len(indices), frames), labels=[""] * len(indices),
                                 types=[""] * len(indices))

    out = generate_like(ref, sample, seed=7, batch_size=1, progress=False)
    assert out.lengths.tolist() == [5, 3, 5, 4, 3]
    assert [out.landmarks[i, 0, 0, 0] for i in range(5)] == [0, 1, 2, 3, 4]
    assert out.labels.tolist() == ref.labels.tolist() and out.types.tolist() == ["N2E"] * 5
    # batches of one per length; the k-th batch of length F gets seed + 1000 F + k
    assert sorted(seed for _, _, seed in calls) == [3007, 3008, 4007, 5007, 5008]
    with pytest.raises(Face4DError, match="returned 1 sequences of 2 frames"):
        generate_like(ref, lambda idx, f, s: sample(idx[:1], 2, s), progress=False)


def test_label_gaussian_baseline_samples_each_label_around_its_mean():
    from face4d.eval.baselines import LabelGaussian

    rng = np.random.default_rng(0)
    centres = {"eyebrow": 1.0, "anger": -1.0}
    labels = ["eyebrow"] * 30 + ["anger"] * 30
    x = np.stack([centres[name] + 0.1 * rng.standard_normal((40, 68, 3)) for name in labels])
    train = LandmarkSequences(landmarks=x, lengths=np.full(60, 40), labels=labels, types=[""] * 60)
    model = LabelGaussian.fit(train, rank=4)
    out = model.sample(["anger", "eyebrow", "anger"], frames=25, seed=1)
    assert out.landmarks.shape == (3, 25, 68, 3) and out.labels.tolist() == ["anger", "eyebrow", "anger"]
    assert out.landmarks[[0, 2]].mean() == pytest.approx(-1.0, abs=0.05)
    assert out.landmarks[1].mean() == pytest.approx(1.0, abs=0.05)
    # the spread of a sample around its label's mean is that of the data (0.1 per coordinate)
    assert out.landmarks[1].std() == pytest.approx(0.1, rel=0.3)
    np.testing.assert_array_equal(out.landmarks, model.sample(["anger", "eyebrow", "anger"], 25, seed=1).landmarks)
    with pytest.raises(Face4DError, match="no model for label 'fear'"):
        model.sample(["fear"], 10)


def test_update_section_replaces_only_its_own_section(tmp_path):
    from face4d.eval.report import markdown_table, update_section

    path = tmp_path / "docs" / "results.md"
    update_section(path, "table1", "one")
    update_section(path, "table2", markdown_table(["a", "b"], [[1, 2]]))
    update_section(path, "table1", "uno")
    text = path.read_text()
    assert text.startswith("# Results")
    assert "uno" in text and "one" not in text and text.count("<!-- begin table1 -->") == 1
    assert "| a | b |\n|---|---|\n| 1 | 2 |" in text
    assert text.index("table1") < text.index("table2")
