"""Tables 2-4 (text control, expression filling, geometry-adaptive generation): the shared results
harness (face4d.eval.harness), the baselines and metrics they add, their table functions
(face4d.eval.downstream) and the scripts, on tiny untrained models and a tiny dataset."""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import replace
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from face4d.checkpoint import save_model  # noqa: E402
from face4d.data import Dataset, LandmarkNormalizer, LandmarkSequences, SynthConfig, build_dataset  # noqa: E402
from face4d.errors import Face4DError  # noqa: E402
from face4d.eval import ICConfig, IndependentClassifier, accuracy, classify, frechet_distance  # noqa: E402
from face4d.eval.baselines import NearestText, fit_length, mean_imputation  # noqa: E402
from face4d.eval.downstream import (FILL_SETTINGS, FillSetting, filling, geometry_adaptive,  # noqa: E402
                                    text_control)
from face4d.eval.harness import GROUND_TRUTH, Evaluation  # noqa: E402
from face4d.eval.metrics import frame_speeds, join_speeds, known_frame_error  # noqa: E402
from face4d.generate import LandmarkGenerator, SamplingConfig  # noqa: E402
from face4d.models import TextGuide, TextGuideConfig  # noqa: E402
from face4d.text import get_text_encoder  # noqa: E402

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
FAST = SamplingConfig(steps=2)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """80 sequences of 35-45 frames: 68 train, 6 val, 6 test (by identity)."""
    return build_dataset(tmp_path_factory.mktemp("data") / "d", 80, seed=0, config=SynthConfig(variable_length=True),
                         progress=False)


@pytest.fixture(scope="module")
def ic_dir(data, tmp_path_factory) -> Path:
    """An untrained IC with the training split's normaliser: scores are arbitrary but well defined."""
    train = Dataset.load(data).sequences("train")
    normalizer = LandmarkNormalizer.fit(train)
    config = ICConfig(hidden=16, normalizer=normalizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = IndependentClassifier(config)
    return save_model(tmp_path_factory.mktemp("ic") / "ic", model, "ic", config.to_dict(), normalizer)


@pytest.fixture(scope="module")
def text_bundle(bundle, tmp_path_factory) -> Path:
    """The tiny bundle plus a tiny text guide (MiniLM space)."""
    root = tmp_path_factory.mktemp("text") / "bundle"
    shutil.copytree(bundle, root)
    config = TextGuideConfig(d_model=32, layers=1, heads=2, ff=64, max_frames=64)
    normalizer = LandmarkGenerator.from_pretrained(bundle).normalizer
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        save_model(root / "text_guide", TextGuide(config), "text_guide", config.to_dict(), normalizer,
                   {"diffusion": {"schedule": "linear", "num_timesteps": 100}})
    return root


@pytest.fixture(scope="module")
def gen(bundle) -> LandmarkGenerator:
    return LandmarkGenerator.from_pretrained(bundle)


def _evaluation(data, ic_dir, limit=4, seed=0) -> Evaluation:
    return Evaluation.load(data, ic_dir, limit=limit, seed=seed)


def _sequences(landmarks, lengths=None, types=None, labels=None, texts=None) -> LandmarkSequences:
    landmarks = np.asarray(landmarks, np.float32)
    n, f = landmarks.shape[:2]
    return LandmarkSequences(landmarks=landmarks, lengths=np.full(n, f) if lengths is None else lengths,
                             labels=labels or ["eyebrow"] * n, types=types or ["N2E"] * n, texts=texts)


# ------------------------------------------------------------------------------- the harness

def test_evaluation_subset_scores_and_ground_truth(data, ic_dir):
    dataset = Dataset.load(data)
    test, val = dataset.sequences("test"), dataset.sequences("val")
    evaluation = _evaluation(data, ic_dir, limit=4, seed=3)
    rng = np.random.default_rng(3)
    picked = np.sort(rng.choice(len(test), 4, replace=False))
    np.testing.assert_array_equal(evaluation.reference.landmarks, test.select(picked).landmarks)
    assert len(evaluation.val) == 4 and len(evaluation.test) == len(test) == 6
    assert "random subset of 4 test sequences" in evaluation.subset_note()
    # the ground truth: the IC's accuracy on the whole test split, FID of the val subset against it
    ic = evaluation.ic
    pred, test_features = classify(ic, test)
    _, val_features = classify(ic, evaluation.val)
    truth = evaluation.ground_truth()
    assert truth.accuracy == accuracy(pred, test.labels) and truth.count == 4
    assert truth.fid == pytest.approx(frechet_distance(val_features, test_features))
    # a set is scored against the whole test split, w.r.t. its own labels
    scores = evaluation.score(val)
    val_pred, features = classify(ic, val)
    assert scores.accuracy == accuracy(val_pred, val.labels) and scores.count == len(val)
    assert scores.fid == pytest.approx(frechet_distance(features, test_features))
    full = _evaluation(data, ic_dir, limit=None)
    assert full.reference is full.test and full.subset_note() == "" and len(full.val) == len(val)


# -------------------------------------------------------------------- baselines and metrics

class _FakeEncoder:
    """Fixed 3-D embeddings of a few texts."""

    name, dim = "fake", 3
    vectors = {"smile": [1, 0, 0], "grin": [0.9, 0.1, 0], "frown": [0, 1, 0], "open mouth": [0, 0, 1],
               "yawn": [0.1, 0, 1]}

    def encode(self, texts):
        return torch.nn.functional.normalize(torch.tensor([self.vectors[t] for t in texts], dtype=torch.float32), dim=1)


def test_nearest_text_retrieval_returns_the_nearest_training_sequence():
    x = np.zeros((5, 5, 68, 3), np.float32)
    x[:, :, 0, 0] = np.arange(5)[:, None] * 10 + np.arange(5)[None]  # sequence i, frame f: 10 i + f
    texts = ["smile", "frown", "smile", "open mouth", ""]
    train = _sequences(x, lengths=[5, 5, 5, 3, 5], labels=["high_smile", "anger", "high_smile", "mouth_open",
                                                           "eyebrow"])
    first = NearestText(train, texts, _FakeEncoder(), ties="first")
    assert first.nearest(["grin", "frown", "yawn", "smile"]).tolist() == [0, 1, 3, 0]
    random = NearestText(train, texts, _FakeEncoder(), ties="random")
    drawn = {int(random.nearest(["grin"], seed=s)[0]) for s in range(20)}
    assert drawn == {0, 2}  # both sequences with the nearest text, never another, never the one without text
    assert random.nearest(["grin"] * 3, seed=4).tolist() == random.nearest(["grin"] * 3, seed=4).tolist()
    # cut to the asked length, or padded by holding the last valid frame
    out = first.sample(["frown", "yawn"], frames=4)
    assert out.landmarks[:, :, 0, 0].tolist() == [[10, 11, 12, 13], [30, 31, 32, 32]]
    assert out.labels.tolist() == ["anger", "mouth_open"] and out.texts.tolist() == ["frown", "yawn"]
    with pytest.raises(Face4DError, match="one text per training sequence"):
        NearestText(train, texts[:3], _FakeEncoder())
    with pytest.raises(Face4DError, match="no training sequence has a text"):
        NearestText(train, [""] * 5, _FakeEncoder())
    with pytest.raises(Face4DError, match="unknown tie rule"):
        NearestText(train, texts, _FakeEncoder(), ties="last")
    np.testing.assert_array_equal(fit_length(np.arange(3), 5), [0, 1, 2, 2, 2])


def test_mean_imputation():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 6, 68, 3)).astype(np.float32)
    x[1, 4:] = 0.0  # padding of a 4-frame sequence
    seqs = _sequences(x, lengths=[6, 4])
    known = np.zeros((2, 6), bool)
    known[0, [0, 1, 5]] = True
    known[1, 0] = True
    out = mean_imputation(seqs, known)
    np.testing.assert_array_equal(out.landmarks[known], x[known])  # known frames kept
    np.testing.assert_allclose(out.landmarks[0, 2:5], np.broadcast_to(x[0, [0, 1, 5]].mean(0), (3, 68, 3)),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(out.landmarks[1, 1:4], np.broadcast_to(x[1, 0], (3, 68, 3)))
    assert not out.landmarks[1, 4:].any()  # padding stays zero
    assert known_frame_error(out, seqs, known) == 0.0
    with pytest.raises(Face4DError, match="known frame in every sequence"):
        mean_imputation(seqs, np.zeros((2, 6), bool))


def test_known_frame_error_is_relative_to_the_coordinates():
    x = np.full((1, 3, 68, 3), 10.0, np.float32)
    moved = x.copy()
    moved[0, 0, 5, 1] += 0.01
    known = np.array([[True, False, False]])
    assert known_frame_error(_sequences(moved), _sequences(x), known) == pytest.approx(1e-3, rel=1e-4)  # float32
    assert known_frame_error(_sequences(moved), _sequences(x), ~known) == 0.0


def test_join_speeds_on_a_hand_made_sequence():
    # landmark k moves by 0.01 (k + 1) cm per frame along x; frame 0 sits 1 cm (every landmark) off the line
    steps = 0.01 * (np.arange(68) + 1)
    x = np.zeros((6, 68, 3))
    x[:, :, 0] = np.arange(6)[:, None] * steps[None]
    x[0, :, 1] = 1.0
    speeds = frame_speeds(x)
    step = steps.mean()  # 0.345 cm/frame
    np.testing.assert_allclose(speeds[1:], step)
    np.testing.assert_allclose(speeds[0], np.sqrt(steps**2 + 1).mean())
    padded = np.concatenate([x[None], x[::-1][None]]).astype(np.float32)  # E2N: the same, reversed
    padded = np.concatenate([padded, np.zeros((2, 2, 68, 3), np.float32)], axis=1)  # padding never counts
    seqs = _sequences(padded, lengths=[6, 6], types=["N2E", "E2N"])
    assert seqs.neutral_frames(strict=True).tolist() == [0, 5]
    join, elsewhere = join_speeds(seqs)
    np.testing.assert_allclose(join, np.sqrt(steps**2 + 1).mean(), rtol=1e-5)
    np.testing.assert_allclose(elsewhere, step, rtol=1e-5)
    with pytest.raises(Face4DError, match="N2E or E2N"):
        _sequences(padded, types=["N2E", ""]).neutral_frames(strict=True)
    with pytest.raises(Face4DError, match="at least 3 frames"):
        join_speeds(_sequences(padded[:, :2]))


def test_fill_settings_draw_l_as_the_paper():
    lengths = np.array([40, 45, 12, 35] * 50)
    rng = np.random.default_rng(0)
    for setting in FILL_SETTINGS:
        known, l = setting.masks(lengths, rng)
        assert known.shape == (200, 45)
        ends = 2 if setting.name == "FFM" else 1
        assert (l >= 1).all() and (l <= setting.high).all() and (ends * l <= lengths - 1).all()
        assert (known.sum(1) == ends * l).all()
        uncapped = lengths - 1 >= ends * setting.high
        assert set(l[uncapped].tolist()) == set(range(setting.low, setting.high + 1))  # uniform, both ends
        for i in (0, 1, 2):
            row, n = known[i], lengths[i]
            first, last = row[:l[i]].all(), row[n - l[i]:n].all()
            assert {"FFB": first, "FFE": last, "FFM": first and last}[setting.name]
            assert row[n:].sum() == 0 and not row[:n].all()
    assert (np.array([s.low for s in FILL_SETTINGS]) == [10, 10, 5]).all()
    with pytest.raises(Face4DError, match="at least 3 frames"):
        FillSetting("FFM", "both", 5, 15).masks(np.array([2]), rng)


# --------------------------------------------------------------------------------- Table 2

def test_text_control_rows(data, ic_dir, text_bundle):
    evaluation = _evaluation(data, ic_dir, limit=4)
    generator = LandmarkGenerator.from_pretrained(text_bundle)
    table = text_control(evaluation, generator, FAST, progress=False)
    assert table.headers == ["Method", "Sequences", "Accuracy (%), raw texts", "FID, raw texts",
                             "Jitter (cm/frame^2), raw texts", "Amplitude (cm), raw texts",
                             "Accuracy (%), enriched texts", "FID, enriched texts",
                             "Jitter (cm/frame^2), enriched texts", "Amplitude (cm), enriched texts", "s / sequence"]
    assert table.column("Method") == [GROUND_TRUTH, "ours (text guide)",
                                      "nearest-text retrieval (random among equally near)",
                                      "nearest-text retrieval (first of equally near)"]
    assert table.column("Sequences") == [4, 4, 4, 4]
    truth = evaluation.ground_truth()
    assert table.rows[0][2:10] == truth.cells() * 2
    assert set(table.scores) == {(m, t) for m in ("ours", "retrieval, random", "retrieval, first")
                                 for t in ("raw", "enriched")}
    # the numbers: retrieval by the enriched texts, first of the equally near, scored by hand
    ref, train = evaluation.reference, evaluation.train
    index = NearestText(train, train.texts_enriched, get_text_encoder(generator.text_guide.config.text_encoder),
                        ties="first").nearest(ref.texts_enriched)
    for i, text in zip(index, ref.texts_enriched):  # a text of the training split retrieves its first sequence
        if text in train.texts_enriched:
            assert i == np.flatnonzero(train.texts_enriched == text)[0]
    retrieved = LandmarkSequences.concatenate([LandmarkSequences(
        landmarks=fit_length(train.sequence(i), n)[None], lengths=[n], labels=[label], types=[kind])
        for i, n, label, kind in zip(index, ref.lengths, ref.labels, ref.types)])
    pred, features = classify(evaluation.ic, retrieved)
    first = table.scores["retrieval, first", "enriched"]
    assert first.accuracy == accuracy(pred, ref.labels)
    assert first.fid == pytest.approx(frechet_distance(features, evaluation.test_features))
    assert table.rows[3][6:10] == first.cells()
    # ours is seeded: the same run gives the same numbers
    again = text_control(evaluation, generator, FAST, progress=False)
    assert again.scores["ours", "raw"].fid == table.scores["ours", "raw"].fid


def test_text_control_without_a_text_guide_says_so(data, ic_dir, gen):
    with pytest.raises(Face4DError, match=r"no text guide \(text_guide/\).*'face4d train text-guide'"):
        text_control(_evaluation(data, ic_dir), gen, FAST, progress=False)


# --------------------------------------------------------------------------------- Table 3

def test_filling_rows_keep_known_frames(data, ic_dir, gen):
    evaluation = _evaluation(data, ic_dir, limit=4)
    table = filling(evaluation, gen, FAST, progress=False)
    assert table.headers == ["Method", "Sequences", *[f"{cell}, {name}" for name in ("FFB", "FFE", "FFM") for cell in
                                                      ("Accuracy (%)", "FID", "Jitter (cm/frame^2)", "Amplitude (cm)")],
                             "Known frames, max rel. error", "s / sequence"]
    assert table.column("Method") == [GROUND_TRUTH, "mean imputation", "ours (Alg. 3 as written: replacement only)",
                                      "ours (Alg. 3 + reconstruction guidance: anchor)"]
    for row, key in ((2, "ours, replacement only"), (3, "ours")):
        errors = table.values["known error"][key]
        assert set(errors) == {"FFB", "FFE", "FFM"} and max(errors.values()) < 1e-4
        assert table.rows[row][14] == f"{max(errors.values()):.1e}"
        assert table.rows[row][2:14] == [c for n in ("FFB", "FFE", "FFM") for c in table.scores[key, n].cells()]
    without = filling(evaluation, gen, replace(FAST, reconstruction=0.0, anchor=False), progress=False)
    assert without.column("Method")[2:] == ["ours (Alg. 3)"]  # the paper's algorithm is then the only "ours"
    assert without.scores["ours", "FFM"].fid == table.scores["ours, replacement only", "FFM"].fid
    # the baseline's numbers, from the same masks (setting k drawn with the seed (seed, k))
    ref = evaluation.reference
    for k, setting in enumerate(FILL_SETTINGS):
        known, l = setting.masks(ref.lengths, np.random.default_rng((0, k)), ref.num_frames)
        np.testing.assert_array_equal(table.values["l"][setting.name], l)
        expected = evaluation.score(mean_imputation(ref, known))
        got = table.scores["mean imputation", setting.name]
        assert (got.accuracy, got.fid) == (expected.accuracy, expected.fid)
    assert table.rows[1][2:14] == [c for n in ("FFB", "FFE", "FFM") for c in table.scores["mean imputation", n].cells()]
    assert table.rows[0][2:14] == evaluation.ground_truth().cells() * 3


# --------------------------------------------------------------------------------- Table 4

def test_neutral_batch_mixes_types_and_keeps_each_neutral(gen, head):
    rng = np.random.default_rng(1)
    neutrals = (head.landmark_neutral + 0.1 * rng.standard_normal((2, 68, 3))).astype(np.float32)
    out = gen.from_neutrals(neutrals, 7, ["N2E", "E2N"], ["anger", "high_smile"], seed=2, passes=2, sampling=FAST)
    assert out.types.tolist() == ["N2E", "E2N"] and out.labels.tolist() == ["anger", "high_smile"]
    np.testing.assert_allclose(out.landmarks[0, 0], neutrals[0], atol=1e-4)
    np.testing.assert_allclose(out.landmarks[1, -1], neutrals[1], atol=1e-4)
    single = gen.generate_from_neutral(neutrals[1], frames=7, sequence_type="E2N", label="high_smile", num=1,
                                       seed=2, passes=2, sampling=FAST)
    np.testing.assert_allclose(single.landmarks[0, -1], neutrals[1], atol=1e-4)


def test_geometry_rows_and_join_report(data, ic_dir, gen):
    evaluation = _evaluation(data, ic_dir, limit=4)
    table = geometry_adaptive(evaluation, gen, FAST, passes=2, progress=False)
    assert table.headers == ["Method", "Sequences", "Accuracy (%)", "FID", "Jitter (cm/frame^2)", "Amplitude (cm)",
                             "Enforced frame, max abs error (cm)",
                             "Speed at the join (cm/frame)", "Speed elsewhere (cm/frame)", "Join / elsewhere",
                             "s / sequence"]
    assert table.column("Method") == [GROUND_TRUTH, "ours (Alg. 4 as written: replacement only), 2 passes",
                                      "ours (Alg. 4 + reconstruction guidance: anchor), 2 passes"]
    assert max(table.values["enforced error"].values()) < 1e-4
    join, elsewhere = join_speeds(evaluation.reference)
    np.testing.assert_array_equal(table.values["join"]["ground truth"], join)
    assert table.rows[0][7:10] == [f"{join.mean():.4f}", f"{elsewhere.mean():.4f}",
                                  f"{join.mean() / elsewhere.mean():.2f}"]
    for row, key in ((1, "ours, replacement only"), (2, "ours")):
        assert table.rows[row][2:6] == table.scores[key, "geometry"].cells()
        assert len(table.values["join"][key]) == 4
        ratio = table.values["join"][key].mean() / table.values["elsewhere"][key].mean()
        assert table.rows[row][9] == f"{ratio:.2f}"


def test_geometry_without_a_type_s_classifier_says_so(data, ic_dir, bundle, tmp_path):
    shutil.copytree(bundle, tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "classifier_S")
    with pytest.raises(Face4DError, match="no type S classifier"):
        geometry_adaptive(_evaluation(data, ic_dir), LandmarkGenerator.from_pretrained(tmp_path / "b"), FAST,
                          progress=False)


# ------------------------------------------------------------------------------- the scripts

def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name,key,extra,targets", [
    ("eval_text_control", "table2", [], 2),  # jitter of the raw and the enriched rows
    ("eval_filling", "table3", [], 6),  # 3 + jitter of FFB, FFE and FFM
    ("eval_geometry", "table4", ["--passes", "2"], 3),  # 2 + jitter
])
def test_scripts_write_their_section(name, key, extra, targets, data, ic_dir, text_bundle, tmp_path, capsys):
    out = tmp_path / "results.md"
    argv = ["--data", str(data), "--ic", str(ic_dir), "--model", str(text_bundle), "--steps", "2", "--limit", "3",
            "--threads", "1", "--out", str(out), *extra]
    _script(name).main(argv)
    text = out.read_text()
    assert f"<!-- begin {key} -->" in text
    assert f"Command: `python scripts/{name}.py {' '.join(argv)}`" in text
    assert "random subset of 3 test sequences" in text and f"| {GROUND_TRUTH} | 3 |" in text
    assert text.count("- pass: ") + text.count("- FAIL: ") == targets
    printed = capsys.readouterr().out
    assert "| Method |" in printed and f"wrote {out}" in printed


def test_text_script_without_a_text_guide_fails_in_one_line(bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script("eval_text_control").main(["--data", str(tmp_path / "none"), "--ic", str(tmp_path / "none"),
                                           "--model", str(bundle), "--out", str(tmp_path / "r.md")])
    message = str(exit_info.value.code)
    assert message.startswith("error: the model bundle has no text guide") and "\n" not in message
    assert not (tmp_path / "r.md").exists()


def test_label_control_script_on_the_shared_harness(data, ic_dir, bundle, tmp_path, capsys):
    out = tmp_path / "results.md"
    argv = ["--data", str(data), "--ic", str(ic_dir), "--model", str(bundle), "--steps", "2", "--limit", "3",
            "--threads", "1", "--out", str(out)]
    _script("eval_label_control").main(argv)
    text = out.read_text()
    assert f"Command: `python scripts/eval_label_control.py {' '.join(argv)}`" in text
    assert f"| {GROUND_TRUTH} |  | 3 |" in text and "random subset of 3 test sequences" in text
    assert text.count("- pass: ") + text.count("- FAIL: ") == 5  # accuracy, FID, jitter, time, fast vs paper


def test_motion_scripts_write_their_sections(data, text_bundle, tmp_path, capsys):
    labels = ",".join(sorted(set(Dataset.load(data).sequences("test").labels.tolist()))[:2])
    out = tmp_path / "results.md"
    argv = ["--data", str(data), "--model", str(text_bundle), "--labels", labels, "--per-label", "1",
            "--paper-labels", labels, "--mesh-per-label", "1", "--steps", "3", "--threads", "1", "--out", str(out)]
    _script("eval_motion").main(argv)
    text = out.read_text()
    assert f"Command: `python scripts/eval_motion.py {' '.join(argv)}`" in text
    for row in ("| data (other seed) |", "| ours: label, fast |", "| ours: label, paper |", "| ours: text, fast |",
                "| ours: filling (FFM), fast |", "| ours: geometry-adaptive, fast |", "| ours: unguided, fast |",
                "| ours: label, fast, decoded |", "| 1.5 |"):
        assert row in text
    assert text.count("- pass: ") + text.count("- FAIL: ") == 6
    assert "| Barely moves |" in text
    argv = ["--data", str(data), "--variant", f"a={text_bundle},steps=3", "--variant",
            f"b={text_bundle},steps=3,eta=0", "--variant",
            f"c={text_bundle},steps=3,guidance_norm=coordinate,guidance_lr=0.2,calibrate=0",
            "--per-label", "1", "--threads", "1", "--out", str(out)]
    _script("ablate_motion").main(argv)
    text = out.read_text()
    assert "<!-- begin motion -->" in text and "<!-- begin motion_ablation -->" in text
    ours = "labels: classifier (Adagrad per sample, lr 0.4)"
    assert f"| a | epsilon | frame | no | 0 | uniform |  | DDPM, posterior variance, 3 steps; {ours} |" in text
    assert f"| b | epsilon | frame | no | 0 | uniform |  | DDIM eta 0, 3 steps; {ours} |" in text
    paper = "labels: classifier (Adagrad per coordinate, lr 0.2), uncalibrated"
    assert f"| c | epsilon | frame | no | 0 | uniform |  | DDPM, posterior variance, 3 steps; {paper} |" in text
    _script("ablate_motion").main([*argv, "--guidance-section"])
    assert "<!-- begin motion_guidance -->" in out.read_text()


def test_still_share_counts_samples_under_a_quarter_of_their_labels_median():
    from face4d.eval.motion import MotionStats

    def stats(amplitudes):
        amplitudes = np.array(amplitudes, np.float64)
        return MotionStats(*(np.zeros_like(amplitudes),) * 3, amplitudes, *(np.zeros_like(amplitudes),) * 2)

    still_share = _script("eval_motion").still_share
    data = stats([1.0, 1.2, 0.8, 0.1, 0.1, 0.12])  # medians: a 1.0, b 0.1
    data_labels = np.array(["a", "a", "a", "b", "b", "b"])
    ours = stats([0.2, 0.3, 1.5, 0.02, 0.03])  # a: 0.2 is under 0.25 (still); b: 0.02 under 0.025
    labels = np.array(["a", "a", "a", "b", "b"])
    assert still_share(ours, labels, data, data_labels) == "0.40"
    assert still_share(ours, labels, data, data_labels, labels == "a") == "0.33"
    assert still_share(ours, labels, data, data_labels, labels == "b") == "0.50"
