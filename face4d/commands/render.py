"""``face4d render``: a landmark sequence file as animated meshes, a captioned MP4/GIF preview."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, add_mesh_args, pipeline


def add_parser(commands: argparse._SubParsersAction) -> None:
    rend = commands.add_parser("render", help="render a landmark sequence file as animated meshes (MP4/GIF)",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rend.add_argument("landmarks", type=Path, help="landmark sequences: .npz in the interchange format (every "
                                                   "sequence becomes a tile) or .npy (F, 68, 3), centimetres")
    rend.add_argument("--out", required=True, type=Path, help="the preview: a .mp4 or .gif file")
    rend.add_argument("--reference", type=Path, help="another landmark file shown beside it (one sequence, or "
                                                     "one per sequence of the input), decoded on the same mesh")
    add_mesh_args(rend)
    rend.add_argument("--overlay-landmarks", action="store_true",
                      help="draw the driving landmarks (the sequence's motion on the mesh) as red dots")
    rend.add_argument("--size", type=int, default=256, help="tile size in pixels (default 256)")
    rend.add_argument("--columns", type=int, help="tiles per row (default: a near-square grid)")
    rend.add_argument("--view", choices=("front", "three_quarter"), default="front")
    rend.add_argument("--fps", type=float, help="frames per second (default: the file's)")
    rend.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rend.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rend.add_argument("--quiet", action="store_true", help="no progress bars")
    rend.set_defaults(run=run)


def run(args) -> None:
    from face4d.landmarks import load_landmark_file
    from face4d.outputs import check_out_file, check_preview_fps, check_preview_size, require_render

    require_render()
    check_out_file(args.out, (".mp4", ".gif"), args.overwrite)
    check_preview_size(1, 1, args.size)  # before the slow steps, as the rest
    if args.fps is not None:
        check_preview_fps([args.out.suffix], args.fps)
    seqs = load_landmark_file(args.landmarks)
    reference = None if args.reference is None else load_landmark_file(args.reference)
    pipe = pipeline(args)
    target = pipe.target(args.mesh, args.identity_seed, landmark_ids=args.landmark_ids, method=args.method)
    progress = not args.quiet
    result = pipe.decode(seqs, target, progress=progress)
    if reference is not None:
        reference = pipe.decode(reference, target, progress=progress)
    pipe.render(result, args.out, reference=reference, overlay_landmarks=args.overlay_landmarks, size=args.size,
                columns=args.columns, view=args.view, fps=args.fps, overwrite=args.overwrite, progress=progress)
    print(f"wrote {args.out}: {len(result)} sequence(s) on {target.name} ({target.method})"
          + ("" if reference is None else f", beside {args.reference}"))
