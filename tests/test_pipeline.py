"""The pipeline: condition -> landmarks -> meshes on a target -> exports -> preview (face4d.pipeline, and
the ``generate`` / ``render`` / ``demo`` commands), on the real embedded models with few frames and steps."""
import json
import os

import numpy as np
import pytest
import trimesh

from face4d.cli import main
from face4d.data.interchange import load_sequences, save_sequences
from face4d.errors import Face4DError
from face4d.generate import SamplingConfig
from face4d.demo import DEMO_LABELS
from face4d.outputs import check_out_dir
from face4d.pipeline import Pipeline, PipelineResult
from meshops.io import load_mesh, save_mesh
from meshops.pointcache import read_pc2

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

FAST = SamplingConfig(steps=4)


@pytest.fixture(scope="module")
def pipe():
    return Pipeline.from_default()


@pytest.fixture(scope="module")
def person(head):
    """A user's neutral face in the head model's topology: a random person, as an OBJ file would hold it."""
    weights = np.random.default_rng(11).standard_normal(head.num_identity).astype(np.float32)
    return head.vertices(weights)


@pytest.fixture
def person_obj(tmp_path, person, head):
    path = tmp_path / "in" / "person.obj"
    path.parent.mkdir()
    save_mesh(path, person, head.faces)
    return path


@pytest.fixture
def sphere_obj(tmp_path):
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=8.0)
    path = tmp_path / "in" / "sphere.obj"
    path.parent.mkdir(exist_ok=True)
    save_mesh(path, sphere.vertices, sphere.faces)
    return path


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code, err, *fragments):
    assert code == 2 and err.startswith("face4d: error:") and len(err.strip().splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------- Python API

def test_generate_on_a_user_mesh_starts_from_that_mesh(pipe, head, person_obj):
    result = pipe.generate(label="mouth_open", frames=6, num=2, seed=0, mesh=person_obj, sampling=FAST)
    mesh = load_mesh(person_obj)
    assert isinstance(result, PipelineResult) and len(result) == 2
    meshes = np.stack(result.meshes)
    assert meshes.shape == (2, 6, head.num_vertices, 3) and meshes.dtype == np.float32
    np.testing.assert_array_equal(result.faces, head.faces)
    assert result.target.method == "blendshape" and result.target.name == str(person_obj)
    for i in range(2):
        np.testing.assert_allclose(meshes[i, 0], mesh.vertices, atol=1e-5)  # the neutral frame is the mesh
        motion = np.linalg.norm(meshes[i] - meshes[i, :1], axis=-1).max(1)
        assert motion[0] == 0 and motion[1:].max() > 0.02  # and it moves (0.2 mm or more within six frames)
        assert np.isfinite(meshes[i]).all() and np.abs(meshes[i] - mesh.vertices).max() < 5.0
    assert result.landmarks.landmarks.shape == (2, 6, 68, 3) and result.captions == ["mouth_open"] * 2
    assert result.names == ["sample_000", "sample_001"] and result.fps == 30.0
    # the driving landmarks are the mesh's landmarks plus the sequence's displacements from frame 0
    drive = result.driving_landmarks(1)
    lm = result.landmarks.sequence(1)
    np.testing.assert_allclose(drive, mesh.vertices[head.landmark_ids][None] + lm - lm[0], atol=1e-5)
    # by default a label on a mesh starts from that mesh's own neutral face (N2E)
    assert result.landmarks.types.tolist() == ["N2E"] * 2
    np.testing.assert_allclose(lm[0], mesh.vertices[head.landmark_ids], atol=1e-4)
    # the same request gives the same meshes
    again = pipe.generate(label="mouth_open", frames=6, num=2, seed=0, mesh=person_obj, sampling=FAST)
    np.testing.assert_array_equal(np.stack(again.meshes), meshes)
    # start="free": the model also picks the person and the first frame; the mesh is still frame 0
    free = pipe.generate(label="mouth_open", frames=6, seed=0, mesh=person_obj, start="free", sampling=FAST)
    assert free.landmarks.types.tolist() == [""]
    assert np.abs(free.landmarks.sequence(0)[0] - mesh.vertices[head.landmark_ids]).max() > 0.05
    np.testing.assert_allclose(free.meshes[0][0], mesh.vertices, atol=1e-5)
    with pytest.raises(Face4DError, match="combines with a label or a text"):
        pipe.generate(keyframes=np.zeros((4, 68, 3)), known="0", mesh=person_obj, start="target")
    with pytest.raises(Face4DError, match="unknown start 'middle'"):
        pipe.generate(label="anger", start="middle")


def test_text_on_a_mesh_starts_from_its_neutral_face(pipe, head, person, person_obj):
    """A text on a mesh of the head's topology is text-guided geometry-adaptive generation (Alg. 4
    with Alg. 2's guidance) from that mesh's own neutral face, as a label is."""
    text = "from a neutral face to a high smile"
    result = pipe.generate(text=text, frames=6, num=2, seed=0, mesh=person_obj, sampling=FAST)
    seqs = result.landmarks
    assert seqs.texts.tolist() == [text] * 2 and seqs.labels.tolist() == ["", ""]
    assert seqs.types.tolist() == ["N2E"] * 2
    np.testing.assert_allclose(seqs.landmarks[:, 0], np.broadcast_to(person[head.landmark_ids], (2, 68, 3)),
                               atol=1e-4)
    unguided = pipe.sample(neutral_landmarks=person[head.landmark_ids], frames=6, num=2, seed=0, passes=1,
                           sampling=FAST)
    assert np.abs(seqs.landmarks[:, 1:] - unguided.landmarks[:, 1:]).max() > 1e-3  # the text steered it
    free = pipe.generate(text=text, frames=6, seed=0, mesh=person_obj, start="free", sampling=FAST)
    assert np.abs(free.landmarks.landmarks[0, 0] - person[head.landmark_ids]).max() > 0.05
    with pytest.raises(Face4DError, match="empty text"):
        pipe.generate(text="  ", frames=6, mesh=person_obj, sampling=FAST)


def test_wrong_topology_names_the_expected_one(pipe, head, sphere_obj):
    with pytest.raises(Face4DError) as info:
        pipe.generate(label="mouth_open", frames=4, mesh=sphere_obj, sampling=FAST)
    message = str(info.value)
    assert str(sphere_obj) in message and "642 vertices" in message
    assert f"ICT Face Model Light topology ({head.num_vertices} vertices, {len(head.faces)} triangles)" in message
    shuffled = head.faces[::-1].copy()  # right counts, other triangles
    with pytest.raises(Face4DError, match="connected differently"):
        pipe.target(head.neutral, faces=shuffled)
    with pytest.raises(Face4DError, match="not the head model's topology; give the vertex ids"):
        pipe.target(sphere_obj, method="rbf")


def test_other_topology_with_landmark_ids_uses_the_rbf_fallback(pipe, head, tmp_path):
    # the head with its vertices in another order: another topology, whose landmarks we know
    order = np.random.default_rng(0).permutation(head.num_vertices)
    inverse = np.argsort(order)
    vertices, faces = head.neutral[order], inverse[head.faces]
    ids = inverse[head.landmark_ids]
    save_mesh(tmp_path / "character.ply", vertices, faces)
    np.savetxt(tmp_path / "ids.txt", ids, fmt="%d")
    result = pipe.generate(label="high_smile", frames=5, seed=1, mesh=tmp_path / "character.ply",
                           landmark_ids=tmp_path / "ids.txt", sampling=FAST)
    assert result.target.method == "rbf"
    np.testing.assert_array_equal(result.faces, faces)
    meshes = result.meshes[0]
    np.testing.assert_allclose(meshes[0], vertices, atol=1e-5)
    # RBF is exact at the landmarks: they move by the sequence's landmark displacements
    lm = result.landmarks.sequence(0)
    np.testing.assert_allclose(meshes[:, ids], vertices[ids][None] + lm - lm[0], atol=1e-4)
    np.testing.assert_allclose(result.driving_landmarks(0), meshes[:, ids], atol=1e-4)
    with pytest.raises(Face4DError, match="only apply to the RBF fallback"):
        pipe.target(tmp_path / "character.ply", landmark_ids=ids, method="learned")
    with pytest.raises(Face4DError, match="68 integer vertex ids"):
        pipe.target(tmp_path / "character.ply", landmark_ids=ids[:10])


def test_identity_seed_gives_another_valid_head(pipe, head):
    a, b, again = (pipe.target(identity_seed=seed) for seed in (1, 2, 1))
    weights = np.random.default_rng(1).standard_normal(head.num_identity).astype(np.float32)
    np.testing.assert_allclose(a.vertices, head.vertices(weights), atol=1e-5)
    np.testing.assert_array_equal(a.vertices, again.vertices)
    for target in (a, b):
        offset = np.linalg.norm(target.vertices - head.neutral, axis=1)
        assert 0.1 < offset.mean() < 3.0  # another person, of a plausible size (cm)
        np.testing.assert_array_equal(target.faces, head.faces)
    assert np.abs(a.vertices - b.vertices).max() > 0.5
    result = pipe.generate(label="sadness", frames=4, identity_seed=2, sampling=FAST)
    np.testing.assert_allclose(result.meshes[0][0], b.vertices, atol=1e-5)
    assert result.target.name == "identity seed 2"
    with pytest.raises(Face4DError, match="not both"):
        pipe.target(head.neutral, identity_seed=1)


def test_neutral_mesh_is_the_default_target_and_keyframes_are_kept(pipe, head, person, person_obj):
    result = pipe.generate(label="anger", neutral_mesh=person_obj, frames=5, passes=1, seed=0, sampling=FAST)
    assert result.landmarks.types.tolist() == ["N2E"]
    np.testing.assert_allclose(result.landmarks.sequence(0)[0], person[head.landmark_ids], atol=1e-4)
    np.testing.assert_allclose(result.meshes[0][0], person, atol=1e-4)
    # keyframes: the known frames of the landmarks are the given ones
    keys = result.landmarks.sequence(0)
    filled = pipe.generate(keyframes=keys, known="0,4", frames=5, seed=3, sampling=FAST)
    np.testing.assert_allclose(filled.landmarks.sequence(0)[[0, 4]], keys[[0, 4]], atol=1e-4)
    with pytest.raises(Face4DError, match="need the known frames"):
        pipe.sample(keyframes=keys)
    with pytest.raises(Face4DError, match="--passes only applies"):
        pipe.sample(label="anger", passes=2)


def test_export_and_render(pipe, head, tmp_path):
    import imageio.v3 as iio

    result = pipe.generate(label="high_smile", frames=4, num=2, seed=0, sampling=FAST)
    out = pipe.export(result, tmp_path / "exp", formats="obj,pc2", preview="gif", size=48)
    assert _entries(out) == ["preview.gif", "sample_000", "sample_001", "samples.json"]
    sample = out / "sample_001"
    assert _entries(sample) == ["animation.pc2", "export.json", "landmarks.npz", "neutral.obj", "obj"]
    np.testing.assert_allclose(read_pc2(sample / "animation.pc2").frames, result.meshes[1], atol=1e-6)
    np.testing.assert_allclose(load_mesh(sample / "neutral.obj").vertices, head.neutral, atol=1e-5)
    np.testing.assert_allclose(load_sequences(sample / "landmarks.npz").landmarks, result.landmarks.landmarks[1:],
                               atol=1e-6)
    manifest = json.loads((out / "samples.json").read_text())
    assert [s["label"] for s in manifest["samples"]] == ["high_smile"] * 2 and manifest["method"] == "blendshape"
    gif = iio.imread(out / "preview.gif", index=None)
    assert gif.shape[2] == 2 * 48 and 2 <= gif.shape[0] <= 4
    with pytest.raises(FileExistsError, match="not empty"):
        pipe.export(result, out, formats="pc2")
    pipe.export(result, out, formats="mdd", overwrite=True)
    assert _entries(out / "sample_000") == ["animation.mdd", "export.json", "landmarks.npz", "neutral.obj"]

    paths = pipe.render(result, [tmp_path / "p.gif", tmp_path / "p.mp4"], reference=result, size=40,
                        overlay_landmarks=True)
    frames = iio.imread(paths[0], index=None)
    assert frames.shape[2] == 2 * 40 and frames.shape[1] > 2 * 40  # 2 columns (sample | reference), 2 rows
    assert iio.imread(paths[1], index=None).shape[0] == 4
    with pytest.raises(FileExistsError):
        pipe.render(result, tmp_path / "p.gif")
    with pytest.raises(Face4DError, match="unsupported output"):
        pipe.render(result, tmp_path / "p.avi")


def test_face_box_frames_the_landmarks(head):
    from render import face_box

    box = face_box(head.landmark_neutral)
    lo, hi = head.landmark_neutral.min(0), head.landmark_neutral.max(0)
    assert (box[0::2] <= lo + 1e-6).all() and (box[1::2] >= hi - 1e-6).all()
    assert box[3] - hi[1] > 2.0  # up to the forehead


# ----------------------------------------------------------------------------------- bad input

def test_bad_inputs_fail_before_writing_anything(pipe, person_obj, sphere_obj, tmp_path, capsys):
    out = tmp_path / "out"
    ids = tmp_path / "in" / "ids.npy"
    np.save(ids, np.arange(68))
    base = ["generate", "--label", "mouth_open", "--frames", "4", "--steps", "2", "--quiet"]
    cases = [
        (["--mesh", tmp_path / "missing.obj", "--out", out], ["missing.obj: no such file"]),
        (["--mesh", sphere_obj, "--out", out], ["sphere.obj: has 642 vertices", "ICT Face Model Light topology"]),
        (["--mesh", person_obj, "--export", "obj,fbx", "--out", out],
         ["unknown export format 'fbx'", "obj, ply, pc2, mdd, usd"]),
        (["--preview", "avi", "--out", out], ["unknown preview format 'avi'"]),
        (["--mesh", person_obj, "--out", tmp_path / "in" / "person.obj" / "out"], ["is a file, not a directory"]),
        (["--mesh", person_obj, "--landmark-ids", tmp_path / "none.npy", "--out", out], ["none.npy: no such file"]),
        (["--mesh", person_obj, "--method", "rbf", "--decoder", tmp_path, "--out", out], ["--decoder only applies"]),
        (["--keyframes", tmp_path / "k.npz", "--known", "0", "--start", "target", "--out", out],
         ["combines with a label or a text"]),
        (["--mesh", sphere_obj, "--landmark-ids", ids, "--export", "pc2,gltf", "--out", out],
         ["gltf export animates the head model's blendshapes", "use pc2"]),
    ]
    for extra, fragments in cases:
        code, _, err = _run(capsys, *base, *extra)
        _one_line_error(code, err, *fragments)
        assert _entries(tmp_path) == ["in"], extra  # no output, no temporary left behind
    # a non-empty output directory is refused without --overwrite, and left as it was
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _run(capsys, *base, "--mesh", person_obj, "--export", "pc2", "--out", out)
    _one_line_error(code, err, "already exists and is not empty", "--overwrite")
    assert _entries(out) == ["keep.txt"] and _entries(tmp_path) == ["in", "out"]


def test_unwritable_output_is_a_clear_error(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    with pytest.raises(Face4DError, match=f"no permission to write in {locked}"):
        check_out_dir(locked / "out")
    code, _, err = _run(capsys, "demo", "--out", locked / "out", "--quiet")
    _one_line_error(code, err, "cannot write", "no permission")
    assert _entries(locked) == []


def test_failure_midway_leaves_nothing(pipe, tmp_path, monkeypatch):
    result = pipe.generate(label="eyebrow", frames=3, sampling=FAST)
    import meshops.export

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out"))

    monkeypatch.setattr(meshops.export, "export_sequence", broken)
    with pytest.raises(OSError, match="No space left"):
        pipe.export(result, tmp_path / "out", formats="pc2")
    assert _entries(tmp_path) == []


# ----------------------------------------------------------------------------------- CLI

def test_cli_generate_meshes_exports_and_preview(person_obj, head, tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "out"
    code, text, _ = _run(capsys, "generate", "--label", "mouth_open", "--frames", "5", "--num", "2", "--steps", "3",
                         "--mesh", person_obj, "--out", out, "--export", "obj,ply,pc2,mdd", "--preview", "mp4,gif",
                         "--size", "48", "--quiet")
    assert code == 0 and "wrote 2 sample(s) of 5 frames" in text and "obj, ply, pc2, mdd + preview.mp4" in text
    assert _entries(out) == ["preview.gif", "preview.mp4", "sample_000", "sample_001", "samples.json"]
    sample = out / "sample_000"
    assert _entries(sample) == ["animation.mdd", "animation.pc2", "export.json", "landmarks.npz", "neutral.obj",
                                "obj", "ply"]
    assert len(list((sample / "obj").iterdir())) == 5
    first = load_mesh(sample / "obj" / "frame_0000.obj")
    np.testing.assert_allclose(first.vertices, load_mesh(person_obj).vertices, atol=1e-5)
    assert load_sequences(sample / "landmarks.npz").labels.tolist() == ["mouth_open"]
    assert iio.imread(out / "preview.mp4", index=None).shape[0] == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_generate_without_mesh_options_writes_landmarks_only(tmp_path, capsys):
    code, text, _ = _run(capsys, "generate", "--label", "surprise", "--frames", "4", "--num", "2", "--steps", "2",
                         "--out", tmp_path / "lm", "--quiet")
    assert code == 0 and "wrote 2 sequence(s) of 4 frames" in text
    assert _entries(tmp_path / "lm") == ["sequence_000.npz", "sequence_001.npz"]
    code, _, err = _run(capsys, "generate", "--label", "surprise", "--overlay-landmarks", "--out", tmp_path / "x")
    _one_line_error(code, err, "apply to the preview")


def test_cli_render(pipe, head, tmp_path, capsys):
    import imageio.v3 as iio

    seqs = pipe.sample(label="high_smile", frames=4, num=2, seed=0, sampling=FAST)
    save_sequences(tmp_path / "seq.npz", seqs)
    save_sequences(tmp_path / "ref.npz", seqs.select(0))
    code, text, _ = _run(capsys, "render", tmp_path / "seq.npz", "--out", tmp_path / "p.gif", "--size", "40",
                         "--reference", tmp_path / "ref.npz", "--overlay-landmarks", "--identity-seed", "4", "--quiet")
    assert code == 0 and "2 sequence(s) on identity seed 4 (blendshape)" in text
    gif = iio.imread(tmp_path / "p.gif", index=None)
    assert gif.shape[2] == 80 and gif.shape[1] > 80
    code, _, err = _run(capsys, "render", tmp_path / "seq.npz", "--out", tmp_path / "p.gif", "--quiet")
    _one_line_error(code, err, "already exists", "--overwrite")
    code, _, err = _run(capsys, "render", tmp_path / "seq.npz", "--out", tmp_path / "p.mov", "--quiet")
    _one_line_error(code, err, "unsupported output '.mov'")
    code, _, err = _run(capsys, "render", tmp_path / "none.npz", "--out", tmp_path / "q.mp4", "--quiet")
    _one_line_error(code, err, "none.npz: no such file")
    assert not (tmp_path / "q.mp4").exists()


def test_cli_demo(tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "demo"
    code, text, _ = _run(capsys, "demo", "--out", out, "--frames", "12", "--export", "pc2", "--size", "48", "--quiet")
    assert code == 0 and f"wrote {len(DEMO_LABELS)} labels" in text
    assert _entries(out) == sorted([*DEMO_LABELS, "preview.gif", "preview.mp4", "samples.json"])
    for label in DEMO_LABELS:
        assert _entries(out / label) == ["animation.pc2", "export.json", "landmarks.npz", "neutral.obj"]
        seq = load_sequences(out / label / "landmarks.npz")
        assert seq.labels.tolist() == [label] and seq.types.tolist() == ["N2E"]
        frames = read_pc2(out / label / "animation.pc2").frames
        assert frames.shape == (12, 14388, 3)
    mp4 = iio.imread(out / "preview.mp4", index=None)
    assert mp4.shape[0] == 12 and mp4.shape[2] == 2 * 48  # a 2 x 2 grid
    # the faces move: the expressions build over about 20 frames (0.7 s), so 12 frames are enough
    assert np.abs(mp4[-1].astype(int) - mp4[0].astype(int)).mean() > 0.02
    code, _, err = _run(capsys, "demo", "--out", out, "--quiet")
    _one_line_error(code, err, "already exists and is not empty")
    code, _, err = _run(capsys, "demo", "--out", tmp_path / "d2", "--labels", "smirk", "--quiet")
    _one_line_error(code, err, "unknown label 'smirk'")
    assert not (tmp_path / "d2").exists()
