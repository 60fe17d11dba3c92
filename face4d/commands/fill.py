"""``face4d fill``: the missing frames of a partial landmark sequence (expression filling, Alg. 3)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, add_sampling_args, pipeline, sampling_config
from face4d.errors import Face4DError


def add_parser(commands: argparse._SubParsersAction) -> None:
    fill = commands.add_parser("fill", help="fill the missing frames of a partial landmark sequence",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    fill.add_argument("--input", required=True, type=Path, help="sequence(s) in the interchange format (.npz)")
    fill.add_argument("--known", required=True,
                      help="known frames, 0-based indices and inclusive ranges: e.g. 0-9,30-39 or 0,5,10-12")
    fill.add_argument("--sequence-index", type=int, default=0,
                      help="which sequence of a batch file to fill (default 0)")
    fill.add_argument("--out", required=True, type=Path, help="output directory (one .npz per filled sequence)")
    fill.add_argument("--label", help="expression label to steer the filled frames towards")
    fill.add_argument("--num", type=int, default=1, help="number of fillings (default 1)")
    fill.add_argument("--seed", type=int, default=0)
    fill.add_argument("--passes", type=int, default=1,
                      help="sampling passes; > 1 adds the harmonisation of geometry-adaptive generation (default 1)")
    add_sampling_args(fill)
    fill.set_defaults(run=run)


def run(args) -> None:
    from face4d.data.interchange import load_sequences
    from face4d.filling import parse_known

    seqs = load_sequences(args.input)
    if not 0 <= args.sequence_index < len(seqs):
        raise Face4DError(f"--sequence-index {args.sequence_index} is out of range: {args.input} holds "
                          f"{len(seqs)} sequence(s) (indices 0-{len(seqs) - 1})")
    seq = seqs.select(args.sequence_index)
    frames = int(seq.lengths[0])
    known = parse_known(args.known, frames)
    pipeline(args).sample_to(args.out, num=args.num, seed=args.seed, overwrite=args.overwrite, progress=not args.quiet,
                             keyframes=seq, known=known, label=args.label, passes=args.passes,
                             sampling=sampling_config(args))
    print(f"filled {frames - int(known.sum())} of {frames} frames: wrote {args.num} sequence(s) to {args.out}")
