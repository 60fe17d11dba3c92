"""Timeline benchmark: are long shots made of windows continuous, do keys land, are segments
recognised, do they move like the data, and what does a minute cost? Writes section ``timeline``
of ``docs/results.md``.

Shots (``face4d.windows.sample_shot``, fast sampler, 30 fps, the package's default guidance and
timeline settings), each on a neutral face: the label shots on people of the other seed's test split
(each shot a different one, as the geometry-adaptive evaluation of Table 4 does), the others on the
head model's mean face, the command line's default person:

* **label shots**: ``--per-label`` shots, each through ``--labels`` labels (default all 18) in a
  seeded random order,
  ``neutral`` between them, one key every ``--spacing`` seconds (a neutral hold, then a transition
  of at most a second into the label's apex). Each label key's *segment* is the 40 frames that end
  on it (neutral, then the rise): an N2E sequence of the data's length, scored by the independent
  classifier and by ``face4d.eval.motion`` against the test split's N2E sequences of the labels;
* **chained**: a shot whose keys are 2.5 s apart with no hold and transitions of up to 2.5 s, so
  that every transition spans two windows and each window continues the previous one;
* **loop**: a short looping shot, the wrap-around (last frame to first) measured like a join;
* **long**: a ``--long``-second shot (keys every 1.5 s, labels in turn at intensities 0.6-1.2,
  neutral every third key), timed (wall clock and process CPU time, ``--threads`` torch threads)
  and measured for memory (peak resident size of the process before and after it).

Seams: the speed (mean landmark |x_{f+1} - x_f|, cm/frame) at every frame pair where a window's
frames meet frames it did not make, over the mean speed of every other frame pair of the shot
(holds included, which only lowers the denominator). Keys: the largest landmark distance between a
key's frame and the key's target.

    python scripts/eval_timeline.py --data data/face4d_seed1 --ic runs/ic1 [--per-label 2] [--long 60]
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

from face4d.checkpoint import load_pretrained
from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences, load_sequences
from face4d.data.labels import LABEL_NAMES
from face4d.eval.harness import run_script
from face4d.eval.metrics import accuracy, classify
from face4d.eval.motion import sequence_stats
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.timeline import Timeline, parse_timeline
from face4d.windows import WINDOW, Shot, sample_shot
from meshops.head import HeadModel

SEAM_LIMIT, KEY_LIMIT, ACCURACY_MARGIN = 1.5, 0.05, 0.05
JITTER_RATIO, AMPLITUDE_RANGE = 2.0, (0.85, 1.15)  # the motion benchmark's targets (scripts/eval_motion.py)
SECONDS_LIMIT = 0.5  # compute seconds per second of 30 fps animation, 2 cores
FPS = 30.0


def seams(shot: Shot) -> tuple[float, float, float]:
    """Mean speed at the joins, mean speed elsewhere, and their ratio (at the model's rate = output rate)."""
    speed = np.linalg.norm(np.diff(shot.landmarks, axis=0), axis=-1).mean(-1)
    joins = shot.plan.joins[shot.plan.joins < len(speed)]
    if shot.timeline.loop:  # the wrap-around is a join too
        speed = np.append(speed, np.linalg.norm(shot.landmarks[0] - shot.landmarks[-1], axis=-1).mean())
        joins = np.append(joins, len(speed) - 1)
    other = np.setdiff1d(np.arange(len(speed)), joins)
    at, elsewhere = float(speed[joins].mean()), float(speed[other].mean())
    return at, elsewhere, at / elsewhere


def key_error(shot: Shot) -> float:
    """The largest landmark distance (cm) of a key's frame from its target, over the keys."""
    return max(float(np.linalg.norm(shot.landmarks[f] - shot.targets[k], axis=-1).max())
               for k, f in enumerate(shot.key_frames))


def label_timeline(labels: list[str], spacing: float) -> Timeline:
    keys = ["0s:neutral"]
    for i, label in enumerate(labels):
        keys += [f"{(2 * i + 1) * spacing:g}s:{label}", f"{(2 * i + 2) * spacing:g}s:neutral"]
    return parse_timeline(", ".join(keys), fps=FPS, duration=(2 * len(labels) + 1) * spacing)


def long_timeline(duration: float) -> Timeline:
    keys, t, i = ["0s:neutral"], 1.5, 0
    intensities = (0.6, 0.8, 1.0, 1.2)
    while t <= duration - 1.0:
        if len(keys) % 3 == 0:
            keys.append(f"{t:g}s:neutral")
        else:
            keys.append(f"{t:g}s:{LABEL_NAMES[i % len(LABEL_NAMES)]}@{intensities[i % len(intensities)]:g}")
            i += 1
        t += 1.5
    return parse_timeline(", ".join(keys), fps=FPS, duration=duration)


def segments(shot: Shot) -> tuple[list[np.ndarray], list[str]]:
    """The 40 frames ending on each label key (an N2E sequence) and the key's label."""
    frames, labels = [], []
    for key, f in zip(shot.timeline.keys, shot.key_frames):
        if key.kind == "label" and f >= WINDOW - 1:
            frames.append(shot.landmarks[f - WINDOW + 1: f + 1])
            labels.append(key.label)
    return frames, labels


def run(args: argparse.Namespace):
    generator = LandmarkGenerator.from_pretrained(args.model)
    neutral = HeadModel.load().landmark_neutral
    test = Dataset.load(args.data).sequences("test") if args.data.is_dir() else load_sequences(args.data)
    rest = test.neutral_frames(strict=True)
    people = [test.sequence(int(i))[rest[i]]
              for i in np.random.default_rng([args.seed, 1]).permutation(len(test))[: args.per_label]]
    sampling = SamplingConfig(steps=args.steps)
    rng = np.random.default_rng(args.seed)
    rows, checks = [], []

    # The long shot first, so that the process's peak resident size is its own.
    long = long_timeline(args.long)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    wall, cpu = time.perf_counter(), time.process_time()
    shot = sample_shot(generator, long, neutral, seed=args.seed, sampling=sampling, progress=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    load = os.getloadavg()[0]
    print(f"long shot: {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak_rss:.0f} MiB, seams {seams(shot)}, "
          f"key error {key_error(shot):.1e}, load {load:.1f}", flush=True)
    shots = {"long": shot}

    label_shots = []
    for k in range(args.per_label):
        labels = list(rng.permutation(LABEL_NAMES))[: args.labels]
        label_shots.append(sample_shot(generator, label_timeline(labels, args.spacing), people[k],
                                       seed=args.seed + k, sampling=sampling, progress=True))
    shots["chained"] = sample_shot(generator, parse_timeline(
        "0s:neutral, 2.5s:high_smile, 5s:surprise@0.8, 7.5s:neutral", fps=FPS, duration=9, hold=0, transition=2.5),
        neutral, seed=args.seed, sampling=sampling)
    shots["loop"] = sample_shot(generator, parse_timeline("0s:neutral, 1.2s:high_smile, 2.5s:bareteeth@0.7",
                                                          fps=FPS, duration=4, loop=True), neutral, seed=args.seed,
                                sampling=sampling)
    for k, s in enumerate(label_shots):
        shots[f"labels {k}"] = s

    for name, s in shots.items():
        at, elsewhere, ratio = seams(s)
        rows.append([name, f"{s.timeline.duration:g}", len(s.timeline.keys), len(s.plan.windows),
                     len(s.plan.joins) + s.timeline.loop, f"{at:.4f}", f"{elsewhere:.4f}", f"{ratio:.2f}",
                     f"{key_error(s):.1e}"])
        checks.append((f"seams of '{name}': join speed / speed elsewhere <= {SEAM_LIMIT:g}: {ratio:.2f}",
                       ratio <= SEAM_LIMIT))
        checks.append((f"keys of '{name}' within {KEY_LIMIT:g} cm of their targets: {key_error(s):.1e} cm",
                       key_error(s) <= KEY_LIMIT))
    table = markdown_table(["shot", "seconds", "keys", "windows", "joins", "speed at joins", "speed elsewhere",
                            "ratio", "key error (cm)"], rows)

    ic, _, _ = load_pretrained(args.ic, "ic")
    frames, labels = [], []
    for s in label_shots:
        f, names = segments(s)
        frames += f
        labels += names
    seqs = LandmarkSequences(np.stack(frames), np.full(len(frames), WINDOW), labels, ["N2E"] * len(frames), fps=FPS)
    pred, _ = classify(ic, seqs)
    ours_accuracy, truth = accuracy(pred, labels), accuracy(classify(ic, test)[0], test.labels)
    chosen = np.flatnonzero((test.types == "N2E") & np.isin(test.labels, labels))
    data = sequence_stats([test.sequence(i) for i in chosen], test.fps, [0] * len(chosen))
    ours = sequence_stats(frames, FPS, [0] * len(frames))
    jitter_ratio = ours.mean("jitter") / data.mean("jitter")
    amplitude_ratio = ours.mean("apex_amplitude") / data.mean("apex_amplitude")
    segment_table = markdown_table(
        ["segments", "count", "IC accuracy", "jitter (cm/frame²)", "apex amplitude (cm)", "speed (cm/frame)"],
        [["ours: 40 frames ending on each label key", len(frames), f"{100 * ours_accuracy:.1f}%",
          f"{ours.mean('jitter'):.4f}", f"{ours.mean('apex_amplitude'):.3f}", f"{ours.mean('speed'):.4f}"],
         ["data: test N2E sequences of those labels", len(chosen), f"{100 * truth:.1f}% (whole test split)",
          f"{data.mean('jitter'):.4f}", f"{data.mean('apex_amplitude'):.3f}", f"{data.mean('speed'):.4f}"]])
    checks.append((f"segments recognised by the IC >= ground truth - {100 * ACCURACY_MARGIN:g} points: "
                   f"{100 * ours_accuracy:.1f}% vs {100 * truth:.1f}%", ours_accuracy >= truth - ACCURACY_MARGIN))
    checks.append((f"segment jitter <= {JITTER_RATIO:g} x the data's: {jitter_ratio:.2f}x", jitter_ratio <= JITTER_RATIO))
    low, high = AMPLITUDE_RANGE
    checks.append((f"segment apex amplitude within {low:g}-{high:g} x the data's: {amplitude_ratio:.2f}x",
                   low <= amplitude_ratio <= high))

    per_second = wall / args.long
    checks.append((f"compute per second of 30 fps animation ({args.threads} threads) <= {SECONDS_LIMIT:g} s: "
                   f"{per_second:.2f} s wall, {cpu / args.long / args.threads:.2f} s CPU per thread",
                   per_second <= SECONDS_LIMIT))
    cost = (f"The {args.long:g}-second shot ({long.num_frames} frames, {len(long.keys)} keys, "
            f"{len(shot.plan.windows)} windows): {wall:.1f} s wall clock ({per_second:.2f} s per second of "
            f"animation), {cpu:.1f} s of process CPU time, with {args.threads} torch threads; load average "
            f"{load:.1f} on this machine's 2 cores, shared with other work, when it ended: CPU time per thread is "
            f"the better guide to a free machine. Peak resident size of the process: {rss_before:.0f} MiB "
            f"with the models loaded, {peak_rss:.0f} MiB after the shot.")
    text = (f"Every shot is sampled in windows of {WINDOW} frames (`face4d.windows.sample_shot`), fast sampler "
            f"({args.steps} steps), seed {args.seed}, at 30 fps, on a neutral face: the label shots each on "
            f"another person of `{Path(args.data).name}`'s test split (their neutral frames), the others on the "
            "head model's mean face (the command line's default person). "
            f"Label shots: {args.labels} labels in a random order, neutral between them, a key every "
            f"{args.spacing:g} s. Chained: keys 2.5 s apart, no hold, transitions up to 2.5 s (two windows "
            "each). Loop: the wrap-around counts as a join. Speeds in cm/frame, mean over landmarks; "
            "'elsewhere' is every other frame pair, holds included. Key error: the largest landmark distance "
            "of a key's frame from its target. Segments: the 40 frames that end on each label key of the "
            f"label shots, scored by the independent classifier `{Path(args.ic).name}` (trained on a dataset "
            "of another seed) and by `face4d.eval.motion` against the test split's N2E sequences of the same "
            f"labels in `{Path(args.data).name}`.")
    return [text, table, segment_table, cost], checks


def arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="dataset of another seed (its test split is the "
                        "reference), or that test split as one interchange .npz")
    parser.add_argument("--ic", required=True, type=Path, help="independent classifier")
    parser.add_argument("--model", type=Path, help="model bundle (default: the embedded one)")
    parser.add_argument("--steps", type=int, default=SamplingConfig().steps, help="fast sampler steps")
    parser.add_argument("--per-label", type=int, default=2, help="label shots (each has every label once)")
    parser.add_argument("--labels", type=int, default=len(LABEL_NAMES),
                        help="labels per label shot (the first of a random order; default all 18)")
    parser.add_argument("--spacing", type=float, default=1.3, help="seconds between keys of the label shots")
    parser.add_argument("--long", type=float, default=60.0, help="seconds of the timed shot")
    parser.add_argument("--seed", type=int, default=0)


if __name__ == "__main__":
    run_script("eval_timeline.py", __doc__, "timeline", "Timelines: long shots in windows", run,
               arguments=arguments, common=False)
