"""``face4d dataset``: build, inspect, preview or import labelled 4D data (``face4d.data``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, given, labels_arg
from face4d.errors import Face4DError


def add_parser(commands: argparse._SubParsersAction) -> None:
    dataset = commands.add_parser("dataset", help="build, inspect, preview or import labelled 4D data",
                                  epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = dataset.add_subparsers(dest="dataset_command", required=True)

    build = sub.add_parser("build", help="generate the labelled 4D expression dataset from the head model")
    build.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    build.add_argument("--sequences", type=int, default=2000, help="number of sequences (default 2000)")
    build.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
    build.add_argument("--frames", type=int, default=40, help="frames per sequence (default 40)")
    build.add_argument("--variable-length", action="store_true",
                       help="draw each length uniformly from [--min-frames, --max-frames]")
    build.add_argument("--min-frames", type=int, default=35)
    build.add_argument("--max-frames", type=int, default=45)
    build.add_argument("--identities", type=int, default=200, help="number of distinct people (default 200)")
    build.add_argument("--head-motion", action="store_true", help="add small rigid head motion")
    build.add_argument("--fps", type=float, default=30.0)
    build.add_argument("--held-out-labels", type=labels_arg, default=None,
                       help="comma-separated labels of the expression split's test part")
    build.add_argument("--shard-size", type=int, default=500)
    build.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    build.add_argument("--quiet", action="store_true", help="no progress bar")

    info = sub.add_parser("info", help="print a built dataset's size, splits and label counts")
    info.add_argument("data", type=Path)

    preview = sub.add_parser("preview", help="render one apex frame per label into a labelled grid, and a GIF")
    preview.add_argument("--out", required=True, type=Path, help="output directory for labels.png and sequences.gif")
    preview.add_argument("--data", type=Path, help="take the sequences from this built dataset "
                                                    "(default: draw them from the generator)")
    preview.add_argument("--seed", type=int, default=0)
    preview.add_argument("--gif-sequences", type=int, default=4, help="sequences in the GIF (0 for none)")
    preview.add_argument("--size", type=int, default=256, help="tile size in pixels")
    preview.add_argument("--overwrite", action="store_true")

    portraits = sub.add_parser("portraits", help="render painted portrait images (and clips) of random identities "
                                                 "of the head model: the neural renderers' data")
    portraits.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    portraits.add_argument("--size", type=int, default=64, help="image size in pixels: 64 or 128 (default 64)")
    portraits.add_argument("--images", type=int, default=20000, help="number of expression images (default 20000)")
    portraits.add_argument("--clips", type=int, default=0, help="number of clips rendered at 64 and 128 pixels "
                                                                "(default 0)")
    portraits.add_argument("--clip-frames", type=int, default=16, help="frames per clip (default 16)")
    portraits.add_argument("--identities", type=int, default=500, help="number of people; 10%% are the test "
                                                                       "split (default 500)")
    portraits.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same data")
    portraits.add_argument("--workers", type=int, default=1, help="rendering processes (default 1)")
    portraits.add_argument("--shard-size", type=int, default=1000, help="images per shard (default 1000)")
    portraits.add_argument("--sources", action="store_true",
                           help="also render each image's source (same person and camera, another expression): "
                                "the editing model's training pairs; doubles the rendering time")
    portraits.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    portraits.add_argument("--quiet", action="store_true", help="no progress bar")

    imp = sub.add_parser("import", help="load a real 4D dataset from disk as a trainable dataset directory "
                                         "(or one interchange .npz)")
    imp.add_argument("kind", choices=("coma", "bu4dfe"))
    imp.add_argument("root", type=Path, help="dataset root directory")
    imp.add_argument("--out", required=True, type=Path,
                     help="a directory: a dataset 'face4d train' reads (shards + manifest.json, identity split by "
                          "subject); a path ending in .npz: one file in the interchange format")
    imp.add_argument("--embedding", type=Path, help="CoMA: landmark embedding (.npz/.npy: vertex_ids, "
                                                    "or lmk_face_idx + lmk_b_coords)")
    imp.add_argument("--landmark-index", type=Path, help="BU-4DFE: .npy/.txt of 68 indices into each frame's points")
    imp.add_argument("--frames", type=int, default=40, help="resample every cut sequence to this length")
    imp.add_argument("--scale", type=float, help="multiply coordinates (default: 100 for CoMA's metres, 1 for BU-4DFE)")
    split = imp.add_argument_group("dataset directory (--out DIR)")
    split.add_argument("--seed", type=int, help="seed of the identity split: subjects 80/10/10 into "
                                                "train/val/test, at least one each (default 0)")
    split.add_argument("--held-out-labels", type=labels_arg, help="comma-separated labels of the expression "
                       "split's test part (default: those of mouth_extreme,cheeks_in,fear in the data)")
    split.add_argument("--shard-size", type=int, help="sequences per shard (default 500)")
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--quiet", action="store_true")
    dataset.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    {"build": _build, "info": _info, "preview": _preview, "import": _import,
     "portraits": _portraits}[args.dataset_command](args)


def _build(args) -> None:
    from face4d.data.dataset import DEFAULT_HELD_OUT_LABELS, build_dataset
    from face4d.data.synth import SynthConfig

    config = SynthConfig(frames=args.frames, variable_length=args.variable_length, min_frames=args.min_frames,
                         max_frames=args.max_frames, num_identities=args.identities, head_motion=args.head_motion,
                         fps=args.fps)
    out = build_dataset(args.out, args.sequences, seed=args.seed, config=config, shard_size=args.shard_size,
                        held_out_labels=args.held_out_labels or DEFAULT_HELD_OUT_LABELS,
                        overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {args.sequences} sequences to {out}")


def _info(args) -> None:
    from collections import Counter

    from face4d.data.dataset import SPLITS, Dataset

    data = Dataset.load(args.data)
    data.check_shards()
    m = data.manifest
    print(f"{data.root}: {len(data)} sequences, seed {m['seed']}, {len(m['shards'])} shard(s)")
    if data.source is not None:
        print(f"  imported from {data.source.get('format')} at {data.source.get('root')}")
    for split in SPLITS:
        records = data.records(split)
        print(f"  {split:5s} {len(records):6d} sequences, {len(m['splits']['identity'][split])} identities")
    counts = Counter(r["label"] for r in m["sequences"])
    print("  labels: " + ", ".join(f"{n} {counts[n]}" for n in data.labels))
    print("  expression split, held-out labels: " + ", ".join(m["splits"]["expression"]["test_labels"]))


def _preview(args) -> None:
    from face4d.data.preview import write_preview

    paths = write_preview(args.out, data=args.data, seed=args.seed, gif_sequences=args.gif_sequences,
                          tile=args.size, overwrite=args.overwrite)
    for path in paths:
        print(f"wrote {path}")


def _import(args) -> None:
    from face4d.data.dataset import import_dataset
    from face4d.data.interchange import save_sequences
    from face4d.outputs import check_out_dir, check_out_file

    as_file = args.out.suffix == ".npz"
    dataset_options = given(args, "seed", "held_out_labels", "shard_size")
    if as_file and dataset_options:
        raise Face4DError(f"--{', --'.join(n.replace('_', '-') for n in dataset_options)} appl"
                          f"{'ies' if len(dataset_options) == 1 else 'y'} to a dataset directory, not to a .npz --out")
    if as_file:  # checked before the (slow) reading
        check_out_file(args.out, (".npz",), args.overwrite)
    else:
        check_out_dir(args.out, args.overwrite)
    scale = args.scale if args.scale is not None else 100.0 if args.kind == "coma" else 1.0
    source = {"format": args.kind, "root": str(args.root.resolve()), "frames": args.frames, "scale": scale}
    if args.kind == "coma":
        from face4d.data.coma import LandmarkEmbedding, load_coma
        if args.embedding is None:
            raise Face4DError("CoMA import needs --embedding (the 68 landmarks' vertex ids or barycentric coordinates)")
        source["embedding"] = str(args.embedding.resolve())
        seqs = load_coma(args.root, LandmarkEmbedding.from_file(args.embedding), frames=args.frames, scale=scale,
                         progress=not args.quiet)
    else:
        from face4d.data.bu4dfe import load_bu4dfe
        from face4d.landmarks import load_landmark_ids
        index = load_landmark_ids(args.landmark_index) if args.landmark_index else None
        source["landmark_index"] = None if args.landmark_index is None else str(args.landmark_index.resolve())
        seqs = load_bu4dfe(args.root, frames=args.frames, landmark_index=index, scale=scale, progress=not args.quiet)
    if as_file:
        save_sequences(args.out, seqs, overwrite=args.overwrite)
        print(f"wrote {len(seqs)} sequences to {args.out}")
        return
    out = import_dataset(args.out, seqs, source, overwrite=args.overwrite, progress=not args.quiet, **dataset_options)
    print(f"wrote {len(seqs)} sequences of {len(set(seqs.subjects))} subjects to {out}")


def _portraits(args) -> None:
    from face4d.data.portraits import PortraitConfig, build_portraits

    if args.size not in (64, 128):
        raise Face4DError(f"--size must be 64 or 128, got {args.size}")
    config = PortraitConfig(size=args.size, images=args.images, clips=args.clips, clip_frames=args.clip_frames,
                            identities=args.identities, shard_size=args.shard_size, sources=args.sources)
    out = build_portraits(args.out, config, seed=args.seed, workers=args.workers, overwrite=args.overwrite,
                          progress=not args.quiet)
    print(f"wrote {args.images} images and {args.clips} clips of {args.identities} identities to {out}")
