"""Neural renderer evaluation on the unseen (test) identities of a portrait dataset, where the exact
ground-truth image of every (identity, target landmarks) pair exists.

    python scripts/eval_neural_images.py --data /work/data/portraits64 --evaluators models/neural/judges \
        --ccfexp ccfexp=models/neural/ccfexp --ccfexp no_landmarks=models/neural/ccfexp_nolm \
        --edit vae=models/neural/edit --edit label=models/neural/edit_label --out docs/results.md

Writes the section ``neural_images`` of ``docs/results.md`` (``--section`` another, to keep a table
scored by other judges):

* **landmark-conditioned images** (CCFExp, its ablations, and the piecewise-affine warp baseline):
  NME of the 51 inner landmarks over the inter-ocular distance (our landmark regressor on the image
  against the exact target landmarks), identity cosine to the identity image (our identity encoder;
  the ground-truth pairs' own level is its reference), PSNR / SSIM against the exact image, a Fréchet
  distance between the generated and the ground-truth images in our evaluators' feature space (not
  FID), and CCFExp's transfer-and-back cycle (the expression moved to another test identity and
  back, scored by PSNR and Fréchet distance against the original: the paper's aFID on our features);
* **label editing** (label-only vs VAE): label accuracy of our expression classifier on the edits
  (18 labels), identity cosine to the source, from noise and SDEdit;
* **cost**: seconds for one 64² image with 25 DDIM steps, on ``--threads`` CPU threads, in float32 and
  in the default precision (``render.neural.precision``: bfloat16 on a CPU that has it), which the
  image rows above use.

``--evaluators`` are the judges: give networks trained apart from CCFExp's loss networks (another seed,
``face4d train neural-evaluators --seed 1``), so that a model is not scored by the networks it was
trained against (the paper scores with the IR-50 / MobileFaceNet it trains with); their own scores on
the ground truth are reported beside the models'.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from face4d.eval.report import markdown_table, update_section
from render.neural import metrics
from render.neural.ccfexp_model import CCFExp
from render.neural.conditional_diffusion_model import EditModel
from render.neural.data import load_images, load_neutrals, read_manifest, to_uint8
from render.neural.evaluators import Evaluators
from render.neural.precision import resolve

SECTION = "neural_images"


def named(text: str) -> tuple[str, Path]:
    name, _, path = text.partition("=")
    if not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, Path(path)


def pick_pairs(test: dict, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(len(test["rgb"]), min(count, len(test["rgb"])), replace=False))


def neutral_rows(neutrals: dict, identities: np.ndarray) -> np.ndarray:
    row = {int(i): r for r, i in enumerate(neutrals["identity"])}
    return np.array([row[int(i)] for i in identities])


def generate(model: CCFExp, neutrals: dict, rows: np.ndarray, targets: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """One image per (neutral row, target landmarks), generated identity by identity."""
    out = np.zeros((len(rows), model.config.size, model.config.size, 3), np.uint8)
    for r in np.unique(rows):
        sel = np.flatnonzero(rows == r)
        out[sel] = to_uint8(model.generate(neutrals["rgb"][r], neutrals["landmarks"][r], targets[sel], steps, seed))
    return out


def image_row(name, images, truth, targets, identity_images, ev, truth_features) -> list:
    nme = metrics.nme_inner(metrics.landmarks_of(ev, images), targets)
    return [name, f"{nme:.4f}", f"{metrics.identity_cosine(ev, images, identity_images):.3f}",
            f"{metrics.psnr(images, truth):.2f}", f"{metrics.ssim(images, truth):.3f}",
            f"{metrics.frechet_distance(metrics.features(ev, images), truth_features):.3f}"]


def cycle_scores(model, neutrals, test, pairs, rows, ev, steps, seed, truth_features) -> tuple[float, float]:
    """Transfer each pair's expression to the next test identity and back (landmarks of the transfer
    read from its image by our regressor); PSNR and Fréchet distance of the result to the original."""
    ids = np.unique(rows)
    other = ids[(np.searchsorted(ids, rows) + 1) % len(ids)]
    own_lm, other_lm = neutrals["landmarks"][rows], neutrals["landmarks"][other]
    there = generate(model, neutrals, other, metrics.expression_transfer(own_lm, test["landmarks"][pairs], other_lm),
                     steps, seed)
    back_targets = metrics.expression_transfer(other_lm, metrics.landmarks_of(ev, there), own_lm)
    back = generate(model, neutrals, rows, back_targets, steps, seed)
    return (metrics.psnr(back, test["rgb"][pairs]),
            metrics.frechet_distance(metrics.features(ev, back), truth_features))


def seconds_per_image(model: CCFExp, neutrals: dict, threads: int, precision: str) -> float:
    torch.set_num_threads(threads)
    model.generate(neutrals["rgb"][0], neutrals["landmarks"][0], neutrals["landmarks"][:1], steps=2,
                   precision=precision)  # warm-up: oneDNN builds its kernels for these shapes once
    times = []
    for _ in range(5):
        start = time.perf_counter()
        model.generate(neutrals["rgb"][0], neutrals["landmarks"][0], neutrals["landmarks"][:1], steps=25,
                       precision=precision)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--evaluators", required=True, type=Path)
    parser.add_argument("--ccfexp", type=named, action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--edit", type=named, action="append", default=[], help="NAME=DIR, repeatable")
    parser.add_argument("--pairs", type=int, default=200, help="test pairs scored (default 200)")
    parser.add_argument("--cycle-pairs", type=int, default=50)
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--strength", type=float, default=0.6, help="SDEdit strength of the editing rows")
    parser.add_argument("--guidance", type=float, default=1.0,
                        help="classifier-free guidance on the label of the editing rows (1: none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/results.md"))
    parser.add_argument("--section", default=SECTION, help=f"the section of --out to write (default {SECTION})")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    manifest = read_manifest(args.data)
    test, neutrals = load_images(args.data, "test"), load_neutrals(args.data)
    ev = Evaluators.from_pretrained(args.evaluators)
    pairs = pick_pairs(test, args.pairs, args.seed)
    rows = neutral_rows(neutrals, test["identity"][pairs])
    truth, targets, identity_images = test["rgb"][pairs], test["landmarks"][pairs], neutrals["rgb"][rows]
    truth_features = metrics.features(ev, truth)
    headers = ["model", "NME (51 inner, / IOD)", "identity cosine", "PSNR dB", "SSIM", "Fréchet dist. (ours)"]
    truth_nme = metrics.nme_inner(metrics.landmarks_of(ev, truth), targets)
    table = [["ground truth (the evaluators' own error)", f"{truth_nme:.4f}",
              f"{metrics.identity_cosine(ev, truth, identity_images):.3f}", "-", "-", "-"],
             image_row("warp baseline (piecewise affine)",
                       np.stack([metrics.warp_baseline(identity_images[i], neutrals["landmarks"][rows[i]], targets[i])
                                 for i in range(len(pairs))]), truth, targets, identity_images, ev, truth_features)]
    cycles, costs = [], []
    for name, directory in args.ccfexp:
        model = CCFExp.from_pretrained(directory)
        images = generate(model, neutrals, rows, targets, args.steps, args.seed)
        table.append(image_row(name, images, truth, targets, identity_images, ev, truth_features))
        k = min(args.cycle_pairs, len(pairs))
        psnr, fd = cycle_scores(model, neutrals, test, pairs[:k], rows[:k], ev, args.steps, args.seed, truth_features)
        cycles.append([name, f"{psnr:.2f}", f"{fd:.3f}"])
        costs.append([name, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}",
                      *(f"{seconds_per_image(model, neutrals, args.threads, p):.2f}" for p in ("float32", "auto"))])
        torch.set_num_threads(args.threads)
    labelled = pairs[test["label"][pairs] >= 0]
    edit_rows = [["ground truth (classifier on the real images)", "-",
                  f"{metrics.label_accuracy(ev, test['rgb'][labelled], test['label'][labelled]):.3f}", "-"]]
    # the source: another test image of the same person (the next one), the label: the target's
    by_id = {int(i): np.flatnonzero(test["identity"] == i) for i in np.unique(test["identity"])}
    sources = np.array([by_id[int(test["identity"][p])][(np.searchsorted(by_id[int(test["identity"][p])], p) + 1)
                                                      % len(by_id[int(test["identity"][p])])] for p in labelled])
    edit_rows.append(["source, unedited (the floor)", "-",
                      f"{metrics.label_accuracy(ev, test['rgb'][sources], test['label'][labelled]):.3f}", "1.000"])
    for name, directory in args.edit:
        model = EditModel.from_pretrained(directory)
        for strength in (1.0, args.strength):
            edited = np.concatenate([to_uint8(model.edit(test["rgb"][sources[i:i + 32]], test["label"][labelled[i:i + 32]],
                                                         steps=args.steps, strength=strength, seed=args.seed,
                                                         guidance=args.guidance))
                                     for i in range(0, len(labelled), 32)])
            edit_rows.append([f"{name} ({model.config.variant})", f"{strength:g}",
                              f"{metrics.label_accuracy(ev, edited, test['label'][labelled]):.3f}",
                              f"{metrics.identity_cosine(ev, edited, test['rgb'][sources]):.3f}"])
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    text = (f"## Neural renderer: images on unseen identities ({manifest['size']}², {len(pairs)} test pairs of "
            f"{len(np.unique(test['identity']))} test identities; judges `{args.evaluators.name}`)\n\n`{command}`\n\n"
            + markdown_table(headers, table)
            + "\nTransfer-and-back cycle (CCFExp's aFID protocol on our features; "
              f"{min(args.cycle_pairs, len(pairs))} pairs):\n\n"
            + markdown_table(["model", "PSNR dB", "Fréchet dist. (ours)"], cycles)
            + f"\nLabel editing ({len(labelled)} edits of another image of the person; strength 1 = from noise, "
              f"less = SDEdit from the source; label guidance {args.guidance:g}):\n\n"
            + markdown_table(["model", "strength", "label accuracy (18 labels)", "identity cosine to source"],
                             edit_rows)
            + f"\nCost (one {manifest['size']}² image, 25 DDIM steps, {args.threads} CPU threads):\n\n"
            + markdown_table(["model", "M parameters", "seconds / image, float32",
                              f"seconds / image, default ({resolve('cpu')} here)"], costs))
    update_section(args.out, args.section, text)
    print(text)


if __name__ == "__main__":
    main()
