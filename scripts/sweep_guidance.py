"""Sweep the guidance settings of label or text control on a subset of the test split.

For each setting ``lr:steps:lambda`` (Adagrad learning rate in units of sigma_t, Adagrad steps per
reverse step, weight of the fluency term), one sequence per test sequence of a seeded subset is
generated with the fast sampler, guided by that sequence's label (``--condition label``) or raw text
(``--condition text``), and scored like Table 1: IC accuracy and FID against the test split. Prints
one line per setting. The defaults in ``face4d/guidance.py`` (label lr 0.2, text lambda 1e-4) were
chosen with

    python scripts/sweep_guidance.py --data DATA --ic IC --limit 96 --condition label 0.1:3:0.01 0.2:3:0.01 0.3:3:0.01
    python scripts/sweep_guidance.py --data DATA --ic IC --limit 64 --condition text 0.2:3:0.01 0.2:3:0.001 0.2:3:0.0001 0.2:3:0
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from face4d.eval.harness import Evaluation
from face4d.eval.protocol import generate_like
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.guidance import GuidanceConfig


def setting(text: str) -> GuidanceConfig:
    try:
        lr, steps, lam = text.split(":")
        return GuidanceConfig(lr=float(lr), steps=int(steps), lam=float(lam))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lr:steps:lambda, e.g. 0.2:3:0.01, got {text!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset the models were trained on")
    parser.add_argument("--ic", required=True, help="independent classifier ('face4d train ic')")
    parser.add_argument("--model", help="model bundle (default: the embedded one)")
    parser.add_argument("--condition", choices=("label", "text"), default="label")
    parser.add_argument("--limit", type=int, default=96, help="test sequences in the subset")
    parser.add_argument("--steps", type=int, default=50, help="steps of the fast sampler")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("settings", nargs="+", type=setting, metavar="LR:STEPS:LAMBDA")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(args.threads)
    evaluation = Evaluation.load(args.data, args.ic, args.limit, args.seed)
    generator = LandmarkGenerator.from_pretrained(args.model)
    reference = evaluation.reference
    wanted = reference.labels if args.condition == "label" else reference.texts
    for guidance in args.settings:
        sampling = (SamplingConfig(steps=args.steps, guidance=guidance) if args.condition == "label"
                    else SamplingConfig(steps=args.steps, text_guidance=guidance))
        start = time.perf_counter()
        seqs = generate_like(reference, lambda idx, frames, seed: generator.generate(
            **{args.condition: list(wanted[idx])}, frames=frames, seed=seed, sampling=sampling),
            seed=args.seed, progress=False)
        scores = evaluation.score(seqs, time.perf_counter() - start)
        print(f"{args.condition} lr {guidance.lr} steps {guidance.steps} lambda {guidance.lam}: {scores.summary()}",
              flush=True)


if __name__ == "__main__":
    main()
