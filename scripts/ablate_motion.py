"""Motion-quality ablation: what each training and sampling lever changes. Writes section
``motion_ablation`` of ``docs/results.md``.

Each ``--variant NAME=BUNDLE[,key=value...]`` is a model bundle (a directory with ``denoiser/`` and
the guidance models) sampled with ``SamplingConfig`` fields given as ``key=value`` (``steps``,
``variance``, ``eta``, ``sampler``, ``label_control``, ``condition_scale``, ``calibrate`` 0 or 1) and
label guidance's ``guidance_lr`` and ``guidance_norm`` (``GuidanceConfig``). Every variant makes one
label-guided sequence per reference sequence (label, order and length of up to ``--per-label`` test
sequences per label of a dataset of another seed than the training data, as
``scripts/eval_motion.py``) and one unguided sequence per reference sequence, measured with
``face4d.eval.motion`` against the reference; the table also states each denoiser's training
(prediction, skip path, loss weights, steps) from its config.json.

    python scripts/ablate_motion.py --data data/face4d_seed1 --variant "paper=runs/b_eps,variance=beta" \\
        --variant "ours=runs/b_ours,eta=0" [--per-label 4]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError
from face4d.eval.harness import run_script
from face4d.eval.motion import MotionStats, landmark_stats
from face4d.eval.protocol import generate_like
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator, SamplingConfig

sys.path.insert(0, str(Path(__file__).parent))
from eval_motion import (  # noqa: E402  (the benchmark's, shared)
    OTHER_SEED_SPLITS, STILL_LEVEL, add_split_argument, reference_set, still_share)

CONVERTERS = {"steps": int, "variance": str, "sampler": str, "eta": lambda v: None if v == "none" else float(v),
              "label_control": str, "condition_scale": float, "calibrate": lambda v: v not in ("0", "false", "no")}
SECTIONS = {"training": ("motion_ablation", "Motion quality: ablation"),
            "guidance": ("motion_guidance", "Motion quality: label guidance and training length")}

GUIDANCE = {"guidance_lr": ("lr", float), "guidance_norm": ("norm", str)}
"""Options of label guidance (``GuidanceConfig``) a variant may set."""


def parse_variant(text: str) -> tuple[str, Path, SamplingConfig]:
    """``NAME=BUNDLE[,key=value...]`` -> (name, bundle, sampling)."""
    name, _, rest = text.partition("=")
    bundle, *options = rest.split(",")
    if not name or not bundle:
        raise Face4DError(f"a variant is NAME=BUNDLE[,key=value...], got {text!r}")
    settings, guidance = {}, {}
    for option in options:
        key, _, value = option.partition("=")
        if key in GUIDANCE:
            field, convert = GUIDANCE[key]
            guidance[field] = convert(value)
        elif key in CONVERTERS:
            settings[key] = CONVERTERS[key](value)
        else:
            raise Face4DError(f"unknown sampling option {key!r} in {text!r}; use {', '.join([*CONVERTERS, *GUIDANCE])}")
    defaults = SamplingConfig()
    return name, Path(bundle), replace(defaults, guidance=replace(defaults.guidance, **guidance), **settings)


def training_of(bundle: Path) -> list[str]:
    """Prediction, skip path, label input, velocity weight, Min-SNR gamma / floor and steps of a
    bundle's denoiser."""
    config = json.loads((bundle / "denoiser" / "config.json").read_text())
    loss = config.get("loss", {})
    gamma = loss.get("snr_gamma")
    label_input = f"yes (dropout {loss['condition_dropout']:g})" if config["model_config"].get("num_labels") else "no"
    return [config["diffusion"].get("prediction", "epsilon"), config["model_config"].get("skip", "frame"), label_input,
            f"{loss.get('velocity_weight', 0.0):g}", "uniform" if not gamma else f"{gamma:g} / {loss['snr_floor']:g}",
            str(config.get("step", ""))]


def sampler_of(sampling: SamplingConfig, generator: LandmarkGenerator) -> str:
    steps = generator.diffusion.num_timesteps if sampling.sampler == "paper" else sampling.steps
    kind = f"DDIM eta {sampling.eta:g}" if sampling.eta is not None else f"DDPM, {sampling.variance} variance"
    control = generator.label_control(sampling)
    if control != "classifier" and sampling.condition_scale != 1.0:
        control += f", scale {sampling.condition_scale:g}"
    if control != "conditional":
        control += f" (Adagrad per {sampling.guidance.norm}, lr {sampling.guidance.lr:g})"
    if not sampling.calibrate:
        control += ", uncalibrated"
    return f"{kind}, {steps} steps; labels: {control}"


def still_by_order(stats: MotionStats, reference: LandmarkSequences, data: MotionStats) -> str:
    """``still_share`` of the N2E and of the E2N sequences of ``reference``, as ``N2E / E2N``."""
    return " / ".join(still_share(stats, reference.labels, data, reference.labels, reference.types == kind)
                      for kind in ("N2E", "E2N"))


def evaluate(args: argparse.Namespace) -> tuple[list[str], list]:
    variants = [parse_variant(text) for text in args.variant]
    reference = reference_set(args.data, None, args.per_label, args.seed, args.split)
    data = landmark_stats(reference)
    rows = [["data (other seed)", "", "", "", "", "", "", "", f"{data.mean('speed'):.4f}",
             f"{data.mean('jitter'):.4f}", f"{data.mean('apex_amplitude'):.3f}", "1.00", "1.00", "1.00",
             "1.00 - 1.00", "", still_by_order(data, reference, data), ""]]
    labels = sorted(set(reference.labels))
    for name, bundle, sampling in variants:
        generator = LandmarkGenerator.from_pretrained(bundle)
        start = time.perf_counter()
        guided = landmark_stats(generate_like(reference, lambda idx, frames, s: generator.generate(
            list(reference.labels[idx]), frames, len(idx), s, list(reference.types[idx]), sampling),
            seed=args.seed, desc=name))
        seconds = (time.perf_counter() - start) / len(reference)
        free = landmark_stats(generate_like(reference, lambda idx, frames, s: generator.generate(
            None, frames, len(idx), s, sampling=sampling), seed=args.seed, desc=f"{name}, unguided"))
        per_label = {measure: [guided.mean(measure, reference.labels == label) / data.mean(measure, reference.labels == label)
                               for label in labels] for measure in ("jitter", "apex_amplitude")}
        rows.append([name, *training_of(bundle), sampler_of(sampling, generator),
                     f"{guided.mean('speed'):.4f}", f"{guided.mean('jitter'):.4f}",
                     f"{guided.mean('apex_amplitude'):.3f}",
                     f"{guided.mean('jitter') / data.mean('jitter'):.2f}",
                     f"{guided.mean('apex_amplitude') / data.mean('apex_amplitude'):.2f}",
                     f"{max(per_label['jitter']):.2f}",
                     f"{min(per_label['apex_amplitude']):.2f} - {max(per_label['apex_amplitude']):.2f}",
                     f"{free.mean('apex_amplitude') / data.mean('apex_amplitude'):.2f}",
                     still_by_order(guided, reference, data), f"{seconds:.3f}"])
        print(" | ".join(rows[-1]), flush=True)
    headers = ["Variant", "Prediction", "Skip path", "Label input", "Velocity weight", "Min-SNR gamma / floor",
               "Training steps", "Sampler", "Speed (cm/frame)", "Jitter (cm/frame^2)", "Amplitude (cm)", "Jitter ratio",
               "Amplitude ratio", "Largest label jitter ratio", "Label amplitude ratios", "Amplitude ratio, unguided",
               "Barely moves, N2E / E2N", "s / sequence"]
    return [
        f"Reference: {len(reference)} {args.split} sequences of `{args.data.name}` (another seed than the training data), "
        f"{args.per_label} per label of its labels. Each variant: one label-guided sequence (type S classifier, the "
        "reference's label, order and length) per reference sequence, and one unguided; measures and ratios as in "
        f"*Motion quality* (ratios: ours / data; barely moves: apex amplitude under {STILL_LEVEL:g} of the label's "
        "median in the data). Every denoiser is 128 wide, 4 layers, trained on the same data "
        "with batch 64 and lr 5e-4 on this machine's CPU; their training steps differ (the column), as CPU time "
        f"allowed. Time: seconds per guided sequence, batched, {args.threads} torch threads.",
        markdown_table(headers, rows),
    ], []


def main(argv: list[str] | None = None) -> None:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--data", required=True, type=Path,
                            help="a dataset of another seed than the training data")
        parser.add_argument("--variant", action="append", required=True, help="NAME=BUNDLE[,key=value...]")
        parser.add_argument("--per-label", type=int, default=4)
        add_split_argument(parser, "the reference", OTHER_SEED_SPLITS)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--guidance-section", action="store_true",
                            help="write section motion_guidance (the label-guidance lever) instead")

    run_script("ablate_motion.py", __doc__, *SECTIONS["training"], evaluate, argv, arguments, common=False,
               section=lambda args: SECTIONS["guidance" if args.guidance_section else "training"])


if __name__ == "__main__":
    main()
