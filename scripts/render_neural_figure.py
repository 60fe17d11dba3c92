"""The figures of docs/neural.md: a grid of unseen identities x expressions drawn by CCFExp, a
generated landmark sequence rendered neurally next to its mesh preview, and a grid of label edits.

    python scripts/render_neural_figure.py --data /work/data/portraits64 --ccfexp models/neural/ccfexp \
        --edit models/neural/edit --out docs --overwrite

With ``--ccfexp``, writes ``neural_grid.png`` (rows: test identities; columns: the neutral identity
image, then one expression per column: the landmarks of a test image of that label moved onto the row's
neutral, then the same for the warp baseline) and ``neural_sequence.gif`` (the default model's
``--label`` sequence: mesh preview | CCFExp frames). With ``--edit``, writes ``neural_edit_grid.png``
(rows: a test image of each of the first identities; columns: that source, then its edit to each of the
18 labels in the data set's order, from noise with ``--guidance``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from face4d.pipeline import Pipeline
from render.neural import metrics
from render.neural.ccfexp_model import CCFExp
from render.neural.conditional_diffusion_model import EditModel
from render.neural.data import load_images, load_neutrals, read_manifest, to_uint8
from render.preview import save_animation, save_image

GRID_LABELS = ("high_smile", "mouth_open", "eyebrow", "surprise", "sadness", "mouth_side")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--ccfexp", type=Path, help="a CCFExp model: the grid and the sequence")
    parser.add_argument("--edit", type=Path, help="a label editing model: the edit grid")
    parser.add_argument("--guidance", type=float, default=1.0, help="label guidance of the edits (1: none)")
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--label", default="mouth_open")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    if args.ccfexp is None and args.edit is None:
        parser.error("give --ccfexp, --edit or both")
    labels = read_manifest(args.data)["labels"]
    test, neutrals = load_images(args.data, "test"), load_neutrals(args.data)
    if args.edit is not None:
        edit_grid(args, test, labels)
    if args.ccfexp is not None:
        ccfexp_figures(args, test, neutrals, labels)


def edit_grid(args, test: dict, labels: list[str]) -> None:
    model = EditModel.from_pretrained(args.edit)
    sources = [int(np.flatnonzero(test["identity"] == i)[0]) for i in np.unique(test["identity"])[: args.rows]]
    tiles = []
    for s in sources:
        edited = to_uint8(model.edit(test["rgb"][s], list(range(len(labels))), steps=args.steps,
                                     guidance=args.guidance))
        tiles.append(np.concatenate([test["rgb"][s], *edited], axis=1))
    grid = np.concatenate(tiles, axis=0)
    save_image(args.out / "neural_edit_grid.png", np.kron(grid, np.ones((2, 2, 1), np.uint8)), overwrite=args.overwrite)
    print(f"wrote {args.out / 'neural_edit_grid.png'}")


def ccfexp_figures(args, test: dict, neutrals: dict, labels: list[str]) -> None:
    model = CCFExp.from_pretrained(args.ccfexp)
    row_of = {int(i): r for r, i in enumerate(neutrals["identity"])}
    people = [row_of[int(i)] for i in np.unique(test["identity"])[: args.rows]]
    # one exemplar per label: its displacement from its own identity's neutral
    exemplars = [int(np.flatnonzero(test["label"] == labels.index(name))[0]) for name in GRID_LABELS]
    moves = [test["landmarks"][e] - neutrals["landmarks"][row_of[int(test["identity"][e])]] for e in exemplars]
    tiles = []
    for r in people:
        targets = np.stack([neutrals["landmarks"][r] + m for m in moves])
        drawn = to_uint8(model.generate(neutrals["rgb"][r], neutrals["landmarks"][r], targets, args.steps))
        warped = [metrics.warp_baseline(neutrals["rgb"][r], neutrals["landmarks"][r], t) for t in targets]
        tiles.append(np.concatenate([neutrals["rgb"][r], *drawn, *warped], axis=1))
    grid = np.concatenate(tiles, axis=0)
    save_image(args.out / "neural_grid.png", np.kron(grid, np.ones((2, 2, 1), np.uint8)), overwrite=args.overwrite)
    pipe = Pipeline.from_default()
    result = pipe.generate(label=args.label, frames=40, num=1, seed=0)
    size = model.config.size
    preview = pipe.render_frames(result, size=4 * size)
    r = people[0]
    faces = pipe.render_neural(result.landmarks, neutrals["rgb"][r], neutrals["landmarks"][r], args.ccfexp,
                               steps=args.steps)
    faces = np.stack([np.kron(f, np.ones((4, 4, 1), np.uint8)) for f in faces])
    frames = np.concatenate([preview[:, : 4 * size, : 4 * size], faces], axis=2)
    save_animation(args.out / "neural_sequence.gif", frames, fps=result.fps, overwrite=args.overwrite)
    print(f"wrote {args.out / 'neural_grid.png'} and {args.out / 'neural_sequence.gif'}")


if __name__ == "__main__":
    main()
