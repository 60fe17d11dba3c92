"""Blendshape solve (meshops.blendshapes), the rig exports (meshops.rig, UsdSkel) and --method blendshape."""
import csv
import json

import numpy as np
import pygltflib
import pytest

from face4d.decoder.retarget import blendshape_displacements, retarget
from face4d.errors import Face4DError
from face4d.pipeline import Pipeline
from meshops.blendshapes import BlendshapeSolver, fit_head, kabsch, solve_blendshapes
from meshops.export import RIG_FILES, export_sequence
from meshops.pose import apply_head_pose
from meshops.rig import ARKIT_FROM_HEAD, ARKIT_NAMES, LIVE_LINK_COLUMNS, RigAnimation

FRAMES = 6


@pytest.fixture(scope="module")
def motion(head):
    """Random weights in [0, 1] (a third at a bound), a few degrees of head pose, and their meshes."""
    rng = np.random.default_rng(0)
    weights = np.clip(rng.uniform(-0.5, 1.2, (FRAMES, head.num_expressions)), 0, 1).astype(np.float32)
    pose = np.concatenate([rng.normal(0, 0.05, (FRAMES, 3)), rng.normal(0, 0.5, (FRAMES, 3))], 1).astype(np.float32)
    identity = rng.standard_normal(head.num_identity).astype(np.float32)
    neutral = head.vertices(identity)
    meshes = apply_head_pose(head.vertices(identity[None], weights), pose, head.neck_pivot)
    return weights, pose, neutral, meshes


def test_the_mesh_solve_recovers_weights_and_head_pose(head, motion):
    weights, pose, neutral, meshes = motion
    fit = fit_head(head, meshes, neutral)
    assert np.abs(fit.weights - weights).max() < 1e-4
    assert np.abs(fit.head_pose - pose).max() < 1e-5
    assert fit.error.max() < 1e-5
    assert np.abs(fit.points(neutral, head.expression_basis) - meshes).max() < 1e-4


def test_the_landmark_solve_recovers_weights_and_keeps_them_in_bounds(head, motion):
    weights, _, neutral, _ = motion
    landmarks = head.vertices(None, weights)[:, head.landmark_ids] - head.landmark_neutral + neutral[head.landmark_ids]
    fit = fit_head(head, landmarks, neutral[head.landmark_ids], solve_pose=False)
    assert np.abs(fit.weights - weights).max() < 1e-3
    # pushed past the bounds, the weights stop at them: a rig's sliders run from 0 to 1
    far = head.landmark_neutral + 3 * (landmarks - neutral[head.landmark_ids])
    clipped = fit_head(head, far, head.landmark_neutral, solve_pose=False).weights
    assert clipped.min() >= 0 and clipped.max() <= 1 and (clipped == 1).any()
    loose = fit_head(head, far, head.landmark_neutral, solve_pose=False, bounds=(-5, 5)).weights
    assert np.abs(loose - 3 * weights).max() < 1e-2


def test_smoothness_steadies_the_weights_at_a_cost_in_fit(head, motion):
    weights, _, neutral, meshes = motion
    jitter = meshes + np.random.default_rng(1).normal(0, 0.02, meshes.shape).astype(np.float32)
    rough = fit_head(head, jitter, neutral, solve_pose=False)
    smooth = fit_head(head, jitter, neutral, solve_pose=False, smoothness=1.0)
    assert np.abs(np.diff(smooth.weights, axis=0)).sum() < 0.5 * np.abs(np.diff(rough.weights, axis=0)).sum()
    assert smooth.error.mean() > rough.error.mean()
    assert smooth.weights.min() >= 0 and smooth.weights.max() <= 1


def test_kabsch_finds_a_rotation_about_the_pivot():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(1, 30, 3)).astype(np.float32)
    pose = np.array([[0.3, -0.2, 0.1, 1.0, 2.0, -0.5]], np.float32)
    pivot = np.array([0.5, -1.0, 2.0], np.float32)
    assert np.abs(kabsch(points, apply_head_pose(points, pose, pivot), pivot) - pose).max() < 1e-5


def test_the_solver_refuses_a_basis_that_does_not_fix_the_weights(head):
    basis = head.landmark_expression_basis[:3].copy()
    basis[2] = basis[0] + basis[1]
    with pytest.raises(ValueError, match="rank-deficient"):
        BlendshapeSolver(basis)
    with pytest.raises(ValueError, match="same points"):
        solve_blendshapes(np.zeros((2, 5, 3)), np.zeros((68, 3)), head.landmark_expression_basis)


def test_method_blendshape_is_exact_on_the_head_and_keeps_the_neutral_frame(head, motion):
    weights, _, neutral, _ = motion
    weights = np.concatenate([np.zeros((1, head.num_expressions), np.float32), weights])
    other = head.vertices(np.random.default_rng(3).standard_normal(head.num_identity).astype(np.float32))
    landmarks = head.vertices(None, weights)[:, head.landmark_ids] - head.landmark_neutral + other[head.landmark_ids]
    meshes = retarget(landmarks, neutral)  # the default method
    assert np.array_equal(meshes[0], neutral)
    truth = neutral + head.vertices(None, weights) - head.neutral
    assert np.abs(meshes - truth).max() < 1e-3
    assert np.allclose(blendshape_displacements(head, np.zeros((2, 68, 3), np.float32)), 0)
    with pytest.raises(Face4DError, match="vertices"):
        retarget(landmarks, neutral[:-1])


def _accessor(gltf, blob, index):
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    dtype = np.uint32 if acc.componentType == pygltflib.UNSIGNED_INT else np.float32
    data = np.frombuffer(blob, dtype, acc.count * width, view.byteOffset)
    return data.reshape(acc.count, width) if width > 1 else data


@pytest.fixture(scope="module")
def rig_export(tmp_path_factory, head, motion):
    weights, pose, neutral, meshes = motion
    fit = fit_head(head, meshes, neutral)
    rig = RigAnimation(head.expression_names, head.expression_basis, fit.weights, fit.head_pose, fit.pivot)
    out = tmp_path_factory.mktemp("rig") / "export"
    formats = ["gltf", "arkit-csv", "weights"] + (["usd-skel"] if _has_pxr() else [])
    files = export_sequence(out, meshes, head.faces, formats, fps=24, neutral=neutral, rig=rig)
    return out, files, rig, meshes


def _has_pxr() -> bool:
    try:
        import pxr  # noqa: F401
    except ImportError:
        return False
    return True


def test_gltf_holds_the_mesh_morph_targets_and_an_animation_that_rebuilds_the_frames(rig_export, head):
    out, files, rig, meshes = rig_export
    gltf = pygltflib.GLTF2().load(str(files["gltf"][0]))
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    assert gltf.meshes[0].extras["targetNames"] == list(head.expression_names)
    assert len(prim.targets) == head.num_expressions
    rest = _accessor(gltf, blob, prim.attributes.POSITION)
    targets = np.stack([_accessor(gltf, blob, t["POSITION"]) for t in prim.targets])
    assert np.array_equal(_accessor(gltf, blob, prim.indices).reshape(-1, 3), head.faces)
    channels = {c.target.path: gltf.animations[0].samplers[c.sampler] for c in gltf.animations[0].channels}
    assert all(s.interpolation == "LINEAR" for s in channels.values())
    times = _accessor(gltf, blob, channels["weights"].input)
    assert np.allclose(times, np.arange(FRAMES) / 24)
    weights = _accessor(gltf, blob, channels["weights"].output).reshape(FRAMES, -1)
    quats = _accessor(gltf, blob, channels["rotation"].output)
    shifts = _accessor(gltf, blob, channels["translation"].output)
    from scipy.spatial.transform import Rotation
    for k in (0, FRAMES // 2, FRAMES - 1):
        local = rest + np.tensordot(weights[k], targets, 1)
        frame = Rotation.from_quat(quats[k]).apply(local) + shifts[k]
        assert np.abs(frame - meshes[k]).max() < 1e-3
    assert gltf.nodes[0].scale == [0.01, 0.01, 0.01]  # centimetres under a metre scene


def test_arkit_csv_has_live_link_columns_and_the_mapped_curves(rig_export, head):
    _, files, rig, _ = rig_export
    with open(files["arkit-csv"][0], newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == LIVE_LINK_COLUMNS and len(rows[0]) == 2 + 52 + 9
    assert len(rows) == FRAMES + 1 and rows[1][0] == "00:00:00:00.000" and rows[2][0] == "00:00:00:01.000"
    assert all(r[1] == "61" for r in rows[1:])
    values = np.array([[float(v) for v in r[2:54]] for r in rows[1:]])
    index = head.blendshape_index
    col = ARKIT_NAMES.index
    assert np.allclose(values[:, col("tongueOut")], 0)
    assert np.allclose(values[:, col("browInnerUp")], rig.weights[:, [index("browInnerUp_L"), index("browInnerUp_R")]]
                       .mean(1), atol=1e-5)
    assert np.allclose(values[:, col("jawOpen")], rig.weights[:, index("jawOpen")], atol=1e-5)
    assert np.allclose(values[:, col("eyeBlinkLeft")], rig.weights[:, index("eyeBlink_L")], atol=1e-5)
    assert ARKIT_FROM_HEAD["mouthLeft"] == ("mouthLeft",) and ARKIT_FROM_HEAD["cheekPuff"] == ("cheekPuff_L",
                                                                                               "cheekPuff_R")
    assert len(ARKIT_NAMES) == len(set(ARKIT_NAMES)) == 52


def test_weights_json_round_trips(rig_export, head):
    _, files, rig, _ = rig_export
    data = json.loads(files["weights"][0].read_text())
    assert data["names"] == list(head.expression_names) and data["fps"] == 24
    assert np.allclose(data["weights"], rig.weights, atol=1e-6)
    assert np.allclose(data["head_pose"], rig.head_pose, atol=1e-6)


def test_usd_skel_skins_to_the_frames(rig_export):
    pytest.importorskip("pxr")
    from pxr import Usd, UsdGeom, UsdSkel

    _, files, _, meshes = rig_export
    stage = Usd.Stage.Open(str(files["usd-skel"][0]))
    assert stage.GetDefaultPrim().IsA(UsdSkel.Root)
    assert UsdSkel.BakeSkinning(stage.Traverse())
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/Rig/Face"))
    for k in (0, FRAMES // 2, FRAMES - 1):
        points = np.asarray(mesh.GetPointsAttr().Get(Usd.TimeCode(k)), np.float64)
        matrix = np.asarray(mesh.ComputeLocalToWorldTransform(Usd.TimeCode(k)))
        assert np.abs(points @ matrix[:3, :3] + matrix[3, :3] - meshes[k]).max() < 1e-4


def test_rig_formats_need_a_rig_and_the_head_topology(tmp_path, head, motion):
    _, _, neutral, meshes = motion
    with pytest.raises(ValueError, match="pc2"):
        export_sequence(tmp_path / "x", meshes, head.faces, ["gltf"])
    assert not (tmp_path / "x").exists()
    pipe = Pipeline(head=head)
    target = pipe.target(meshes[0][:100], faces=np.array([[0, 1, 2]]), landmark_ids=np.arange(68))
    with pytest.raises(Face4DError, match="pc2"):
        pipe.check_rig_target(target, ["obj", "arkit-csv"])
    pipe.check_rig_target(pipe.target(neutral), ["gltf"])


def test_pipeline_export_writes_rig_files_and_weights_in_the_landmark_file(tmp_path, head, bundle):
    from face4d.data.interchange import load_sequences

    pipe = Pipeline.from_pretrained(bundle)
    result = pipe.generate(label="high_smile", frames=8, seed=0)
    assert result.target.method == "blendshape"
    pipe.export(result, tmp_path / "out", formats="gltf,arkit-csv,weights")
    folder = tmp_path / "out" / "sample_000"
    assert all((folder / RIG_FILES[f]).is_file() for f in ("gltf", "arkit-csv", "weights"))
    seqs = load_sequences(folder / "landmarks.npz")
    fit = fit_head(head, result.meshes[0], result.target.vertices)
    assert np.allclose(seqs.expression_weights[0], fit.weights, atol=1e-5)
    rebuilt = apply_head_pose(head.vertices(None, seqs.expression_weights[0]) - head.neutral + result.target.vertices,
                              seqs.head_pose[0], head.neck_pivot)
    # what the rig plays back (an untrained model's motion needs weights outside [0, 1]: not exact)
    assert np.abs(rebuilt - fit.points(result.target.vertices, head.expression_basis)).max() < 1e-4


def test_cli_retarget_uses_the_blendshape_path_by_default(head, motion, tmp_path, capsys):
    from face4d.cli import main
    from meshops.io import load_mesh, save_mesh

    weights, _, neutral, _ = motion
    weights = np.concatenate([np.zeros((1, head.num_expressions), np.float32), weights])
    np.save(tmp_path / "seq.npy", head.vertices(None, weights)[:, head.landmark_ids])
    save_mesh(tmp_path / "person.obj", neutral, head.faces)
    code = main(["retarget", "--landmarks", str(tmp_path / "seq.npy"), "--mesh", str(tmp_path / "person.obj"),
                 "--out", str(tmp_path / "out"), "--export", "obj"])
    out = capsys.readouterr().out
    assert code == 0 and f"wrote {FRAMES + 1} frame(s) (blendshape)" in out
    last = load_mesh(tmp_path / "out" / f"frame_{FRAMES:04d}.obj").vertices
    assert np.abs(last - (load_mesh(tmp_path / "person.obj").vertices + head.vertices(None, weights[-1])
                          - head.neutral)).max() < 1e-3
