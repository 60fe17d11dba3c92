import json

import numpy as np
import pytest

from face4d import Face4DError
from face4d.data import (LABEL_NAMES, Dataset, ExpressionSynthesizer, LandmarkNormalizer, SynthConfig, build_dataset,
                         get_label, load_sequences, sequence_vertices)
from meshops.facs import ACTION_UNITS


def test_eighteen_labels_with_resolvable_recipes(head):
    assert len(LABEL_NAMES) == 18
    assert {"bareteeth", "mouth_extreme", "happiness", "surprise"} <= set(LABEL_NAMES)
    for name in LABEL_NAMES:
        for recipe in get_label(name).variants:
            for unit in recipe:
                head.blendshape_indices(ACTION_UNITS.get(unit, (unit,)))
    with pytest.raises(Face4DError, match="valid labels: bareteeth, cheeks_in"):
        get_label("smirk")


def test_same_seed_same_data_and_prefix_property(head):
    a, drawn_a = ExpressionSynthesizer(head, seed=7).generate(range(30))
    b, drawn_b = ExpressionSynthesizer(head, seed=7).generate(range(10, 20))
    c, _ = ExpressionSynthesizer(head, seed=8).generate(range(30))
    for x, y in zip(drawn_a[10:20], drawn_b):  # the draws are exact ...
        np.testing.assert_array_equal(x["expression_weights"], y["expression_weights"])
        np.testing.assert_array_equal(x["identity_weights"], y["identity_weights"])
    # ... the landmarks are one batched float32 product, whose last bits BLAS may round by the batch's shape
    np.testing.assert_allclose(a.landmarks[10:20], b.landmarks, rtol=0, atol=1e-5)
    assert not np.allclose(a.landmarks, c.landmarks)


def test_sequences_move_from_neutral_to_apex(head):
    synth = ExpressionSynthesizer(head, seed=1)
    for kind in ("N2E", "E2N"):
        sample = synth.sample(0, label="mouth_open", sequence_type=kind, intensity=1.0)
        w = sample["expression_weights"]
        jaw = w[:, head.blendshape_index("jawOpen")]
        neutral, apex = (0, -1) if kind == "N2E" else (-1, 0)
        assert np.abs(w[neutral]).max() == 0.0
        assert jaw[apex] == pytest.approx(0.8, rel=0.5) and jaw[apex] == jaw.max()
        assert np.all(np.diff(jaw) >= -1e-6) if kind == "N2E" else np.all(np.diff(jaw) <= 1e-6)


def test_every_label_moves_the_landmarks(head):
    synth = ExpressionSynthesizer(head, seed=0)
    for name in LABEL_NAMES:
        seqs, _ = synth.generate([0], label=name, sequence_type="N2E", identity=np.zeros(100), intensity=1.0,
                                 clean=True)
        motion = np.linalg.norm(seqs.landmarks[0, -1] - seqs.landmarks[0, 0], axis=-1).max()
        assert motion > 0.2, name  # at least 2 mm somewhere on the face


def test_variable_length_and_texts(head):
    cfg = SynthConfig(variable_length=True, min_frames=35, max_frames=45)
    seqs, samples = ExpressionSynthesizer(head, cfg, seed=3).generate(range(60))
    assert seqs.lengths.min() >= 35 and seqs.lengths.max() <= 45 and len(set(seqs.lengths)) > 3
    assert (seqs.landmarks[np.arange(45)[None] >= seqs.lengths[:, None]] == 0).all()
    i = int(np.flatnonzero(seqs.types == "E2N")[0])
    label = get_label(seqs.labels[i])
    assert seqs.texts[i] == label.text
    assert seqs.texts_enriched[i] == f"from {label.phrase} to a neutral face"
    assert get_label("high_smile").enriched_text("N2E") == "from a neutral face to a high smile"


def test_meshes_rebuilt_from_stored_weights_equal_the_generators(tmp_path, head):
    cfg = SynthConfig(head_motion=True)
    out = build_dataset(tmp_path / "d", 12, seed=2, config=cfg, shard_size=5, progress=False)
    data = Dataset.load(out)
    seqs = data.sequences()
    synth = ExpressionSynthesizer(head, cfg, seed=2)
    for i in (0, 7, 11):
        rebuilt = sequence_vertices(head, seqs, i)
        sample = synth.sample(i)
        direct = head.vertices(sample["identity_weights"][None], sample["expression_weights"])
        assert not np.allclose(rebuilt, direct)  # head motion is applied ...
        np.testing.assert_allclose(rebuilt[:, head.landmark_ids], seqs.sequence(i), atol=1e-4)  # ... consistently
        np.testing.assert_array_equal(seqs.expression_weights[i], sample["expression_weights"])


def test_build_writes_shards_manifest_and_splits(tmp_path):
    out = build_dataset(tmp_path / "d", 40, seed=0, shard_size=15, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard_0000.npz", "shard_0001.npz",
                                                     "shard_0002.npz"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 0 and len(manifest["sequences"]) == 40
    ids = manifest["splits"]["identity"]
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])
    data = Dataset.load(out)
    for split in ("train", "val", "test"):
        for r in data.records(split):
            assert r["identity"] in ids[split]
    test = data.sequences("test")
    assert len(test) == len(data.records("test"))
    shard = load_sequences(out / "shard_0001.npz")
    assert shard.landmarks.shape == (15, 40, 68, 3) and shard.landmarks.dtype == np.float32
    assert shard.expression_weights.shape == (15, 40, 53) and shard.identity_weights.shape == (15, 100)
    held = set(manifest["splits"]["expression"]["test_labels"])
    assert held and set(data.expression_split("test").labels) <= held
    assert not held & set(data.expression_split("train").labels)


def test_build_refuses_bad_input_and_leaves_nothing(tmp_path):
    with pytest.raises(Face4DError, match="must be positive"):
        build_dataset(tmp_path / "a", 0, progress=False)
    with pytest.raises(Face4DError, match="frames must be positive"):
        build_dataset(tmp_path / "a", 5, config=SynthConfig(frames=0), progress=False)
    with pytest.raises(Face4DError, match="unknown label 'grin'"):
        build_dataset(tmp_path / "a", 5, config=SynthConfig(labels=("grin",)), progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_dataset(tmp_path / "full", 5, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_build_crash_leaves_nothing_half_written(tmp_path, monkeypatch):
    import face4d.data.dataset as dataset_module

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(dataset_module, "save_sequences", explode)
    with pytest.raises(RuntimeError):
        build_dataset(tmp_path / "d", 5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dataset_load_errors(tmp_path):
    with pytest.raises(Face4DError, match="no manifest.json"):
        Dataset.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(Face4DError, match="corrupt manifest"):
        Dataset.load(tmp_path)


def test_normalizer_is_invertible_and_serialisable(head):
    import torch
    seqs, _ = ExpressionSynthesizer(head, SynthConfig(variable_length=True), seed=0).generate(range(50))
    norm = LandmarkNormalizer.fit(seqs)
    valid = np.arange(seqs.num_frames)[None] < seqs.lengths[:, None]
    x = norm.normalize(seqs.landmarks[valid])
    assert abs(x.mean()) < 1e-4 and x.std() == pytest.approx(1.0, rel=1e-3)
    np.testing.assert_allclose(norm.denormalize(x), seqs.landmarks[valid], atol=1e-4)
    back = LandmarkNormalizer.from_json(norm.to_json())
    t = back.normalize(torch.tensor(seqs.landmarks[valid]))
    np.testing.assert_allclose(t.numpy(), x, atol=1e-5)
    with pytest.raises(Face4DError):
        LandmarkNormalizer(np.zeros((68, 3)), 0.0)


def test_gather_keeps_the_records_order_across_shards(tmp_path):
    data = Dataset.load(build_dataset(tmp_path / "d", 12, seed=1, shard_size=5, progress=False))
    records = [data.manifest["sequences"][i] for i in (11, 2, 7, 3)]
    batch = data.gather(records)
    everything = data.sequences()
    for k, i in enumerate((11, 2, 7, 3)):
        np.testing.assert_array_equal(batch.sequence(k), everything.sequence(i))
    assert batch.labels.tolist() == [r["label"] for r in records]
