"""Per-label amplitude gains (face4d.label_gains): the file, and how generation applies them."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from face4d.errors import Face4DError
from face4d.eval.motion import landmark_stats
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.label_gains import GAINS_FILE, LabelGains, gains_from_amplitudes, read_gains, write_gains

FAST = SamplingConfig(steps=5)


@pytest.fixture()
def calibrated(bundle, tmp_path):
    """The tiny bundle with gains for anger (2x) and fear (0.5x), measured under classifier control."""
    root = tmp_path / "bundle"
    shutil.copytree(bundle, root)
    write_gains(root, LabelGains("classifier", {"anger": 2.0, "fear": 0.5}, {"per_label": 1}))
    return root


def test_gains_round_trip_and_are_data_over_model(tmp_path):
    gains = gains_from_amplitudes({"anger": 0.2, "fear": 0.3}, {"anger": 0.1, "fear": 0.6})
    assert gains == pytest.approx({"anger": 2.0, "fear": 0.5})
    write_gains(tmp_path, LabelGains("classifier", gains, {"seed": 0}))
    stored = read_gains(tmp_path)
    assert stored.label_control == "classifier" and stored.gain("anger") == pytest.approx(2.0)
    assert stored.gain("surprise") == 1.0 and stored.gain(None) == 1.0  # uncalibrated labels keep their amplitude
    assert read_gains(tmp_path / "elsewhere") is None


def test_bad_gains_are_refused(tmp_path):
    with pytest.raises(Face4DError, match="outside"):
        LabelGains("classifier", {"anger": 9.0})
    with pytest.raises(Face4DError, match="missing"):
        gains_from_amplitudes({"anger": 0.2}, {"fear": 0.1})
    (tmp_path / GAINS_FILE).write_text(json.dumps({"format": "something else", "version": 1}))
    with pytest.raises(Face4DError, match="not a face4d-label-gains"):
        read_gains(tmp_path)


def test_generation_scales_each_label_by_its_gain(bundle, calibrated):
    plain, gained = LandmarkGenerator.from_pretrained(bundle), LandmarkGenerator.from_pretrained(calibrated)
    labels, types = ["anger", "fear", "surprise"], ["N2E", "E2N", "N2E"]
    base = landmark_stats(plain.generate(labels, 10, 3, seed=1, sequence_type=types, sampling=FAST))
    out = landmark_stats(gained.generate(labels, 10, 3, seed=1, sequence_type=types, sampling=FAST))
    np.testing.assert_allclose(np.asarray(out.apex_amplitude), np.asarray(base.apex_amplitude) * [2.0, 0.5, 1.0],
                               rtol=1e-4)
    # with the user's intensity on top, and off with calibrate=False
    both = landmark_stats(gained.generate(labels, 10, 3, seed=1, sequence_type=types, sampling=FAST, intensity=0.5))
    np.testing.assert_allclose(np.asarray(both.apex_amplitude), np.asarray(base.apex_amplitude) * [1.0, 0.25, 0.5],
                               rtol=1e-4)
    off = gained.generate(labels, 10, 3, seed=1, sequence_type=types, sampling=replace(FAST, calibrate=False))
    np.testing.assert_allclose(off.landmarks, plain.generate(labels, 10, 3, seed=1, sequence_type=types,
                                                             sampling=FAST).landmarks)


def test_geometry_adaptive_generation_keeps_the_neutral_and_scales_the_rest(bundle, calibrated):
    plain, gained = LandmarkGenerator.from_pretrained(bundle), LandmarkGenerator.from_pretrained(calibrated)
    neutral = plain.normalizer.mean
    a = plain.generate_from_neutral(neutral, frames=8, label="anger", passes=1, seed=2, sampling=FAST)
    b = gained.generate_from_neutral(neutral, frames=8, label="anger", passes=1, seed=2, sampling=FAST)
    np.testing.assert_allclose(b.landmarks[0, 0], a.landmarks[0, 0], atol=1e-5)  # the person's neutral stays
    np.testing.assert_allclose(b.landmarks[0] - b.landmarks[0, :1], 2.0 * (a.landmarks[0] - a.landmarks[0, :1]),
                               rtol=1e-4, atol=1e-5)


def test_unguided_and_text_generation_are_not_calibrated(bundle, calibrated):
    plain, gained = LandmarkGenerator.from_pretrained(bundle), LandmarkGenerator.from_pretrained(calibrated)
    np.testing.assert_array_equal(gained.generate(None, 8, 2, seed=4, sampling=FAST).landmarks,
                                  plain.generate(None, 8, 2, seed=4, sampling=FAST).landmarks)
    assert gained.gains([None, None], FAST).tolist() == [1.0, 1.0]


def test_tables_per_step_count_round_trip_and_are_chosen_by_the_sampler(tmp_path, bundle, calibrated):
    """Fewer fast-sampler steps over-act some labels more, so a bundle may hold gains per step count:
    sampling with those steps uses their table, any other count the main one (measured at MAIN_STEPS)."""
    from face4d.label_gains import MAIN_STEPS

    main = read_gains(calibrated)
    both = main.with_steps(4, {"anger": 1.5}, {"steps": 4})
    assert both.gain("anger") == 2.0 and both.gain("anger", MAIN_STEPS) == 2.0 and both.gain("anger", 4) == 1.5
    assert both.gain("fear", 4) == 1.0  # a label the step table lacks keeps its amplitude there
    replaced = both.with_steps(MAIN_STEPS, {"anger": 3.0}, {"steps": MAIN_STEPS})
    assert replaced.gain("anger") == 3.0 and replaced.gain("anger", 4) == 1.5
    write_gains(calibrated, both)
    assert read_gains(calibrated) == both
    with pytest.raises(Face4DError, match="outside"):
        main.with_steps(4, {"anger": 20.0}, {})

    plain, gained = LandmarkGenerator.from_pretrained(bundle), LandmarkGenerator.from_pretrained(calibrated)
    for steps, factor in ((5, 2.0), (4, 1.5)):
        fast = SamplingConfig(steps=steps)
        base = landmark_stats(plain.generate(["anger"], 10, 1, seed=1, sequence_type=["N2E"], sampling=fast))
        out = landmark_stats(gained.generate(["anger"], 10, 1, seed=1, sequence_type=["N2E"], sampling=fast))
        np.testing.assert_allclose(np.asarray(out.apex_amplitude), np.asarray(base.apex_amplitude) * factor,
                                   rtol=1e-4)
