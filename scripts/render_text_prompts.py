"""Text control on prompts never seen in training: a figure of generated expressions.

The training texts name one facial action each ("disgust", "high smile", or "from a neutral face to
a high smile"); compositional prompts combine two. For every prompt, one text-guided sequence
(Alg. 2) is decoded onto the default head and its first, middle and last frames are rendered in a
row, so a mixed prompt can be compared with its parts. The default prompts use the enriched form,
which fixes the order (neutral first): the mesh shows the motion from the sequence's first frame. Writes a PNG (default
``docs/text_prompts.png``) and prints the command that made it.

    python scripts/render_text_prompts.py [--prompt TEXT ...] [--seed 0] [--out docs/text_prompts.png]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from face4d.pipeline import Pipeline
from render import image_grid, render_sequence, save_image

PROMPTS = ("from a neutral face to disgust", "from a neutral face to a high smile",
           "from a neutral face to a disgust high smile", "from a neutral face to anger",
           "from a neutral face to a mouth down", "from a neutral face to an angry mouth down")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompt", action="append", help=f"a text (repeatable; default: {', '.join(PROMPTS)})")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=192, help="tile size in pixels")
    parser.add_argument("--out", default="docs/text_prompts.png")
    parser.add_argument("--overwrite", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    prompts = args.prompt or list(PROMPTS)
    pipeline = Pipeline.from_default()
    result = pipeline.generate(text=prompts, num=len(prompts), frames=args.frames, seed=args.seed, progress=True)
    shown = [0, args.frames // 2, args.frames - 1]
    bounds = np.concatenate([result.driving_landmarks(i)[shown] for i in range(len(prompts))]).reshape(-1, 3)
    tiles, captions = [], []
    for prompt, mesh in zip(prompts, result.meshes):
        tiles += list(render_sequence(mesh[shown], result.faces, size=(args.size, args.size), bounds=bounds,
                                      progress=False))
        captions += [f'"{prompt}", frame {f}' for f in shown]
    path = save_image(args.out, image_grid(tiles, captions, ncols=len(shown)), overwrite=args.overwrite)
    print(f"wrote {path}: python scripts/render_text_prompts.py {' '.join(argv)}".rstrip())


if __name__ == "__main__":
    main()
