"""A look at trained image models on unseen identities: rows of identity images, ground truth, each
CCFExp model (from noise, 25 DDIM steps), and the editing model from noise and by SDEdit (strength 0.6)
towards the ground truth's label; one column per test pair (``--pairs``, drawn with ``--seed``).

    python scripts/render_neural_samples.py --data data/portraits64 --ccfexp runs/gpu2/ccfexp \\
        --ccfexp runs/gpu2/ccfexp_nolm --edit runs/gpu2/edit --out docs/neural_first_weights.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from render.neural.ccfexp_model import CCFExp
from render.neural.conditional_diffusion_model import EditModel
from render.neural.data import load_images, load_neutrals, to_uint8


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--ccfexp", type=Path, action="append", default=[], help="CCFExp model, repeatable")
    parser.add_argument("--edit", type=Path, help="editing model")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.overwrite:
        parser.error(f"{args.out} exists; pass --overwrite")
    torch.set_num_threads(args.threads)
    test, neutrals = load_images(args.data, "test"), load_neutrals(args.data)
    row = {int(i): r for r, i in enumerate(neutrals["identity"])}
    picks = np.sort(np.random.default_rng(args.seed).choice(len(test["rgb"]), args.pairs, replace=False))
    ids = [row[int(test["identity"][i])] for i in picks]
    rows = [neutrals["rgb"][ids], test["rgb"][picks]]
    for directory in args.ccfexp:
        model = CCFExp.from_pretrained(directory)
        rows.append(np.stack([to_uint8(model.generate(neutrals["rgb"][r], neutrals["landmarks"][r],
                                                      test["landmarks"][i][None], steps=25, seed=args.seed))[0]
                              for r, i in zip(ids, picks)]))
    if args.edit is not None:
        model = EditModel.from_pretrained(args.edit)
        labels = [int(x) if x >= 0 else model.label_index("happiness") for x in test["label"][picks]]
        for strength in (1.0, 0.6):
            rows.append(to_uint8(model.edit(neutrals["rgb"][ids], labels, steps=25, strength=strength, seed=args.seed)))
    grid = np.concatenate([np.concatenate(list(images), axis=1) for images in rows], axis=0)
    iio.imwrite(args.out, grid)
    print(f"wrote {args.out}: {len(rows)} rows x {args.pairs} pairs")


if __name__ == "__main__":
    main()
