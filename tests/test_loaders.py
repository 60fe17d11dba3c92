"""Real-data loaders (CoMA PLY captures, BU-4DFE landmark files) on tiny fixtures in the real formats."""
from __future__ import annotations

import json

import numpy as np
import pytest

from face4d.cli import main
from face4d.data.bu4dfe import load_bu4dfe
from face4d.data.coma import LandmarkEmbedding, load_coma
from face4d.data.cutting import apex_frame, cut_n2e_e2n, resample
from face4d.data.dataset import Dataset, import_dataset
from face4d.data.interchange import load_sequences, save_sequences
from face4d.data.synth import split_identities
from face4d.errors import Face4DError
from meshops.io import save_mesh

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

RNG = np.random.default_rng(0)
GRID = 10  # a 10 x 10 vertex grid: 100 vertices, 162 triangles
PROFILE = np.array([0.0, 0.3, 0.7, 1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05, 0.0])  # apex at frame 3
APEX = 3


def _grid_mesh() -> tuple[np.ndarray, np.ndarray]:
    """Vertices (in metres, float32-exact so PLY round trips are exact) and faces of a bumpy grid."""
    x, y = np.meshgrid(np.linspace(-0.08, 0.08, GRID), np.linspace(-0.1, 0.1, GRID))
    verts = np.stack([x.ravel(), y.ravel(), 0.01 * RNG.standard_normal(GRID * GRID)], axis=1)
    i, j = np.meshgrid(np.arange(GRID - 1), np.arange(GRID - 1), indexing="ij")
    a = (i * GRID + j).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + GRID], 1), np.stack([a + 1, a + GRID + 1, a + GRID], 1)])
    return verts.astype(np.float32).astype(np.float64), faces


VERTS, FACES = _grid_mesh()
MOTION = (0.01 * RNG.standard_normal(VERTS.shape)).astype(np.float32).astype(np.float64)
VERTEX_IDS = RNG.choice(len(VERTS), 68, replace=False)
FACE_IDX = RNG.integers(0, len(FACES), 68)
B_COORDS = RNG.dirichlet(np.ones(3), 68)


def _capture_vertices(profile: np.ndarray = PROFILE, amount: float = 1.0) -> np.ndarray:
    """(F, V, 3) frames that move away from the neutral mesh and back, float32-exact."""
    return (VERTS + amount * profile[:, None, None] * MOTION).astype(np.float32).astype(np.float64)


def _write_capture(root, subject: str, action: str, frames: np.ndarray, padded: bool = True) -> None:
    for k, verts in enumerate(frames, start=1):
        number = f"{k:06d}" if padded else str(k)
        save_mesh(root / subject / action / f"{action}.{number}.ply", verts, FACES)


@pytest.fixture
def coma_root(tmp_path):
    root = tmp_path / "coma"
    frames = _capture_vertices()
    _write_capture(root, "FaceTalk_170725_00137_TA", "high_smile", frames)
    _write_capture(root, "FaceTalk_170725_00137_TA", "mouth_open", frames, padded=False)  # x.10 after x.9
    (root / "FaceTalk_170725_00137_TA" / "not_an_action").mkdir()
    return root


SUBJECTS = [f"FaceTalk_1707{k:02d}_00{k:03d}_TA" for k in range(1, 6)]


@pytest.fixture
def coma_subjects(tmp_path):
    """A CoMA tree of five subjects with two actions each (one of them a default held-out label),
    and a vertex-id embedding file."""
    root = tmp_path / "coma5"
    for k, subject in enumerate(SUBJECTS):
        for action in ("high_smile", "mouth_extreme"):
            _write_capture(root, subject, action, _capture_vertices(amount=1.0 + 0.2 * k))
    np.save(tmp_path / "ids.npy", VERTEX_IDS)
    return root, tmp_path / "ids.npy"


# -- cutting --------------------------------------------------------------------------------------

def test_resample_is_linear_in_normalised_time():
    seq = np.arange(5, dtype=np.float64)[:, None, None] * np.ones((1, 68, 3))
    out = resample(seq, 9)
    assert out.shape == (9, 68, 3)
    np.testing.assert_allclose(out[:, 0, 0], np.linspace(0, 4, 9))
    weights = np.linspace(0, 1, 4)[:, None] * np.ones((1, 53))
    np.testing.assert_allclose(resample(weights, 7)[:, 5], np.linspace(0, 1, 7))
    np.testing.assert_array_equal(resample(seq[:1], 3), np.repeat(seq[:1], 3, axis=0))
    with pytest.raises(Face4DError, match="positive"):
        resample(seq, 0)


def test_apex_and_cut_at_the_known_peak():
    seq = VERTS[VERTEX_IDS] + PROFILE[:, None, None] * MOTION[VERTEX_IDS]
    assert apex_frame(seq) == APEX
    parts = dict(cut_n2e_e2n(seq, frames=None))
    assert len(parts["N2E"]) == APEX + 1 and len(parts["E2N"]) == len(PROFILE) - APEX
    np.testing.assert_array_equal(parts["N2E"][-1], parts["E2N"][0])
    resampled = dict(cut_n2e_e2n(seq, frames=40))
    assert resampled["N2E"].shape == resampled["E2N"].shape == (40, 68, 3)
    np.testing.assert_allclose(resampled["N2E"][0], seq[0])
    np.testing.assert_allclose(resampled["N2E"][-1], seq[APEX])
    np.testing.assert_allclose(resampled["E2N"][-1], seq[-1])
    rising = seq[: APEX + 1]  # apex at the last frame: the 1-frame E2N part is dropped
    assert [kind for kind, _ in cut_n2e_e2n(rising, 40)] == ["N2E"]


# -- CoMA -----------------------------------------------------------------------------------------

def test_coma_vertex_embedding(coma_root):
    with pytest.warns(UserWarning, match="not_an_action"):
        seqs = load_coma(coma_root, LandmarkEmbedding(vertex_ids=VERTEX_IDS), frames=40, progress=False)
    assert len(seqs) == 4 and seqs.fps == 60.0
    assert seqs.labels.tolist() == ["high_smile", "high_smile", "mouth_open", "mouth_open"]
    assert seqs.types.tolist() == ["N2E", "E2N", "N2E", "E2N"]
    assert seqs.texts.tolist() == ["high smile", "high smile", "mouth open", "mouth open"]
    assert seqs.texts_enriched.tolist()[:2] == ["from a neutral face to a high smile", "from a high smile to a neutral face"]
    assert seqs.lengths.tolist() == [40] * 4
    expected = 100.0 * _capture_vertices()[:, VERTEX_IDS]  # metres -> centimetres
    for n2e, e2n in [(0, 1), (2, 3)]:  # the unpadded names must sort numerically too
        np.testing.assert_allclose(seqs.sequence(n2e)[0], expected[0], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(seqs.sequence(n2e)[-1], expected[APEX], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(seqs.sequence(e2n)[0], expected[APEX], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(seqs.sequence(e2n)[-1], expected[-1], rtol=1e-6, atol=1e-5)
    unit = load_coma(coma_root, LandmarkEmbedding(vertex_ids=VERTEX_IDS), scale=1.0, actions=["high_smile"],
                     progress=False)
    assert len(unit) == 2
    np.testing.assert_allclose(seqs.landmarks[:2], 100.0 * unit.landmarks, rtol=1e-6)


def test_coma_barycentric_embedding_from_file_native_length(coma_root, tmp_path):
    path = tmp_path / "flame_embedding_68.npz"
    np.savez(path, lmk_face_idx=FACE_IDX.astype(np.uint32), lmk_b_coords=B_COORDS)
    seqs = load_coma(coma_root, path, frames=None, actions=["mouth_open"], progress=False)
    assert seqs.lengths.tolist() == [APEX + 1, len(PROFILE) - APEX]
    frames = _capture_vertices()
    by_hand = np.array([[sum(B_COORDS[i, c] * frame[FACES[FACE_IDX[i], c]] for c in range(3))
                         for i in range(68)] for frame in frames])
    np.testing.assert_allclose(seqs.sequence(0), 100.0 * by_hand[: APEX + 1], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(seqs.sequence(1), 100.0 * by_hand[APEX:], rtol=1e-6, atol=1e-5)


def test_embedding_files(tmp_path):
    np.save(tmp_path / "ids.npy", VERTEX_IDS)
    np.testing.assert_array_equal(LandmarkEmbedding.from_file(tmp_path / "ids.npy").vertex_ids, VERTEX_IDS)
    np.savez(tmp_path / "static.npz", lmk_face_idx=FACE_IDX[:51], lmk_b_coords=B_COORDS[:51])
    with pytest.raises(Face4DError, match=r"static\.npz.*68.*51 points"):
        LandmarkEmbedding.from_file(tmp_path / "static.npz")
    np.savez(tmp_path / "other.npz", landmarks=VERTEX_IDS)
    with pytest.raises(Face4DError, match=r"other\.npz.*vertex_ids"):
        LandmarkEmbedding.from_file(tmp_path / "other.npz")
    np.save(tmp_path / "pickled.npy", {"vertex_ids": VERTEX_IDS}, allow_pickle=True)
    with pytest.raises(Face4DError, match=r"pickled\.npy.*\.npz"):
        LandmarkEmbedding.from_file(tmp_path / "pickled.npy")


def test_coma_bad_inputs(tmp_path, coma_root):
    ids = LandmarkEmbedding(vertex_ids=VERTEX_IDS)
    with pytest.raises(Face4DError, match="nowhere"):
        load_coma(tmp_path / "nowhere", ids, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Face4DError, match=r"empty.*no CoMA captures"):
        load_coma(tmp_path / "empty", ids, progress=False)
    with pytest.raises(Face4DError, match="must be 68"):
        LandmarkEmbedding(vertex_ids=VERTEX_IDS[:60])
    with pytest.raises(Face4DError, match="unknown CoMA action.*smiling"):
        load_coma(coma_root, ids, actions=["smiling"], progress=False)
    out_of_range = LandmarkEmbedding(vertex_ids=np.r_[VERTEX_IDS[:67], 500])
    with pytest.raises(Face4DError, match=r"high_smile\.000001\.ply.*vertex 500.*100 vertices"):
        load_coma(coma_root, out_of_range, actions=["high_smile"], progress=False)


def test_coma_bad_frames(tmp_path):
    ids = LandmarkEmbedding(vertex_ids=VERTEX_IDS)
    root = tmp_path / "coma"
    frames = _capture_vertices()
    _write_capture(root, "S1", "eyebrow", frames)
    kept = FACES[(FACES < 97).all(axis=1)]
    save_mesh(root / "S1" / "eyebrow" / "eyebrow.000005.ply", frames[4, :97], kept, overwrite=True)
    with pytest.raises(Face4DError, match=r"eyebrow\.000005\.ply: has 97 vertices"):
        load_coma(root, ids, progress=False)
    (root / "S1" / "eyebrow" / "eyebrow.000005.ply").write_bytes(b"ply\nformat ascii 1.0\ngarbage\n")
    with pytest.raises(Face4DError, match=r"eyebrow\.000005\.ply"):
        load_coma(root, ids, progress=False)


# -- BU-4DFE --------------------------------------------------------------------------------------

BND_INDEX = RNG.permutation(83)[:68]  # where the 68 points sit among the 83 of a .bnd file
POINTS_83 = 100.0 * (RNG.standard_normal((83, 3)))
MOTION_83 = 10.0 * RNG.standard_normal((83, 3))


def _bu_frames() -> np.ndarray:
    return POINTS_83 + PROFILE[:, None, None] * MOTION_83


def _write_bnd(folder, frames: np.ndarray, with_index: bool) -> None:
    folder.mkdir(parents=True)
    for k, points in enumerate(frames):
        rows = [f"{1000 + i} {x:.6f} {y:.6f} {z:.6f}" if with_index else f"{x:.6f} {y:.6f} {z:.6f}"
                for i, (x, y, z) in enumerate(points)]
        (folder / f"{k:03d}.bnd").write_text("\n".join(rows) + "\n")
    (folder / "000.wrl").write_text("#VRML V2.0 utf8\n")  # the mesh beside the landmarks is ignored


def test_bu4dfe_bnd_with_landmark_index(tmp_path):
    root = tmp_path / "bu4dfe"
    _write_bnd(root / "F001" / "Happy", _bu_frames(), with_index=True)
    _write_bnd(root / "M002" / "surprise", _bu_frames()[: APEX + 2], with_index=False)  # stops after the apex
    seqs = load_bu4dfe(root, frames=40, landmark_index=BND_INDEX, scale=0.1, progress=False)
    assert seqs.fps == 25.0
    assert seqs.labels.tolist() == ["happiness", "happiness", "surprise"]
    assert seqs.types.tolist() == ["N2E", "E2N", "N2E"]  # the 2-frame E2N part of "surprise" is skipped
    assert seqs.texts.tolist() == ["happiness", "happiness", "surprise"]
    expected = 0.1 * _bu_frames()[:, BND_INDEX]
    np.testing.assert_allclose(seqs.sequence(0)[0], expected[0], atol=1e-4)
    np.testing.assert_allclose(seqs.sequence(0)[-1], expected[APEX], atol=1e-4)
    np.testing.assert_allclose(seqs.sequence(1)[-1], expected[-1], atol=1e-4)
    np.testing.assert_allclose(seqs.sequence(2)[-1], expected[APEX], atol=1e-4)


def test_bu4dfe_npy_and_txt_frames(tmp_path):
    root = tmp_path / "bu4dfe"
    sad = root / "F001" / "Sad"
    sad.mkdir(parents=True)
    for k, points in enumerate(_bu_frames()[:, :68]):
        np.save(sad / f"frame{k}.npy", points)
    angry = root / "F001" / "ANGRY"
    angry.mkdir()
    for k, points in enumerate(_bu_frames()[:, :68]):
        np.savetxt(angry / f"{k}.txt", points)
    seqs = load_bu4dfe(root, frames=None, progress=False)
    assert seqs.labels.tolist() == ["anger", "anger", "sadness", "sadness"]
    assert seqs.lengths.tolist() == [APEX + 1, len(PROFILE) - APEX] * 2
    np.testing.assert_allclose(seqs.sequence(3), _bu_frames()[APEX:, :68], rtol=1e-5)


def test_bu4dfe_bad_inputs(tmp_path):
    with pytest.raises(Face4DError, match="nowhere"):
        load_bu4dfe(tmp_path / "nowhere", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(Face4DError, match=r"empty.*no BU-4DFE captures"):
        load_bu4dfe(tmp_path / "empty", progress=False)
    root = tmp_path / "bu4dfe"
    _write_bnd(root / "F001" / "Fear", _bu_frames(), with_index=True)
    with pytest.raises(Face4DError, match=r"Fear/000\.bnd: has 83 landmarks.*landmark_index"):
        load_bu4dfe(root, progress=False)
    with pytest.raises(Face4DError, match="landmark_index must be 68"):
        load_bu4dfe(root, landmark_index=BND_INDEX[:50], progress=False)
    (root / "F001" / "Fear" / "004.bnd").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(Face4DError, match=r"004\.bnd: has 2 points"):
        load_bu4dfe(root, landmark_index=BND_INDEX, progress=False)
    (root / "F001" / "Fear" / "004.bnd").write_text("1 2 x\n")
    with pytest.raises(Face4DError, match=r"004\.bnd: cannot read"):
        load_bu4dfe(root, landmark_index=BND_INDEX, progress=False)


# -- imports as dataset directories ---------------------------------------------------------------

def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_coma_import_as_a_dataset_split_by_subject(coma_subjects, tmp_path, capsys):
    root, ids = coma_subjects
    out = tmp_path / "data"
    code, stdout, _ = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", out,
                           "--frames", "10", "--seed", "3", "--shard-size", "8", "--quiet")
    assert code == 0 and "wrote 20 sequences of 5 subjects" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard_0000.npz", "shard_0001.npz",
                                                     "shard_0002.npz"]
    data = Dataset.load(out)
    assert data.config is None and "config" not in data.manifest
    assert data.source == {"format": "coma", "root": str(root.resolve()), "frames": 10, "scale": 100.0,
                           "embedding": str(ids.resolve())}
    assert data.manifest["seed"] == 3 and data.labels == ["high_smile", "mouth_extreme"]
    assert data.manifest["splits"]["expression"] == {"train_labels": ["high_smile"], "test_labels": ["mouth_extreme"]}
    parts = data.manifest["splits"]["identity"]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == SUBJECTS  # every subject in exactly one part
    assert [len(parts[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    loaded = load_coma(root, LandmarkEmbedding(vertex_ids=VERTEX_IDS), frames=10, progress=False)
    everything = data.sequences()
    for field in ("landmarks", "lengths", "labels", "types", "texts", "texts_enriched", "subjects"):
        np.testing.assert_array_equal(getattr(everything, field), getattr(loaded, field))
    for split in ("train", "val", "test"):  # what training, the decoder and the evaluation read
        seqs = data.sequences(split)
        assert sorted(set(seqs.subjects)) == parts[split]
        assert {r["identity"] for r in data.records(split)} == set(parts[split])
        assert len(seqs) == 4 * len(parts[split]) and seqs.identity_weights is None
    assert set(data.expression_split("test").labels) == {"mouth_extreme"}
    again = import_dataset(tmp_path / "again", loaded, data.source, seed=3, progress=False)
    assert json.loads((again / "manifest.json").read_text())["splits"] == data.manifest["splits"]  # seeded
    other = import_dataset(tmp_path / "other", loaded, data.source, seed=4, progress=False)
    assert Dataset.load(other).manifest["splits"]["identity"] != parts

    code, stdout, _ = _run(capsys, "dataset", "info", out)
    assert code == 0 and "20 sequences" in stdout and f"imported from coma at {root.resolve()}" in stdout
    assert "held-out labels: mouth_extreme" in stdout


def test_training_on_an_imported_dataset(coma_subjects, tmp_path, capsys):
    root, ids = coma_subjects
    data = tmp_path / "data"
    assert _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", data, "--frames", "10",
                "--quiet")[0] == 0
    code, stdout, err = _run(capsys, "train", "denoiser", "--data", data, "--out", tmp_path / "denoiser",
                             "--steps", "2", "--batch-size", "4", "--d-model", "32", "--layers", "1", "--heads", "2",
                             "--ff", "64", "--device", "cpu", "--quiet")
    assert code == 0, err
    assert "denoiser at step 2" in stdout and (tmp_path / "denoiser" / "model.safetensors").is_file()
    # the mesh decoder needs the meshes, which captured landmarks do not carry: one clear line
    code, _, err = _run(capsys, "train", "decoder", "--data", data, "--out", tmp_path / "decoder", "--steps", "1",
                        "--quiet")
    assert code == 2 and "no blendshape weights" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "dataset", "preview", "--data", data, "--out", tmp_path / "preview")
    assert code == 2 and "landmarks only" in err and not (tmp_path / "preview").exists()


def test_bu4dfe_import_as_a_dataset_holds_out_fear(tmp_path, capsys):
    root = tmp_path / "bu4dfe"
    for subject in ("F001", "F002", "M001"):
        for expression in ("Happy", "Fear"):
            folder = root / subject / expression
            folder.mkdir(parents=True)
            for k, points in enumerate(_bu_frames()[:, :68]):
                np.save(folder / f"{k:03d}.npy", points)
    code, _, err = _run(capsys, "dataset", "import", "bu4dfe", root, "--out", tmp_path / "bu", "--frames", "10",
                        "--quiet")
    assert code == 0, err
    data = Dataset.load(tmp_path / "bu")
    assert data.source["format"] == "bu4dfe" and data.source["landmark_index"] is None
    assert data.labels == ["fear", "happiness"]
    assert data.manifest["splits"]["expression"]["test_labels"] == ["fear"]
    assert {s: len(v) for s, v in data.manifest["splits"]["identity"].items()} == {"train": 1, "val": 1, "test": 1}


def test_split_identities_ratio_and_limits():
    rng = np.random.default_rng
    parts = split_identities([f"S{k:02d}" for k in range(10)], rng(0))
    assert [len(parts[s]) for s in ("train", "val", "test")] == [8, 1, 1]
    assert [len(v) for v in split_identities(range(40), rng(0)).values()] == [32, 4, 4]
    assert [len(v) for v in split_identities("abc", rng(0)).values()] == [1, 1, 1]
    with pytest.raises(Face4DError, match="at least 3 subjects.*got 2"):
        split_identities(["a", "b"], rng(0), what="subjects")


def test_import_errors_write_nothing(coma_subjects, tmp_path, capsys):
    root, ids = coma_subjects
    few = tmp_path / "few"
    for subject in SUBJECTS[:2]:
        _write_capture(few, subject, "high_smile", _capture_vertices())
    out = tmp_path / "out"
    code, _, err = _run(capsys, "dataset", "import", "coma", few, "--embedding", ids, "--out", out, "--quiet")
    assert code == 2 and "at least 3 subjects" in err and "got 2" in err and not out.exists()
    code, _, err = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", out, "--quiet",
                        "--held-out-labels", "fear")
    assert code == 2 and "fear are not in the data" in err and not out.exists()
    code, _, err = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", out, "--quiet",
                        "--held-out-labels", "high_smile,mouth_extreme")
    assert code == 2 and "holds out every label" in err and not out.exists()
    code, _, err = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", tmp_path / "x.npz",
                        "--seed", "1", "--quiet")
    assert code == 2 and "--seed applies to a dataset directory" in err
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    code, _, err = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", out, "--quiet")
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    code, _, _ = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", out, "--quiet",
                      "--overwrite")
    assert code == 0 and not (out / "mine.txt").exists() and len(Dataset.load(out)) == 20
    unnamed = load_coma(root, LandmarkEmbedding(vertex_ids=VERTEX_IDS), progress=False)
    unnamed.subjects = None
    with pytest.raises(Face4DError, match="needs its subject"):
        import_dataset(tmp_path / "none", unnamed, {"format": "test"}, progress=False)
    assert not (tmp_path / "none").exists()


def test_npz_import_records_subjects(coma_subjects, tmp_path, capsys):
    root, ids = coma_subjects
    code, stdout, _ = _run(capsys, "dataset", "import", "coma", root, "--embedding", ids, "--out", tmp_path / "c.npz",
                           "--quiet")
    assert code == 0 and "wrote 20 sequences" in stdout
    seqs = load_sequences(tmp_path / "c.npz")
    assert seqs.subjects.tolist() == [s for s in SUBJECTS for _ in range(4)]
    save_sequences(tmp_path / "one.npz", seqs.select(5))
    assert load_sequences(tmp_path / "one.npz").subjects.tolist() == [SUBJECTS[1]]
