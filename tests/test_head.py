import numpy as np
import pytest
import torch

from meshops import HeadModel
from meshops.facs import ACTION_UNITS
from meshops.head import default_model_path


def test_shapes_and_licence_ship_with_the_model(head):
    assert head.neutral.shape == (14388, 3) and head.neutral.dtype == np.float32
    assert head.faces.shape == (28552, 3) and head.faces.max() == head.num_vertices - 1
    assert head.identity_basis.shape == (100, 14388, 3)
    assert head.expression_basis.shape == (53, 14388, 3)
    assert (default_model_path().parent / "ICT-FaceKit-LICENSE.txt").is_file()


def test_landmark_ids_are_the_68_points_in_multipie_order(head):
    ids = head.landmark_ids
    assert ids.shape == (68,) and len(set(ids.tolist())) == 68
    assert (ids < head.regions["face"][1]).all()  # all on the face skin
    lm = head.landmark_neutral
    # left/right symmetric pairs mirror in x: jaw ends, eye corners, mouth corners
    for a, b in [(0, 16), (36, 45), (48, 54)]:
        assert lm[a, 0] == pytest.approx(-lm[b, 0], abs=0.05)
        assert lm[a, 1] == pytest.approx(lm[b, 1], abs=0.05)
    assert lm[30, 2] == lm[:, 2].max()  # nose tip is the most forward point
    assert lm[8, 1] == lm[:17, 1].min()  # chin is the lowest jaw point
    assert lm[17:27, 1].min() > lm[36:48, 1].max()  # brows above the eyes
    assert lm[48:68, 1].max() < lm[31:36, 1].min()  # mouth below the nose


def test_blendshape_names_and_action_units(head):
    assert head.blendshape_index("jawOpen") == head.expression_names.index("jawOpen")
    assert head.expression_names[head.blendshape_indices(["browDown_L", "jawOpen"])[1]] == "jawOpen"
    assert head.au_blendshapes("AU12") == ("mouthSmile_L", "mouthSmile_R")
    for names in ACTION_UNITS.values():  # every unit resolves to real blendshapes
        head.blendshape_indices(names)
    with pytest.raises(KeyError, match="unknown blendshape 'smile'"):
        head.blendshape_index("smile")
    with pytest.raises(KeyError, match="unknown action unit"):
        head.au_blendshapes("AU99")


def test_vertices_follow_the_linear_model_in_numpy_and_torch(head):
    rng = np.random.default_rng(0)
    ident, expr = rng.standard_normal((2, 100)), rng.uniform(0, 1, (2, 5, 53))
    verts = head.vertices(ident[:, None], expr)
    assert verts.shape == (2, 5, 14388, 3)
    expected = (head.neutral + np.tensordot(ident[1], head.identity_basis, 1)
                + np.tensordot(expr[1, 3], head.expression_basis, 1))
    np.testing.assert_allclose(verts[1, 3], expected, atol=1e-4)
    np.testing.assert_allclose(head.landmarks(ident[:, None], expr), verts[..., head.landmark_ids, :], atol=1e-5)
    tverts = head.vertices(torch.tensor(ident[:, None], dtype=torch.float32), torch.tensor(expr, dtype=torch.float32))
    assert isinstance(tverts, torch.Tensor) and tverts.dtype == torch.float32
    np.testing.assert_allclose(tverts.numpy(), verts, atol=1e-4)
    np.testing.assert_array_equal(head.vertices(), head.neutral)


def test_torch_vertices_are_differentiable(head):
    w = torch.zeros(53, requires_grad=True)
    head.landmarks(None, w).sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_wrong_weight_size_is_refused(head):
    with pytest.raises(ValueError, match="identity weights have 10 entries, the head model has 100"):
        head.vertices(np.zeros(10))


def test_regions(head):
    assert set(head.regions) == {"face", "head_neck", "eyeball_left", "eyeball_right"}
    assert len(head.region_ids("face")) == 9409
    with pytest.raises(KeyError, match="unknown region"):
        head.region_ids("teeth")


def test_load_a_copy_from_a_path(tmp_path, head):
    import shutil
    shutil.copy(default_model_path(), tmp_path / "h.npz")
    other = HeadModel.load(tmp_path / "h.npz")
    np.testing.assert_array_equal(other.neutral, head.neutral)
