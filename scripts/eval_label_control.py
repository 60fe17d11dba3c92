"""Table 1 of the paper on our data: label control, scored by the independent classifier (IC).

Every row is a set of sequences scored against the dataset's test split: accuracy of the IC w.r.t.
the requested labels, and FID on the IC's features. Each method makes one sequence per test
sequence, with its label and length (``face4d.eval.protocol``). Rows:

* ground truth: the test split itself (accuracy); its FID compares the val split with the test
  split (FID(test, test) would be 0 by definition);
* ours, paper sampler: ancestral sampling over all T = 2000 steps with label guidance (Alg. 1);
* ours, fast sampler: the same on a 50-step respaced schedule;
* unguided: the fast sampler without guidance (accuracy = chance level, FID = the prior's);
* label-Gaussian baseline: a per-label linear-Gaussian (PPCA) model of sequences.

It also times one 40-frame label-guided sequence with each sampler on this machine, and writes the
table with this command into ``docs/results.md`` (section ``table1``).

    python scripts/eval_label_control.py --data DATA --ic IC_DIR [--model BUNDLE] [--paper-limit N]
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face4d.data.dataset import Dataset
from face4d.eval.baselines import LabelGaussian
from face4d.eval.metrics import accuracy, classify, frechet_distance
from face4d.eval.protocol import generate_like
from face4d.eval.report import markdown_table, update_section
from face4d.generate import LandmarkGenerator, SamplingConfig
from face4d.pretrained import load_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="the dataset the models were trained on")
    parser.add_argument("--ic", required=True, type=Path, help="independent classifier ('face4d train ic')")
    parser.add_argument("--model", type=Path, help="model bundle (default: the embedded one)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the fast sampler")
    parser.add_argument("--limit", type=int, help="generate for a random subset of this many test sequences "
                                                  "(FID still against the whole test split; the ground-truth "
                                                  "row then uses as many val sequences)")
    parser.add_argument("--paper-limit", type=int, help="score the paper sampler on at most this many test "
                                                        "sequences, all of one length (default: as --limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the targets are for 2 cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python scripts/eval_label_control.py " + shlex.join(sys.argv[1:])

    data = Dataset.load(args.data)
    test, val, train = data.sequences("test"), data.sequences("val"), data.sequences("train")
    rng = np.random.default_rng(args.seed)
    reference = test
    if args.limit is not None and args.limit < len(test):
        reference = test.select(np.sort(rng.choice(len(test), args.limit, replace=False)))
        val = val.select(np.sort(rng.choice(len(val), min(args.limit, len(val)), replace=False)))
    ic, _, _ = load_pretrained(args.ic, "ic")
    generator = LandmarkGenerator.from_pretrained(args.model)
    test_pred, test_features = classify(ic, test)

    def score(seqs) -> tuple[float, float]:
        pred, features = classify(ic, seqs)
        return accuracy(pred, seqs.labels), frechet_distance(features, test_features)

    rows, results = [], {}

    def add(name: str, sampler: str, seqs, seconds: float | None) -> None:
        acc, fid = score(seqs)
        results[name, sampler] = (acc, fid)
        per_seq = "" if seconds is None else f"{seconds / len(seqs):.3f}"
        rows.append([name, sampler, len(seqs), f"{100 * acc:.1f}", f"{fid:.2f}", per_seq])
        print(f"{name:28s} {sampler:12s} n={len(seqs):4d} accuracy {100 * acc:5.1f}%  FID {fid:7.2f}", flush=True)

    _, val_features = classify(ic, val)
    gt_acc, gt_fid = accuracy(test_pred, test.labels), frechet_distance(val_features, test_features)
    rows.append(["ground truth (test; FID: val vs test)", "", len(val), f"{100 * gt_acc:.1f}", f"{gt_fid:.2f}", ""])
    print(f"ground truth: accuracy {100 * gt_acc:.1f}%  FID {gt_fid:.2f}")

    fast = SamplingConfig(sampler="fast", steps=args.steps)
    paper = SamplingConfig(sampler="paper")

    def guided(sampling):
        return lambda idx, frames, seed: generator.generate(list(reference.labels[idx]), frames=frames, seed=seed,
                                                            sampling=sampling)

    start = time.perf_counter()
    seqs = generate_like(reference, guided(fast), seed=args.seed, desc="fast sampler")
    add("ours", f"fast ({args.steps})", seqs, time.perf_counter() - start)

    # All T steps are 40x the fast sampler's cost, and one batch per length: one length keeps it to one batch.
    paper_ref = reference
    paper_limit = args.paper_limit if args.paper_limit is not None else args.limit
    if paper_limit is not None and paper_limit < len(reference):
        lengths, counts = np.unique(reference.lengths, return_counts=True)
        same = np.flatnonzero(reference.lengths == lengths[counts.argmax()])
        paper_ref = reference.select(np.sort(rng.choice(same, min(paper_limit, len(same)), replace=False)))
    start = time.perf_counter()
    seqs = generate_like(paper_ref, lambda idx, frames, seed: generator.generate(
        list(paper_ref.labels[idx]), frames=frames, seed=seed, sampling=paper), seed=args.seed, desc="paper sampler")
    add("ours", f"paper ({generator.diffusion.num_timesteps})", seqs, time.perf_counter() - start)

    start = time.perf_counter()
    seqs = generate_like(reference, lambda idx, frames, seed: generator.generate(None, frames=frames, num=len(idx),
                                                                                 seed=seed, sampling=fast),
                         seed=args.seed, desc="unguided")
    add("unguided", f"fast ({args.steps})", seqs, time.perf_counter() - start)

    baseline = LabelGaussian.fit(train)
    start = time.perf_counter()
    seqs = generate_like(reference, lambda idx, frames, seed: baseline.sample(reference.labels[idx], frames, seed),
                         seed=args.seed, progress=False)
    add("label-Gaussian (PPCA) baseline", "", seqs, time.perf_counter() - start)

    latency = {}
    for name, sampling, repeats in (("fast", fast, 5), ("paper", paper, 1)):
        times = []
        for r in range(repeats):
            start = time.perf_counter()
            generator.generate("high_smile", frames=40, num=1, seed=r, sampling=sampling)
            times.append(time.perf_counter() - start)
        latency[name] = float(np.median(times))
        print(f"one 40-frame label-guided sequence, {name} sampler: {latency[name]:.2f} s (median of {repeats})")

    ours_acc, ours_fid = results["ours", f"fast ({args.steps})"]
    paper_acc = results["ours", f"paper ({generator.diffusion.num_timesteps})"][0]
    checks = [
        (f"accuracy (fast) >= ground truth - 2 points: {100 * ours_acc:.1f} vs {100 * gt_acc - 2:.1f}",
         ours_acc >= gt_acc - 0.02),
        (f"FID (fast) <= 3 x ground truth: {ours_fid:.2f} vs {3 * gt_fid:.2f}", ours_fid <= 3 * gt_fid),
        (f"one guided 40-frame sequence, fast sampler, <= 2 s: {latency['fast']:.2f} s", latency["fast"] <= 2.0),
        (f"fast accuracy within 3 points of paper mode: {100 * ours_acc:.1f} vs {100 * paper_acc:.1f}",
         abs(ours_acc - paper_acc) <= 0.03),
    ]
    for text, ok in checks:
        print(("PASS " if ok else "FAIL ") + text)

    subset_note = ""
    if reference is not test:
        subset_note += (f" Generated rows made one sequence for each of a random subset of {len(reference)} test "
                        f"sequences, and the ground-truth FID used {len(val)} val sequences: FID grows as sets "
                        "shrink, so compare rows of equal size.")
    if paper_ref is not reference:
        subset_note += (f" The paper sampler made {len(paper_ref)} sequences, all {paper_ref.num_frames} frames long "
                        "(its FID is inflated by the small set; its accuracy is comparable).")
    text = "\n".join([
        "## Table 1: label control",
        "",
        f"Command: `{command}`",
        "",
        f"Scored against the test split ({len(test)} sequences) of `{args.data.name}` by the independent "
        "classifier (one LSTM layer + a linear layer, trained on the train split). Every method makes one "
        "sequence per test sequence with its label and length. Time: wall-clock seconds per sequence, "
        f"batched, with {args.threads} torch threads on this machine.{subset_note}",
        "",
        markdown_table(["Method", "Sampler", "Sequences", "Accuracy (%)", "FID", "s / sequence"], rows),
        f"One 40-frame label-guided sequence (`high_smile`, batch of one): fast sampler {latency['fast']:.2f} s, "
        f"paper sampler {latency['paper']:.1f} s.",
        "",
        "Targets:",
        "",
        *[f"- {'pass' if ok else 'FAIL'}: {text}" for text, ok in checks],
    ])
    update_section(args.out, "table1", text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
