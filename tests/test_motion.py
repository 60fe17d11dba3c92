"""The motion-quality measures on hand-made sequences of known speed, jitter, spectrum and amplitude."""
from __future__ import annotations

import numpy as np
import pytest

from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.eval.motion import (apex_amplitude, high_frequency_share, jitter, landmark_stats, neutral_indices, speed,
                                timing)


def _points(offsets: np.ndarray, points: int = 5) -> np.ndarray:
    """A sequence (F, points, 3) whose every point moves along x by ``offsets`` (F,)."""
    seq = np.zeros((len(offsets), points, 3))
    seq[:, :, 0] = np.asarray(offsets)[:, None]
    seq[:, :, 1] = np.arange(points)[None]  # points apart, moving together
    return seq


def test_constant_velocity_has_its_speed_and_no_jitter():
    seq = _points(0.02 * np.arange(30))
    assert speed(seq) == pytest.approx(0.02)
    assert jitter(seq) == pytest.approx(0.0, abs=1e-12)
    assert high_frequency_share(seq, fps=30) == pytest.approx(0.0, abs=1e-12)  # a line is removed whole


def test_alternating_tremble_has_known_jitter_and_is_all_high_frequency():
    # +-a around rest: |x_{f+1} - x_f| = 2a, |x_{f+1} - 2 x_f + x_{f-1}| = 4a; its frequency is 15 Hz at 30 fps
    a = 0.01
    seq = _points(a * (-1.0) ** np.arange(31))
    assert speed(seq) == pytest.approx(2 * a)
    assert jitter(seq) == pytest.approx(4 * a)
    assert high_frequency_share(seq, fps=30) > 0.95
    assert high_frequency_share(seq, fps=30, cutoff=16) == pytest.approx(0.0, abs=1e-12)


def test_slow_expression_is_low_frequency_and_tremble_on_it_is_seen():
    frames = np.arange(40)
    ramp = 0.3 * np.clip((frames - 5) / 20, 0, 1)
    smooth = _points(ramp * ramp * (3 - 2 * ramp / 0.3) / 0.3)  # eased rise, then hold
    assert high_frequency_share(smooth, fps=30) < 0.01
    trembling = smooth + _points(0.01 * np.random.default_rng(0).standard_normal(40))
    assert high_frequency_share(trembling, fps=30) > 10 * high_frequency_share(smooth, fps=30)
    assert jitter(trembling) > 10 * jitter(smooth)


def test_amplitude_and_timing_from_the_neutral_end():
    fps = 10.0
    offsets = np.concatenate([np.zeros(5), np.linspace(0, 0.5, 11), np.full(4, 0.5)])  # rest, rise 1 s, hold
    n2e = _points(offsets)
    assert apex_amplitude(n2e, 0) == pytest.approx(0.5)
    onset, apex = timing(n2e, 0, fps)
    assert onset == pytest.approx(0.6)  # first frame at >= 10%: index 6 (0.05 of 0.5 is frame 5's 0.0 -> 6)
    assert apex == pytest.approx(1.4)  # first at >= 90% (0.45): index 14
    e2n = n2e[::-1]
    assert apex_amplitude(e2n, len(e2n) - 1) == pytest.approx(0.5)
    assert timing(e2n, len(e2n) - 1, fps) == pytest.approx((onset, apex))
    assert apex_amplitude(e2n) == pytest.approx(0.5)  # unknown order: either end
    assert np.isnan(timing(_points(np.zeros(10)), 0, fps)[0])  # a still sequence has no onset


def test_landmark_stats_use_valid_frames_and_types():
    rise = np.linspace(0, 0.4, 20)
    seqs = np.zeros((3, 25, 68, 3), np.float32)
    seqs[0, :20, :, 0] = rise[:, None]
    seqs[1, :20, :, 0] = rise[::-1, None]
    seqs[2, :20, :, 0] = rise[:, None]
    batch = LandmarkSequences(landmarks=seqs, lengths=[20, 20, 20], labels=["a", "b", "c"],
                              types=["N2E", "E2N", ""], fps=30.0)
    assert neutral_indices(batch) == [0, 19, None]
    stats = landmark_stats(batch)
    np.testing.assert_allclose(stats.apex_amplitude, 0.4, rtol=1e-5)  # padding (zeros) would give more
    np.testing.assert_allclose(stats.speed, 0.4 / 19, rtol=1e-5)
    assert np.isnan(stats.onset[2]) and np.isfinite(stats.onset[:2]).all()
    assert stats.mean("onset") == pytest.approx(stats.onset[:2].mean())
    assert stats.mean("speed", np.array([True, False, False])) == pytest.approx(stats.speed[0])


def test_bad_sequences_are_refused():
    with pytest.raises(Face4DError, match=r"\(F, P, 3\)"):
        speed(np.zeros((4, 3)))
    with pytest.raises(Face4DError, match="at least 3 frames"):
        jitter(np.zeros((2, 5, 3)))
    with pytest.raises(Face4DError, match="fps must be positive"):
        high_frequency_share(np.zeros((5, 2, 3)), fps=0)
