"""Per-label amplitude calibration of a model bundle: measures, on the *training* dataset, each label's
mean apex amplitude in the data and in label-guided samples (calibration off), and writes their ratios
as the bundle's ``label_gains.json`` (``face4d.label_gains``). Writes section ``label_gains`` of
``docs/results.md``. The motion benchmark (``scripts/eval_motion.py``) then scores the calibrated model
on a dataset of another seed, which the gains never saw.

    python scripts/calibrate_labels.py --data data/face4d --model face4d/weights/default --per-label 16 \\
        --repeats 4 [--overwrite]

The samples are made as the benchmark makes its label row: one per reference sequence (up to
``--per-label`` sequences of each label of ``--split``, drawn with ``--seed``), with its label, order and
length, by the fast sampler with the package's default settings and the bundle's label control;
``--repeats`` such samples per reference sequence, with other seeds: a label's amplitude varies widely
from sample to sample (some samples barely move), so its mean needs many of them. The data's side is
every sequence of the label in the split, not only the drawn ones: measuring it costs nothing, and a
draw of 48 misses a label's mean amplitude by ~4% (the data's amplitudes vary by 20-40%).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from face4d.data.dataset import Dataset
from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.eval.harness import run_script
from face4d.eval.motion import landmark_stats
from face4d.eval.protocol import generate_like
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.label_gains import GAINS_FILE, MAIN_STEPS, LabelGains, gains_from_amplitudes, write_gains

REPEAT_SEED_STRIDE = 100_000
"""Seed offset between repeats; generate_like's own batch seeds stay below it."""

sys.path.insert(0, str(Path(__file__).parent))
from eval_motion import add_split_argument, draw_reference  # noqa: E402  (the benchmark's reference, shared)


def calibrate(args: argparse.Namespace) -> tuple[list[str], list]:
    bundle = args.model
    generator = LandmarkGenerator.from_pretrained(bundle)
    sampling = replace(SamplingConfig(steps=args.steps), calibrate=False)
    existing, control = generator.label_gains, generator.label_control(sampling)
    if args.steps != MAIN_STEPS and (existing is None or existing.label_control != control):
        raise Face4DError(f"{bundle / GAINS_FILE} has no main table under {control} control; measure it first "
                          f"(--steps {MAIN_STEPS})")
    if existing is not None and not args.overwrite and (args.steps == MAIN_STEPS or args.steps in existing.by_steps):
        raise Face4DError(f"{bundle / GAINS_FILE} has gains for {args.steps} steps; pass --overwrite to measure "
                          "them again")
    split = Dataset.load(args.data).sequences(args.split)
    reference = draw_reference(split, None, args.per_label, args.seed, f"{args.data}: no {args.split}")
    if args.repeats < 1:
        raise Face4DError(f"--repeats must be >= 1, got {args.repeats}")
    samples = LandmarkSequences.concatenate([generate_like(reference, lambda idx, frames, s: generator.generate(
        list(reference.labels[idx]), frames, len(idx), s, list(reference.types[idx]), sampling),
        args.seed + REPEAT_SEED_STRIDE * r, desc=f"label-guided samples ({r + 1}/{args.repeats})")
        for r in range(args.repeats)])
    data, ours = landmark_stats(split), landmark_stats(samples)
    labels = [name for name in dict.fromkeys(reference.labels)]
    data_amp = {name: data.mean("apex_amplitude", split.labels == name) for name in labels}
    our_amp = {name: ours.mean("apex_amplitude", samples.labels == name) for name in labels}
    gains = gains_from_amplitudes(data_amp, our_amp)
    command = "python scripts/calibrate_labels.py " + " ".join(sys.argv[1:])
    measured = {"data": str(args.data), "split": args.split, "per_label": args.per_label, "repeats": args.repeats,
                "seed": args.seed, "steps": args.steps, "command": command}
    same = existing is not None and existing.label_control == control
    table = (existing if same else LabelGains(control, gains, measured)).with_steps(args.steps, gains, measured)
    path = write_gains(bundle, table)
    rows = [[name, str(int((split.labels == name).sum())), str(int((samples.labels == name).sum())),
             f"{data_amp[name]:.3f}", f"{our_amp[name]:.3f}", f"{gains[name]:.2f}"] for name in labels]
    spread = np.array(list(gains.values()))
    return [f"Wrote `{path}` (label control: {control}; its table for {args.steps} fast-sampler steps). "
            f"Reference: {len(reference)} {args.split} sequences of `{args.data.name}` (the training dataset), up to "
            f"{args.per_label} per label; {args.repeats} uncalibrated label-guided samples each (its label, order "
            f"and length; fast sampler, {args.steps} steps, {args.threads} threads). Data amplitude: over every "
            f"{args.split} sequence of the label. Gain = data / model, mean apex amplitude; gains from "
            f"{spread.min():.2f} to {spread.max():.2f}.",
            markdown_table(["Label", "Data sequences", "Samples", "Data amplitude (cm)", "Model amplitude (cm)",
                            "Gain"], rows)], []


def main(argv: list[str] | None = None) -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, type=Path, help="the dataset the bundle was trained on")
        parser.add_argument("--model", required=True, type=Path, help="the bundle to calibrate")
        parser.add_argument("--per-label", type=int, default=16)
        add_split_argument(parser, "the reference")
        parser.add_argument("--repeats", type=int, default=4, help="samples per reference sequence")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--steps", type=int, default=MAIN_STEPS,
                            help=f"fast-sampler steps to measure at (default {MAIN_STEPS}: the main table; other "
                                 "counts add a table that sampling with them uses)")
        parser.add_argument("--overwrite", action="store_true", help="replace the gains already measured at --steps")

    run_script("calibrate_labels.py", __doc__, "label_gains", "Label amplitude calibration", calibrate, argv,
               arguments, common=False, section=lambda args: (
                   ("label_gains", "Label amplitude calibration") if args.steps == MAIN_STEPS else
                   (f"label_gains_{args.steps}", f"Label amplitude calibration at {args.steps} steps")))


if __name__ == "__main__":
    main()
