"""``face4d retarget``: animate a neutral mesh with a landmark sequence (learned decoder or RBF fallback)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES


def add_parser(commands: argparse._SubParsersAction) -> None:
    from face4d.decoder.target import METHODS

    fmt = argparse.RawDescriptionHelpFormatter
    ret = commands.add_parser("retarget", help="animate a neutral mesh with a landmark sequence (mesh decoder)",
                              epilog=EXAMPLES, formatter_class=fmt)
    ret.add_argument("--landmarks", required=True, type=Path,
                     help="landmark sequence: .npz in the interchange format or .npy (F, 68, 3), centimetres")
    ret.add_argument("--mesh", required=True, type=Path, help="neutral mesh (.obj/.ply), centimetres")
    ret.add_argument("--out", required=True, type=Path, help="output directory: frame_0000.<export>, ..., neutral.obj")
    ret.add_argument("--export", choices=("ply", "obj"), default="ply")
    ret.add_argument("--neutral-frame", type=int,
                     help="frame whose landmarks are the sequence's neutral (dL_f = L_f - L_neutral); default: "
                          "the first, or the last of an E2N sequence")
    ret.add_argument("--sequence-index", type=int, default=0, help="which sequence of a batch file (default 0)")
    ret.add_argument("--method", choices=METHODS,
                     help="blendshape (default): the head model's expression weights solved from the landmarks; "
                          "learned (default with --model): the decoder (both: meshes in the head model's topology); "
                          "rbf (default with --landmark-ids): interpolation, any mesh")
    ret.add_argument("--model", type=Path, help="decoder model directory (default: the shipped one)")
    ret.add_argument("--landmark-ids", type=Path,
                     help="--method rbf on another topology: .npy/.txt with the vertex ids of the mesh's 68 landmarks")
    ret.add_argument("--device", default="cpu")
    ret.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    ret.set_defaults(run=run)


def run(args) -> None:
    from face4d.decoder.retarget import retarget_files

    out, frames, method = retarget_files(args.landmarks, args.mesh, args.out, export=args.export,
                                         neutral_frame=args.neutral_frame, model=args.model, method=args.method,
                                         landmark_ids_path=args.landmark_ids, sequence_index=args.sequence_index,
                                         overwrite=args.overwrite, device=args.device)
    print(f"wrote {frames} frame(s) ({method}) to {out}")
