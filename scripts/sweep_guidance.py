"""Sweep the guidance settings of label, text or known-frame conditioning on a subset of the test split.

One sequence per test sequence of a seeded subset is generated with the fast sampler, for each
setting, and scored like Table 1 (IC accuracy w.r.t. the sequence's label, FID against the test
split). Prints one line per setting.

* ``--condition label`` / ``text``: settings ``lr:steps:lambda[:norm]`` (Adagrad learning rate in
  units of sigma_t, Adagrad steps per reverse step, weight of the fluency term, and the Adagrad
  accumulator, ``sample`` or ``coordinate``: the condition's default when left out); guided by
  the sequence's label or raw text.
* ``--condition fill`` / ``geometry``: settings are weights of reconstruction guidance's gradient
  term (``face4d.filling.KnownFrameReconstruction``), ``W`` alone or ``W+anchor`` with its anchor
  term (``0`` is the paper's Alg. 3/4 as written). ``fill``: FFM filling (the first and last ``l``
  frames known, ``l`` in [5, 15], as Table 3), unguided, one pass. ``geometry``: geometry-adaptive
  generation from each sequence's own neutral frame, guided by the type S classifier towards its
  label and order (as Table 4, ``--passes`` passes), also printing the mean speed at the join over
  the mean speed elsewhere (1: no jump).

How the defaults (label lr 0.2 and text lambda 1e-4 in ``face4d/guidance.py``, reconstruction
guidance in ``face4d/filling.py``) were chosen is in docs/tuning.md, with commands such as

    python scripts/sweep_guidance.py --data DATA --ic IC --limit 96 --condition label 0.1:3:0.01 0.2:3:0.01 0.3:3:0.01
    python scripts/sweep_guidance.py --data DATA --ic IC --limit 64 --condition text 0.2:3:0.01 0.2:3:0.001 0.2:3:0.0001 0.2:3:0
    python scripts/sweep_guidance.py --data DATA --ic IC --limit 404 --condition fill 0 10 0+anchor 10+anchor
    python scripts/sweep_guidance.py --data DATA --ic IC --limit 96 --condition geometry 0 10 0+anchor
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from face4d.errors import Face4DError
from face4d.eval.downstream import FILL_SETTINGS
from face4d.eval.harness import Evaluation
from face4d.eval.metrics import join_speeds
from face4d.eval.protocol import generate_like
from face4d.generate import LandmarkGenerator, SamplingConfig

KNOWN_FRAMES = ("fill", "geometry")


def setting(condition: str, text: str) -> SamplingConfig:
    """The ``SamplingConfig`` (fast-sampler steps aside) of one setting of ``condition``."""
    if condition in KNOWN_FRAMES:
        weight, _, anchor = text.partition("+")
        try:
            if anchor not in ("", "anchor"):
                raise ValueError
            return SamplingConfig(reconstruction=float(weight), anchor=anchor == "anchor")
        except ValueError:
            raise SystemExit(f"error: expected a reconstruction weight such as 10 or 10+anchor, got {text!r}") from None
    try:
        lr, steps, lam, *norm = text.split(":")
        defaults = SamplingConfig()
        base = defaults.guidance if condition == "label" else defaults.text_guidance
        guidance = replace(base, lr=float(lr), steps=int(steps), lam=float(lam), **({"norm": norm[0]} if norm else {}))
    except (ValueError, Face4DError):
        raise SystemExit(f"error: expected lr:steps:lambda[:norm], e.g. 0.4:3:0.01 or 0.2:3:0.01:coordinate, "
                         f"got {text!r}") from None
    return SamplingConfig(guidance=guidance) if condition == "label" else SamplingConfig(text_guidance=guidance)


def describe(condition: str, sampling: SamplingConfig) -> str:
    if condition in KNOWN_FRAMES:
        return f"{condition} w {sampling.reconstruction:g}{' + anchor' if sampling.anchor else ''}"
    guidance = sampling.guidance if condition == "label" else sampling.text_guidance
    return f"{condition} lr {guidance.lr} steps {guidance.steps} lambda {guidance.lam} norm {guidance.norm}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset the models were trained on")
    parser.add_argument("--ic", required=True, help="independent classifier ('face4d train ic')")
    parser.add_argument("--model", help="model bundle (default: the embedded one)")
    parser.add_argument("--condition", choices=("label", "text", *KNOWN_FRAMES), default="label")
    parser.add_argument("--limit", type=int, default=96, help="test sequences in the subset")
    parser.add_argument("--steps", type=int, default=50, help="steps of the fast sampler")
    parser.add_argument("--passes", type=int, default=1, help="harmonising passes of --condition geometry")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("settings", nargs="+", metavar="SETTING", help="LR:STEPS:LAMBDA (label, text) or W / W+anchor "
                                                                       "(fill, geometry)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    settings = [setting(args.condition, text) for text in args.settings]
    torch.set_num_threads(args.threads)
    evaluation = Evaluation.load(args.data, args.ic, args.limit, args.seed)
    generator = LandmarkGenerator.from_pretrained(args.model)
    reference = evaluation.reference
    known, _ = FILL_SETTINGS[2].masks(reference.lengths, np.random.default_rng((args.seed, 2)), reference.num_frames)
    neutrals = reference.landmarks[np.arange(len(reference)), reference.neutral_frames(strict=True)]
    for config in settings:
        sampling = replace(config, steps=args.steps)

        def sample(idx: np.ndarray, frames: int, seed: int):
            if args.condition == "fill":
                return generator.fill(reference.select(idx), known[idx, :frames], seed=seed, sampling=sampling)
            if args.condition == "geometry":
                return generator.from_neutrals(neutrals[idx], frames, list(reference.types[idx]),
                                                list(reference.labels[idx]), seed, args.passes, sampling)
            wanted = reference.labels if args.condition == "label" else reference.texts
            return generator.generate(**{args.condition: list(wanted[idx])}, frames=frames, seed=seed,
                                      sampling=sampling)

        start = time.perf_counter()
        seqs = generate_like(reference, sample, seed=args.seed, progress=False)
        line = f"{describe(args.condition, sampling)}: {evaluation.score(seqs, time.perf_counter() - start).summary()}"
        if args.condition == "geometry":
            join, elsewhere = join_speeds(seqs)
            line += f", join / elsewhere {join.mean() / elsewhere.mean():.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
