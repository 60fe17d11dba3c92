"""The ``face4d`` command line. Each sub-command is a thin layer over the Python API."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections import Counter
from pathlib import Path

from face4d.cliargs import add_training_args, given, training_options
from face4d.diffusion import PREDICTIONS, VARIANCES
from face4d.models.denoiser import SKIPS
from face4d.decoder.commands import DECODER_HANDLERS, add_decoder_commands
from face4d.errors import Face4DError
from face4d.pipeline import DEMO_LABELS, DEMO_SEED, STARTS
from meshops.io import MeshFileError

GENERATE_DESCRIPTION = """Generate landmark sequences for a condition: a --label, a --text, --keyframes to fill, or a
person's --neutral-mesh / --neutral-landmarks. By default it writes the landmark sequences, one
interchange .npz per sequence. With a target mesh option (--mesh, --identity-seed, --landmark-ids)
or an output option (--export, --preview, --flame-model) it also animates a mesh with them and writes
one folder per sample (sample_000/ ...: neutral.obj, the exports, landmarks.npz, with --flame-model
also flame/) and OUT/preview.<fmt>."""

DEMO_DESCRIPTION = """A few labels on the default head with the embedded models: one folder per label with its
exports (pc2, mdd, usd when usd-core is installed; --export for others) and its landmarks, and a
captioned preview grid (preview.mp4, preview.gif). Under a minute on two CPU cores."""

EXAMPLES = """examples:
  face4d demo --out demo/
  face4d generate --label mouth_open --frames 40 --mesh neutral.obj --out out/ --export obj,ply,pc2,mdd,usd --preview mp4
  face4d generate --label high_smile --identity-seed 7 --num 2 --out out/ --preview mp4,gif
  face4d generate --label high_smile --export gltf,arkit-csv,weights,usd --out out/     # rig curves
  face4d generate --label surprise --mesh character.obj --landmark-ids ids.npy --out out/ --export obj
  face4d generate --keyframes seq.npz --known 0-9,30-39 --label anger --out out/ --export pc2 --preview gif
  face4d generate --label high_smile --flame-model ~/flame --out out/ --export obj,pc2
  face4d render samples/sequence_000.npz --out preview.mp4 --overlay-landmarks
  face4d render samples/sequence_000.npz --reference data.npz --mesh neutral.obj --out compare.gif
  face4d dataset build --out data/face4d --sequences 2000 --seed 0
  face4d dataset build --out data/varlen --sequences 2000 --variable-length
  face4d dataset info data/face4d
  face4d dataset preview --out previews/ --data data/face4d
  face4d dataset import coma ~/COMA --embedding flame_landmarks.npz --out data/coma
  face4d train denoiser --data data/coma --out models/coma_denoiser
  face4d generate --label high_smile --frames 40 --num 4 --seed 0 --out samples/
  face4d generate --text "disgust high smile" --num 4 --out samples_text/
  face4d generate --neutral-mesh face.obj --label happiness --type N2E --num 2 --out samples/
  face4d generate --neutral-mesh face.obj --text "angry mouth down" --passes 1 --preview gif --out mine/
  face4d generate --neutral-landmarks samples/sequence_000.npz --type E2N --passes 5 --out from_neutral/
  face4d fill --input samples/sequence_000.npz --known 0-9,30-39 --num 4 --out filled/
  face4d fill --input samples/sequence_000.npz --known 0-9 --reconstruction 0 --out filled_paper/
  face4d train denoiser --data data/face4d --out models/denoiser --steps 200000
  face4d train text-guide --data data/face4d --out models/text_guide --texts both
  torchrun --nproc_per_node 4 -m face4d.cli train denoiser --data data/face4d --out models/denoiser
  face4d train decoder --data data/face4d --out models/decoder --steps 20000
  face4d retarget --landmarks samples/sequence_000.npz --mesh neutral.obj --out meshes/ --export ply
"""


def _labels_arg(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="face4d", description="4D facial animation with diffusion models.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    commands = parser.add_subparsers(dest="command", required=True)

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
    build.add_argument("--held-out-labels", type=_labels_arg, default=None,
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
    split.add_argument("--held-out-labels", type=_labels_arg, help="comma-separated labels of the expression "
                       "split's test part (default: those of mouth_extreme,cheeks_in,fear in the data)")
    split.add_argument("--shard-size", type=int, help="sequences per shard (default 500)")
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--quiet", action="store_true")

    gen = commands.add_parser("generate", help="generate landmark sequences and, optionally, animated meshes, "
                                               "exports and a preview", description=GENERATE_DESCRIPTION,
                              epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--out", required=True, type=Path,
                     help="output directory: one .npz per sequence, or with meshes one folder per sample")
    condition = gen.add_mutually_exclusive_group()
    condition.add_argument("--label", help="expression label to steer towards (see 'face4d dataset info')")
    condition.add_argument("--text", help="a description to steer towards, e.g. 'disgust high smile' "
                                          "(needs the text extra: pip install 'face4d[text]')")
    gen.add_argument("--type", dest="sequence_type", choices=("N2E", "E2N"),
                     help="also enforce the order: neutral->expression or back (type S classifier); with a "
                          "neutral face, where it goes: first frame (N2E, the default) or last (E2N)")
    gen.add_argument("--frames", type=int, default=40, help="frames per sequence (default 40)")
    gen.add_argument("--num", type=int, default=1, help="number of sequences (default 1)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--intensity", type=float, default=1.0, metavar="S",
                     help="how far the expression goes from the neutral face, 0 to 1.5 (default 1)")
    neutral = gen.add_argument_group("geometry-adaptive generation (a given person's neutral face)")
    source = neutral.add_mutually_exclusive_group()
    source.add_argument("--neutral-mesh", type=Path,
                        help="neutral face mesh (.obj/.ply) in the head model's topology, in centimetres; "
                             "also the target mesh unless --mesh or --identity-seed is given")
    source.add_argument("--neutral-landmarks", type=Path,
                        help="neutral landmarks: .npz in the interchange format (its neutral frame), "
                             ".npy or .txt of shape (68, 3), in centimetres")
    neutral.add_argument("--passes", type=int, help="harmonising sampling passes (default 5, as the paper; "
                                                    "1 for keyframes)")
    keys = gen.add_argument_group("keyframes (expression filling)")
    keys.add_argument("--keyframes", type=Path, help="a sequence in the interchange format (.npz) whose --known "
                                                     "frames are kept and the others generated")
    keys.add_argument("--known", help="known frames: 0-based indices and inclusive ranges, e.g. 0-9,30-39")
    keys.add_argument("--sequence-index", type=int, default=0, help="which sequence of a --keyframes batch file")
    _mesh_args(gen)
    flame = gen.add_argument_group("FLAME (your own model, fitted to every generated sequence; see docs/exports.md)")
    flame.add_argument("--flame-model", type=Path, help="a FLAME model folder (FLAME_NEUTRAL.npz or "
                       "generic_model.npz with its landmark embedding) or model file; each sample folder gets "
                       "flame/: the exports on FLAME's topology and flame_params.npz")
    flame.add_argument("--trust-pickle", action="store_true", help="also load FLAME's original .pkl/.npy files: "
                       "a pickle can run arbitrary code when loaded, so only for files from a source you trust "
                       "(or re-save them as .npz)")
    _output_args(gen)
    _sampling_args(gen)

    rend = commands.add_parser("render", help="render a landmark sequence file as animated meshes (MP4/GIF)",
                               epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rend.add_argument("landmarks", type=Path, help="landmark sequences: .npz in the interchange format (every "
                                                   "sequence becomes a tile) or .npy (F, 68, 3), centimetres")
    rend.add_argument("--out", required=True, type=Path, help="the preview: a .mp4 or .gif file")
    rend.add_argument("--reference", type=Path, help="another landmark file shown beside it (one sequence, or "
                                                     "one per sequence of the input), decoded on the same mesh")
    _mesh_args(rend)
    rend.add_argument("--overlay-landmarks", action="store_true",
                      help="draw the driving landmarks (the sequence's motion on the mesh) as red dots")
    rend.add_argument("--size", type=int, default=256, help="tile size in pixels (default 256)")
    rend.add_argument("--columns", type=int, help="tiles per row (default: a near-square grid)")
    rend.add_argument("--view", choices=("front", "three_quarter"), default="front")
    rend.add_argument("--fps", type=float, help="frames per second (default: the file's)")
    rend.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    rend.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    rend.add_argument("--quiet", action="store_true", help="no progress bars")

    demo = commands.add_parser("demo", help="a few labels on the default head: exports and a preview grid",
                               description=DEMO_DESCRIPTION, epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    demo.add_argument("--labels", type=_labels_arg, help="comma-separated labels (default: "
                                                         f"{','.join(DEMO_LABELS)})")
    demo.add_argument("--seed", type=int, default=DEMO_SEED, help=f"random seed (default {DEMO_SEED})")
    demo.add_argument("--frames", type=int, default=40, help="frames per sequence (default 40)")
    demo.add_argument("--export", help="comma-separated formats of obj,ply,pc2,mdd,usd,gltf,arkit-csv,weights,"
                                       "usd-skel (default: "
                                       "pc2,mdd and usd when usd-core is installed)")
    demo.add_argument("--size", type=int, default=256, help="preview tile size in pixels (default 256)")
    demo.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")

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
    _sampling_args(fill)

    train = commands.add_parser("train", help="train a model; rerunning the same command resumes it",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = train.add_subparsers(dest="train_command", required=True)
    helps = {"denoiser": "the unconditional diffusion noise model",
             "classifier": "the noise-aware classifier that guides label-controlled sampling (--kind I or S)",
             "text-guide": "the noise-aware text guide that steers text-controlled sampling",
             "ic": "the independent LSTM classifier of the evaluation protocol"}
    for kind, text in helps.items():
        cmd = sub.add_parser(kind, help=f"train {text} on a built dataset")
        cmd.add_argument("--data", required=True, type=Path,
                         help="dataset directory ('face4d dataset build' or 'face4d dataset import ... --out DIR')")
        cmd.add_argument("--out", required=True, type=Path,
                         help="model directory; one holding a run is resumed from its last checkpoint")
        add_training_args(cmd)
        group = cmd.add_argument_group("architecture (defaults: the model's config dataclass)")
        if kind == "ic":
            group.add_argument("--hidden", type=int, help="LSTM hidden size")
            continue
        cmd.add_argument("--timesteps", dest="num_timesteps", type=int, help="diffusion steps T (default: the paper's)")
        for name in ("--d-model", "--layers", "--heads", "--ff", "--max-frames"):
            group.add_argument(name, type=int)
        group.add_argument("--dropout", type=float)
        if kind == "denoiser":
            group.add_argument("--skip", choices=SKIPS, help="skip path from x_t to the output: each frame "
                               "(frame), the sequence's mean frame (mean) or none (default: mean; frame with "
                               "--prediction epsilon)")
            loss = cmd.add_argument_group("loss (defaults: ours; the paper: --prediction epsilon --velocity-weight 0)")
            loss.add_argument("--prediction", choices=PREDICTIONS,
                              help="what the network predicts (default: face4d.training.DENOISER_PREDICTION)")
            loss.add_argument("--velocity-weight", type=float,
                              help="weight of the loss on the predicted motion's frame-to-frame differences "
                                   "(default: face4d.training.DENOISER_VELOCITY_WEIGHT; 0 with epsilon)")
            loss.add_argument("--snr-gamma", type=float, help="weigh noise levels by Min-SNR-gamma, 0 for "
                              "uniform weights (default: face4d.training.DENOISER_SNR_GAMMA)")
            loss.add_argument("--snr-floor", type=float, help="lowest weight of a noise level under --snr-gamma "
                                                              "(default: face4d.training.DENOISER_SNR_FLOOR)")
        if kind == "classifier":
            group.add_argument("--kind", dest="classifier_kind", choices=("I", "S"), default="I",
                               help="I: label only (order-insensitive); S: label x N2E/E2N (order-sensitive)")
        if kind == "text-guide":
            group.add_argument("--texts", choices=("raw", "enriched", "both"), default="both",
                               help="which of each sequence's texts to learn (both: one of the two per step)")
            group.add_argument("--text-encoder", help="minilm (default), a local sentence-transformers "
                                                      "directory, or clip:DIR")
    add_decoder_commands(commands, sub)
    return parser


def _mesh_args(parser: argparse.ArgumentParser) -> None:
    """The target mesh options shared by ``generate`` and ``render``."""
    group = parser.add_argument_group("target mesh (default: the head model's mean face)")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--mesh", type=Path, help="neutral mesh (.obj/.ply, centimetres, Y up, facing +z) to "
                                                  "animate; in the head model's topology, or any with --landmark-ids")
    target.add_argument("--identity-seed", type=int, help="animate a random person of the head model "
                                                          "(identity weights ~ N(0, I) from this seed)")
    group.add_argument("--landmark-ids", type=Path, help="a mesh in another topology: .npy/.txt with the vertex ids "
                                                         "of its 68 landmarks (iBUG order); uses the RBF fallback")
    group.add_argument("--method", choices=("blendshape", "learned", "rbf"),
                       help="blendshape: the head model's expression weights solved from the landmarks (head model "
                            "topology; the default); learned: the mesh decoder (its topology; the default with "
                            "--decoder); rbf: non-learned interpolation, any mesh (the default with --landmark-ids)")
    group.add_argument("--decoder", type=Path, help="decoder model directory (default: the shipped one)")


def _output_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mesh outputs (any of these, or a target mesh option, turns them on)")
    group.add_argument("--export", help="comma-separated formats of obj,ply,pc2,mdd,usd and, on the head model's "
                                        "topology, the rig formats gltf,arkit-csv,weights,usd-skel (default with "
                                        "meshes: pc2,mdd and usd when usd-core is installed)")
    group.add_argument("--preview", help="mp4, gif or mp4,gif: a captioned grid of the samples, OUT/preview.<fmt>")
    group.add_argument("--overlay-landmarks", action="store_true", help="draw the driving landmarks in the preview")
    group.add_argument("--size", type=int, help="preview tile size in pixels (default 256)")
    group.add_argument("--start", choices=STARTS, help="target: the sequences start from the target mesh's own "
                       "neutral face (1 pass of geometry-adaptive generation unless --passes); free: the model "
                       "picks the first frame too; auto (default): target for a --label or --text on a mesh of "
                       "the head model's topology, free otherwise")


def _sampling_args(parser: argparse.ArgumentParser) -> None:
    """Model, sampler and guidance options shared by ``generate`` and ``fill``."""
    parser.add_argument("--model", type=Path, help="model bundle directory (default: the embedded one)")
    parser.add_argument("--sampler", choices=("fast", "paper"), default="fast",
                        help="fast: strided DDPM over --steps steps; paper: all T steps (slow)")
    parser.add_argument("--steps", type=int, default=50, help="steps of the fast sampler (default 50)")
    parser.add_argument("--variance", choices=VARIANCES, help="reverse-step variance of the DDPM samplers: "
                                                              "posterior (default) or beta (the paper)")
    parser.add_argument("--eta", type=float, help="sample by DDIM with this eta in [0, 1] instead (0: deterministic)")
    parser.add_argument("--guidance-lambda", type=float, help="weight of log p(x|x_t) in the refinement (0.01; text: 1e-4)")
    parser.add_argument("--guidance-steps", type=int, help="Adagrad steps per reverse step (3)")
    parser.add_argument("--guidance-lr", type=float, help="Adagrad learning rate, in units of sigma_t (0.2)")
    parser.add_argument("--reconstruction", type=float, metavar="W",
                        help="weight of reconstruction guidance towards the known frames when filling or starting "
                             "from a neutral face (default 20; 0: the paper's Alg. 3/4 as written)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--quiet", action="store_true")


def _dataset_build(args) -> None:
    from face4d.data.dataset import DEFAULT_HELD_OUT_LABELS, build_dataset
    from face4d.data.synth import SynthConfig

    config = SynthConfig(frames=args.frames, variable_length=args.variable_length, min_frames=args.min_frames,
                         max_frames=args.max_frames, num_identities=args.identities, head_motion=args.head_motion,
                         fps=args.fps)
    out = build_dataset(args.out, args.sequences, seed=args.seed, config=config, shard_size=args.shard_size,
                        held_out_labels=args.held_out_labels or DEFAULT_HELD_OUT_LABELS,
                        overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {args.sequences} sequences to {out}")


def _dataset_info(args) -> None:
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


def _dataset_preview(args) -> None:
    from face4d.data.preview import write_preview

    paths = write_preview(args.out, data=args.data, seed=args.seed, gif_sequences=args.gif_sequences,
                          tile=args.size, overwrite=args.overwrite)
    for path in paths:
        print(f"wrote {path}")


def _dataset_import(args) -> None:
    from face4d.data.dataset import import_dataset
    from face4d.data.interchange import save_sequences
    from face4d.pipeline import check_out_dir, check_out_file

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
        from face4d.data.bu4dfe import load_bu4dfe, read_landmark_index
        index = read_landmark_index(args.landmark_index) if args.landmark_index else None
        source["landmark_index"] = None if args.landmark_index is None else str(args.landmark_index.resolve())
        seqs = load_bu4dfe(args.root, frames=args.frames, landmark_index=index, scale=scale, progress=not args.quiet)
    if as_file:
        save_sequences(args.out, seqs, overwrite=args.overwrite)
        print(f"wrote {len(seqs)} sequences to {args.out}")
        return
    out = import_dataset(args.out, seqs, source, overwrite=args.overwrite, progress=not args.quiet, **dataset_options)
    print(f"wrote {len(seqs)} sequences of {len(set(seqs.subjects))} subjects to {out}")


def _train(args) -> None:
    from face4d.eval.classifier import ICConfig
    from face4d.models.classifier import ClassifierConfig
    from face4d.models.denoiser import DenoiserConfig
    from face4d.training import TrainConfig, train_model

    kind = args.train_command.replace("-", "_")
    train_config = TrainConfig(**training_options(args))
    extra = given(args, "num_timesteps")
    if kind == "ic":
        config = ICConfig(**given(args, "hidden"))
    else:
        arch = given(args, "d_model", "layers", "heads", "ff", "dropout", "max_frames")
        if kind == "denoiser":
            from face4d.training import DENOISER_PREDICTION

            extra.update(given(args, "prediction", "velocity_weight", "snr_gamma", "snr_floor"))
            # The skip path suits the prediction (Denoiser's docstring): ours by default, the paper's for epsilon.
            skip = args.skip or ("frame" if extra.get("prediction", DENOISER_PREDICTION) == "epsilon" else "mean")
            config = DenoiserConfig(**arch, skip=skip)
        elif kind == "classifier":
            config = ClassifierConfig(kind=args.classifier_kind, **arch)
        else:
            from face4d.models.text_guide import TextGuideConfig
            config = TextGuideConfig(**arch)
            extra.update(texts=args.texts, **given(args, "text_encoder"))
    trainer = train_model(kind, args.data, args.out, train_config, config, progress=not args.quiet, **extra)
    if trainer.is_main:
        resumed = f" (resumed from step {trainer.start_step})" if trainer.start_step else ""
        print(f"{kind} at step {trainer.step}{resumed}; model saved in {args.out}")


def _sampling_config(args):
    from dataclasses import replace

    from face4d.generate import SamplingConfig

    given = {key: value for key, value in (("lam", args.guidance_lambda), ("steps", args.guidance_steps),
                                           ("lr", args.guidance_lr)) if value is not None}
    defaults = SamplingConfig()
    reconstruction = defaults.reconstruction if args.reconstruction is None else args.reconstruction
    return replace(defaults, sampler=args.sampler, steps=args.steps, guidance=replace(defaults.guidance, **given),
                   text_guidance=replace(defaults.text_guidance, **given), reconstruction=reconstruction,
                   **{key: getattr(args, key) for key in ("variance", "eta") if getattr(args, key) is not None})


def _save_each(folder: Path, seqs) -> None:
    """``folder/sequence_000.npz``, ...: one file per sequence."""
    from face4d.data.interchange import save_sequences

    for i in range(len(seqs)):
        save_sequences(folder / f"sequence_{i:03d}.npz", seqs.select(i))


MESH_OPTIONS = ("mesh", "identity_seed", "landmark_ids", "method", "decoder", "export", "preview", "start",
                "flame_model")


def _pipeline(args):
    from face4d.pipeline import Pipeline

    if args.decoder is not None and (args.method == "rbf" or args.landmark_ids is not None):
        raise Face4DError("--decoder only applies to the learned decoder, not to the RBF fallback")
    if args.decoder is not None and args.method is None:
        args.method = "learned"  # a decoder given is a decoder to use
    return Pipeline.from_pretrained(getattr(args, "model", None), args.decoder, device=args.device)


def _generate(args) -> None:
    from face4d.pipeline import check_export_formats, check_preview_formats

    meshes = any(getattr(args, name) is not None for name in MESH_OPTIONS)
    if not meshes and (args.overlay_landmarks or args.size is not None):
        raise Face4DError("--overlay-landmarks and --size apply to the preview (--preview mp4)")
    if args.trust_pickle and args.flame_model is None:
        raise Face4DError("--trust-pickle applies to the files of --flame-model")
    pipe = _pipeline(args)
    condition = dict(label=args.label, text=args.text, keyframes=args.keyframes, known=args.known,
                     neutral_mesh=args.neutral_mesh, neutral_landmarks=args.neutral_landmarks, frames=args.frames,
                     num=args.num, seed=args.seed, sequence_type=args.sequence_type, passes=args.passes,
                     sequence_index=args.sequence_index, sampling=_sampling_config(args), progress=not args.quiet,
                     intensity=args.intensity)
    if not meshes:  # landmarks only: one interchange file per sequence, streamed in batches
        frames = pipe.sample_to(args.out, overwrite=args.overwrite, **condition)
        print(f"wrote {args.num} sequence(s) of {frames} frames to {args.out}")
        return
    formats, preview = check_export_formats(args.export), check_preview_formats(args.preview)
    target, frames = pipe.generate_to(args.out, formats, preview, overwrite=args.overwrite, mesh=args.mesh,
                                      identity_seed=args.identity_seed, landmark_ids=args.landmark_ids,
                                      method=args.method, start=args.start or "auto",
                                      overlay_landmarks=args.overlay_landmarks, size=args.size or 256,
                                      flame_model=args.flame_model, trust_pickle=args.trust_pickle, **condition)
    extra = "".join(f" + preview.{fmt}" for fmt in preview)
    if args.flame_model is not None:
        extra += " + flame/ (the fits' landmark errors are in samples.json)"
    print(f"wrote {args.num} sample(s) of {frames} frames on {target.name} ({target.method}) to "
          f"{args.out}: {', '.join(formats)}{extra}")


def _render(args) -> None:
    from face4d.decoder.retarget import load_landmark_file
    from face4d.pipeline import check_out_file, check_preview_fps, check_preview_size, require_render

    require_render()
    check_out_file(args.out, (".mp4", ".gif"), args.overwrite)
    check_preview_size(1, 1, args.size)  # before the slow steps, as the rest
    if args.fps is not None:
        check_preview_fps([args.out.suffix], args.fps)
    seqs = load_landmark_file(args.landmarks)
    reference = None if args.reference is None else load_landmark_file(args.reference)
    pipe = _pipeline(args)
    target = pipe.target(args.mesh, args.identity_seed, landmark_ids=args.landmark_ids, method=args.method)
    progress = not args.quiet
    result = pipe.decode(seqs, target, progress=progress)
    if reference is not None:
        reference = pipe.decode(reference, target, progress=progress)
    pipe.render(result, args.out, reference=reference, overlay_landmarks=args.overlay_landmarks, size=args.size,
                columns=args.columns, view=args.view, fps=args.fps, overwrite=args.overwrite, progress=progress)
    print(f"wrote {args.out}: {len(result)} sequence(s) on {target.name} ({target.method})"
          + ("" if reference is None else f", beside {args.reference}"))


def _demo(args) -> None:
    import time

    from face4d.pipeline import run_demo

    start = time.perf_counter()
    result = run_demo(args.out, labels=args.labels or DEMO_LABELS, seed=args.seed, frames=args.frames,
                      formats=args.export, size=args.size, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {len(result)} labels ({', '.join(result.names)}) on the default head to {args.out} "
          f"in {time.perf_counter() - start:.0f} s: one folder per label, preview.mp4, preview.gif")


def _fill(args) -> None:
    from face4d.data.interchange import load_sequences
    from face4d.filling import parse_known
    from face4d.generate import LandmarkGenerator
    from face4d.pipeline import check_seed
    from face4d.training import resolve_device
    from meshops.atomic import atomic_dir

    seqs = load_sequences(args.input)
    if not 0 <= args.sequence_index < len(seqs):
        raise Face4DError(f"--sequence-index {args.sequence_index} is out of range: {args.input} holds "
                          f"{len(seqs)} sequence(s) (indices 0-{len(seqs) - 1})")
    seq = seqs.select(args.sequence_index)
    frames = int(seq.lengths[0])
    known = parse_known(args.known, frames)
    sampling = _sampling_config(args)
    seed = check_seed(args.seed)
    generator = LandmarkGenerator.from_pretrained(args.model, device=resolve_device(args.device))
    with atomic_dir(args.out, overwrite=args.overwrite) as tmp:
        filled = generator.fill(seq, known, num=args.num, seed=seed, label=args.label, sampling=sampling,
                                progress=not args.quiet, passes=args.passes)
        _save_each(tmp, filled)
    print(f"filled {frames - int(known.sum())} of {frames} frames: wrote {len(filled)} sequence(s) to {args.out}")


HANDLERS = {("dataset", "build"): _dataset_build, ("dataset", "info"): _dataset_info,
            ("dataset", "preview"): _dataset_preview, ("dataset", "import"): _dataset_import,
            ("train", "denoiser"): _train, ("train", "classifier"): _train, ("train", "ic"): _train,
            ("train", "text-guide"): _train,
            ("generate", None): _generate, ("fill", None): _fill, ("render", None): _render,
            ("demo", None): _demo}
HANDLERS.update(DECODER_HANDLERS)


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled as SIGINT is: every writer's temporary is removed on the way out."""

    signum = signal.SIGTERM


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the cleanup finish
    raise Interrupted()


def _check_lists(args: argparse.Namespace) -> None:
    """An empty comma-separated list (``--labels ""``, ``--labels ,,``) is refused, not taken as the default."""
    for name in ("labels", "held_out_labels"):
        if getattr(args, name, None) == ():
            raise Face4DError(f"--{name.replace('_', '-')} is empty; give comma-separated label names")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input is one line on stderr and exit code 2; SIGINT and SIGTERM remove the
    temporaries, print one line and exit with 130 / 143 (128 + the signal's number)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = HANDLERS[(args.command, getattr(args, f"{args.command}_command", None))]
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        _check_lists(args)
        handler(args)
    except KeyboardInterrupt as exc:
        if args.debug:
            raise
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"face4d: interrupted ({signal.Signals(signum).name}); unfinished outputs were removed", file=sys.stderr)
        return 128 + signum
    except (Face4DError, MeshFileError, OSError) as exc:
        if args.debug:
            raise
        print(f"face4d: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
