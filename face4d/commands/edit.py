"""``face4d edit``: a face image given another expression by the label + VAE editing model."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES


def add_parser(commands: argparse._SubParsersAction) -> None:
    edit = commands.add_parser("edit", help="give a face image one of the 18 expressions (neural editing model)",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    edit.add_argument("image", type=Path, help="an RGB image of a face at the model's size (e.g. 64x64 PNG)")
    edit.add_argument("--label", required=True, help="the target expression, one of the 18 labels")
    edit.add_argument("--out", required=True, type=Path, help="the edited image (.png/.jpg)")
    edit.add_argument("--model", required=True, type=Path, help="an editing model ('face4d train neural-edit')")
    edit.add_argument("--strength", type=float, default=1.0,
                      help="1 (default): generate from noise; less: start from the noised image (SDEdit), "
                           "keeping more of it")
    edit.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance on the label (1: none)")
    edit.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25)")
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    edit.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    edit.set_defaults(run=run)


def run(args) -> None:
    from face4d.neural import read_image, require_neural
    from face4d.pipeline import Pipeline

    require_neural()
    image = read_image(args.image)
    Pipeline(device=args.device).edit(image, args.label, args.model, args.out, steps=args.steps,
                                      strength=args.strength, guidance=args.guidance, seed=args.seed,
                                      overwrite=args.overwrite)
    print(f"wrote {args.out}: {args.image} as {args.label}")
