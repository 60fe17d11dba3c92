"""``face4d edit``: a face image given another expression, either whole by the label + VAE editing model
(``--label``) or in its eye and mouth regions by local expression diffusion (``--text``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, add_precision_arg
from face4d.errors import Face4DError


def add_parser(commands: argparse._SubParsersAction) -> None:
    edit = commands.add_parser("edit", help="give a face image another expression (neural editing models)",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    edit.add_argument("image", type=Path, nargs="?",
                      help="an RGB face image (--label: at the model's size, e.g. 64x64 PNG; --text: any size, "
                           "with its landmarks); leave out with --portraits/--identity")
    edit.add_argument("--label", help="whole-image editing: the target expression, one of the 18 labels")
    edit.add_argument("--text", help="region editing: the target expression in words, e.g. 'a wide smile'")
    edit.add_argument("--out", required=True, type=Path, help="the edited image (.png/.jpg)")
    edit.add_argument("--model", type=Path, help="--label: an editing model ('face4d train neural-edit'); "
                                                 "--text: a region model ('face4d train neural-region'); "
                                                 "default the shipped one")
    edit.add_argument("--strength", type=float,
                      help="--label: 1 (default) generates from noise, less starts from the noised image; "
                           "--text: the noise step t_i of 500 the crops start from (default 250)")
    edit.add_argument("--guidance", type=float,
                      help="classifier-free guidance (1: none; default 2 with --label, 5 with --text)")
    edit.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    edit.add_argument("--seed", type=int, default=0)
    edit.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    add_precision_arg(edit, "--label and --text")
    edit.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    region = edit.add_argument_group("region editing (--text)")
    region.add_argument("--region", choices=("eyes", "mouth", "both"), default="both",
                        help="which crops to re-draw (default both)")
    region.add_argument("--landmarks", type=Path,
                        help="the image's 68 landmarks in pixels (.pts or .npy (68, 2)); default: IMAGE's "
                             "sidecar with the .pts or .npy suffix")
    region.add_argument("--portraits", type=Path, help="or edit a portrait dataset's image ...")
    region.add_argument("--identity", type=int, help="... of this identity (its neutral image and landmarks)")
    region.add_argument("--hard-paste", action="store_true", help="paste the crops without the feathered border")
    edit.set_defaults(run=run)


def run(args) -> None:
    from face4d.neural import check_face, read_image, require_neural
    from face4d.pipeline import Pipeline

    require_neural()
    if (args.label is None) == (args.text is None):
        raise Face4DError("give --label (whole-image editing) or --text (eye/mouth region editing), not both")
    if args.text is not None:
        _edit_region(args)
        return
    if args.image is None:
        raise Face4DError("--label needs the IMAGE to edit")
    image = read_image(args.image)
    check_face(image, None, str(args.image))
    Pipeline(device=args.device).edit(image, args.label, args.model, args.out, steps=args.steps,
                                      strength=1.0 if args.strength is None else args.strength,
                                      seed=args.seed, overwrite=args.overwrite, precision=args.precision,
                                      **_guidance(args))
    print(f"wrote {args.out}: {args.image} as {args.label}")


def _edit_region(args) -> None:
    from face4d.neural import check_face, portrait_identity, read_image, read_points
    from face4d.pipeline import Pipeline

    if args.portraits is not None:
        if args.identity is None or args.image is not None or args.landmarks is not None:
            raise Face4DError("--portraits takes --identity N, and no IMAGE or --landmarks")
        image, points = portrait_identity(args.portraits, args.identity)
        source = f"{args.portraits} identity {args.identity}"
    elif args.image is None:
        raise Face4DError("--text needs the IMAGE to edit (with its landmarks) or --portraits DIR --identity N")
    else:
        landmarks = args.landmarks or next((args.image.with_suffix(s) for s in (".pts", ".npy")
                                            if args.image.with_suffix(s).is_file()), None)
        if landmarks is None:
            raise Face4DError(f"{args.image} has no landmarks: pass --landmarks FILE (.pts or .npy) or put "
                              f"{args.image.with_suffix('.pts').name} beside it")
        image, points = read_image(args.image), read_points(landmarks)
        check_face(image, points, str(args.image))
        source = str(args.image)
    strength = 250 if args.strength is None else args.strength
    if strength != int(strength):
        raise Face4DError(f"--strength with --text is a noise step t_i (an integer of 500), got {strength}")
    Pipeline(device=args.device).edit_region(image, points, args.text, args.region, args.model, args.out,
                                             strength=int(strength), steps=args.steps, seed=args.seed,
                                             feather=0.0 if args.hard_paste else None, overwrite=args.overwrite,
                                             precision=args.precision, **_guidance(args))
    print(f"wrote {args.out}: {source}, {args.region} as {args.text!r}")


def _guidance(args) -> dict:
    """``--guidance`` when given; otherwise the Pipeline method's own default (label 2, text 5)."""
    return {} if args.guidance is None else {"guidance": args.guidance}
