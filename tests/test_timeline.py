"""Timelines: the format (command line and JSON), its checks, the window plan, the blending of joins,
resampling to the output fps and loops; then (slow) real shots with the shipped model, through the
API and the CLI, and a 300-frame export imported by Blender."""
import json

import numpy as np
import pytest

from face4d.cli import main
from face4d.data.interchange import LandmarkSequences, save_sequences
from face4d.errors import Face4DError
from face4d.timeline import Key, Timeline, load_timeline, make_timeline, parse_timeline
from face4d.windows import CONTEXT, WINDOW, inertialize, plan_shot, resample, time_warp

SHOT = "0s:neutral, 1.2s:high_smile@0.8, 2.5s:surprise, 4s:neutral"


# ----------------------------------------------------------------------------------- the format

def test_parse_the_command_line_form(tmp_path):
    path = tmp_path / "pose.npz"
    save_sequences(path, LandmarkSequences(np.random.default_rng(0).normal(size=(1, 4, 68, 3)) + 5, [4], [""], [""]))
    timeline = parse_timeline(f'{SHOT}, 150f:"from a neutral face to a smile, then more", 6:{path}#3@0.5', duration=7)
    kinds = [key.kind for key in timeline.keys]
    assert kinds == ["neutral", "label", "label", "neutral", "text", "keyframe"]
    assert timeline.keys[1] == Key(1.2, "s", label="high_smile", intensity=0.8)
    assert timeline.keys[4].text == "from a neutral face to a smile, then more" and timeline.keys[4].unit == "f"
    assert timeline.keys[5].keyframe == str(path) and timeline.keys[5].frame == 3 and timeline.keys[5].intensity == 0.5
    assert timeline.times == pytest.approx([0, 1.2, 2.5, 4, 5, 6])
    assert timeline.num_frames == 210 and timeline.key_frames(30) == [0, 36, 75, 120, 150, 180]


def test_json_form_round_trips_and_options_override(tmp_path):
    timeline = parse_timeline(SHOT, duration=5, hold=0.5, fps=25)
    path = tmp_path / "shot.json"
    path.write_text(json.dumps(timeline.to_dict()))
    again = load_timeline(path)
    assert again == timeline
    assert load_timeline(path, fps=60, loop=True).fps == 60 and load_timeline(path, loop=True).loop
    assert make_timeline([{"time": 0, "label": "neutral"}, "1s:anger"], duration=2).keys[1].label == "anger"


def test_default_duration_is_a_second_after_the_last_key():
    assert parse_timeline(SHOT).duration == 5.0 and parse_timeline(SHOT).num_frames == 150


@pytest.mark.parametrize("text, options, message", [
    ("0s:neutral, 2s:anger, 1s:surprise", {}, "in time order"),
    ("0s:neutral, 1s:smirk", {}, "unknown label 'smirk'"),
    ("0s:neutral, 5s:anger", {"duration": 4}, "past the end of the shot"),
    ("0s:neutral, 1s:anger@2", {}, "intensity must be in [0, 1.5]"),
    ("0s:neutral, 1s:anger@x", {}, "must be a number"),
    ("0s:neutral, 1s:anger", {"fps": 0}, "fps must be from 1 to 120"),
    ("0s:neutral, 0.01s:anger", {}, "fall on the same frame"),
    ("0s:neutral, 1x:anger", {}, "bad time"),
    ("neutral", {}, "write TIME:CONDITION"),
    ("0s:neutral@0.5", {}, "neutral face takes no intensity"),
    ("0s:missing.npz", {}, "no such keyframe file"),
    ('0s:"open', {}, "unbalanced double quote"),
    ("0s:neutral", {"hold": -1}, "hold must be >= 0"),
])
def test_bad_timelines_are_one_line_errors(text, options, message):
    with pytest.raises(Face4DError, match=None) as error:
        parse_timeline(text, **options)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("content, message", [
    ("{not json", "corrupt timeline JSON"),
    ('{"keys": [{"label": "anger"}]}', "has no time"),
    ('{"keys": [{"time": 0, "label": "anger", "colour": 1}]}', "unknown field(s) colour"),
    ('{"keys": [], "speed": 2}', "unknown timeline field(s) speed"),
    ('{"keys": "0s:anger"}', "'keys' must be a list"),
])
def test_bad_json_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "shot.json"
    path.write_text(content)
    with pytest.raises(Face4DError) as error:
        load_timeline(path)
    assert message in str(error.value)


@pytest.mark.parametrize("extra, message", [
    (["--timeline", "0s:neutral, 2s:anger, 1s:surprise"], "in time order"),
    (["--timeline", "0s:neutral, 1s:smirk"], "unknown label 'smirk'"),
    (["--timeline", "0s:neutral, 5s:anger", "--duration", "4"], "past the end"),
    (["--timeline", "0s:neutral, 1s:anger@1.7"], "intensity must be in"),
    (["--timeline", "0s:neutral, 1s:anger", "--fps", "0"], "fps must be from"),
    (["--timeline", "shot.json"], "no such file"),
    (["--label", "anger", "--loop"], "apply to a --timeline"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    code = main(["generate", "--out", str(tmp_path / "out"), "--export", "pc2", "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("face4d: error:")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- the plan

def _covered(plan) -> np.ndarray:
    made = np.zeros(plan.extended, int)
    for w in plan.windows:
        made[w.first: w.stop] += 1
        assert w.length == WINDOW and w.start <= w.first - 1 and w.stop <= w.start + w.length
    return made


@pytest.mark.parametrize("options", [{"duration": 10}, {"duration": 10, "hold": 0, "transition": 2.5},
                                     {"duration": 6, "loop": True}])
def test_plan_fills_every_unknown_frame_once_and_keeps_keys(options):
    timeline = parse_timeline("0s:neutral, 1.2s:high_smile@0.8, 2.5s:surprise, 4s:neutral, 5s:anger", **options)
    plan = plan_shot(timeline, 30)
    made = _covered(plan)
    assert (made[: plan.frames] == (plan.key[: plan.frames] < 0)).all()
    assert [int(plan.key[f]) for f in plan.key_frames] == list(range(len(timeline.keys)))
    for first, stop, _, _ in plan.runs:  # a transition never lasts longer than the timeline allows
        assert stop - first <= round(timeline.transition * 30)
    if timeline.hold == 0:  # long transitions are chained: windows overlap the previous one by CONTEXT
        assert any(w.first - w.start == CONTEXT and made[w.start: w.first].all() for w in plan.windows[1:])


def test_holds_and_transitions():
    plan = plan_shot(parse_timeline("0s:neutral, 3s:anger, 3.5s:surprise", duration=5, hold=0.3), 30)
    anger = np.flatnonzero(plan.key == 1)
    # held until the next transition; here the next key is close, so the hold leaves it 0.2 s at least
    assert anger[0] == 90 and anger[-1] == 90 + 9 and 105 - anger[-1] >= 6
    neutral = np.flatnonzero(plan.key == 0)  # far from the next key: held until a 1 s transition
    assert neutral[-1] == 90 - 30
    assert (plan.key[105:] == 2).all()  # the last key holds to the end


# ----------------------------------------------------------------------------------- joins

def test_inertialize_makes_position_and_velocity_continuous():
    x = np.zeros((30, 1, 3), np.float32)
    x[10:20, 0, 0] = 1.0 + 0.05 * np.arange(10)  # made frames that start a step away, moving
    x[20:, 0, 0] = 1.5
    done = np.ones(30, bool)
    inertialize(x, 10, 20, done=done)
    step = np.abs(np.diff(x[:, 0, 0]))
    assert step[9] < 0.05 and step.max() < 0.25  # no jump at the join
    assert np.abs(np.diff(x[:, 0, 0], 2)).max() < 0.12


# ----------------------------------------------------------------------------------- resampling

@pytest.mark.parametrize("fps", [24, 25, 30, 60])
def test_resampling_is_exact_at_keys_and_in_length(fps):
    timeline = parse_timeline("0s:neutral, 1.23s:anger, 2.5s:surprise, 3.9s:neutral", duration=4.5, fps=fps)
    model_keys, output_keys = timeline.key_frames(30), timeline.key_frames(fps)
    model = np.random.default_rng(0).normal(size=(round(4.5 * 30), 68, 3)).astype(np.float32)
    out = resample(model, timeline.num_frames, model_keys, output_keys)
    assert out.shape == (round(4.5 * fps), 68, 3)
    for i, j in zip(output_keys, model_keys):
        np.testing.assert_array_equal(out[i], model[j])
    if fps == 30:
        np.testing.assert_array_equal(out, model)
    positions = time_warp(timeline.num_frames, len(model), output_keys, model_keys)
    assert (np.diff(positions) > 0).all() and positions[-1] == len(model) - 1


def test_loop_resampling_closes_the_loop():
    t = np.arange(90) / 90
    model = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t), t * 0], -1)[:, None].repeat(68, 1)
    out = resample(model.astype(np.float32), 72, [0, 45], [0, 36], loop=True)
    steps = np.linalg.norm(np.diff(np.concatenate([out, out[:1]]), axis=0), axis=-1).mean(-1)
    assert steps.max() / steps.min() < 1.05  # the wrap step is like every other


# ----------------------------------------------------------------------------------- real shots

@pytest.fixture(scope="module")
def generator():
    from face4d.generate import LandmarkGenerator
    return LandmarkGenerator.from_pretrained()


def _speeds(landmarks: np.ndarray) -> np.ndarray:
    return np.linalg.norm(np.diff(landmarks, axis=0), axis=-1).mean(-1)


@pytest.mark.slow
def test_short_real_shot_has_no_seams_and_exact_keys(generator, head):
    from face4d.generate import SamplingConfig
    from face4d.windows import sample_shot

    timeline = parse_timeline("0s:neutral, 1s:high_smile@0.8, 2s:surprise, 3.5s:neutral", duration=4, hold=0.2)
    shot = sample_shot(generator, timeline, head.landmark_neutral, seed=0, sampling=SamplingConfig(steps=10))
    assert shot.landmarks.shape == (120, 68, 3) and len(shot.plan.windows) == 3
    for k, f in enumerate(shot.key_frames):
        np.testing.assert_allclose(shot.landmarks[f], shot.targets[k], atol=1e-5)
    np.testing.assert_allclose(shot.landmarks[0], head.landmark_neutral, atol=1e-5)
    speed = _speeds(shot.landmarks)
    joins = shot.plan.joins
    assert speed[joins].mean() <= 1.5 * np.delete(speed, joins).mean()
    assert speed.max() < 0.2  # no frame jumps
    # the smile at 0.8 goes 0.8 as far from the neutral face as the apex it was made from
    moved = np.linalg.norm(shot.targets[1] - shot.targets[0], axis=-1).mean()
    assert 0.1 < moved < 1.0


@pytest.mark.slow
def test_real_loop_joins_the_first_frame(generator, head):
    from face4d.generate import SamplingConfig
    from face4d.windows import sample_shot

    timeline = parse_timeline("0s:neutral, 1s:mouth_open", duration=2.4, fps=24, loop=True, hold=0.2)
    shot = sample_shot(generator, timeline, head.landmark_neutral, seed=1, sampling=SamplingConfig(steps=10))
    assert len(shot.landmarks) == 58
    loop = np.concatenate([shot.landmarks, shot.landmarks[:1]])
    speed = _speeds(loop)
    assert speed[-1] <= 1.5 * speed[speed > 1e-6].mean() and speed[-1] < 0.02


@pytest.mark.slow
def test_api_timeline_starts_on_a_neutral_face(head):
    """Without a person the shot is of the head model's mean face, a neutral face; not the
    normaliser's mean of every training frame, expressions included, from which generated
    expressions are read as other labels by an independent classifier (docs/results.md)."""
    from face4d.generate import SamplingConfig
    from face4d.pipeline import Pipeline

    seqs = Pipeline(head=head).sample(timeline="0s:neutral, 0.8s:eyebrow", sampling=SamplingConfig(steps=5))
    np.testing.assert_allclose(seqs.landmarks[0, 0], head.landmark_neutral, atol=1e-5)
    assert np.linalg.norm(seqs.landmarks[0, -1] - head.landmark_neutral, axis=-1).max() > 0.1


@pytest.mark.slow
def test_cli_timeline_exports_and_streams_the_preview(tmp_path, capsys):
    import imageio.v3 as iio

    from meshops.pointcache import read_pc2

    out = tmp_path / "shot"
    code = main(["generate", "--timeline", "0s:high_smile@0.5, 1s:neutral", "--duration", "1.5", "--fps", "24",
                 "--steps", "5", "--export", "pc2", "--preview", "mp4", "--size", "64", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    cache = read_pc2(out / "sample_000" / "animation.pc2").frames
    assert cache.shape[0] == 36
    assert len(iio.imread(out / "preview.mp4")) == 36
    manifest = json.loads((out / "samples.json").read_text())
    assert manifest["fps"] == 24
    # the first key is not neutral: the motion is measured from the mesh's own neutral face
    assert np.abs(cache[-1] - cache[0]).max() > 0.05


def test_timeline_keys_are_frozen_and_timeline_checks_on_creation():
    with pytest.raises(Face4DError, match="no keys"):
        Timeline(())
