"""Output safety and hostile input (issue 14): one regression test per case, numbered as in
docs/reliability.md. Interruption and concurrency cases run real processes and stop them at the
dangerous moment with ``meshops.atomic.PAUSE_ENV`` (the process waits at that step of the swap, or
between the two files of a checkpoint, until the test kills it or lets it go on)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from face4d.cli import main
from face4d.data.dataset import Dataset, build_dataset
from face4d.data.interchange import LandmarkSequences, load_sequences, save_sequences
from face4d.decoder.target import Target
from face4d.errors import Face4DError
from face4d.outputs import write_samples
from face4d.pipeline import Pipeline, PipelineResult
from meshops.atomic import PAUSE_ENV, atomic_dir, clean_stale_temporaries
from meshops.io import MeshFileError, load_mesh, save_mesh
from render.preview import gif_delays, save_animation

pytestmark = pytest.mark.slow  # real models, training, rendering or the CLI end to end

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = ["--d-model", "16", "--layers", "1", "--heads", "2", "--ff", "32", "--batch-size", "4", "--device", "cpu",
              "--timesteps", "50", "--quiet"]
FILES = 40  # files of the test writer's output: half a deleted output would show

WRITER = f"""
import sys
from pathlib import Path
from meshops import atomic
out, tag, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "aside":  # a system without renameat2: the rename-aside fallback
    atomic._libc_rename = lambda *args: False
with atomic.atomic_dir(out, overwrite=True) as tmp:
    for i in range({FILES}):
        (tmp / f"f{{i:03d}}.txt").write_text(tag)
"""


# ------------------------------------------------------------------------------ helpers

def _env(pause: str | None = None, marker: Path | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.pop(PAUSE_ENV, None)
    if pause is not None:
        env[PAUSE_ENV] = f"{pause}:{marker}"
    return env


def _spawn(args: list[str], tmp_path: Path, pause: str | None = None) -> tuple[subprocess.Popen, Path]:
    """Start ``python ARGS``; with ``pause``, it stops at that step (see ``wait_paused``)."""
    marker = tmp_path / f"paused-{uuid.uuid4().hex}"
    proc = subprocess.Popen([sys.executable, *args], env=_env(pause, marker), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, marker


def _wait_paused(proc: subprocess.Popen, marker: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the process ended before pausing: {proc.communicate()}")
        assert time.monotonic() < deadline, "the process never reached its pause point"
        time.sleep(0.02)


def _write(out: Path, tag: str, mode: str = "exchange") -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(out), tag, mode], env=_env(), check=True)


def _tag_of(out: Path) -> str:
    """``old`` or ``new`` when ``out`` is a complete output of the test writer; fails otherwise."""
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"f{i:03d}.txt" for i in range(FILES)], f"incomplete output: {len(files)} files"
    tags = {f.read_text() for f in files}
    assert len(tags) == 1, f"a mix of outputs: {tags}"
    return tags.pop()


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("face4d: error:") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("data") / "d", 16, shard_size=8, progress=False)


def _landmark_file(path: Path, head, frames: int = 4) -> Path:
    seq = np.repeat(head.landmark_neutral[None], frames, 0).astype(np.float32)
    seq[1:, 48:68, 1] -= 0.3  # the mouth moves
    save_sequences(path, LandmarkSequences(landmarks=seq[None], lengths=np.array([frames]), labels=["mouth_open"],
                                           types=["N2E"]))
    return path


# ----------------------------------------------------------- 1. an interrupted --overwrite

SWAP_STEPS = [("exchange", "dir-complete", "old"), ("exchange", "dir-swapped", "new"),
              ("aside", "dir-complete", "old"), ("aside", "dir-aside", "old"), ("aside", "dir-swapped", "new")]


def _paused_overwrite(tmp_path: Path, mode: str, step: str) -> tuple[Path, subprocess.Popen]:
    """An output ``old``, and a process replacing it by ``new``, paused at ``step``."""
    out = tmp_path / "out"
    _write(out, "old")
    proc, marker = _spawn(["-c", WRITER, str(out), "new", mode], tmp_path, pause=step)
    _wait_paused(proc, marker)
    return out, proc


@pytest.mark.parametrize("mode,step,survivor", SWAP_STEPS)
def test_sigkill_during_overwrite_leaves_a_whole_output(tmp_path, mode, step, survivor):
    out, proc = _paused_overwrite(tmp_path, mode, step)
    proc.kill()
    proc.wait()
    if out.exists():
        assert _tag_of(out) == survivor
    else:  # killed between the two renames of the fallback: the old output is whole under its aside name
        assert mode == "aside" and step == "dir-aside"
    clean_stale_temporaries(out)  # what the next writer does first
    assert _tag_of(out) == survivor and _leftovers(out) == []


@pytest.mark.parametrize("mode,step,survivor", SWAP_STEPS)
def test_sigint_during_overwrite_keeps_one_output_and_cleans_up(tmp_path, mode, step, survivor):
    out, proc = _paused_overwrite(tmp_path, mode, step)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) != 0
    assert _tag_of(out) == survivor and _leftovers(out) == []


# -------------------------------------------------- 2. two generate runs into one --out

def test_concurrent_generate_keeps_the_first_result_and_refuses_the_second(tmp_path, bundle):
    out = tmp_path / "out"
    argv = ["-m", "face4d.cli", "generate", "--model", str(bundle), "--steps", "2", "--frames", "4", "--export", "pc2",
            "--out", str(out), "--quiet"]
    # the sample folder is written through atomic_dir too: the 2nd pause is the output's final rename
    slow, marker = _spawn([*argv, "--seed", "1"], tmp_path, pause="dir-complete#2")
    _wait_paused(slow, marker)
    fast = subprocess.run([sys.executable, *argv, "--seed", "2"], env=_env(), capture_output=True, text=True)
    assert fast.returncode == 0, fast.stderr
    written = {p.name: p.read_bytes() for p in (out / "sample_000").iterdir()}
    marker.unlink()  # the first run goes on to its final rename
    _, err = slow.communicate(timeout=120)
    assert slow.returncode == 2 and err.count("\n") == 1 and "already exists" in err, err
    assert {p.name: p.read_bytes() for p in (out / "sample_000").iterdir()} == written
    assert _leftovers(out) == []


def test_the_final_rename_refuses_a_target_filled_meanwhile(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_dir(out) as tmp:
            (tmp / "mine.txt").write_text("mine")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["theirs.txt"] and _leftovers(out) == []


# ---------------------------------------------------- 3. two train runs into one --out

def test_second_train_into_a_locked_run_is_refused(tmp_path, dataset):
    out = tmp_path / "run"
    argv = ["-m", "face4d.cli", "train", "denoiser", "--data", str(dataset), "--out", str(out), "--steps", "2",
            "--checkpoint-every", "1", *TINY_TRAIN]
    first, marker = _spawn(argv, tmp_path, pause="checkpoint-pair")
    _wait_paused(first, marker)
    second = subprocess.run([sys.executable, *argv], env=_env(), capture_output=True, text=True)
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"being written by another process (pid {first.pid})" in second.stderr
    marker.unlink()
    _, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads((out / "config.json").read_text())["step"] == 2 and not (out / ".face4d.lock").exists()


# ------------------------------------------ 4. a checkpoint pair killed between its two files

def test_torn_checkpoint_pair_resumes_from_the_previous_one(tmp_path, dataset, capsys):
    argv = ["train", "denoiser", "--data", str(dataset), "--steps", "2", "--checkpoint-every", "1", *TINY_TRAIN]
    torn = tmp_path / "torn"
    proc, marker = _spawn(["-m", "face4d.cli", *argv, "--out", str(torn)], tmp_path, pause="checkpoint-pair#2")
    _wait_paused(proc, marker)
    proc.kill()
    proc.wait()
    assert load_file(torn / "last.safetensors") and json.loads((torn / "last.json").read_text())["step"] == 1
    assert main([*argv, "--out", str(torn)]) == 0
    captured = capsys.readouterr()
    assert "resuming from the previous one (step 1)" in captured.err
    assert "at step 2 (resumed from step 1)" in captured.out
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0  # the same run, never interrupted
    resumed, whole = load_file(torn / "model.safetensors"), load_file(tmp_path / "whole" / "model.safetensors")
    assert resumed.keys() == whole.keys() and all(torch.equal(resumed[k], whole[k]) for k in whole)
    assert not (torn / "prev.json").exists() and not (torn / "prev.safetensors").exists()


# ------------------------------------------ 5. SIGTERM / SIGKILL temporaries and their cleanup

@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_remove_the_temporary_and_say_one_line(tmp_path, bundle, signum, code):
    out = tmp_path / "out"
    proc, marker = _spawn(["-m", "face4d.cli", "generate", "--model", str(bundle), "--steps", "2", "--frames", "4",
                           "--out", str(out), "--quiet"], tmp_path, pause="dir-complete")
    _wait_paused(proc, marker)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert err == f"face4d: interrupted ({signal.Signals(signum).name}); unfinished outputs were removed\n"
    assert not out.exists() and _leftovers(out) == []


def test_stale_temporaries_of_dead_processes_are_removed_on_start(tmp_path):
    out = tmp_path / "out"
    proc, marker = _spawn(["-c", WRITER, str(out), "new", "exchange"], tmp_path, pause="dir-complete")
    _wait_paused(proc, marker)
    proc.kill()
    proc.wait()
    stale = _leftovers(out)
    assert len(stale) == 1 and f".{proc.pid}." in stale[0]
    live = tmp_path / f".out.{os.getpid()}.abcdefgh.tmp"  # a live process's (ours): left alone
    live.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("a")
    assert _leftovers(out) == [live.name] and (out / "a.txt").exists()


# ---------------------------------------------------- 6. sample names escaping out_dir

@pytest.mark.parametrize("name", ["../../x", "a/b", "a\\b", "..", "CON", "bad:name", "x?", "trailing.", ""])
def test_sample_names_cannot_escape_the_output_folder(tmp_path, head, name):
    seqs = load_sequences(_landmark_file(tmp_path / "seq.npz", head))
    target = Target(head.neutral.astype(np.float32), head.faces, head.landmark_ids, "rbf", "head")
    pipe = Pipeline(generator=object(), head=head)
    with pytest.raises(Face4DError, match="invalid sample name"):
        pipe.decode(seqs, target, names=[name])
    result = PipelineResult(seqs, [np.repeat(target.vertices[None], 4, 0)], target, [name])
    (tmp_path / "out").mkdir()
    with pytest.raises(Face4DError, match="invalid sample name"):
        write_samples(result, tmp_path / "out", ("pc2",), 30.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "seq.npz"] and not any((tmp_path / "out").iterdir())


# ------------------------------------------------- 7. bounded --num / --frames, streamed

def test_a_request_larger_than_the_disk_is_refused_up_front(tmp_path, bundle, capsys):
    out = tmp_path / "out"
    assert main(["generate", "--model", str(bundle), "--num", "100000000", "--out", str(out)]) == 2
    _one_line_error(capsys, "the output would take about", "free; ask for fewer samples or frames")
    assert main(["generate", "--model", str(bundle), "--num", "20000", "--frames", "64", "--export", "pc2,obj",
                 "--out", str(out)]) == 2
    _one_line_error(capsys, "the output would take about")
    assert not out.exists()


def test_generation_is_streamed_in_bounded_batches(tmp_path, bundle, monkeypatch):
    import face4d.pipeline as pipeline

    monkeypatch.setattr(pipeline, "BATCH_FRAMES", 8)  # 2 sequences of 4 frames per batch
    pipe = Pipeline(bundle)
    asked = []
    generate = pipe.generator.generate
    monkeypatch.setattr(pipe.generator, "generate", lambda *args, **kw: asked.append(kw["num"]) or generate(*args, **kw))
    assert pipe.sample_to(tmp_path / "lm", num=5, seed=3, frames=4, sampling=None) == 4
    assert asked == [2, 2, 1]
    files = sorted((tmp_path / "lm").iterdir())
    assert [f.name for f in files] == [f"sequence_{i:03d}.npz" for i in range(5)]
    first = generate(frames=4, num=2, seed=3)  # batch 0 is what one call gives
    np.testing.assert_array_equal(load_sequences(files[1]).landmarks[0], first.landmarks[1])
    asked.clear()
    target, frames = pipe.generate_to(tmp_path / "meshes", "pc2", num=3, seed=3, frames=4, start="free",
                                      method="rbf", landmark_ids=pipe.head.landmark_ids)
    assert asked == [2, 1] and frames == 4 and target.method == "rbf"
    manifest = json.loads((tmp_path / "meshes" / "samples.json").read_text())
    assert [s["name"] for s in manifest["samples"]] == ["sample_000", "sample_001", "sample_002"]


# ------------------------------------------------------ 8-10. seeds, devices, render size

@pytest.mark.parametrize("argv,message", [
    (["--seed", str(2**64)], "seed must be an integer from 0 to 2^64 - 1"),
    (["--seed", "-1"], "seed must be an integer from 0 to 2^64 - 1"),
    (["--identity-seed", "-1"], "the identity seed must be an integer from 0 to 2^64 - 1"),
    (["--device", "tpu9"], "unknown device 'tpu9'; use auto, cpu, cuda or cuda:N"),
    (["--device", "cuda"], "device 'cuda' requested but CUDA is not available; use --device cpu"),
    (["--guidance-lr", "inf"], "guidance learning rate (--guidance-lr) must be a finite number > 0, got inf"),
])
def test_generate_options_out_of_range_are_one_line(tmp_path, bundle, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU build, whatever the machine
    assert main(["generate", "--model", str(bundle), "--steps", "2", "--frames", "4", "--label", "anger",
                 "--out", str(tmp_path / "out"), *argv]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


def test_pipeline_device_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device, message in (("tpu9", "unknown device"), ("cuda:0", "CUDA is not available"), ("meta", "unsupported")):
        with pytest.raises(Face4DError, match=message):
            Pipeline(device=device)
    assert Pipeline(device="auto").device == "cpu"


@pytest.mark.parametrize("argv,message", [
    (["--size", "100000"], "tile size must be from 32 to 2048 pixels, got 100000"),
    (["--fps", "200"], "GIF animations play at more than 0 and at most 100 fps"),
    (["--fps", "1e9"], "GIF animations play at more than 0 and at most 100 fps"),
])
def test_render_size_and_gif_fps_are_bounded(tmp_path, head, capsys, argv, message):
    landmarks = _landmark_file(tmp_path / "seq.npz", head)
    assert main(["render", str(landmarks), "--out", str(tmp_path / "out.gif"), "--method", "rbf",
                 "--landmark-ids", _ids_file(tmp_path, head), *argv]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "out.gif").exists()


def _ids_file(tmp_path: Path, head) -> str:
    np.save(tmp_path / "ids.npy", head.landmark_ids)
    return str(tmp_path / "ids.npy")


# -------------------------------------------------------------------- 11. GIF timing

def test_gif_delays_keep_the_timeline(tmp_path):
    assert gif_delays(6, 60) == [20, 10, 20, 20, 10, 20]
    assert gif_delays(4, 100) == [10] * 4 and gif_delays(3, 30) == [30, 40, 30]
    assert sum(gif_delays(60, 60)) == 1000 and sum(gif_delays(25, 24)) == round(25 / 24 * 1000, -1)
    with pytest.raises(ValueError, match="at most 100 fps"):
        gif_delays(3, 101)
    frames = np.stack([np.full((8, 8, 3), 40 * k, np.uint8) for k in range(6)])
    save_animation(tmp_path / "a.gif", frames, fps=60)
    with Image.open(tmp_path / "a.gif") as gif:
        delays = []
        for k in range(gif.n_frames):
            gif.seek(k)
            delays.append(gif.info["duration"])
    assert delays == [20, 10, 20, 20, 10, 20]


# --------------------------------------------------- 12. dataset manifest and shards

def _broken_copy(dataset: Path, tmp_path: Path, edit) -> Path:
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    edit(root)
    return root


def _edit_manifest(change):
    def edit(root: Path) -> None:
        manifest = json.loads((root / "manifest.json").read_text())
        change(manifest)
        (root / "manifest.json").write_text(json.dumps(manifest))
    return edit


def _truncate(root: Path) -> None:
    shard = root / "shard_0001.npz"
    shard.write_bytes(shard.read_bytes()[:500])


BROKEN_DATASETS = [
    (_edit_manifest(lambda m: m.update(seed="0")), "'seed' must be an integer"),
    (_edit_manifest(lambda m: m.update(labels="anger")), "'labels' must be a list"),
    (_edit_manifest(lambda m: m["shards"][0].update(count="8")), "'shards' must be a list of"),
    (_edit_manifest(lambda m: m["shards"][0].update(count=7)), "listed with 7 sequence(s), but 8 record(s)"),
    (_edit_manifest(lambda m: m["sequences"][0].update(split="training")), "sequence record 0: bad or missing split"),
    (_edit_manifest(lambda m: m["splits"].update(identity=[])), "'splits.identity' must map"),
    (lambda root: (root / "shard_0001.npz").unlink(), "shard shard_0001.npz is missing"),
    (_truncate, "truncated or corrupt shard"),
]


@pytest.mark.parametrize("edit,message", BROKEN_DATASETS)
def test_dataset_info_refuses_a_broken_dataset(tmp_path, dataset, capsys, edit, message):
    root = _broken_copy(dataset, tmp_path, edit)
    assert main(["dataset", "info", str(root)]) == 2
    _one_line_error(capsys, message)


def test_train_refuses_a_manifest_with_wrong_counts(tmp_path, dataset, capsys):
    root = _broken_copy(dataset, tmp_path, BROKEN_DATASETS[3][0])
    assert main(["train", "denoiser", "--data", str(root), "--out", str(tmp_path / "m"), *TINY_TRAIN]) == 2
    _one_line_error(capsys, "listed with 7 sequence(s)")
    with pytest.raises(Face4DError, match="bad or missing split"):
        Dataset.load(_broken_copy(dataset, tmp_path / "b", BROKEN_DATASETS[4][0]))
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------- 13. empty label lists

@pytest.mark.parametrize("argv,option", [
    (["demo", "--labels", ""], "--labels"), (["demo", "--labels", ",,"], "--labels"),
    (["dataset", "build", "--held-out-labels", ","], "--held-out-labels"),
])
def test_empty_label_lists_are_refused(tmp_path, capsys, argv, option):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, f"{option} is empty")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------ 14. non-integer faces

def test_non_integer_faces_are_refused(head):
    pipe = Pipeline(generator=object(), head=head)
    faces = head.faces.astype(np.float64)
    vertices = head.neutral.astype(np.float32)
    kept = pipe.target(vertices, faces=faces, landmark_ids=head.landmark_ids)  # whole numbers: fine
    np.testing.assert_array_equal(kept.faces, head.faces)
    faces[0, 0] += 0.5
    with pytest.raises(Face4DError, match="faces must be integer vertex indices, got float64"):
        pipe.target(vertices, faces=faces, landmark_ids=head.landmark_ids)


# ------------------------------------------------------------ 15. misleading messages

def _mesh_files(tmp_path: Path) -> dict[str, Path]:
    import trimesh

    vertices, faces = np.random.default_rng(0).random((10, 3)) * 10, np.array([[0, 1, 2], [2, 3, 4], [4, 5, 6]])
    obj = save_mesh(tmp_path / "good.obj", vertices, faces).read_text()
    ply = trimesh.exchange.ply.export_ply(trimesh.Trimesh(vertices, faces, process=False), encoding="ascii")
    binary = save_mesh(tmp_path / "good.ply", vertices, faces).read_bytes()
    files = {"junk.obj": np.random.default_rng(1).bytes(4096), "truncated.obj": obj[:-8].encode(),
             "cut_in_vertices.obj": obj[:obj.index("\nv ", 60) + 9].encode(),
             "count.ply": ply.replace(b"element vertex 10", b"element vertex 12"),
             "binary_count.ply": binary.replace(b"element vertex 10", b"element vertex 12")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return {name: tmp_path / name for name in files}


@pytest.mark.parametrize("name,message", [
    ("junk.obj", "binary data, not a text OBJ file"),
    ("truncated.obj", "a face needs 3 vertices"),
    ("cut_in_vertices.obj", "(truncated"),
    ("count.ply", "the header declares 12 + 3 rows (vertices, faces) but the file holds 13"),
    ("binary_count.ply", "element counts do not match the data size"),
])
def test_broken_mesh_files_say_what_is_wrong(tmp_path, name, message):
    path = _mesh_files(tmp_path)[name]
    with pytest.raises(MeshFileError) as error:
        load_mesh(path)
    assert message in str(error.value) and "point cloud" not in str(error.value)
    assert "more than 3 corners" not in str(error.value)
    load_mesh(tmp_path / "good.obj"), load_mesh(tmp_path / "good.ply")


def test_bad_landmark_files_say_what_is_wrong(tmp_path):
    (tmp_path / "text.npz").write_text("landmarks: 1 2 3\n")
    with pytest.raises(Face4DError, match="not a zip archive of arrays") as error:
        load_sequences(tmp_path / "text.npz")
    assert "pickle" not in str(error.value)
    np.savez(tmp_path / "empty.npz", landmarks=np.zeros((0, 68, 3), np.float32))
    with pytest.raises(Face4DError, match=r"holds sequences of 0 frames \('landmarks' has shape \(0, 68, 3\)\)"):
        load_sequences(tmp_path / "empty.npz")


def _copy_bundle(bundle: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def test_a_string_in_config_json_names_the_field(tmp_path, bundle, capsys):
    copy = _copy_bundle(bundle, tmp_path)
    config = json.loads((copy / "denoiser" / "config.json").read_text())
    config["model_config"]["d_model"] = "32"
    (copy / "denoiser" / "config.json").write_text(json.dumps(config))
    assert main(["generate", "--model", str(copy), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "denoiser/config.json: model_config.d_model must be int, got '32'")
    config["model_config"]["d_model"], config["diffusion"]["num_timesteps"] = 32, "100"
    (copy / "denoiser" / "config.json").write_text(json.dumps(config))
    assert main(["generate", "--model", str(copy), "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, "diffusion.num_timesteps must be a positive integer, got '100'")


def test_nan_weights_are_named_before_sampling(tmp_path, bundle, capsys):
    copy = _copy_bundle(bundle, tmp_path)
    weights = load_file(copy / "classifier_I" / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, str(copy / "classifier_I" / "model.safetensors"))
    assert main(["generate", "--model", str(copy), "--label", "anger", "--out", str(tmp_path / "out")]) == 2
    _one_line_error(capsys, f"classifier_I/model.safetensors: weights contain NaN or infinity ({name}")


# ----------------------------------------------------- 16. VTK's X server warning

def test_headless_render_prints_no_vtk_warning(tmp_path):
    script = ("from meshops import HeadModel\nfrom render.preview import MeshRenderer\nh = HeadModel.load()\n"
              "with MeshRenderer(h.faces, (64, 64)) as r:\n    assert r.render(h.neutral).shape == (64, 64, 3)\n")
    env = _env()
    env.pop("DISPLAY", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
