"""FLAME fitting on a small synthetic model in FLAME's layout, built here (FLAME itself may not be shipped)."""
import json
import pickle

import numpy as np
import pytest
import smplx
import smplx.lbs as smplx_lbs  # the flame extra; the dev extra installs it so that these tests run in CI
import torch

from face4d.cli import main
from face4d.errors import Face4DError
from face4d.flame import CM_PER_M, FlameFitConfig, FlameModel, ReducedFlame, fit_flame
from meshops.pointcache import read_pc2

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end


NUM_SHAPE, NUM_EXPRESSION = 8, 6


def synthetic_flame(seed: int = 0, n: int = 24, dynamic: bool = False, num_shape: int = NUM_SHAPE,
                    num_expression: int = NUM_EXPRESSION) -> dict[str, np.ndarray]:
    """A bumpy half-ellipsoid "face" in metres with FLAME's arrays: smooth shape and expression
    fields, small pose correctives, five joints (root, neck, jaw, eyes), the lower part skinned to
    the jaw, and 68 landmarks inside random triangles (or 51 static ones plus a 79-row jaw-line
    table whose rows slide over the surface with the yaw, as FLAME's dynamic embedding)."""
    rng = np.random.default_rng(seed)
    u, v = np.meshgrid(np.linspace(-1.2, 1.2, n), np.linspace(-1.2, 1.2, n))
    z = 0.06 * np.cos(u) * np.cos(v) + 0.005 * np.sin(3 * u) * np.cos(2 * v)
    verts = np.stack([0.07 * np.sin(u).ravel(), 0.09 * np.sin(v).ravel(), z.ravel()], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    columns = num_shape + num_expression
    freq, phase = rng.normal(size=(columns, 3, 3)) * 20, rng.uniform(0, 6, size=(columns, 3))
    shapedirs = np.stack([np.sin(verts @ freq[k].T + phase[k]) for k in range(columns)], -1) * 0.004
    jaw = 1 / (1 + np.exp((verts[:, 1] + 0.02) / 0.01))
    weights = np.zeros((len(verts), 5))
    weights[:, 1], weights[:, 2] = 1 - jaw, jaw
    regressor = np.zeros((5, len(verts)))
    for j, point in enumerate([(0, -0.08, -0.05), (0, -0.06, -0.03), (0, -0.02, -0.02), (0.03, 0.02, 0.04),
                               (-0.03, 0.02, 0.04)]):
        regressor[j, np.argsort(((verts - point) ** 2).sum(1))[:6]] = 1 / 6
    centres = verts[faces].mean(1)
    inner = np.nonzero((np.abs(centres[:, 0]) < 0.05) & (np.abs(centres[:, 1]) < 0.06))[0]
    lmk_faces, bary = rng.choice(inner, 68, replace=False), rng.dirichlet(np.ones(3), 68)
    model = dict(v_template=verts, shapedirs=shapedirs, posedirs=rng.normal(size=(len(verts), 3, 36)) * 1e-4,
                 J_regressor=regressor, weights=weights, kintree_table=np.array([[2**32 - 1, 0, 1, 1, 1], range(5)]),
                 f=faces, num_shape=np.int64(num_shape))
    if dynamic:
        model.update(static_lmk_faces_idx=lmk_faces[17:], static_lmk_bary_coords=bary[17:],
                     dynamic_lmk_faces_idx=np.stack([lmk_faces[:17]] * 79),
                     dynamic_lmk_bary_coords=np.stack([bary[:17] + [k / 400, 0, -k / 400] for k in range(79)]))
    else:
        model.update(lmk_face_idx=lmk_faces, lmk_b_coords=bary)
    return model


def known_motion(frames: int = 40, seed: int = 1) -> dict[str, np.ndarray]:
    """A person (betas) smiling and opening the jaw while turning and moving the head."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, frames)[:, None]
    return dict(betas=rng.normal(size=NUM_SHAPE), expression=np.sin(np.pi * t) * rng.normal(size=NUM_EXPRESSION),
                jaw_pose=np.sin(np.pi * t) * [0.15, 0, 0], global_orient=np.c_[0.1 * t, 0.2 * t - 0.1, 0 * t],
                transl=np.c_[0.01 * t, 0 * t, 0.005 * t] + [0.001, 0.02, -0.01])


def full_landmarks(model: FlameModel, params: dict[str, np.ndarray]) -> np.ndarray:
    """Landmarks (F, 68, 3) in cm straight from smplx's lbs on the whole mesh (no reduced model)."""
    frames = len(params["expression"])
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    coefficients = torch.cat([t(params["betas"])[None].expand(frames, -1), t(params["expression"])], 1)
    pose = torch.cat([t(params["global_orient"]), torch.zeros(frames, 3, dtype=torch.float64),
                      t(params["jaw_pose"]), torch.zeros(frames, 6, dtype=torch.float64)], 1)
    vertices, _ = smplx_lbs.lbs(coefficients, pose, t(model.v_template), t(model.shapedirs), t(model.posedirs),
                                t(model.J_regressor), torch.as_tensor(model.parents), t(model.weights))
    vertices = (vertices + t(params["transl"])[:, None]).numpy()
    return mesh_landmarks(model, vertices) * CM_PER_M


def mesh_landmarks(model: FlameModel, vertices: np.ndarray) -> np.ndarray:
    """The 68-point embedding applied to meshes (F, V, 3) (fixed part only when dynamic)."""
    emb = model.landmarks
    return np.einsum("flcx,lc->flx", vertices[:, model.faces[emb.face_idx]], emb.b_coords)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("flame") / "FLAME_NEUTRAL.npz"
    np.savez(path, **synthetic_flame())
    return path


def test_reduced_model_is_exact(model_file):
    """The fit's reduced model (landmark vertices + joints as extra vertices) gives the whole
    mesh's landmarks."""
    model = FlameModel.load(model_file)
    params = known_motion(frames=5)
    reduced = ReducedFlame(model, np.arange(NUM_SHAPE + NUM_EXPRESSION))
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    _, marks = reduced.forward(torch.cat([t(params["betas"])[None].expand(5, -1), t(params["expression"])], 1),
                               t(params["global_orient"]), t(params["jaw_pose"]), t(params["transl"]))
    assert reduced.num_kept < model.num_vertices / 2
    np.testing.assert_allclose(marks.numpy() * CM_PER_M, full_landmarks(model, params), atol=1e-9)


def test_fit_recovers_known_parameters(model_file):
    model = FlameModel.load(model_file)
    truth = known_motion()
    target = full_landmarks(model, truth)
    weak = FlameFitConfig(shape_prior=1e-4, expression_prior=1e-4, jaw_prior=1e-4, smoothness=1e-4)
    fit = fit_flame(model, target, config=weak)
    assert fit.landmark_error_mm.shape == (40,) and fit.landmark_error_mm.mean() < 0.3
    np.testing.assert_allclose(fit.betas, truth["betas"], atol=0.15)
    np.testing.assert_allclose(fit.expression, truth["expression"], atol=0.3)
    np.testing.assert_allclose(fit.jaw_pose, truth["jaw_pose"], atol=0.06)
    np.testing.assert_allclose(fit.global_orient, truth["global_orient"], atol=0.02)
    np.testing.assert_allclose(fit.transl, truth["transl"], atol=0.001)
    # the meshes are the fitted parameters through FLAME, in centimetres, and carry the reported error
    assert fit.meshes.shape == (40, model.num_vertices, 3) and fit.meshes.dtype == np.float32
    np.testing.assert_allclose(fit.meshes / CM_PER_M, fit_vertices(model, fit), atol=1e-6)
    error = np.linalg.norm(mesh_landmarks(model, fit.meshes.astype(np.float64)) - target, axis=-1).mean(-1) * 10
    np.testing.assert_allclose(error, fit.landmark_error_mm, atol=1e-3)
    rest = dict(betas=fit.betas, expression=np.zeros((1, NUM_EXPRESSION)), jaw_pose=np.zeros((1, 3)),
                global_orient=np.zeros((1, 3)), transl=np.zeros((1, 3)))
    np.testing.assert_allclose(mesh_landmarks(model, fit.rest[None] / CM_PER_M) * CM_PER_M,
                               full_landmarks(model, rest), atol=1e-4)


def fit_vertices(model: FlameModel, fit) -> np.ndarray:
    """FLAME's vertices for a fit's parameters (metres), through smplx's lbs."""
    params = fit.params()
    frames = len(params["expression"])
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    coefficients = torch.cat([t(params["betas"])[None].expand(frames, -1), t(params["expression"])], 1)
    pose = torch.cat([t(params[k]) for k in ("global_orient", "neck_pose", "jaw_pose", "leye_pose", "reye_pose")], 1)
    vertices, _ = smplx_lbs.lbs(coefficients, pose, t(model.v_template), t(model.shapedirs), t(model.posedirs),
                                t(model.J_regressor), torch.as_tensor(model.parents), t(model.weights))
    return (vertices + t(params["transl"])[:, None]).numpy()


def test_smoothness_and_priors_regularise(model_file):
    """Noisy landmarks: the smoothness term gives a smoother expression curve than none."""
    model = FlameModel.load(model_file)
    target = full_landmarks(model, known_motion())
    target = target + np.random.default_rng(3).normal(scale=0.03, size=target.shape)  # 0.3 mm noise
    rough = fit_flame(model, target, config=FlameFitConfig(smoothness=0.0, motion_iterations=80))
    smooth = fit_flame(model, target, config=FlameFitConfig(smoothness=3.0, motion_iterations=80))
    jitter = lambda fit: np.abs(np.diff(fit.expression, 2, axis=0)).mean()  # noqa: E731
    assert jitter(smooth) < 0.5 * jitter(rough), (jitter(smooth), jitter(rough))
    assert smooth.landmark_error_mm.mean() < 1.0, smooth.landmark_error_mm.mean()


def test_folder_with_flame_static_and_dynamic_embeddings(tmp_path):
    """FLAME's own embedding: 51 static points plus the jaw line looked up by yaw, in separate files."""
    arrays = synthetic_flame(dynamic=True)
    np.savez(tmp_path / "FLAME_NEUTRAL.npz", **{k: v for k, v in arrays.items() if "lmk" not in k})
    np.savez(tmp_path / "flame_static_embedding.npz", lmk_face_idx=arrays["static_lmk_faces_idx"],
             lmk_b_coords=arrays["static_lmk_bary_coords"])
    np.savez(tmp_path / "flame_dynamic_embedding.npz", lmk_face_idx=arrays["dynamic_lmk_faces_idx"],
             lmk_b_coords=arrays["dynamic_lmk_bary_coords"])
    model = FlameModel.load(tmp_path)
    assert model.landmarks.dynamic_face_idx.shape == (79, 17) and len(model.landmarks.face_idx) == 51
    truth = known_motion(frames=12)
    reduced = ReducedFlame(model, np.arange(NUM_SHAPE + NUM_EXPRESSION))
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    _, marks = reduced.forward(torch.cat([t(truth["betas"])[None].expand(12, -1), t(truth["expression"])], 1),
                               t(truth["global_orient"]), t(truth["jaw_pose"]), t(truth["transl"]))
    target = marks.numpy() * CM_PER_M
    np.testing.assert_allclose(target[:, 17:], full_landmarks(model, truth), atol=1e-9)  # iBUG order: jaw first
    fit = fit_flame(model, target, config=FlameFitConfig(shape_prior=1e-4, expression_prior=1e-4))
    assert fit.landmark_error_mm.mean() < 0.5


def test_parameters_drive_smplx_flame(tmp_path):
    """flame_params.npz's arrays, given to smplx's own FLAME class, give the exported meshes: same
    parameter names, pose order, shape/expression columns and units. smplx's FLAME needs FLAME's full
    300 + 100 columns and reads a static embedding pickle, both written here."""
    model = FlameModel.load(_saved(tmp_path / "ours.npz", synthetic_flame(num_shape=300, num_expression=100)))
    model.save(tmp_path / "FLAME_NEUTRAL.npz")
    with open(tmp_path / "flame_static_embedding.pkl", "wb") as f:
        pickle.dump({"lmk_face_idx": model.landmarks.face_idx[17:], "lmk_b_coords": model.landmarks.b_coords[17:]}, f)
    truth = known_motion(frames=6)
    truth["betas"] = np.r_[truth["betas"], np.zeros(2)]
    truth["expression"] = np.c_[truth["expression"], np.zeros((6, 4))]
    config = FlameFitConfig(num_shape=10, num_expression=10, shape_iterations=20, motion_iterations=20)
    fit = fit_flame(model, full_landmarks_cols(model, truth, 10, 10), config=config)
    params = {key: torch.as_tensor(value, dtype=torch.float32) for key, value in fit.params().items()}
    flame = smplx.FLAME(str(tmp_path), ext="npz", num_betas=10, num_expression_coeffs=10, batch_size=6)
    output = flame(**{**params, "betas": params["betas"][None].expand(6, -1)})
    np.testing.assert_allclose(output.vertices.detach().numpy() * CM_PER_M, fit.meshes, atol=2e-4)


def _saved(path, arrays):
    np.savez(path, **arrays)
    return path


def full_landmarks_cols(model: FlameModel, params: dict[str, np.ndarray], num_shape: int, num_expression: int):
    """``full_landmarks`` of a model whose first ``num_shape`` shape and expression columns are used."""
    columns = np.r_[np.arange(num_shape), model.num_shape + np.arange(num_expression)]
    small = FlameModel(model.v_template, model.shapedirs[:, :, columns], num_shape, model.posedirs,
                       model.J_regressor, model.weights, model.parents, model.faces, model.landmarks)
    return full_landmarks(small, params)


def test_pickles_need_trust(tmp_path, model_file):
    with np.load(model_file) as data:
        arrays = dict(data)
    path = tmp_path / "generic_model.pkl"
    path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(Face4DError, match="arbitrary code"):
        FlameModel.load(tmp_path)
    model = FlameModel.load(tmp_path, trust_pickle=True)
    np.testing.assert_array_equal(model.faces, arrays["f"])
    converted = FlameModel.load(model.save(tmp_path / "npz" / "FLAME_NEUTRAL.npz").parent)  # no pickle needed now
    for name in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "parents", "faces"):
        np.testing.assert_array_equal(getattr(converted, name), getattr(model, name))
    np.testing.assert_array_equal(converted.landmarks.b_coords, model.landmarks.b_coords)


@pytest.mark.parametrize("change,message", [
    (lambda a: a.pop("lmk_face_idx"), "no landmark embedding"),
    (lambda a: a.pop("weights"), "missing weights"),
    (lambda a: a.update(posedirs=a["posedirs"][:, :, :9]), "posedirs has shape"),
    (lambda a: a.update(lmk_face_idx=a["lmk_face_idx"][:51]), "68 integer indices"),
])
def test_bad_models_are_one_line_errors(tmp_path, change, message):
    arrays = synthetic_flame()
    change(arrays)
    np.savez(tmp_path / "FLAME_NEUTRAL.npz", **arrays)
    with pytest.raises(Face4DError, match=message):
        FlameModel.load(tmp_path)


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_generate_with_flame(tmp_path, capsys, model_file):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "generate", "--label", "high_smile", "--frames", "20", "--flame-model",
                             model_file.parent, "--out", out, "--export", "obj,pc2", "--quiet")
    assert code == 0, err
    assert "flame/" in stdout and "landmark error" in stdout
    folder = out / "sample_000" / "flame"
    model = FlameModel.load(model_file)
    params = np.load(folder / "flame_params.npz")
    assert params["expression"].shape == (20, NUM_EXPRESSION) and params["betas"].shape == (NUM_SHAPE,)
    assert params["transl"].shape == (20, 3) and float(params["fps"]) == 30.0
    assert json.loads(str(params["config"]))["num_shape"] == 100
    cache = read_pc2(folder / "animation.pc2").frames
    assert cache.shape == (20, model.num_vertices, 3)
    fit = type("Fit", (), {"params": lambda self: {k: params[k] for k in params.files}})()
    np.testing.assert_allclose(cache / CM_PER_M, fit_vertices(model, fit), atol=1e-6)
    assert len(list((folder / "obj").glob("*.obj"))) == 20 and (folder / "neutral.obj").is_file()
    sample = json.loads((out / "samples.json").read_text())["samples"][0]
    assert sample["flame"]["landmark_error_mm"] == pytest.approx(params["landmark_error_mm"].mean(), abs=1e-4)
    assert (out / "sample_000" / "animation.pc2").is_file()  # the head model's meshes are still there


@pytest.mark.parametrize("extra,message", [
    (["--flame-model", "{tmp}/nowhere"], "no such FLAME model"),
    (["--flame-model", "{tmp}/pkl"], "arbitrary code"),
    (["--trust-pickle"], "--trust-pickle applies to the files of --flame-model"),
])
def test_cli_flame_bad_input(tmp_path, capsys, model_file, extra, message):
    (tmp_path / "pkl").mkdir()
    (tmp_path / "pkl" / "FLAME_NEUTRAL.pkl").write_bytes(pickle.dumps({}))
    argv = [a.format(tmp=tmp_path) for a in extra]
    code, _, err = _run(capsys, "generate", "--label", "high_smile", "--out", tmp_path / "out", "--quiet", *argv)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
