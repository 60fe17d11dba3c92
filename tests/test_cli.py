import json

import numpy as np
import pytest

from face4d.cli import main
from face4d.data import load_sequences

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_build_and_info(tmp_path, capsys):
    code, out, _ = _run(capsys, "dataset", "build", "--out", str(tmp_path / "d"), "--sequences", "25", "--seed", "4",
                        "--variable-length", "--quiet")
    assert code == 0 and "wrote 25 sequences" in out
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert manifest["seed"] == 4 and manifest["config"]["variable_length"] is True
    code, out, _ = _run(capsys, "dataset", "info", str(tmp_path / "d"))
    assert code == 0 and "25 sequences" in out and "held-out labels" in out


@pytest.mark.parametrize("extra,message", [
    (["--sequences", "0"], "must be positive"),
    (["--frames", "0"], "frames must be positive"),
    (["--held-out-labels", "smirk"], "unknown label 'smirk'; valid labels: bareteeth"),
    (["--variable-length", "--min-frames", "50", "--max-frames", "40"], "min_frames <= max_frames"),
])
def test_build_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, extra, message):
    code, _, err = _run(capsys, "dataset", "build", "--out", str(tmp_path / "d"), "--quiet", *extra)
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("face4d: error:")
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_existing_output(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("keep")
    code, _, err = _run(capsys, "dataset", "build", "--out", str(tmp_path / "d"), "--sequences", "3", "--quiet")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    code, _, _ = _run(capsys, "dataset", "build", "--out", str(tmp_path / "d"), "--sequences", "3", "--quiet",
                      "--overwrite")
    assert code == 0 and not (tmp_path / "d" / "x").exists()


def test_info_on_a_folder_that_is_no_dataset(tmp_path, capsys):
    code, _, err = _run(capsys, "dataset", "info", str(tmp_path))
    assert code == 2 and "no manifest.json" in err


def test_import_bu4dfe(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "bu" / "F001" / "Happy"
    folder.mkdir(parents=True)
    base = rng.standard_normal((68, 3))
    for f, a in enumerate([0.0, 0.5, 1.0, 0.6, 0.2, 0.0]):
        np.save(folder / f"{f:03d}.npy", base + a)
    code, out, _ = _run(capsys, "dataset", "import", "bu4dfe", str(tmp_path / "bu"), "--out", str(tmp_path / "bu.npz"),
                        "--frames", "10", "--quiet")
    assert code == 0 and "wrote 2 sequences" in out
    seqs = load_sequences(tmp_path / "bu.npz")
    assert seqs.labels.tolist() == ["happiness"] * 2 and seqs.types.tolist() == ["N2E", "E2N"]
    np.testing.assert_allclose(seqs.sequence(0)[-1], base + 1.0, atol=1e-5)
    code, _, err = _run(capsys, "dataset", "import", "coma", str(tmp_path / "bu"), "--out", str(tmp_path / "c.npz"))
    assert code == 2 and "--embedding" in err


def test_preview_writes_grid_and_gif(tmp_path, capsys):
    import imageio.v3 as iio
    code, out, _ = _run(capsys, "dataset", "preview", "--out", str(tmp_path / "p"), "--size", "64",
                        "--gif-sequences", "2")
    assert code == 0
    grid = iio.imread(tmp_path / "p" / "labels.png")
    assert grid.shape[1] == 6 * 64 and grid.shape[0] > 3 * 64  # 18 labels in 3 rows of 6, with captions
    gif = iio.imread(tmp_path / "p" / "sequences.gif", index=None)
    assert 10 < gif.shape[0] <= 40 and gif.shape[2] == 2 * 64  # GIF merges the held (identical) frames
    assert not np.array_equal(gif[0], gif[-1])  # and the faces move
    code, _, err = _run(capsys, "dataset", "preview", "--out", str(tmp_path / "p"), "--size", "64")
    assert code == 2 and "already exists" in err


@pytest.mark.parametrize("command", ["generate", "render", "demo"])
def test_help_shows_examples(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "examples:" in out
    assert "face4d demo --out" in out and f"\n  face4d {command} " in out
