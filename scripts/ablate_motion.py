"""Motion-quality ablation: what each training and sampling lever changes. Writes section
``motion_ablation`` of ``docs/results.md``.

Each ``--variant NAME=BUNDLE[,key=value...]`` is a model bundle (a directory with ``denoiser/`` and
the guidance models) sampled with ``SamplingConfig`` fields given as ``key=value`` (``steps``,
``variance``, ``eta``, ``sampler``). Every variant makes one label-guided sequence per reference
sequence (label, order and length of up to ``--per-label`` test sequences per label of a dataset of
another seed than the training data, as ``scripts/eval_motion.py``) and one unguided sequence per
reference sequence, measured with ``face4d.eval.motion`` against the reference; the table also
states each denoiser's training (prediction, skip path, loss weights, steps) from its config.json.

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

import numpy as np
import torch

from face4d.data.labels import LABEL_NAMES
from face4d.errors import Face4DError
from face4d.eval.harness import command_line, write_report
from face4d.eval.motion import landmark_stats
from face4d.eval.protocol import generate_like
from face4d.eval.report import markdown_table
from face4d.generate import LandmarkGenerator, SamplingConfig

sys.path.insert(0, str(Path(__file__).parent))
from eval_motion import reference_set  # noqa: E402  (the benchmark's reference, shared)

CONVERTERS = {"steps": int, "variance": str, "sampler": str, "eta": lambda v: None if v == "none" else float(v)}


def parse_variant(text: str) -> tuple[str, Path, SamplingConfig]:
    """``NAME=BUNDLE[,key=value...]`` -> (name, bundle, sampling)."""
    name, _, rest = text.partition("=")
    bundle, *options = rest.split(",")
    if not name or not bundle:
        raise Face4DError(f"a variant is NAME=BUNDLE[,key=value...], got {text!r}")
    settings = {}
    for option in options:
        key, _, value = option.partition("=")
        if key not in CONVERTERS:
            raise Face4DError(f"unknown sampling option {key!r} in {text!r}; use {', '.join(CONVERTERS)}")
        settings[key] = CONVERTERS[key](value)
    return name, Path(bundle), replace(SamplingConfig(), **settings)


def training_of(bundle: Path) -> list[str]:
    """Prediction, skip path, velocity weight, Min-SNR gamma / floor and steps of a bundle's denoiser."""
    config = json.loads((bundle / "denoiser" / "config.json").read_text())
    loss = config.get("loss", {})
    gamma = loss.get("snr_gamma")
    return [config["diffusion"].get("prediction", "epsilon"), config["model_config"].get("skip", "frame"),
            f"{loss.get('velocity_weight', 0.0):g}", "uniform" if not gamma else f"{gamma:g} / {loss['snr_floor']:g}",
            str(config["step"])]


def sampler_of(sampling: SamplingConfig, generator: LandmarkGenerator) -> str:
    steps = generator.diffusion.num_timesteps if sampling.sampler == "paper" else sampling.steps
    kind = f"DDIM eta {sampling.eta:g}" if sampling.eta is not None else f"DDPM, {sampling.variance} variance"
    return f"{kind}, {steps} steps"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="a dataset of another seed than the training data")
    parser.add_argument("--variant", action="append", required=True, help="NAME=BUNDLE[,key=value...]")
    parser.add_argument("--per-label", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        variants = [parse_variant(text) for text in args.variant]
        reference = reference_set(args.data, list(LABEL_NAMES), args.per_label, args.seed)
        data = landmark_stats(reference)
        rows = [["data (other seed)", "", "", "", "", "", "", f"{data.mean('speed'):.4f}",
                 f"{data.mean('jitter'):.4f}", f"{data.mean('apex_amplitude'):.3f}", "1.00", "1.00", "", ""]]
        for name, bundle, sampling in variants:
            generator = LandmarkGenerator.from_pretrained(bundle)
            start = time.perf_counter()
            guided = landmark_stats(generate_like(reference, lambda idx, frames, s: generator.generate(
                list(reference.labels[idx]), frames, len(idx), s, list(reference.types[idx]), sampling),
                seed=args.seed, desc=name))
            seconds = (time.perf_counter() - start) / len(reference)
            free = landmark_stats(generate_like(reference, lambda idx, frames, s: generator.generate(
                None, frames, len(idx), s, sampling=sampling), seed=args.seed, desc=f"{name}, unguided"))
            rows.append([name, *training_of(bundle), sampler_of(sampling, generator),
                         f"{guided.mean('speed'):.4f}", f"{guided.mean('jitter'):.4f}",
                         f"{guided.mean('apex_amplitude'):.3f}",
                         f"{guided.mean('jitter') / data.mean('jitter'):.2f}",
                         f"{guided.mean('apex_amplitude') / data.mean('apex_amplitude'):.2f}",
                         f"{free.mean('apex_amplitude') / data.mean('apex_amplitude'):.2f}", f"{seconds:.3f}"])
            print(" | ".join(rows[-1]), flush=True)
    except Face4DError as exc:
        sys.exit(f"error: {exc}")
    headers = ["Variant", "Prediction", "Skip path", "Velocity weight", "Min-SNR gamma / floor", "Training steps",
               "Sampler", "Speed (cm/frame)", "Jitter (cm/frame^2)", "Amplitude (cm)", "Jitter ratio",
               "Amplitude ratio", "Amplitude ratio, unguided", "s / sequence"]
    blocks = [
        f"Reference: {len(reference)} test sequences of `{args.data.name}` (another seed than the training data), "
        f"{args.per_label} per label of all 18. Each variant: one label-guided sequence (type S classifier, the "
        "reference's label, order and length) per reference sequence, and one unguided; measures and ratios as in "
        "*Motion quality* (ratios: ours / data). Every denoiser is 128 wide, 4 layers, trained on the same data "
        "with batch 64 and lr 5e-4 on this machine's CPU; their training steps differ (the column), as CPU time "
        f"allowed. Time: seconds per guided sequence, batched, {args.threads} torch threads.",
        markdown_table(headers, rows),
    ]
    print("\n\n".join(blocks))
    write_report(args.out, "motion_ablation", "Motion quality: ablation", command_line("ablate_motion.py", argv),
                 blocks)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
