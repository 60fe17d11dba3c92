"""The decoder's sub-commands of ``face4d``: ``train decoder`` and ``retarget``.

Kept apart from ``face4d.cli`` (which only wires them in) and torch-free at import, like the rest
of the command line: the work happens in ``face4d.decoder.training`` and ``face4d.decoder.retarget``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.cliargs import add_training_args, given, training_options

EXAMPLES = """decoder examples:
  face4d train decoder --data data/face4d --out models/decoder --steps 20000
  face4d retarget --landmarks samples/sequence_000.npz --mesh neutral.obj --out meshes/ --export ply
  face4d retarget --landmarks seq.npz --mesh my_character.obj --method rbf --landmark-ids ids.npy --out meshes/
"""


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_decoder_commands(commands, train_commands) -> None:
    """Add ``retarget`` to the top-level sub-commands and ``decoder`` to those of ``train``."""
    fmt = argparse.RawDescriptionHelpFormatter
    cmd = train_commands.add_parser("decoder", help="train the landmark-guided mesh decoder on a built dataset",
                                    epilog=EXAMPLES, formatter_class=fmt)
    cmd.add_argument("--data", required=True, type=Path, help="dataset directory ('face4d dataset build', "
                                                              "without --head-motion)")
    cmd.add_argument("--out", required=True, type=Path,
                     help="model directory; one holding a run is resumed from its last checkpoint")
    cmd.add_argument("--variant", choices=("full", "pooled", "no_attention", "mlp"), default="full",
                     help="full: the paper's (cross-attention); pooled: mesh encoder without attention; "
                          "no_attention: S2D-like (landmarks only); mlp: linear/MLP baseline")
    group = add_training_args(cmd, "face4d.decoder.training.DecoderTrainConfig", batch_help="frames per step",
                              device_help="cpu (default), auto, cuda, cuda:N")
    group.add_argument("--frames-per-mesh", type=int, help="frames per sequence in a step (the mesh is encoded once)")
    group.add_argument("--landmark-weight", type=float, help="extra loss weight near the landmarks (S2D)")
    group.add_argument("--labels", choices=("expression_train", "all"),
                       help="expression_train (default): hold the expression split's test labels out, so the "
                            "model can be evaluated on both splits; all: every label")
    arch = cmd.add_argument_group("architecture (defaults: the variant's config dataclass)")
    arch.add_argument("--encoder-channels", type=_channels, help="one per mesh level, e.g. 8,16,32,64,64")
    arch.add_argument("--decoder-channels", type=_channels, help="coarse to fine, e.g. 64,64,32,16")
    arch.add_argument("--heads", type=int, help="attention heads")
    arch.add_argument("--spiral-length", type=int)
    arch.add_argument("--hidden", type=int, help="mlp: hidden units")

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
    ret.add_argument("--method", choices=("blendshape", "learned", "rbf"),
                     help="blendshape (default): the head model's expression weights solved from the landmarks; "
                          "learned (default with --model): the decoder (both: meshes in the head model's topology); "
                          "rbf (default with --landmark-ids): interpolation, any mesh")
    ret.add_argument("--model", type=Path, help="decoder model directory (default: the shipped one)")
    ret.add_argument("--landmark-ids", type=Path,
                     help="--method rbf on another topology: .npy/.txt with the vertex ids of the mesh's 68 landmarks")
    ret.add_argument("--device", default="cpu")
    ret.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")


def train_decoder_command(args) -> None:
    from face4d.decoder.model import make_config
    from face4d.decoder.training import DecoderTrainConfig, train_decoder

    train_config = DecoderTrainConfig(**training_options(args, "frames_per_mesh", "landmark_weight", "labels"))
    names = ("hidden",) if args.variant == "mlp" else ("encoder_channels", "decoder_channels", "heads",
                                                       "spiral_length")
    other = [n for n in ("hidden", "encoder_channels", "decoder_channels", "heads", "spiral_length")
             if n not in names and getattr(args, n) is not None]
    if other:
        from face4d.errors import Face4DError
        raise Face4DError(f"--{other[0].replace('_', '-')} does not apply to the {args.variant!r} variant")
    trainer = train_decoder(args.data, args.out, train_config, make_config(args.variant, **given(args, *names)),
                            progress=not args.quiet)
    resumed = f" (resumed from step {trainer.start_step})" if trainer.start_step else ""
    print(f"decoder ({args.variant}) at step {trainer.step}{resumed}; model saved in {args.out}")


def retarget_command(args) -> None:
    from face4d.decoder.retarget import retarget_files

    out, frames, method = retarget_files(args.landmarks, args.mesh, args.out, export=args.export,
                                         neutral_frame=args.neutral_frame, model=args.model, method=args.method,
                                         landmark_ids_path=args.landmark_ids, sequence_index=args.sequence_index,
                                         overwrite=args.overwrite, device=args.device)
    print(f"wrote {frames} frame(s) ({method}) to {out}")


DECODER_HANDLERS = {("train", "decoder"): train_decoder_command, ("retarget", None): retarget_command}
