"""The README's demo figure: ``face4d demo``'s preview as a still and as a small animation.

Runs what ``face4d demo`` runs (its labels and seed, on the default head, from its own neutral
face) into a temporary directory, then writes ``docs/demo.png`` (frames 0, 20 and 39 of the
256-pixel preview grid side by side) and ``docs/demo.gif`` (the whole preview at 128-pixel tiles).

    python scripts/render_demo_figure.py [--out docs] [--overwrite]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from face4d.demo import run_demo
from face4d.pipeline import Pipeline
from render import save_animation, save_image

STILL_FRAMES = (0, 20, 39)
GAP = 8  # white pixels between the stills


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs"), help="folder of demo.png and demo.gif")
    parser.add_argument("--overwrite", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    still, animation = args.out / "demo.png", args.out / "demo.gif"
    for path in (still, animation):
        if path.exists() and not args.overwrite:
            raise SystemExit(f"error: {path} already exists; pass --overwrite to replace it")
    pipeline = Pipeline.from_default()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_demo(Path(tmp) / "demo", formats="pc2", preview=[], pipeline=pipeline, progress=False)
    frames = pipeline.render_frames(result, size=256)
    gap = np.full((frames.shape[1], GAP, 3), 255, np.uint8)
    tiles = [part for f in STILL_FRAMES for part in (frames[f], gap)][:-1]
    save_image(still, np.concatenate(tiles, axis=1), overwrite=args.overwrite)
    save_animation(animation, pipeline.render_frames(result, size=128), fps=result.fps, overwrite=args.overwrite)
    print(f"wrote {still} and {animation}: python scripts/render_demo_figure.py {' '.join(argv)}".rstrip())


if __name__ == "__main__":
    main()
