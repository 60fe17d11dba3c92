"""Expression filling (Alg. 3) and geometry-adaptive generation (Alg. 4): the hook, x_T, an exact
("oracle") noise model, the LandmarkGenerator methods, neutral-face loaders and the CLI."""
import numpy as np
import pytest
import torch

from face4d import Face4DError
from face4d.cli import main
from face4d.data import LandmarkSequences, load_sequences, save_sequences
from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.filling import (KnownFrameReconstruction, KnownFrames, check_known, initial_noise, interpolate_known,
                            parse_known, sample_with_known_frames)
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.guidance import GradientGuidance, compose_hooks
from face4d.landmarks import neutral_landmarks_from_file, neutral_landmarks_from_mesh
from meshops.io import save_mesh

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

@pytest.fixture(scope="module")
def gen(bundle):
    return LandmarkGenerator.from_pretrained(bundle)


def _sequences(head, n=2, frames=10, seed=0):
    """Landmark sequences in centimetres: the head's neutral face, moving a little."""
    rng = np.random.default_rng(seed)
    motion = 0.3 * np.cumsum(rng.standard_normal((n, frames, 68, 3)), axis=1) / np.sqrt(frames)
    return (head.landmark_neutral + motion).astype(np.float32)


def _assert_known_equal(out, ref, known):
    """Known frames equal the input: relative error < 1e-4 (and 1e-4 cm per coordinate)."""
    got, want = out[known], ref[known]
    assert got.shape == want.shape and got.size
    assert np.abs(got - want).max() / np.abs(want).max() < 1e-4
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------- parse_known

@pytest.mark.parametrize("spec,frames,expected", [
    ("0-9,30-39", 40, list(range(10)) + list(range(30, 40))),
    ("0,5,10-12", 20, [0, 5, 10, 11, 12]),
    (" 2 - 4 , 7 ", 10, [2, 3, 4, 7]),
    ("0-5,3-7", 10, list(range(8))),  # overlaps merge
    ("9", 10, [9]),
])
def test_parse_known(spec, frames, expected):
    known = parse_known(spec, frames)
    assert known.dtype == bool and known.shape == (frames,)
    assert np.flatnonzero(known).tolist() == expected


@pytest.mark.parametrize("spec,message", [
    ("", "spec is empty"),
    ("   ", "spec is empty"),
    ("a-3", "'a-3' is not a frame index or a range"),
    ("0-9,,12", "'' is not a frame index"),
    ("-1", "'-1' is not a frame index"),
    ("1.5", "not a frame index"),
    ("0-", "not a frame index"),
    ("5-2", "range '5-2' is reversed"),
    ("0-40", r"out of range: frames are 0-39 \(the sequence has 40 frames\)"),
    ("40", "out of range"),
    ("0-39", "nothing to fill"),
    ("0-20,15-39", "nothing to fill"),
])
def test_parse_known_errors(spec, message):
    with pytest.raises(Face4DError, match=message):
        parse_known(spec, 40)


def test_check_known_errors():
    assert check_known(np.array([True, False, False]), 3, batch=2).shape == (2, 3)
    with pytest.raises(Face4DError, match="no known frame"):
        check_known(np.zeros(5, bool), 5)
    with pytest.raises(Face4DError, match="no known frame of sequence 1"):
        check_known(np.array([[True, False], [False, False]]), 2)
    with pytest.raises(Face4DError, match="known frame 4 lies past the end of sequence 1 \\(length 3\\)"):
        check_known(np.array([True, False, False, False, True]), 5, lengths=np.array([5, 3]), batch=2)
    with pytest.raises(Face4DError, match="every frame of sequence 1 is known"):
        check_known(np.array([True, True, True, False]), 4, lengths=np.array([4, 3]), batch=2)
    with pytest.raises(Face4DError, match="must be boolean"):
        check_known(np.array([1, 0]), 2)
    with pytest.raises(Face4DError, match="must have shape"):
        check_known(np.array([True, False]), 3)


# ------------------------------------------------------------------ hook, x_T and respacing

def test_respaced_q_sample_uses_the_trained_noise_levels():
    full = GaussianDiffusion(linear_beta_schedule(100))
    fast = full.respaced(7)
    assert fast.timestep_map[0] == 0 and fast.timestep_map[-1] == 99
    x0 = torch.randn(7, 3, 68, 3, dtype=torch.float64)
    noise = torch.randn_like(x0)
    k = torch.arange(7)
    np.testing.assert_allclose(fast.q_sample(x0, k, noise), full.q_sample(x0, fast.model_timesteps(k), noise),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("steps", [None, 10])
def test_known_frames_hook(steps):
    diffusion = GaussianDiffusion(linear_beta_schedule(100))
    diffusion = diffusion if steps is None else diffusion.respaced(steps)
    x0 = torch.randn(2, 6, 68, 3)
    known = np.array([True, True, False, False, False, True])
    hook = KnownFrames(diffusion, x0, known, generator=torch.Generator().manual_seed(3))
    x_prev = torch.randn_like(x0)
    t_prev = torch.full((2,), 4, dtype=torch.long)
    out = hook(x_prev, t_prev, x_prev, t_prev + 1, {})
    expected = diffusion.q_sample(x0, t_prev, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(out[:, known], expected[:, known])  # a fresh q(x_{t-1} | x0) at the hook's own index
    torch.testing.assert_close(out[:, ~known], x_prev[:, ~known])
    again = hook(x_prev, t_prev, x_prev, t_prev + 1, {})
    assert not torch.allclose(again[:, known], out[:, known])  # new noise every step
    last = hook(x_prev, None, x_prev, torch.zeros(2, dtype=torch.long), {})
    assert torch.equal(last[:, known], x0[:, known]) and torch.equal(last[:, ~known], x_prev[:, ~known])


@pytest.mark.parametrize("steps", [None, 10])
def test_initial_noise(steps):
    full = GaussianDiffusion(linear_beta_schedule(100))
    diffusion = full if steps is None else full.respaced(steps)
    x0 = torch.full((64, 4, 68, 3), 2.0)
    known = torch.tensor([True, False, False, True])
    x_T = initial_noise(diffusion, x0, known, torch.Generator().manual_seed(0))
    abar = full.alphas_cumprod[-1]  # the respaced x_T is at the trained T too
    noised = (x_T[:, known] - np.sqrt(abar) * 2.0) / np.sqrt(1 - abar)
    assert abs(float(noised.mean())) < 0.02 and abs(float(noised.std()) - 1) < 0.02
    free = x_T[:, ~known]
    assert abs(float(free.mean())) < 0.02 and abs(float(free.std()) - 1) < 0.02
    everything = initial_noise(diffusion, x0, None, torch.Generator().manual_seed(0))
    residual = (everything - np.sqrt(abar) * 2.0) / np.sqrt(1 - abar)
    assert abs(float(residual.mean())) < 0.02 and abs(float(residual.std()) - 1) < 0.02
    torch.testing.assert_close(everything[:, known], x_T[:, known])  # same draw, same seed


# -------------------------------------------------------------------------- oracle denoiser

def _oracle(diffusion, c, s):
    """The exact noise model of x0 = c + s z, z ~ N(0, I) shared by all F frames (one offset per
    landmark coordinate): eps = E[eps | x_t], by Sherman-Morrison on Cov(x_t) = (1-abar) I + abar s^2 11^T.
    Knowing some frames therefore determines the others: c + (their known offset)."""
    abar_all = torch.from_numpy(diffusion.alphas_cumprod)
    frames = c.shape[0]

    def model(x_t, t, mask=None):
        abar = abar_all[t].to(x_t.dtype).view(-1, 1, 1, 1)
        r = x_t - abar.sqrt() * c
        k = abar * s**2 / ((1 - abar) + frames * abar * s**2)
        return (r - k * r.sum(1, keepdim=True)) / (1 - abar).sqrt()

    return model


@pytest.mark.parametrize("steps,tol", [(None, 0.25), (20, 0.4)])
def test_oracle_filling_reconstructs_unknown_frames(steps, tol):
    full = GaussianDiffusion(linear_beta_schedule(100, 1e-3, 0.3))  # abar_T ~ 5e-8: x_T is noise
    diffusion = full if steps is None else full.respaced(steps)
    g = torch.Generator().manual_seed(0)
    frames, s = 8, 1.0
    c = torch.randn(frames, 68, 3, generator=g)
    x0 = c + s * torch.randn(16, 1, 68, 3, generator=g)
    known = torch.zeros(16, frames, dtype=torch.bool)
    known[:, :3] = True
    model = _oracle(full, c, s)  # called with training timesteps, so it also checks the respaced mapping
    partial = torch.where(known[..., None, None], x0, torch.zeros_like(x0))  # unknown frames are never read
    out = sample_with_known_frames(diffusion, model, partial, known, generator=torch.Generator().manual_seed(1),
                                   reconstruction=0.0)  # Alg. 3 as written
    assert torch.equal(out[known], x0[known])
    error = float((out - x0)[~known].pow(2).mean().sqrt())
    free = diffusion.p_sample_loop(model, tuple(x0.shape), generator=torch.Generator().manual_seed(1))
    unconditional = float((free - x0)[~known].pow(2).mean().sqrt())
    assert error < tol and unconditional > 1.0  # ~0.1 (all T) / ~0.23 (20 steps) vs ~1.4 without the known frames


def test_reconstruction_guidance_carries_a_single_known_frame():
    """Geometry-adaptive case: one known frame fixes the offset every frame shares. Replacement alone
    (the paper's Alg. 3/4) lets the unknown frames settle on an offset of their own, so the join
    jumps; reconstruction guidance carries the known frame's offset to them, by its gradient term
    or by its anchor term."""
    full = GaussianDiffusion(linear_beta_schedule(1000))
    diffusion = full.respaced(20)
    g = torch.Generator().manual_seed(0)
    frames, s = 10, 1.0
    c = torch.randn(frames, 68, 3, generator=g)
    x0 = c + s * torch.randn(16, 1, 68, 3, generator=g)
    known = np.zeros(frames, dtype=bool)
    known[0] = True
    model = _oracle(full, c, s)
    errors = {}
    for weight, anchor in ((0.0, False), (20.0, False), (0.0, True)):
        out = sample_with_known_frames(diffusion, model, x0, known, generator=torch.Generator().manual_seed(1),
                                       reconstruction=weight, anchor=anchor)
        assert torch.equal(out[:, 0], x0[:, 0])
        errors[weight, anchor] = float((out - x0)[:, 1:].pow(2).mean().sqrt())
    # ~0.8 with replacement alone, ~0.1 with the gradient (w = 80 diverges here: the weight has a ceiling)
    assert errors[20.0, False] < 0.5 * errors[0.0, False]
    assert errors[0.0, True] < 0.5 * errors[0.0, False]  # the anchor is exact for a shared offset


def test_known_frame_reconstruction_moves_only_coupled_unknown_frames():
    diffusion = GaussianDiffusion(linear_beta_schedule(100))
    x0 = torch.zeros(2, 4, 68, 3)
    known = np.array([True, False, False, False])
    guide = KnownFrameReconstruction(diffusion, x0, known, weight=2.0, anchor=False)
    t = torch.tensor([5, 50])
    x_t = torch.randn(2, 4, 68, 3).requires_grad_(True)
    pred = 2.0 * x_t  # frames independent: the known frame's error cannot be mended elsewhere
    torch.testing.assert_close(guide(pred, x_t, t), pred)
    coupled = x_t + x_t.mean(1, keepdim=True)  # every frame's estimate leans on the mean of all
    out = guide(coupled, x_t, t)
    torch.testing.assert_close(out[:, 0], coupled[:, 0])  # known frames are left to the replacement
    assert not torch.allclose(out[:, 1:], coupled[:, 1:])
    with pytest.raises(Face4DError, match=">= 0"):
        KnownFrameReconstruction(diffusion, x0, known, weight=-1.0)
    with pytest.raises(Face4DError, match=">= 0"):
        SamplingConfig(reconstruction=-0.5)
    with pytest.raises(Face4DError, match=">= 0"):  # not silently read as "off"
        sample_with_known_frames(diffusion.respaced(3), lambda x, t, mask=None: x, x0, known, reconstruction=-1.0)


def test_interpolate_known_is_linear_between_known_frames_and_constant_beyond():
    values = torch.zeros(2, 7, 1)
    values[0, 1], values[0, 4], values[1, 6] = 1.0, 4.0, -2.0
    known = torch.tensor([[False, True, False, False, True, False, False], [False] * 6 + [True]])
    torch.testing.assert_close(interpolate_known(values, known)[..., 0],
                               torch.tensor([[1.0, 1, 2, 3, 4, 4, 4], [-2.0] * 7]))


def test_anchor_takes_the_known_frames_offset_off_the_unknown_ones():
    """An estimate off by a shared offset (another person's face) is moved onto the known frames by
    the anchor, with no help from the network's coupling; known frames are left alone."""
    diffusion = GaussianDiffusion(linear_beta_schedule(100))
    x0 = torch.zeros(1, 5, 68, 3)
    known = np.array([True, False, False, False, True])
    offset = torch.linspace(0.5, 1.5, 5).view(1, 5, 1, 1).expand(1, 5, 68, 3)
    x_t = torch.randn(1, 5, 68, 3).requires_grad_(True)
    pred = 0.0 * x_t + offset
    out = KnownFrameReconstruction(diffusion, x0, known, weight=1.0)(pred, x_t, torch.tensor([10]))
    torch.testing.assert_close(out[:, 1:4], torch.zeros(1, 3, 68, 3))  # a linear offset: taken off exactly
    torch.testing.assert_close(out[:, [0, 4]], pred[:, [0, 4]])


def test_oracle_point_mass_gives_the_constant():
    """Data = one constant sequence c: every frame comes out as c, known ones bit-exact."""
    diffusion = GaussianDiffusion(linear_beta_schedule(50))
    c = torch.randn(6, 68, 3, generator=torch.Generator().manual_seed(0))
    abar_all = torch.from_numpy(diffusion.alphas_cumprod)

    def model(x_t, t, mask=None):
        abar = abar_all[t].to(x_t.dtype).view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * c) / (1 - abar).sqrt()

    known = np.array([True, False, False, False, False, True])
    out = sample_with_known_frames(diffusion, model, c.expand(3, -1, -1, -1).clone(), known, passes=2,
                                   generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, c.expand(3, -1, -1, -1), atol=1e-4, rtol=0)


def test_harmonising_passes_restart_from_the_previous_result(monkeypatch):
    """Alg. 4: pass 1 starts from N(0, I) on unknown frames; pass i > 1 draws x_T for all frames
    from q(x_T | x0 of pass i-1)."""
    diffusion = GaussianDiffusion(linear_beta_schedule(100)).respaced(5)
    abar = diffusion.alphas_cumprod[-1]
    x0 = torch.zeros(32, 5, 68, 3)
    x0[:, 0] = 3.0
    known = np.array([True, False, False, False, False])
    starts, results = [], []
    loop = diffusion.p_sample_loop

    def spy(*args, **kwargs):
        starts.append(kwargs["x_T"].clone())
        results.append(loop(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(diffusion, "p_sample_loop", spy)
    model = lambda x, t, mask=None: 0.5 * x - 1.0  # noqa: E731 - pulls the unknown frames far from 0
    out = sample_with_known_frames(diffusion, model, x0, known, passes=3, generator=torch.Generator().manual_seed(0))
    assert len(starts) == 3 and torch.equal(out, results[-1])
    first = starts[0][:, 1:]
    assert abs(float(first.mean())) < 0.03 and abs(float(first.std()) - 1) < 0.03
    for previous, start in zip(results[:-1], starts[1:]):
        assert float(previous[:, 1:].abs().mean()) > 1.0
        residual = (start - np.sqrt(abar) * previous) / np.sqrt(1 - abar)
        assert abs(float(residual.mean())) < 0.03 and abs(float(residual.std()) - 1) < 0.03


def test_guidance_composes_before_known_frames():
    diffusion = GaussianDiffusion(linear_beta_schedule(100)).respaced(4)
    x0 = torch.randn(2, 5, 68, 3)
    known = np.array([True, True, False, False, False])
    guidance = GradientGuidance(diffusion, lambda x, t, mask: -(x - 5.0).pow(2).flatten(1).sum(1))
    keep = KnownFrames(diffusion, x0, known)
    hook = compose_hooks(guidance, keep)
    x_prev = torch.zeros_like(x0)
    step = {"mean": x_prev, "variance": torch.ones(2, 1, 1, 1), "log_variance": torch.zeros(2, 1, 1, 1)}
    out = hook(x_prev, None, x_prev, torch.zeros(2, dtype=torch.long), step)
    assert torch.equal(out[:, known], x0[:, known])  # guidance did not survive on known frames
    assert float(out[:, ~known].mean()) > 0  # but did move the unknown ones


# -------------------------------------------------------------------------- LandmarkGenerator

@pytest.mark.parametrize("sampling,label", [
    (SamplingConfig(steps=6), None),
    (SamplingConfig(sampler="paper"), None),
    (SamplingConfig(steps=6), "anger"),
    (SamplingConfig(sampler="paper"), "fear"),
])
def test_fill_keeps_known_frames(gen, head, sampling, label):
    seqs = _sequences(head, n=2, frames=10)
    known = parse_known("0-2,8-9", 10)
    out = gen.fill(seqs, known, num=2, seed=1, label=label, sampling=sampling)
    assert out.landmarks.shape == (4, 10, 68, 3) and out.lengths.tolist() == [10] * 4
    ref = np.repeat(seqs, 2, axis=0)
    _assert_known_equal(out.landmarks, ref, np.broadcast_to(known, (4, 10)))
    assert not np.allclose(out.landmarks[:, ~known], ref[:, ~known], atol=1e-3)
    assert out.labels.tolist() == [label or ""] * 4 and out.types.tolist() == [""] * 4
    again = gen.fill(seqs, known, num=2, seed=1, label=label, sampling=sampling)
    np.testing.assert_array_equal(out.landmarks, again.landmarks)


def test_fill_padded_batch_and_per_sequence_masks(gen, head):
    lm = _sequences(head, n=2, frames=9)
    lm[1, 6:] = 0.0
    seqs = LandmarkSequences(landmarks=lm, lengths=[9, 6], labels=["anger", ""], types=["N2E", ""], fps=25.0)
    known = np.zeros((2, 9), bool)
    known[0, :4] = True
    known[1, [0, 5]] = True
    out = gen.fill(seqs, known, seed=0, sampling=SamplingConfig(steps=5))
    _assert_known_equal(out.landmarks, lm, known)
    assert out.lengths.tolist() == [9, 6] and out.fps == 25.0
    assert np.all(out.landmarks[1, 6:] == 0)  # padding stays padding
    single = gen.fill(lm[0], known[0], seed=0, sampling=SamplingConfig(steps=5))  # an (F, 68, 3) array
    assert single.landmarks.shape == (1, 9, 68, 3) and single.fps == gen.fps
    _assert_known_equal(single.landmarks[0], lm[0], known[0])
    with pytest.raises(Face4DError, match="known frame 7 lies past the end of sequence 1"):
        gen.fill(seqs, np.eye(9, dtype=bool)[[0, 7]].any(0), sampling=SamplingConfig(steps=2))


def test_fill_errors(gen, head):
    seqs = _sequences(head, n=1, frames=6)
    fast = SamplingConfig(steps=2)
    with pytest.raises(Face4DError, match="no known frame"):
        gen.fill(seqs, np.zeros(6, bool), sampling=fast)
    with pytest.raises(Face4DError, match="nothing to fill"):
        gen.fill(seqs, np.ones(6, bool), sampling=fast)
    with pytest.raises(Face4DError, match="different units"):
        gen.fill(seqs / 100.0, parse_known("0", 6), sampling=fast)  # metres
    with pytest.raises(Face4DError, match="shape"):
        gen.fill(seqs[0, :, :10], parse_known("0", 6), sampling=fast)
    with pytest.raises(Face4DError, match="unknown label"):
        gen.fill(seqs, parse_known("0", 6), label="smirk", sampling=fast)


@pytest.mark.parametrize("sequence_type,index", [("N2E", 0), ("E2N", -1)])
def test_generate_from_neutral_enforces_the_neutral(gen, head, sequence_type, index):
    neutral = head.landmark_neutral + 0.2 * np.random.default_rng(0).standard_normal((68, 3)).astype(np.float32)
    out = gen.generate_from_neutral(neutral, frames=8, sequence_type=sequence_type, label="happiness", num=2,
                                    seed=3, passes=2, sampling=SamplingConfig(steps=4))
    assert out.landmarks.shape == (2, 8, 68, 3)
    _assert_known_equal(out.landmarks[:, index], np.broadcast_to(neutral, (2, 68, 3)), np.ones(2, bool))
    others = np.delete(out.landmarks, index % 8, axis=1)
    assert np.abs(others - neutral).mean() > 0.1  # the rest is generated
    assert out.labels.tolist() == ["happiness"] * 2 and out.types.tolist() == [sequence_type] * 2
    assert out.texts.tolist() == ["happiness"] * 2
    assert out.texts_enriched[0] == ("from a neutral face to a happy face" if sequence_type == "N2E"
                                     else "from a happy face to a neutral face")
    free = gen.generate_from_neutral(neutral, frames=8, sequence_type=sequence_type, seed=3, passes=1,
                                     sampling=SamplingConfig(sampler="paper"))
    _assert_known_equal(free.landmarks[:, index], neutral[None], np.ones(1, bool))
    assert free.labels.tolist() == [""] and free.types.tolist() == [sequence_type] and free.texts_enriched[0] == ""


@pytest.mark.parametrize("passes,sampling,calls", [
    (5, SamplingConfig(steps=4), 20),
    (2, SamplingConfig(steps=7), 14),
    (2, SamplingConfig(sampler="paper"), 200),
])
def test_harmonisation_pass_count(gen, head, passes, sampling, calls):
    counted = []
    original = gen.denoiser.forward
    gen.denoiser.forward = lambda *a, **k: counted.append(1) or original(*a, **k)
    try:
        gen.generate_from_neutral(head.landmark_neutral, frames=5, passes=passes, sampling=sampling)
    finally:
        del gen.denoiser.forward
    assert len(counted) == calls  # passes * steps


def test_generate_from_neutral_errors(gen, head, bundle, tmp_path):
    import shutil
    neutral = head.landmark_neutral
    fast = SamplingConfig(steps=2)
    for kwargs, message in [({"neutral": neutral[:60]}, r"shape \(68, 3\)"),
                            ({"neutral": np.full((68, 3), np.nan)}, "NaN"),
                            ({"neutral": neutral / 100}, "different units"),
                            ({"neutral": neutral, "frames": 1}, "frames must be between 2 and 64"),
                            ({"neutral": neutral, "sequence_type": "X"}, "unknown sequence type"),
                            ({"neutral": neutral, "passes": 0}, "passes must be >= 1"),
                            ({"neutral": neutral, "label": "grin"}, "unknown label"),
                            ({"neutral": neutral, "label": "anger", "text": "a smile"}, "a label or a text, not both"),
                            ({"neutral": neutral, "text": "a smile"}, "no text guide")]:
        with pytest.raises(Face4DError, match=message):
            gen.generate_from_neutral(**kwargs, sampling=fast)
    shutil.copytree(bundle, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "classifier_S")
    with pytest.raises(Face4DError, match="no type S classifier"):
        LandmarkGenerator.from_pretrained(tmp_path / "b").generate_from_neutral(neutral, label="anger", sampling=fast)


# ------------------------------------------------------------------------------ neutral faces

def test_neutral_from_mesh(head, tmp_path):
    import trimesh
    path = save_mesh(tmp_path / "face.ply", head.vertices(), head.faces)
    np.testing.assert_array_equal(neutral_landmarks_from_mesh(path, head), head.landmark_neutral)
    obj = save_mesh(tmp_path / "face.obj", head.vertices(), head.faces)
    np.testing.assert_allclose(neutral_landmarks_from_mesh(obj), head.landmark_neutral, atol=1e-4)
    sphere = trimesh.creation.icosphere(subdivisions=2)
    save_mesh(tmp_path / "sphere.obj", sphere.vertices, sphere.faces)
    with pytest.raises(Face4DError, match=f"has 162 vertices and 320 triangles.*{head.num_vertices} vertices, "
                                          f"{len(head.faces)} triangles"):
        neutral_landmarks_from_mesh(tmp_path / "sphere.obj", head)
    save_mesh(tmp_path / "rewired.ply", head.vertices(), head.faces[:, [0, 2, 1]])
    with pytest.raises(Face4DError, match="connected differently"):
        neutral_landmarks_from_mesh(tmp_path / "rewired.ply", head)


def test_neutral_from_file(head, tmp_path):
    seq = _sequences(head, n=1, frames=5)
    save_sequences(tmp_path / "n2e.npz", LandmarkSequences(seq, [5], ["anger"], ["N2E"]))
    np.testing.assert_array_equal(neutral_landmarks_from_file(tmp_path / "n2e.npz"), seq[0, 0])
    save_sequences(tmp_path / "e2n.npz", LandmarkSequences(seq, [5], ["anger"], ["E2N"]))
    np.testing.assert_array_equal(neutral_landmarks_from_file(tmp_path / "e2n.npz"), seq[0, 4])
    np.save(tmp_path / "n.npy", seq[0, 2])
    np.testing.assert_array_equal(neutral_landmarks_from_file(tmp_path / "n.npy"), seq[0, 2])
    np.savetxt(tmp_path / "n.txt", seq[0, 3])
    np.testing.assert_allclose(neutral_landmarks_from_file(tmp_path / "n.txt"), seq[0, 3], rtol=1e-6)
    np.save(tmp_path / "bad.npy", seq[0, 2, :67])
    with pytest.raises(Face4DError, match=r"must be a \(68, 3\) array of numbers, got float32 \(67, 3\)"):
        neutral_landmarks_from_file(tmp_path / "bad.npy")
    nan = seq[0, 2].copy()
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(Face4DError, match="NaN"):
        neutral_landmarks_from_file(tmp_path / "nan.npy")
    with pytest.raises(Face4DError, match="no such file"):
        neutral_landmarks_from_file(tmp_path / "missing.npy")
    (tmp_path / "n.json").write_text("[]")
    with pytest.raises(Face4DError, match="unsupported landmark file"):
        neutral_landmarks_from_file(tmp_path / "n.json")


# ------------------------------------------------------------------------------------- CLI

def test_cli_fill(bundle, head, tmp_path, capsys):
    seqs = _sequences(head, n=2, frames=10)
    save_sequences(tmp_path / "in.npz", LandmarkSequences(seqs, [10, 10], ["", ""], ["", ""]))
    out = tmp_path / "filled"
    argv = ["fill", "--model", str(bundle), "--input", str(tmp_path / "in.npz"), "--known", "0-3,8-9",
            "--sequence-index", "1", "--num", "2", "--steps", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    assert "filled 4 of 10 frames: wrote 2 sequence(s)" in capsys.readouterr().out
    assert sorted(f.name for f in out.iterdir()) == ["sequence_000.npz", "sequence_001.npz"]
    known = parse_known("0-3,8-9", 10)
    for f in out.iterdir():
        filled = load_sequences(f)
        assert filled.landmarks.shape == (1, 10, 68, 3)
        _assert_known_equal(filled.landmarks[0], seqs[1], known)
    assert main(argv) == 2 and "already exists" in capsys.readouterr().err
    labelled = ["--label", "anger", "--out", str(tmp_path / "lab")]
    assert main([*argv[:-3], *labelled, "--quiet"]) == 0
    assert load_sequences(tmp_path / "lab" / "sequence_000.npz").labels.tolist() == ["anger"]
    # --reconstruction 0 --no-anchor runs Alg. 3 as written: the same seed fills the unknown frames differently
    plain = ["--reconstruction", "0", "--no-anchor", "--out", str(tmp_path / "plain")]
    assert main([*argv[:-3], *plain, "--quiet"]) == 0
    guided, written = (load_sequences(d / "sequence_000.npz").landmarks[0] for d in (out, tmp_path / "plain"))
    _assert_known_equal(written, seqs[1], known)
    assert np.abs(guided[~known] - written[~known]).max() > 1e-3


@pytest.mark.parametrize("extra,message", [
    (["--known", "0-10"], r"out of range: frames are 0-9 \(the sequence has 10 frames\)"),
    (["--known", "0-9"], "nothing to fill"),
    (["--known", "3-1"], "reversed"),
    (["--known", "x"], "not a frame index"),
    (["--known", "0", "--sequence-index", "2"], "--sequence-index 2 is out of range"),
    (["--known", "0", "--label", "grin"], "unknown label"),
    (["--known", "0", "--reconstruction", "-1"], "reconstruction guidance weight must be >= 0"),
])
def test_cli_fill_errors(bundle, head, tmp_path, capsys, extra, message):
    save_sequences(tmp_path / "in.npz", LandmarkSequences(_sequences(head, n=1, frames=10), [10], [""], [""]))
    out = tmp_path / "out"
    code = main(["fill", "--model", str(bundle), "--input", str(tmp_path / "in.npz"), "--steps", "2",
                 "--out", str(out), "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("face4d: error:") and len(err.strip().splitlines()) == 1
    assert message.replace("\\", "") in err or __import__("re").search(message, err)
    assert not out.exists()


def test_cli_generate_from_neutral(bundle, head, tmp_path, capsys):
    import trimesh
    seq = _sequences(head, n=1, frames=6)
    save_sequences(tmp_path / "n.npz", LandmarkSequences(seq, [6], [""], [""]))
    base = ["generate", "--model", str(bundle), "--frames", "7", "--steps", "3", "--quiet"]
    assert main([*base, "--neutral-landmarks", str(tmp_path / "n.npz"), "--type", "E2N", "--passes", "2",
                 "--num", "2", "--out", str(tmp_path / "a")]) == 0
    assert "wrote 2 sequence(s) of 7 frames" in capsys.readouterr().out
    for name in ("sequence_000.npz", "sequence_001.npz"):
        out = load_sequences(tmp_path / "a" / name)
        assert out.types.tolist() == ["E2N"] and out.landmarks.shape == (1, 7, 68, 3)
        _assert_known_equal(out.landmarks[0, -1], seq[0, 0], np.ones(68, bool))

    save_mesh(tmp_path / "face.obj", head.vertices(), head.faces)
    assert main([*base, "--neutral-mesh", str(tmp_path / "face.obj"), "--label", "anger", "--passes", "1",
                 "--out", str(tmp_path / "b")]) == 0
    out = load_sequences(tmp_path / "b" / "sequence_000.npz")
    assert out.types.tolist() == ["N2E"] and out.labels.tolist() == ["anger"]  # N2E by default
    np.testing.assert_allclose(out.landmarks[0, 0], head.landmark_neutral, atol=1e-4)

    sphere = trimesh.creation.icosphere()
    save_mesh(tmp_path / "sphere.obj", sphere.vertices, sphere.faces)
    capsys.readouterr()
    assert main([*base, "--neutral-mesh", str(tmp_path / "sphere.obj"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"{head.num_vertices} vertices, {len(head.faces)} triangles" in err and not (tmp_path / "c").exists()
    assert main([*base, "--passes", "3", "--out", str(tmp_path / "d")]) == 2
    assert "--passes only applies" in capsys.readouterr().err
    np.save(tmp_path / "m.npy", head.landmark_neutral / 100)  # metres
    assert main([*base, "--neutral-landmarks", str(tmp_path / "m.npy"), "--out", str(tmp_path / "e")]) == 2
    assert "different units" in capsys.readouterr().err and not (tmp_path / "e").exists()
    with pytest.raises(SystemExit):
        main([*base, "--neutral-mesh", "a.obj", "--neutral-landmarks", "b.npz", "--out", str(tmp_path / "f")])
    assert "not allowed with argument" in capsys.readouterr().err
