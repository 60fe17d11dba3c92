"""Text control on prompts never seen in training: a figure, and what each expression mixes.

The training texts name one expression each ("disgust", "high smile", or "from a neutral face to a
high smile"); a compositional prompt names two ("disgust high smile", "angry mouth down"). For
each composition, the two parts and the composition are generated (Alg. 2) on the default head
from its own neutral face (text-guided geometry-adaptive generation, what ``face4d generate --text``
does on a mesh), and the last frame of each is rendered: one row per composition, parts first.

The figure shows seed ``--seed``; the numbers cover ``--num`` seeds. For every sequence the motion
of its last frame from its first is decomposed (``face4d.eval.composition``) on the two parts' own
mean motions and on the labels' exact landmark motions: a composition that mixes its parts gives
both a share, and a part's own samples show what a single expression scores. Writes the PNG
(default ``docs/text_prompts.png``) and the numbers, with the command, into section
``text_prompts`` of ``docs/results.md`` (``--results``).

    python scripts/render_text_prompts.py [--compose "disgust|high smile" ...] [--num 8] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from face4d.data.labels import LABELS
from face4d.eval.composition import label_prototypes, mixture
from face4d.eval.report import markdown_table, update_section
from face4d.pipeline import Pipeline
from render import image_grid, render_sequence, save_image

COMPOSITIONS = (("disgust", "high smile", "disgust high smile"), ("anger", "mouth down", "angry mouth down"))
"""(part, part, composition): the issue's two compositional prompts and their parts."""


def composition(text: str) -> tuple[str, str, str]:
    parts = [part.strip() for part in text.split("|")]
    if len(parts) not in (2, 3) or not all(parts):
        raise argparse.ArgumentTypeError(f"expected 'PART|PART' or 'PART|PART|COMPOSITION', got {text!r}")
    return (*parts[:2], parts[2] if len(parts) == 3 else f"{parts[0]} {parts[1]}")


def part_label(part: str) -> str:
    """The label a part names: its raw text (e.g. "high smile") or its name."""
    for label in LABELS:
        if part in (label.text, label.name):
            return label.name
    raise SystemExit(f"error: {part!r} is no label's text or name; the parts must be labels' raw texts")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--compose", action="append", type=composition, metavar="PART|PART[|TEXT]",
                        help="two parts and optionally the composed text (repeatable; default: "
                             + "; ".join("|".join(c) for c in COMPOSITIONS) + ")")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--num", type=int, default=8, help="sequences per prompt for the numbers (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first sequence, the one rendered")
    parser.add_argument("--size", type=int, default=256, help="tile size in pixels")
    parser.add_argument("--out", default="docs/text_prompts.png")
    parser.add_argument("--results", default="docs/results.md", help="markdown file whose section text_prompts "
                                                                      "gets the numbers")
    parser.add_argument("--overwrite", action="store_true", help="replace the PNG")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    compositions = args.compose or list(COMPOSITIONS)
    parts = [[part_label(part) for part in row[:2]] for row in compositions]  # checked before any sampling
    pipeline = Pipeline.from_default()
    labels = label_prototypes(pipeline.head)
    tiles, captions, bounds, rows = [], [], [], []
    for row, (label_a, label_b) in zip(compositions, parts):
        seqs = {prompt: pipeline.generate(text=prompt, num=args.num, frames=args.frames, seed=args.seed)
                for prompt in row}
        first = {prompt: result.landmarks.landmarks[:, 0] for prompt, result in seqs.items()}
        last = {prompt: result.landmarks.landmarks[:, -1] for prompt, result in seqs.items()}
        # each part's prototype: the mean motion of its own samples
        own = {part: (last[part] - first[part]).mean(0) for part in row[:2]}
        for prompt, result in seqs.items():
            on_parts = [mixture(a, b, own) for a, b in zip(first[prompt], last[prompt])]
            on_labels = [mixture(a, b, labels) for a, b in zip(first[prompt], last[prompt])]
            share = {part: np.mean([m.shares[part] for m in on_parts]) for part in row[:2]}
            label_share = {name: np.mean([m.shares[name] for m in on_labels]) for name in labels}
            largest = sorted(label_share.items(), key=lambda item: -item[1])[:3]
            rows.append([f'"{prompt}"', len(on_parts), f"{share[row[0]]:.2f}", f"{share[row[1]]:.2f}",
                         f"{np.mean([m.residual for m in on_parts]):.2f}",
                         f"{label_share[label_a]:.2f}", f"{label_share[label_b]:.2f}",
                         ", ".join(f"{name} {value:.2f}" for name, value in largest)])
            print(" | ".join(str(cell) for cell in rows[-1]), flush=True)
            tiles.append(result.meshes[0][-1])
            bounds.append(result.driving_landmarks(0)[-1])
            captions.append(f'"{prompt}"')
        faces = result.faces
    images = render_sequence(np.stack(tiles), faces, size=(args.size, args.size),
                             bounds=np.concatenate(bounds), progress=False)
    path = save_image(args.out, image_grid(list(images), captions, ncols=3), overwrite=args.overwrite)
    command = f"python scripts/render_text_prompts.py {' '.join(argv)}".rstrip()
    headers = ["Prompt", "Sequences", "Share of part 1", "Share of part 2", "Residual (on the parts)",
               "Share of label 1", "Share of label 2", "Largest label shares"]
    text = "\n\n".join([
        "## Compositional text prompts",
        f"Command: `{command}`",
        f"Figure: [{Path(args.out).name}]({Path(args.out).name}), the last frame of seed {args.seed} for each prompt; "
        "one row per composition, its two parts first.",
        f"Each prompt was generated {args.num} times (seeds {args.seed}-{args.seed + args.num - 1}, "
        f"{args.frames} frames) by text-guided geometry-adaptive generation (Alg. 2 guidance, Alg. 4 from the "
        "default head's neutral face, one pass, fast sampler, 50 steps). The motion of each sequence's last "
        "frame from its first is decomposed (`face4d.eval.composition`: non-negative least squares plus a "
        "free rigid motion) twice: on the two parts' own mean motions (share of part 1 and 2, and the "
        "residual: the part of the motion the two leave unexplained), and on the 18 labels' exact "
        "landmark motions on the head model. Shares are means over the sequences. A part's own row "
        "says what a single expression scores; a composition that mixes its parts gives both a share.",
        markdown_table(headers, rows),
    ])
    update_section(args.results, "text_prompts", text)
    print(f"wrote {path} and section text_prompts of {args.results}: {command}")


if __name__ == "__main__":
    main()
