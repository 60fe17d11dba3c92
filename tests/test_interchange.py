import numpy as np
import pytest

from face4d import Face4DError
from face4d.data import LandmarkSequences, load_sequences, save_sequences


def _batch(n=3, f=6, lengths=None):
    rng = np.random.default_rng(0)
    lengths = np.array(lengths or [f] * n)
    lm = rng.standard_normal((n, f, 68, 3)).astype(np.float32)
    lm[np.arange(f)[None] >= lengths[:, None]] = 0
    return LandmarkSequences(lm, lengths, labels=["anger"] * n, types=["N2E"] * n, fps=25,
                             identity_weights=rng.standard_normal((n, 100)),
                             expression_weights=rng.uniform(size=(n, f, 53)),
                             texts=["anger"] * n, texts_enriched=["from a neutral face to an angry face"] * n)


def test_batch_round_trip(tmp_path):
    seqs = _batch(lengths=[6, 4, 5])
    back = load_sequences(save_sequences(tmp_path / "b.npz", seqs))
    np.testing.assert_array_equal(back.landmarks, seqs.landmarks)
    np.testing.assert_array_equal(back.lengths, [6, 4, 5])
    np.testing.assert_array_equal(back.expression_weights, seqs.expression_weights)
    assert back.fps == 25 and list(back.labels) == ["anger"] * 3 and back.head_pose is None
    assert back.sequence(1).shape == (4, 68, 3)


def test_single_sequence_layout(tmp_path):
    seqs = _batch(n=3, lengths=[6, 4, 5]).select(1)
    path = save_sequences(tmp_path / "one.npz", seqs)
    with np.load(path, allow_pickle=False) as d:
        assert d["landmarks"].shape == (4, 68, 3) and d["landmarks"].dtype == np.float32
        assert str(d["label"]) == "anger" and str(d["type"]) == "N2E"
        assert d["expression_weights"].shape == (4, 53) and d["identity_weights"].shape == (100,)
    back = load_sequences(path)
    assert len(back) == 1 and back.num_frames == 4
    np.testing.assert_array_equal(back.landmarks, seqs.landmarks)


def test_plain_landmark_file_is_accepted(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, landmarks=np.zeros((10, 68, 3), np.float32))
    back = load_sequences(path)
    assert back.lengths.tolist() == [10] and back.labels.tolist() == [""] and back.fps == 30


def test_select_and_concatenate_repad():
    seqs = _batch(lengths=[6, 2, 3])
    part = seqs.select(np.array([1, 2]))
    assert part.num_frames == 3
    joined = LandmarkSequences.concatenate([part, seqs.select(0)])
    assert joined.num_frames == 6 and joined.lengths.tolist() == [2, 3, 6]
    np.testing.assert_array_equal(joined.sequence(2), seqs.sequence(0))


@pytest.mark.parametrize("arrays,message", [
    ({"landmarks": np.zeros((10, 5, 3))}, "must be float"),
    ({"other": np.zeros(3)}, "no 'landmarks' array"),
    ({"landmarks": np.full((2, 68, 3), np.nan)}, "NaN"),
    ({"landmarks": np.zeros((2, 4, 68, 3)), "lengths": np.array([4, 9])}, "lengths"),
    ({"landmarks": np.zeros((4, 68, 3)), "type": np.array("sideways")}, "unknown sequence type"),
])
def test_bad_files_give_clear_errors(tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(Face4DError, match=message) as info:
        load_sequences(path)
    assert str(path) in str(info.value)


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(Face4DError, match="not a readable .npz"):
        load_sequences(tmp_path / "c.npz")
    with pytest.raises(Face4DError, match="no such file"):
        load_sequences(tmp_path / "none.npz")


def test_save_refuses_existing_file(tmp_path):
    path = save_sequences(tmp_path / "a.npz", _batch())
    with pytest.raises(FileExistsError):
        save_sequences(path, _batch())
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]
