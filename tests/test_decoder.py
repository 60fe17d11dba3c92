"""The landmark-guided mesh decoder (§3.3): layers, models, RBF baseline, training, retargeting, CLI.

Tiny models on the full ICT head (the decoder is tied to its topology) and a 30-sequence dataset.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from face4d.checkpoint import read_tensors
from face4d.cli import main
from face4d.data import build_dataset
from face4d.data.interchange import LandmarkSequences, save_sequences
from face4d.decoder.model import (
    MLPDecoderConfig,
    SpiralDecoderConfig,
    build_decoder,
    make_config,
)
from face4d.decoder.rbf import rbf_displacements, rbf_retarget
from face4d.decoder.retarget import decode_displacements, load_decoder, retarget, retarget_files, sequence_frames
from face4d.decoder.topology import DecoderTopology
from face4d.decoder.training import DecoderData, DecoderTrainConfig, DecoderTrainer
from face4d.training import seeded
from face4d.errors import Face4DError
from meshops import SparseOperator, SpiralConv, cached_hierarchy, cached_spiral_indices, save_mesh
from meshops.io import load_mesh

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

TINY = dict(encoder_channels=(4, 4, 4, 4, 4), decoder_channels=(4, 4, 4, 4), heads=2)
TINY_ARGS = ["--encoder-channels", "4,4,4,4,4", "--decoder-channels", "4,4,4,4", "--heads", "2"]


@pytest.fixture(scope="module", autouse=True)
def cache_home(tmp_path_factory):
    """Spirals and hierarchies go to a private cache, so the tests neither need nor touch the user's."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def topology(head) -> DecoderTopology:
    return DecoderTopology.from_head(head)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("data") / "d", 30, progress=False)


@pytest.fixture(scope="module")
def sequence(data_dir) -> LandmarkSequences:
    """One N2E sequence of the dataset (its neutral frame is frame 0)."""
    from face4d.data import Dataset

    seqs = Dataset.load(data_dir).sequences("test")
    return seqs.select(int(np.flatnonzero(seqs.types == "N2E")[0]))


def _train_config(steps: int, **overrides) -> DecoderTrainConfig:
    return DecoderTrainConfig(**{"steps": steps, "batch_size": 4, "frames_per_mesh": 2, "lr": 3e-3,
                                 "checkpoint_every": 7, "log_every": 5, **overrides})


def _trainer(head, data_dir, out: Path, steps: int, variant: str = "full", **overrides) -> DecoderTrainer:
    from face4d.decoder.training import load_training_data

    config = _train_config(steps, **overrides)
    data, description = load_training_data(data_dir, config.labels)
    model = seeded(config.seed, lambda: build_decoder(make_config(variant, **(TINY if variant != "mlp" else
                                                                             {"hidden": 8})),
                                                      DecoderTopology.from_head(head)))
    return DecoderTrainer(model, data, out, config, head, extra={"data": description}, progress=False)


@pytest.fixture(scope="module")
def tiny_model_dir(head, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    _trainer(head, data_dir, out, steps=3).fit()
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --------------------------------------------------------------------------------------- layers

def test_spiral_conv_fused_with_its_unpooling_is_the_unpooling_then_the_conv(head):
    h = cached_hierarchy(head.neutral, head.faces, (4, 4, 4, 4))
    level = 2
    spirals = cached_spiral_indices(h.faces[level], h.num_vertices[level], 9)
    up = h.up[level]
    layer = SpiralConv(5, 3, spirals, up)
    reference = SpiralConv(5, 3, spirals)
    reference.load_state_dict(layer.state_dict())  # the same parameters and names
    x = torch.randn(h.num_vertices[level + 1], 5, 4, requires_grad=True)
    expected = reference(SparseOperator(up)(x))
    got = layer(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    grad = torch.autograd.grad(got.square().sum(), x)[0]
    torch.testing.assert_close(grad, torch.autograd.grad(expected.square().sum(), x)[0], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------- models

@pytest.mark.parametrize("variant", ["full", "pooled", "no_attention", "mlp"])
def test_decoder_shapes_and_rest_is_exactly_the_neutral_mesh(head, topology, variant):
    config = make_config(variant, **(TINY if variant != "mlp" else {"hidden": 8}))
    model = seeded(0, lambda: build_decoder(config, topology)).eval()
    neutral = torch.from_numpy(np.stack([head.neutral, head.vertices(np.ones(head.num_identity, np.float32))]))
    delta = torch.randn(2, 3, 68, 3) * 0.2
    delta[:, 1] = 0.0  # a frame whose landmarks do not move
    with torch.no_grad():
        out = model(neutral, delta)
    assert out.shape == (2, 3, head.num_vertices, 3) and torch.isfinite(out).all()
    assert out[:, 0].abs().max() > 0
    assert out[:, 1].abs().max() < 1e-6  # zero_at_rest: D(z(0)) - D(z(0)), whatever the weights
    with pytest.raises(Face4DError, match="landmark displacements"):
        model(neutral, torch.zeros(2, 3, 60, 3))
    with pytest.raises(Face4DError, match="neutral meshes"):
        model(neutral[:, :100], delta)


def test_attention_makes_the_output_depend_on_the_neutral_mesh(head, topology):
    delta = torch.randn(1, 2, 68, 3) * 0.2
    faces = [torch.from_numpy(head.neutral)[None],
             torch.from_numpy(head.vertices(np.full(head.num_identity, 2.0, np.float32)))[None]]
    outputs = {}
    for variant in ("full", "no_attention"):
        model = seeded(0, lambda: build_decoder(make_config(variant, **TINY), topology)).eval()
        with torch.no_grad():
            outputs[variant] = [model(m, delta) for m in faces]
    assert not torch.allclose(*outputs["full"])
    torch.testing.assert_close(*outputs["no_attention"])  # S2D-like: the mesh is not an input


def test_configs_round_trip_through_json_and_reject_bad_values(topology):
    model = build_decoder(SpiralDecoderConfig(**TINY), topology)
    stored = json.loads(json.dumps(model.config.to_dict()))
    assert SpiralDecoderConfig.from_dict(stored) == model.config
    assert stored["topology"]["vertices"] == 14388 and stored["hierarchy"]["levels"][0] == 14388
    with pytest.raises(Face4DError, match="identity mode"):
        SpiralDecoderConfig(identity="cross")
    with pytest.raises(Face4DError, match="encoder channels"):
        SpiralDecoderConfig(encoder_channels=(4, 4))
    with pytest.raises(Face4DError, match="divisible"):
        SpiralDecoderConfig(encoder_channels=(4, 4, 4, 4, 6), heads=4)
    with pytest.raises(Face4DError, match="unknown"):
        MLPDecoderConfig.from_dict({"hidden": 8, "layers": 3})
    with pytest.raises(Face4DError, match="unknown decoder variant"):
        make_config("transformer")


def test_a_config_of_another_topology_is_refused(head, topology):
    config = SpiralDecoderConfig(**TINY, topology={**topology.fingerprint, "faces_sha256": "0" * 64})
    with pytest.raises(Face4DError, match=r"ICT Face Model Light topology \(14388 vertices, 28552 triangles\)"):
        build_decoder(config, topology)


# ------------------------------------------------------------------------------------------ RBF

def test_rbf_reproduces_landmark_displacements_and_rest(head):
    rng = np.random.default_rng(0)
    delta = (rng.standard_normal((3, 68, 3)) * 0.3).astype(np.float32)
    for kernel in ("linear", "thin_plate_spline"):
        out = rbf_displacements(head.neutral, head.landmark_ids, delta, kernel=kernel, degree=1)
        assert out.shape == (3, head.num_vertices, 3)
        np.testing.assert_array_equal(out[:, head.landmark_ids], delta)
    # the polynomial tail reproduces a translation of all landmarks everywhere: the head moves rigidly
    shift = np.broadcast_to(np.float32([0.1, -0.2, 0.3]), (1, 68, 3))
    np.testing.assert_allclose(rbf_displacements(head.neutral, head.landmark_ids, shift)[0],
                               np.broadcast_to(shift[0, :1], (head.num_vertices, 3)), atol=1e-5)
    meshes = rbf_retarget(head.neutral, head.landmark_ids, np.zeros((2, 68, 3)))
    np.testing.assert_array_equal(meshes, np.broadcast_to(head.neutral, meshes.shape))
    one = rbf_retarget(head.neutral, head.landmark_ids, delta[0])
    np.testing.assert_allclose(one, head.neutral + rbf_displacements(head.neutral, head.landmark_ids, delta)[0])


def test_rbf_works_on_any_topology_given_landmark_ids():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=8.0)
    ids = np.random.default_rng(1).choice(len(sphere.vertices), 68, replace=False)
    delta = np.random.default_rng(2).standard_normal((4, 68, 3)).astype(np.float32) * 0.1
    meshes = rbf_retarget(sphere.vertices, ids, delta)
    assert meshes.shape == (4, len(sphere.vertices), 3)
    np.testing.assert_allclose(meshes[:, ids] - sphere.vertices[ids], delta, atol=1e-5)
    with pytest.raises(Face4DError, match="68 integer vertex ids"):
        rbf_retarget(sphere.vertices, ids[:60], delta)
    with pytest.raises(Face4DError, match="must lie in"):
        rbf_retarget(sphere.vertices, ids + len(sphere.vertices), delta)
    with pytest.raises(Face4DError, match="distinct"):
        rbf_retarget(sphere.vertices, np.r_[ids[:67], ids[0]], delta)
    with pytest.raises(Face4DError, match="NaN"):
        rbf_retarget(sphere.vertices, ids, np.full((1, 68, 3), np.nan))


# ------------------------------------------------------------------------------------- training

def test_training_examples_are_the_exact_meshes(head, data_dir):
    from face4d.decoder.training import load_training_data

    data, description = load_training_data(data_dir)
    assert description["labels"] == "expression_train" and description["sequences"] == len(data)
    sequences, frames = data.pick(3, seed=0, meshes=2, frames=4)
    assert sequences.shape == (2,) and frames.shape == (2, 4) and (frames < data.lengths[sequences, None]).all()
    neutral, delta_l, delta_m = data.examples(head, sequences, frames)
    i, f = sequences[1], frames[1, 2]
    mesh = head.vertices(data.identity_weights[i], data.expression_weights[i, f])
    torch.testing.assert_close(neutral[1] + delta_m[1, 2], torch.from_numpy(mesh), rtol=0, atol=1e-4)
    torch.testing.assert_close(delta_l[1, 2], torch.from_numpy(mesh[head.landmark_ids] - neutral[1].numpy()[
        head.landmark_ids]), rtol=0, atol=1e-4)


def test_head_motion_is_refused(data_dir):
    from face4d.data import Dataset

    seqs = Dataset.load(data_dir).sequences("train")
    seqs.head_pose = np.full((len(seqs), seqs.num_frames, 6), 0.01, np.float32)
    with pytest.raises(Face4DError, match="head motion"):
        DecoderData.from_sequences(seqs)


def test_training_loss_decreases(head, topology, data_dir, tmp_path):
    from face4d.data import Dataset
    from face4d.decoder.training import reconstruction_loss

    seqs = Dataset.load(data_dir).sequences("train")
    one = DecoderData.from_sequences(seqs.select(int(np.argmax(np.abs(seqs.expression_weights).sum((1, 2))))))
    model = seeded(0, lambda: build_decoder(make_config("full", **{**TINY, "decoder_channels": (8, 8, 8, 8)}),
                                            topology))
    trainer = DecoderTrainer(model, one, tmp_path / "m", _train_config(30, lr=1e-2, batch_size=8, frames_per_mesh=8),
                             head, progress=False)
    neutral, delta_l, delta_m = one.examples(head, np.array([0]), np.arange(int(one.lengths[0]))[None])

    def loss() -> float:  # on every frame of the sequence, a fixed set unlike the training batches
        with torch.no_grad():
            return reconstruction_loss(trainer.model(neutral, delta_l), delta_m, trainer.weights).item()

    before = loss()
    losses = trainer.fit()
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert loss() < 0.8 * before  # about 0.55 x after 30 steps


def test_resume_equals_an_uninterrupted_run(head, data_dir, tmp_path):
    whole = _trainer(head, data_dir, tmp_path / "whole", steps=20)
    whole_losses = whole.fit()
    first_losses = _trainer(head, data_dir, tmp_path / "parts", steps=10).fit()
    second = _trainer(head, data_dir, tmp_path / "parts", steps=20)
    assert second.start_step == 10
    assert whole_losses == first_losses + second.fit()
    _assert_same(whole.model.state_dict(), second.model.state_dict())
    _assert_same(read_tensors(tmp_path / "whole" / "last.safetensors")[0],
                 read_tensors(tmp_path / "parts" / "last.safetensors")[0])
    _assert_same(read_tensors(tmp_path / "whole" / "model.safetensors")[0],
                 read_tensors(tmp_path / "parts" / "model.safetensors")[0])


def test_out_dir_of_another_run_or_with_other_files_is_refused(head, data_dir, tmp_path, tiny_model_dir):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(Face4DError, match="no training state"):
        _trainer(head, data_dir, tmp_path / "busy", steps=3)
    with pytest.raises(Face4DError, match="other settings.*lr"):
        _trainer(head, data_dir, tiny_model_dir, steps=3, lr=1e-4)


def test_checkpoint_loads_with_its_config(tiny_model_dir):
    model = load_decoder(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["kind"] == "spiral_decoder" and config["step"] == 3 and config["data"]["labels"] == "expression_train"
    assert model.config.to_dict() == SpiralDecoderConfig.from_dict(config["model_config"]).to_dict()
    _assert_same(model.state_dict(), read_tensors(tiny_model_dir / "model.safetensors")[0])
    assert not any("indices" in k or "matrix" in k for k in model.state_dict())  # topology is not stored


# ----------------------------------------------------------------------------------- retargeting

def test_retarget_api(head, sequence, tiny_model_dir):
    model = load_decoder(tiny_model_dir)
    other = head.vertices(np.full(head.num_identity, -0.5, np.float32))  # another person than the sequence's
    meshes = retarget(sequence, other, model)
    frames = int(sequence.lengths[0])
    assert meshes.shape == (frames, head.num_vertices, 3) and meshes.dtype == np.float32
    np.testing.assert_allclose(meshes[0], other, atol=1e-5)  # the neutral frame gives the mesh back
    assert np.abs(meshes[-1] - other).max() > 1e-3
    np.testing.assert_allclose(retarget(sequence.landmarks[0], other, model), meshes)  # an array: frame 0
    delta = sequence.landmarks[0] - sequence.landmarks[0, 0]
    np.testing.assert_allclose(decode_displacements(model, other, delta, chunk=7), meshes - other, atol=1e-5)
    rbf = retarget(sequence, other, method="rbf")
    np.testing.assert_allclose(rbf[:, head.landmark_ids] - other[head.landmark_ids], delta, atol=1e-5)


def test_neutral_frame_defaults_to_the_last_of_an_e2n_sequence(sequence):
    e2n = LandmarkSequences(sequence.landmarks[:, ::-1], sequence.lengths, sequence.labels, ["E2N"])
    frames, neutral = sequence_frames(e2n)
    assert neutral == len(frames) - 1
    assert sequence_frames(e2n, neutral_frame=0)[1] == 0 and sequence_frames(e2n, neutral_frame=-2)[1] == neutral - 1
    with pytest.raises(Face4DError, match="out of range"):
        sequence_frames(e2n, neutral_frame=len(frames))


def test_topology_mismatch_is_a_clear_error(head, sequence, tiny_model_dir):
    model = load_decoder(tiny_model_dir)
    expected = r"ICT Face Model Light topology \(14388 vertices, 28552 triangles\)"
    with pytest.raises(Face4DError, match=f"has 14000 vertices.*{expected}"):
        retarget(sequence, head.neutral[:14000], model)
    faces = head.faces.copy()
    faces[:, [1, 2]] = faces[:, [2, 1]]  # same vertices and triangle count, other winding
    with pytest.raises(Face4DError, match=f"connected differently.*{expected}"):
        retarget(sequence, head.neutral, model, faces=faces)
    with pytest.raises(Face4DError, match="different units"):
        retarget(sequence, head.neutral * 10, model)  # millimetres


def test_bad_landmark_files_are_clear_errors(head, tmp_path, sequence):
    save_mesh(tmp_path / "neutral.obj", head.neutral, head.faces)
    np.save(tmp_path / "bad_shape.npy", np.zeros((5, 60, 3), np.float32))
    nan = sequence.landmarks[0].copy()
    nan[3, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.savez(tmp_path / "nan.npz", landmarks=nan)
    for name, message in (("bad_shape.npy", "must be a \\(F, 68, 3\\) array"), ("nan.npy", "NaN"),
                          ("nan.npz", "NaN"), ("missing.npz", "no such file")):
        with pytest.raises(Face4DError, match=message):
            retarget_files(tmp_path / name, tmp_path / "neutral.obj", tmp_path / "out", method="rbf")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------------- CLI

def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cli_retarget_rbf(head, sequence, tmp_path, capsys):
    save_sequences(tmp_path / "seq.npz", sequence)
    save_mesh(tmp_path / "neutral.ply", head.neutral, head.faces)
    out = tmp_path / "meshes"
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "neutral.ply",
                      "--out", out, "--export", "ply", "--method", "rbf")
    frames = int(sequence.lengths[0])
    assert code == 0 and f"wrote {frames} frame(s)" in text
    names = sorted(p.name for p in out.iterdir())
    assert names == ["frame_%04d.ply" % i for i in range(frames)] + ["neutral.obj"]
    first = load_mesh(out / "frame_0000.ply")
    np.testing.assert_allclose(first.vertices, head.neutral, atol=1e-5)
    np.testing.assert_array_equal(first.faces, head.faces)
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "neutral.ply",
                      "--out", out, "--method", "rbf")
    assert code == 2 and "already exists" in text and "--overwrite" in text
    # another topology needs its landmark ids
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=8.0)
    save_mesh(tmp_path / "ball.obj", sphere.vertices, sphere.faces)
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "ball.obj",
                      "--out", tmp_path / "ball", "--method", "rbf")
    assert code == 2 and "--landmark-ids" in text
    np.savetxt(tmp_path / "ids.txt", np.arange(0, 68 * 5, 5), fmt="%d")
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "ball.obj",
                      "--out", tmp_path / "ball", "--method", "rbf", "--landmark-ids", tmp_path / "ids.txt",
                      "--export", "obj")
    assert code == 0 and len(list((tmp_path / "ball").glob("frame_*.obj"))) == frames


def test_cli_train_and_retarget_with_a_learned_model(head, data_dir, sequence, tmp_path, capsys):
    model_dir = tmp_path / "decoder"

    def train(steps: int) -> tuple[int, str]:
        return _run(capsys, "train", "decoder", "--data", data_dir, "--out", model_dir, "--steps", steps,
                    "--batch-size", "4", "--frames-per-mesh", "2", *TINY_ARGS, "--quiet")

    code, text = train(2)
    assert code == 0 and "decoder (full) at step 2" in text
    code, text = train(3)
    assert code == 0 and "resumed from step 2" in text
    save_sequences(tmp_path / "seq.npz", sequence)
    save_mesh(tmp_path / "neutral.obj", head.neutral, head.faces)
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "neutral.obj",
                      "--out", tmp_path / "out", "--export", "obj", "--model", model_dir, "--neutral-frame", "0")
    assert code == 0, text
    frames = int(sequence.lengths[0])
    assert len(list((tmp_path / "out").glob("frame_*.obj"))) == frames
    np.testing.assert_allclose(load_mesh(tmp_path / "out" / "frame_0000.obj").vertices, head.neutral, atol=1e-4)
    # a mesh of another topology: one line naming the expected one
    save_mesh(tmp_path / "small.obj", head.neutral[:3], np.array([[0, 1, 2]]))
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "small.obj",
                      "--out", tmp_path / "out2", "--model", model_dir)
    assert code == 2 and "14388 vertices, 28552 triangles" in text and len(text.strip().splitlines()) == 1
    code, text = _run(capsys, "train", "decoder", "--data", data_dir, "--out", tmp_path / "x", "--variant", "mlp",
                      "--heads", "2")
    assert code == 2 and "--heads does not apply" in text
    code, text = _run(capsys, "retarget", "--landmarks", tmp_path / "seq.npz", "--mesh", tmp_path / "neutral.obj",
                      "--out", tmp_path / "out3", "--model", tmp_path / "nowhere")
    assert code == 2 and "not a face4d model directory" in text
