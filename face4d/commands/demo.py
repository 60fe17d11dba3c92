"""``face4d demo``: a few labels on the default head, exports and a preview grid (``face4d.demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, labels_arg
from face4d.demo import DEMO_LABELS, DEMO_SEED

DESCRIPTION = """A few labels on the default head with the embedded models: one folder per label with its
exports (pc2, mdd, usd when usd-core is installed; --export for others) and its landmarks, and a
captioned preview grid (preview.mp4, preview.gif). Under a minute on two CPU cores."""


def add_parser(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser("demo", help="a few labels on the default head: exports and a preview grid",
                               description=DESCRIPTION, epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    demo.add_argument("--labels", type=labels_arg, help="comma-separated labels (default: "
                                                         f"{','.join(DEMO_LABELS)})")
    demo.add_argument("--seed", type=int, default=DEMO_SEED, help=f"random seed (default {DEMO_SEED})")
    demo.add_argument("--frames", type=int, default=40, help="frames per sequence (default 40)")
    demo.add_argument("--export", help="comma-separated formats of obj,ply,pc2,mdd,usd,gltf,arkit-csv,weights,"
                                       "usd-skel (default: pc2,mdd and usd when usd-core is installed)")
    demo.add_argument("--size", type=int, default=256, help="preview tile size in pixels (default 256)")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(run=run)


def run(args) -> None:
    import time

    from face4d.demo import run_demo

    start = time.perf_counter()
    result = run_demo(args.out, labels=args.labels or DEMO_LABELS, seed=args.seed, frames=args.frames,
                      formats=args.export, size=args.size, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {len(result)} labels ({', '.join(result.names)}) on the default head to {args.out} "
          f"in {time.perf_counter() - start:.0f} s: one folder per label, preview.mp4, preview.gif")
