"""Motion-quality benchmark: does generated motion move like the data, at full strength and without
trembling? Writes section ``motion`` of ``docs/results.md``.

The reference is a dataset built from *another seed* than the one the models were trained and tuned
on (``face4d dataset build --seed 1 ...``): up to ``--per-label`` sequences of each of ``--labels``
from its ``--split`` (test by default; no model saw any of it, and its train split, with about 170
sequences per label, pins each label's mean down more tightly than the test split's 13-31). Every
row makes one sequence per reference sequence, with its label, order (N2E/E2N) and length (``face4d.eval.protocol.generate_like``), and is measured with
``face4d.eval.motion``: speed, jitter (second difference), the share of motion power above 5 Hz,
apex amplitude (mean landmark displacement from the neutral frame at its largest), onset and apex
times. Rows:

* label, fast and paper samplers (type S guidance towards the label in the reference's order);
* text (the label's text, raw; the order is not enforced, so no timing);
* filling (FFM: the reference's first and last 5 frames known);
* geometry-adaptive (the reference's neutral frame kept, label + order, one pass);
* unguided.

Then, for the label row: per label ratios to the data, the same measures on decoded meshes (the
default method (`--method`) on the head's mean face, face-region vertices; the data's landmarks decoded the
same way), apex amplitude at several ``--intensity`` values, and the time of one guided 40-frame
sequence with one thread, fast and paper samplers, measured in the same run.

    python scripts/eval_motion.py --data data/face4d_seed1 [--model BUNDLE] [--per-label 16] [--steps 50]
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences
from face4d.data.labels import LABEL_NAMES, get_label
from face4d.errors import Face4DError
from face4d.eval.harness import run_script
from face4d.eval.motion import MotionStats, landmark_stats, neutral_indices, sequence_stats
from face4d.eval.protocol import generate_like
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator, SamplingConfig

ISSUE_LABELS = ("high_smile", "mouth_open", "surprise", "anger", "sadness", "eyebrow")
JITTER_RATIO, SPEED_RATIO, AMPLITUDE_RANGE, MESH_JITTER_RATIO = 2.0, 2.0, (0.85, 1.15), 2.0
SECONDS_LIMIT = 1.0  # one guided 40-frame sequence, fast sampler, one thread
INTENSITIES = (0.5, 1.0, 1.5)
FILL_ENDS = 5  # FFM: known frames at each end


def reference_set(data: Path, labels: list[str] | None, per_label: int, seed: int,
                  split: str = "test") -> LandmarkSequences:
    """Up to ``per_label`` sequences of each label of ``split`` (labels None: each label of the
    split), drawn with ``seed``, in split order."""
    return draw_reference(Dataset.load(data).sequences(split), labels, per_label, seed, f"{data}: no {split}")


def draw_reference(seqs: LandmarkSequences, labels: list[str] | None, per_label: int, seed: int,
                   where: str = "no") -> LandmarkSequences:
    """``reference_set`` on sequences already loaded; ``where`` begins the error for a missing label."""
    rng = np.random.default_rng(seed)
    labels = [name for name in LABEL_NAMES if name in set(seqs.labels)] if labels is None else labels
    chosen = []
    for label in labels:
        indices = np.flatnonzero(seqs.labels == label)
        if not len(indices):
            raise Face4DError(f"{where} sequence of label {label!r}")
        chosen.append(rng.choice(indices, min(per_label, len(indices)), replace=False))
    return seqs.select(np.sort(np.concatenate(chosen)))


OTHER_SEED_SPLITS = ("; a dataset of another seed was never seen whole, and its train split has ~170 sequences "
                     "per label")
"""Why ``--split train`` is fair where the data is of another seed than the training data's."""


def add_split_argument(parser: argparse.ArgumentParser, what: str, note: str = "") -> None:
    """``--split``: the split of ``--data`` that ``reference_set`` draws ``what`` from."""
    parser.add_argument("--split", default="test", choices=("test", "val", "train"),
                        help=f"the split of --data to draw {what} from (default test{note})")


def rows_of(generator: LandmarkGenerator, reference: LandmarkSequences, sampling: SamplingConfig,
            paper: LandmarkSequences, seed: int) -> dict[str, tuple[LandmarkSequences, float]]:
    """Each condition's sequences for ``reference`` and the seconds per sequence they took."""
    def label(ref: LandmarkSequences, config: SamplingConfig, **options):
        return lambda idx, frames, s: generator.generate(list(ref.labels[idx]), frames, len(idx), s,
                                                         list(ref.types[idx]), config, **options)

    def text(idx, frames, s):
        return generator.generate(None, frames, len(idx), s, sampling=sampling,
                                  text=[get_label(name).text for name in reference.labels[idx]])

    def fill(config: SamplingConfig):
        def sample(idx, frames, s):
            known = np.zeros((len(idx), frames), bool)
            known[:, :FILL_ENDS] = known[:, frames - FILL_ENDS:] = True
            return generator.fill(reference.select(idx), known, seed=s, sampling=config)
        return sample

    def geometry(config: SamplingConfig):
        def sample(idx, frames, s):
            ref = reference.select(idx)
            ends = np.array(neutral_indices(ref))
            return generator.from_neutrals(ref.landmarks[np.arange(len(idx)), ends], frames, list(ref.types),
                                            list(ref.labels), s, 1, config)
        return sample

    def unguided(idx, frames, s):
        return generator.generate(None, frames, len(idx), s, sampling=sampling)

    jobs = {"label, fast": (reference, label(reference, sampling)),
            "label, paper": (paper, label(paper, replace(sampling, sampler="paper"))),
            **({"label, fast, classifier guidance (the paper's control)":
                (reference, label(reference, replace(sampling, label_control="classifier")))}
               if generator.conditional else {}),
            "text, fast": (reference, text), "filling (FFM), fast": (reference, fill(sampling)),
            "filling (FFM), fast, no anchor": (reference, fill(replace(sampling, anchor=False))),
            "geometry-adaptive, fast": (reference, geometry(sampling)),
            "geometry-adaptive, fast, no anchor": (reference, geometry(replace(sampling, anchor=False))),
            "unguided, fast": (reference, unguided)}
    rows = {}
    for name, (ref, sample) in jobs.items():
        start = time.perf_counter()
        seqs = generate_like(ref, sample, seed=seed, desc=name)
        if name.startswith(("text", "unguided")):
            seqs.types = np.array([""] * len(seqs))  # the order was not asked for: no timing
        rows[name] = seqs, (time.perf_counter() - start) / len(seqs)
    return rows


STILL_LEVEL = 0.25
"""A sequence *barely moves* when its apex amplitude is under this share of its label's median in the
data: a held expression, or none. A label's mean amplitude can match the data's while part of its
samples stand still and the rest over-act, so the benchmark counts them."""


def still_share(stats: MotionStats, labels: np.ndarray, data: MotionStats, data_labels: np.ndarray,
                where: np.ndarray | None = None) -> str:
    """The share of ``stats``' sequences (``where``) that barely move (``STILL_LEVEL``)."""
    medians = {name: float(np.median(data.apex_amplitude[data_labels == name])) for name in set(data_labels)}
    still = stats.apex_amplitude < STILL_LEVEL * np.array([medians[name] for name in labels])
    return f"{still[where].mean() if where is not None else still.mean():.2f}"


def stat_cells(stats: MotionStats, data: MotionStats, where=None, data_where=None) -> list[str]:
    """Speed, jitter, HF share, amplitude, onset, apex time, and the three ratios to the data."""
    def ratio(measure: str) -> str:
        return f"{stats.mean(measure, where) / data.mean(measure, data_where):.2f}"

    def value(measure: str, digits: int) -> str:
        number = stats.mean(measure, where)
        return "" if np.isnan(number) else f"{number:.{digits}f}"

    return [value("speed", 4), value("jitter", 4), value("high_frequency_share", 3), value("apex_amplitude", 3),
            value("onset", 2), value("apex_time", 2), ratio("speed"), ratio("jitter"), ratio("apex_amplitude")]


def mesh_stats(seqs: LandmarkSequences, limit_per_label: int) -> MotionStats:
    """Motion of the face-region vertices when ``seqs`` (the first ``limit_per_label`` of each label)
    are decoded onto the head's mean face by the default method (``Pipeline.target``)."""
    from face4d.pipeline import Pipeline

    pipe = Pipeline()
    keep = np.concatenate([np.flatnonzero(seqs.labels == name)[:limit_per_label] for name in np.unique(seqs.labels)])
    chosen = seqs.select(np.sort(keep))
    result = pipe.decode(chosen, pipe.target(), progress=True)
    face = pipe.head.region_ids("face")
    meshes = [mesh[:, face] for mesh in result.meshes]
    return sequence_stats(meshes, seqs.fps, neutral_indices(chosen))


def one_sequence_seconds(generator: LandmarkGenerator, sampling: SamplingConfig) -> float:
    """Wall seconds of one high_smile 40-frame label-guided sequence with one torch thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        generator.generate("high_smile", 40, 1, 0, sampling=sampling)  # warm-up
        start = time.perf_counter()
        generator.generate("high_smile", 40, 1, 1, sampling=sampling)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


HEADERS = ["Speed (cm/frame)", "Jitter (cm/frame^2)", "Power > 5 Hz", "Apex amplitude (cm)", "Onset (s)",
           "Apex (s)", "Speed ratio", "Jitter ratio", "Amplitude ratio"]


def evaluate(args: argparse.Namespace) -> tuple[list[str], list[tuple[str, bool]]]:
    labels = list(LABEL_NAMES) if args.labels == "all" else args.labels.split(",") if args.labels != "issue" \
        else list(ISSUE_LABELS)
    reference = reference_set(args.data, labels, args.per_label, args.seed, args.split)
    paper_labels = list(ISSUE_LABELS) if args.paper_labels == "issue" else args.paper_labels.split(",")
    paper = reference_set(args.data, paper_labels, args.paper_per_label, args.seed, args.split)
    generator = LandmarkGenerator.from_pretrained(args.model)
    sampling = SamplingConfig(steps=args.steps)
    data = landmark_stats(reference)
    rows = rows_of(generator, reference, sampling, paper, args.seed)
    stats = {name: landmark_stats(seqs) for name, (seqs, _) in rows.items()}

    table = [["data (other seed)", len(reference), *stat_cells(data, data),
              still_share(data, reference.labels, data, reference.labels), ""]]
    for name, (seqs, seconds) in rows.items():
        against = landmark_stats(paper) if name == "label, paper" else data
        labels_of = paper.labels if name == "label, paper" else reference.labels
        table.append([f"ours: {name}", len(seqs), *stat_cells(stats[name], against),
                      still_share(stats[name], labels_of, data, reference.labels), f"{seconds:.3f}"])

    label_seqs = rows["label, fast"][0]
    per_label, checks = [], []
    ratios = {"speed": [], "jitter": [], "apex_amplitude": []}
    for name in labels:
        where, data_where = label_seqs.labels == name, reference.labels == name
        cells = stat_cells(stats["label, fast"], data, where, data_where)
        per_label.append([name, int(where.sum()), *cells,
                          still_share(stats["label, fast"], reference.labels, data, reference.labels, where)])
        for measure in ratios:
            ratios[measure].append(stats["label, fast"].mean(measure, where) / data.mean(measure, data_where))
    checks.append((f"jitter ratio <= {JITTER_RATIO:g} for every label: max {max(ratios['jitter']):.2f} "
                   f"({labels[int(np.argmax(ratios['jitter']))]})", max(ratios["jitter"]) <= JITTER_RATIO))
    checks.append((f"speed ratio <= {SPEED_RATIO:g} for every label: max {max(ratios['speed']):.2f} "
                   f"({labels[int(np.argmax(ratios['speed']))]})", max(ratios["speed"]) <= SPEED_RATIO))
    low, high = AMPLITUDE_RANGE
    amplitude = ratios["apex_amplitude"]
    checks.append((f"amplitude ratio in [{low:g}, {high:g}] for every label: {min(amplitude):.2f} to "
                   f"{max(amplitude):.2f} (furthest: {labels[int(np.argmax(np.abs(np.log(amplitude))))]})",
                   low <= min(amplitude) and max(amplitude) <= high))

    intensity_rows, amplitudes = [], []
    for intensity in INTENSITIES:
        seqs = generate_like(reference, lambda idx, frames, s: generator.generate(
            list(reference.labels[idx]), frames, len(idx), s, list(reference.types[idx]), sampling,
            intensity=intensity), seed=args.seed, desc=f"intensity {intensity:g}")
        values = landmark_stats(seqs)
        amplitudes.append([values.mean("apex_amplitude", seqs.labels == name) for name in labels])
        intensity_rows.append([f"{intensity:g}", f"{values.mean('apex_amplitude'):.3f}",
                               f"{values.mean('apex_amplitude') / data.mean('apex_amplitude'):.2f}",
                               f"{values.mean('jitter') / values.mean('apex_amplitude'):.4f}"])
    amplitudes = np.array(amplitudes)
    monotonic = bool((np.diff(amplitudes, axis=0) > 0).all())
    checks.append((f"apex amplitude monotonic in --intensity {', '.join(f'{i:g}' for i in INTENSITIES)} for every "
                   "label", monotonic))

    mesh_data, mesh_ours = mesh_stats(reference, args.mesh_per_label), mesh_stats(label_seqs, args.mesh_per_label)
    mesh_ratio = mesh_ours.mean("jitter") / mesh_data.mean("jitter")
    checks.append((f"decoded meshes: jitter <= {MESH_JITTER_RATIO:g} x the data's meshes: {mesh_ratio:.2f}",
                   mesh_ratio <= MESH_JITTER_RATIO))
    mesh_rows = [["data (other seed), decoded", len(mesh_data.speed), *stat_cells(mesh_data, mesh_data)],
                 ["ours: label, fast, decoded", len(mesh_ours.speed), *stat_cells(mesh_ours, mesh_data)]]

    fast_seconds = one_sequence_seconds(generator, sampling)
    paper_seconds = one_sequence_seconds(generator, replace(sampling, sampler="paper"))
    checks.append((f"one guided 40-frame sequence, fast sampler ({args.steps} steps), one thread <= "
                   f"{SECONDS_LIMIT:g} s: {fast_seconds:.2f} s (paper sampler {paper_seconds:.1f} s: "
                   f"{paper_seconds / fast_seconds:.0f}x)", fast_seconds <= SECONDS_LIMIT))

    blocks = [
        f"Reference: {len(reference)} {args.split} sequences of `{args.data.name}` (a dataset of another seed than the "
        f"models' training data), up to {args.per_label} per label of {', '.join(labels)}; the paper sampler's row "
        f"made {len(paper)} ({args.paper_per_label} per label of {', '.join(paper_labels)}: all "
        f"{generator.diffusion.num_timesteps} steps cost ~40x) and is compared with those data sequences. "
        "Measures (`face4d.eval.motion`), means over sequences of per-sequence means over frames and landmarks: "
        "speed |x_{f+1} - x_f|, jitter |x_{f+1} - 2 x_f + x_{f-1}|, the share of motion power above 5 Hz (after "
        "removing the line between the end frames), apex amplitude (largest mean displacement from the neutral "
        "frame; either end when the order is free), onset and apex times (10% and 90% of it, from the neutral end; "
        "blank where the order was not asked for). Ratios are ours / data. Barely moves: the share of sequences "
        f"whose apex amplitude is under {STILL_LEVEL:g} of their label's median in the data (a held expression, or "
        "none; a label's mean amplitude can hide them). Last column: seconds per sequence, "
        f"batched, {args.threads} torch threads. Fast sampler: {args.steps} steps.",
        markdown_table(["Rows", "Sequences", *HEADERS, "Barely moves", "s / sequence"], table),
        "Per label, ours (label, fast) against the data of that label:",
        markdown_table(["Label", "Sequences", *HEADERS, "Barely moves"], per_label),
        f"Decoded meshes (the default --method, the head's mean face, face-region vertices; up to {args.mesh_per_label} "
        "sequences per label, the data's landmarks decoded the same way):",
        markdown_table(["Rows", "Sequences", *HEADERS], mesh_rows),
        "Intensity (`--intensity`, label, fast; amplitude ratio to the data; jitter per cm of amplitude):",
        markdown_table(["Intensity", "Apex amplitude (cm)", "Amplitude ratio", "Jitter / amplitude (1/frame^2)"],
                       intensity_rows),
    ]
    return blocks, checks


def main(argv: list[str] | None = None) -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, type=Path,
                            help="a dataset of another seed than the training data")
        parser.add_argument("--model", type=Path, help="model bundle (default: the embedded one)")
        parser.add_argument("--labels", default="all", help="all (default), issue (the six of the motion issue), "
                                                            "or a comma-separated list")
        parser.add_argument("--per-label", type=int, default=16, help="reference sequences per label (default 16)")
        add_split_argument(parser, "them", OTHER_SEED_SPLITS)
        parser.add_argument("--paper-labels", default="issue", help="labels of the paper sampler's row: issue (the "
                                                                    "six of the motion issue) or a list")
        parser.add_argument("--paper-per-label", type=int, default=1, help="sequences per --paper-labels label "
                                                                           "(default 1)")
        parser.add_argument("--mesh-per-label", type=int, default=2, help="of those, decoded to meshes (default 2)")
        parser.add_argument("--steps", type=int, default=50, help="steps of the fast sampler (default 50)")
        parser.add_argument("--seed", type=int, default=0)

    run_script("eval_motion.py", __doc__, "motion", "Motion quality", evaluate, argv, arguments, common=False)


if __name__ == "__main__":
    main()
