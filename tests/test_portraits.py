"""The portrait data set: painted features, the shard format of the data contract, exact landmarks, identity
splits, determinism from the seed, atomic output and the CLI's bad-input policy."""
from __future__ import annotations

import json

import numpy as np
import pytest

from face4d.cli import main
from face4d.data import portraits
from face4d.data.labels import LABEL_NAMES
from face4d.data.portraits import (IRIS, LIPS, PUPIL, SCLERA, PortraitConfig, PortraitPlan, PortraitRenderer,
                                   build_portraits, paint_materials)
from face4d.errors import Face4DError
from meshops.head import HeadModel
from render.camera import Camera

CONFIG = dict(size=32, images=14, clips=2, clip_frames=3, identities=5, clip_sizes=(32, 64), shard_size=4,
              clip_shard_size=1)


@pytest.fixture(scope="module")
def head() -> HeadModel:
    return HeadModel.load()


def test_painted_features_sit_where_the_landmarks_say(head):
    materials = paint_materials(head)
    lips = head.neutral[materials == LIPS]
    mouth = head.landmark_neutral[48:60]
    assert len(lips) > 50
    assert (lips[:, 0].min() >= mouth[:, 0].min() - 0.5) and (lips[:, 0].max() <= mouth[:, 0].max() + 0.5)
    assert (lips[:, 1].min() >= mouth[:, 1].min() - 0.5) and (lips[:, 1].max() <= mouth[:, 1].max() + 0.5)
    eye = head.region_ids("eyeball_left")
    counts = [np.sum(materials[eye] == m) for m in (PUPIL, IRIS, SCLERA)]
    assert 0 < counts[0] < counts[1] + counts[0] < len(eye) and counts[2] > 0
    assert np.isin(materials[eye], (PUPIL, IRIS, SCLERA)).all()


@pytest.mark.parametrize("bad", [dict(size=8), dict(images=0), dict(clips=-1), dict(identities=2),
                                 dict(clip_frames=1), dict(clip_sizes=(64, 32)), dict(images=2.5)])
def test_bad_configs_are_refused(bad):
    with pytest.raises(Face4DError):
        PortraitConfig(**bad)


@pytest.fixture(scope="module")
def built(tmp_path_factory, head):
    out = tmp_path_factory.mktemp("portraits") / "set"
    build_portraits(out, PortraitConfig(**CONFIG), seed=3, progress=False, head=head)
    return out


def _load(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.slow
def test_folder_follows_the_contract(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert manifest["format"] == "face4d-portraits" and manifest["version"] == 1
    assert (manifest["size"], manifest["clip_size"], manifest["images"], manifest["identities"], manifest["clips"]) == (
        32, [32, 64], 14, 5, 2)
    assert manifest["labels"] == list(LABEL_NAMES) and manifest["seed"] == 3 and "ICT" in manifest["licence"]
    train, test = set(manifest["split"]["train"]), set(manifest["split"]["test"])
    assert train | test == set(range(5)) and not train & test and test
    images = [n for n in manifest["shards"] if n.startswith("images-")]
    clips = [n for n in manifest["shards"] if n.startswith("clips-")]
    assert sorted(p.name for p in built.glob("*.npz")) == sorted(manifest["shards"] + ["neutrals.npz"])
    total = 0
    for name in images:
        shard = _load(built / name)
        n = len(shard["rgb"])
        total += n
        expected = {"rgb": (np.uint8, (n, 32, 32, 3)), "landmarks": (np.float32, (n, 68, 2)),
                    "label": (np.int16, (n,)), "identity": (np.int32, (n,)), "weights": (np.float32, (n, 53)),
                    "mask": (np.uint8, (n, 32, 32)), "camera": (np.float32, (n, 6))}
        assert {k: (v.dtype, v.shape) for k, v in shard.items()} == expected
        assert set(shard["label"]) <= set(range(-1, 18)) and set(np.unique(shard["mask"])) <= {0, 1}
        assert ((shard["label"] == -1) == (shard["weights"] == 0).all(1)).all()  # neutral exactly when no weights
        split = manifest["shard_splits"][name]
        assert set(shard["identity"].tolist()) <= (train if split == "train" else test)  # one split per shard
        assert 0.2 < shard["mask"].mean() < 0.8 and shard["rgb"].std() > 20
        assert (np.abs(shard["camera"][:, :3]) <= [20, 10, 5]).all()
        assert ((shard["landmarks"] > 0) & (shard["landmarks"] < 32)).all()
    assert total == 14
    neutrals = _load(built / "neutrals.npz")
    assert neutrals["rgb"].shape == (5, 32, 32, 3) and neutrals["landmarks"].shape == (5, 68, 2)
    assert neutrals["mask"].shape == (5, 32, 32) and neutrals["identity"].tolist() == list(range(5))
    for name in clips:
        clip = _load(built / name)
        m = len(clip["identity"])
        assert clip["low"].shape == (m, 3, 32, 32, 3) and clip["high"].shape == (m, 3, 64, 64, 3)
        assert clip["identity_high"].shape == (m, 64, 64, 3) and clip["low"].dtype == np.uint8
        assert (clip["label"] >= 0).all()
        # one camera at two sizes: the high-resolution landmarks are exactly twice the low ones
        np.testing.assert_allclose(clip["landmarks_high"], 2 * clip["landmarks_low"], rtol=1e-5)
        assert np.abs(np.diff(clip["landmarks_low"], axis=1)).max() > 0.05  # the face moves over the clip


@pytest.mark.slow
def test_landmarks_are_the_projected_landmark_vertices(built, head):
    manifest = json.loads((built / "manifest.json").read_text())
    shard = _load(built / manifest["shards"][0])
    people = _load(built / "neutrals.npz")["identity_weights"]
    for k in range(len(shard["rgb"])):
        yaw, pitch, roll, distance, focal, _ = shard["camera"][k].tolist()
        camera = Camera(manifest["camera_target"], yaw, pitch, roll, distance, focal, (32, 32))
        points = head.landmarks(people[shard["identity"][k]], shard["weights"][k])
        np.testing.assert_allclose(shard["landmarks"][k], camera.project(points), atol=1e-4)


@pytest.mark.slow
def test_same_seed_same_data_in_parallel_too(built, tmp_path, head):
    again = tmp_path / "again"
    build_portraits(again, PortraitConfig(**{**CONFIG, "clips": 0}), seed=3, workers=2, progress=False, head=head)
    first = json.loads((built / "manifest.json").read_text())
    for name in [n for n in first["shards"] if n.startswith("images-")] + ["neutrals.npz"]:
        a, b = _load(built / name), _load(again / name)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key}")
    other = tmp_path / "other"
    build_portraits(other, PortraitConfig(**{**CONFIG, "clips": 0}), seed=4, progress=False, head=head)
    assert not np.array_equal(_load(built / "neutrals.npz")["rgb"], _load(other / "neutrals.npz")["rgb"])


@pytest.mark.slow
def test_sources_share_person_camera_and_light_and_take_the_next_expression(built, tmp_path, head):
    from render.neural.data import PortraitPairs, load_images

    out = tmp_path / "sources"
    build_portraits(out, PortraitConfig(**{**CONFIG, "clips": 0, "sources": True}), seed=3, progress=False, head=head)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["sources"] is True
    people = _load(out / "neutrals.npz")["identity_weights"]
    plan = PortraitPlan(head, PortraitConfig(**{**CONFIG, "clips": 0}), seed=3)
    for name in [n for n in manifest["shards"] if n.startswith("images-")]:
        plain, shard = _load(built / name), _load(out / name)
        for key in plain:  # the images themselves are those of a build without sources
            np.testing.assert_array_equal(plain[key], shard[key], err_msg=key)
        for k in range(len(shard["rgb"])):
            i = int(np.flatnonzero((plan.images["identity"] == shard["identity"][k])
                                   & (plan.images["camera"][:, 0] == shard["camera"][k, 0]))[0])
            j = int(plan.images["source"][i])
            assert plan.images["identity"][j] == shard["identity"][k]
            assert shard["source_label"][k] == plan.images["label"][j]
            yaw, pitch, roll, distance, focal, _ = shard["camera"][k].tolist()
            camera = Camera(manifest["camera_target"], yaw, pitch, roll, distance, focal, (32, 32))
            points = head.landmarks(people[shard["identity"][k]], plan.images["weights"][j])
            np.testing.assert_allclose(shard["source_landmarks"][k], camera.project(points), atol=1e-4)
            # same session and camera: the background around the head is the image's own
            top_corners = shard["source_rgb"][k][0, [0, -1]].astype(int) - shard["rgb"][k][0, [0, -1]]
            assert np.abs(top_corners).max() <= 1
    images = load_images(out)
    pairs = PortraitPairs(images, identity="source")
    item = pairs[3]
    assert np.allclose(item["identity_landmarks"].numpy(), images["source_landmarks"][3])
    np.testing.assert_allclose(item["identity_image"].numpy(), images["source_rgb"][3].transpose(2, 0, 1) / 127.5 - 1,
                               atol=1e-6)
    with pytest.raises(ValueError, match="--sources"):
        PortraitPairs(load_images(built), identity="source")


@pytest.mark.slow
def test_an_open_mouth_shows_a_dark_interior(head):
    renderer = PortraitRenderer(head)
    plan = PortraitPlan(head, PortraitConfig(size=64, images=1, identities=3), seed=0)
    camera = renderer.camera(64, yaw=10.0)
    look = plan.appearance[0]
    weights = np.zeros(53, np.float32)
    weights[head.blendshape_index("jawOpen")] = 1.0
    closed, _, _ = renderer.render(head.vertices(None, None), look, camera)
    opened, points, mask = renderer.render(head.vertices(None, weights), look, camera)
    inner = points[60:68].mean(0).round().astype(int)  # between the inner lip contours
    patch = opened[inner[1] - 1:inner[1] + 2, inner[0] - 1:inner[0] + 2].astype(float)
    assert patch.mean() < 0.5 * closed[inner[1], inner[0]].astype(float).mean()
    assert mask[inner[1], inner[0]] == 1  # the mouth interior belongs to the face mask
    changed = np.abs(opened.astype(int) - closed).sum(-1) > 30
    assert changed[:28].sum() < 0.05 * changed.sum()  # the jaw moves the lower face, not the brows


@pytest.mark.slow
def test_writes_are_atomic_and_refuse_to_overwrite(built, tmp_path, head, monkeypatch):
    before = sorted(p.name for p in built.iterdir())
    with pytest.raises(FileExistsError):
        build_portraits(built, PortraitConfig(**CONFIG), progress=False, head=head)
    assert sorted(p.name for p in built.iterdir()) == before
    calls = []

    def fail_second(renderer, plan, indices):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("interrupted")
        return original(renderer, plan, indices)

    original = portraits._render_images
    monkeypatch.setattr(portraits, "_render_images", fail_second)
    out = tmp_path / "broken"
    with pytest.raises(RuntimeError):
        build_portraits(out, PortraitConfig(**CONFIG), progress=False, head=head)
    assert not out.exists() and not list(tmp_path.iterdir())  # no output, no temporaries


@pytest.mark.slow
@pytest.mark.parametrize("args, message", [
    (["--size", "100"], "--size must be 64 or 128"),
    (["--images", "0"], "images must be an integer of at least 1"),
    (["--identities", "2"], "identities must be"),
    (["--workers", "0"], "workers must be a positive integer"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert main(["dataset", "portraits", "--out", str(out), "--images", "2", "--identities", "3", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_cli_builds_and_refuses_an_existing_folder(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["dataset", "portraits", "--out", str(out), "--images", "3", "--identities", "3", "--quiet"]
    assert main(argv) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
