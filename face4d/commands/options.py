"""Command-line pieces shared by the ``face4d`` sub-command modules (and the results scripts): the
examples, the training options of ``face4d.training.TrainConfig`` (and its subclasses), the sampling
options of ``face4d.generate.SamplingConfig``, the target mesh and mesh output options, and reading
back the options that were given.

An option left out keeps its dataclass default (``given``, ``sampling_config``), so defaults live
in one place: the dataclasses.
"""
from __future__ import annotations

import argparse
from pathlib import Path

EXAMPLES = """examples:
  face4d demo --out demo/
  face4d generate --label mouth_open --frames 40 --mesh neutral.obj --out out/ --export obj,ply,pc2,mdd,usd --preview mp4
  face4d generate --label high_smile --identity-seed 7 --num 2 --out out/ --preview mp4,gif
  face4d generate --label high_smile --export gltf,arkit-csv,weights,usd --out out/     # rig curves
  face4d generate --label surprise --mesh character.obj --landmark-ids ids.npy --out out/ --export obj
  face4d generate --keyframes seq.npz --known 0-9,30-39 --label anger --out out/ --export pc2 --preview gif
  face4d generate --label high_smile --flame-model ~/flame --out out/ --export obj,pc2
  face4d generate --timeline "0s:neutral, 1.2s:high_smile@0.8, 2.5s:surprise, 4s:neutral" --duration 5 --fps 30 --export pc2,usd --preview mp4 --out shot/
  face4d generate --timeline shot.json --loop --fps 24 --out loop/ --preview mp4
  face4d render samples/sequence_000.npz --out preview.mp4 --overlay-landmarks
  face4d render samples/sequence_000.npz --reference data.npz --mesh neutral.obj --out compare.gif
  face4d dataset build --out data/face4d --sequences 2000 --seed 0
  face4d dataset build --out data/varlen --sequences 2000 --variable-length
  face4d dataset info data/face4d
  face4d dataset preview --out previews/ --data data/face4d
  face4d dataset import coma ~/COMA --embedding flame_landmarks.npz --out data/coma
  face4d dataset portraits --out data/portraits64 --size 64 --images 20000 --clips 200 --workers 2
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
  face4d retarget --landmarks seq.npz --mesh my_character.obj --method rbf --landmark-ids ids.npy --out meshes/
  face4d train neural-evaluators --data portraits/ --out models/neural/evaluators
  face4d train neural-faces --data portraits/ --evaluators models/neural/evaluators --out models/neural/ccfexp
  accelerate launch --num_processes 2 --cpu -m face4d.cli train neural-edit --data portraits/ --out models/neural/edit
  face4d render seq.npz --neural faces --neural-model models/neural/ccfexp --portraits portraits/ --identity 3 --out faces.mp4
  face4d edit face.png --label happiness --model models/neural/edit --out edited.png --strength 0.6
  face4d train neural-region --data portraits/ --out models/neural/region
  face4d edit face.png --text "a wide smile" --region mouth --out edited.png     # landmarks: face.pts
"""


def labels_arg(text: str) -> tuple[str, ...]:
    """A comma-separated list of labels."""
    return tuple(s.strip() for s in text.split(",") if s.strip())



PRECISIONS = ("auto", "float32", "bfloat16")
"""``render.neural.precision.PRECISIONS``, named here so that building the parser imports no torch."""


def add_precision_arg(parser: argparse.ArgumentParser | argparse._ArgumentGroup, applies: str) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"{applies}: the UNet's arithmetic (auto: bfloat16 on a CPU that has it natively, "
                             "float32 elsewhere)")


def given(args: argparse.Namespace, *names: str) -> dict:
    """The options among ``names`` that were given on the command line."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def add_training_args(parser: argparse.ArgumentParser, defaults: str = "face4d.training.TrainConfig",
                      batch_help: str = "global batch, split across torchrun processes",
                      device_help: str = "auto (CUDA if available), cpu, cuda, cuda:N") -> argparse._ArgumentGroup:
    """The options of ``TrainConfig`` in a group titled after the dataclass holding their ``defaults``;
    returns the group, for a subclass's own options."""
    group = parser.add_argument_group(f"training (defaults: {defaults})")
    group.add_argument("--steps", type=int, help="total optimiser steps, resumed ones included")
    group.add_argument("--batch-size", type=int, help=batch_help)
    group.add_argument("--lr", type=float, help="AdamW learning rate")
    group.add_argument("--weight-decay", type=float)
    group.add_argument("--ema-decay", type=float)
    group.add_argument("--grad-clip", type=float, help="gradient norm limit, 0 for none")
    group.add_argument("--seed", type=int, help="the same seed gives the same weights")
    group.add_argument("--device", help=device_help)
    group.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    group.add_argument("--log-every", type=int, help="steps between loss updates")
    group.add_argument("--quiet", action="store_true", help="no progress bar")
    return group


def training_options(args: argparse.Namespace, *extra: str) -> dict:
    """``TrainConfig`` keyword arguments of the given training options (and of the ``extra`` ones);
    ``--grad-clip 0`` is None, no clipping."""
    options = given(args, "steps", "batch_size", "lr", "weight_decay", "ema_decay", "seed", "device",
                    "checkpoint_every", "log_every", *extra)
    if args.grad_clip is not None:
        options["grad_clip"] = args.grad_clip or None
    return options


def add_mesh_args(parser: argparse.ArgumentParser) -> None:
    """The target mesh options shared by ``generate`` and ``render``."""
    from face4d.decoder.target import METHODS

    group = parser.add_argument_group("target mesh (default: the head model's mean face)")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--mesh", type=Path, help="neutral mesh (.obj/.ply, centimetres, Y up, facing +z) to "
                                                  "animate; in the head model's topology, or any with --landmark-ids")
    target.add_argument("--identity-seed", type=int, help="animate a random person of the head model "
                                                          "(identity weights ~ N(0, I) from this seed)")
    group.add_argument("--landmark-ids", type=Path, help="a mesh in another topology: .npy/.txt with the vertex ids "
                                                         "of its 68 landmarks (iBUG order); uses the RBF fallback")
    group.add_argument("--method", choices=METHODS,
                       help="blendshape: the head model's expression weights solved from the landmarks (head model "
                            "topology; the default); learned: the mesh decoder (its topology; the default with "
                            "--decoder); rbf: non-learned interpolation, any mesh (the default with --landmark-ids)")
    group.add_argument("--decoder", type=Path, help="decoder model directory (default: the shipped one)")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    from face4d.pipeline import STARTS

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


def add_sampling_args(parser: argparse.ArgumentParser, guidance: bool = True, sampler: bool = True,
                      runtime: bool = True) -> None:
    """The model, sampler and guidance options of ``generate`` and ``fill`` (and, without
    ``guidance``, the sampler variants and guidance settings, and ``runtime``, of the results
    scripts; without ``sampler`` for one that runs both samplers). Their defaults are
    ``SamplingConfig``'s."""
    from face4d.settings import SamplingConfig

    defaults = SamplingConfig()
    parser.add_argument("--model", type=Path, help="model bundle directory (default: the embedded one)")
    if sampler:
        parser.add_argument("--sampler", choices=("fast", "paper"), default=defaults.sampler,
                            help="fast: strided DDPM over --steps steps; paper: all T steps (slow)")
    parser.add_argument("--steps", type=int, default=defaults.steps,
                        help=f"steps of the fast sampler (default {defaults.steps})")
    if guidance:
        from face4d.settings import GUIDANCE_NORMS, VARIANCES

        parser.add_argument("--variance", choices=VARIANCES, help="reverse-step variance of the DDPM samplers: "
                            f"posterior or beta (the paper); default {defaults.variance}")
        parser.add_argument("--eta", type=float, help="sample by DDIM with this eta in [0, 1] instead "
                                                      "(0: deterministic)")
        parser.add_argument("--guidance-lambda", type=float, help="weight of log p(x|x_t) in the refinement "
                            f"({defaults.guidance.lam:g}; text: {defaults.text_guidance.lam:g})")
        parser.add_argument("--guidance-steps", type=int,
                            help=f"Adagrad steps per reverse step ({defaults.guidance.steps})")
        parser.add_argument("--guidance-lr", type=float,
                            help=f"Adagrad learning rate, in units of sigma_t ({defaults.guidance.lr:g}; text: "
                                 f"{defaults.text_guidance.lr:g})")
        parser.add_argument("--guidance-norm", choices=GUIDANCE_NORMS,
                            help="Adagrad's accumulator: one per sample, keeping the gradient's shape "
                                 "(sample, default), or one per coordinate (the paper's)")
        from face4d.settings import LABEL_CONTROLS

        parser.add_argument("--label-control", choices=LABEL_CONTROLS,
                            help="how a label steers: the denoiser's label input (conditional), the paper's "
                                 "classifier guidance (classifier), both, or auto (conditional when the model "
                                 "has one; default)")
        parser.add_argument("--condition-scale", type=float, metavar="W",
                            help="classifier-free guidance scale of a conditional denoiser "
                                 f"(default {defaults.condition_scale:g}: the conditional model itself)")
        parser.add_argument("--no-calibration", dest="calibrate", action="store_const", const=False, default=None,
                            help="leave out the model's per-label amplitude gains (label_gains.json): each label "
                                 "as far as guidance takes it")
        add_reconstruction_arg(parser, default=None)
    if runtime:
        parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        parser.add_argument("--overwrite", action="store_true")
        parser.add_argument("--quiet", action="store_true")


def add_reconstruction_arg(parser: argparse.ArgumentParser, default: float | None) -> None:
    """``--reconstruction W``, the weight of reconstruction guidance towards known frames; ``default``
    None leaves it to ``SamplingConfig`` (the results scripts give theirs to show in ``--help``)."""
    from face4d.settings import SamplingConfig

    weight = SamplingConfig().reconstruction
    parser.add_argument("--reconstruction", type=float, metavar="W", default=default,
                        help="weight of the gradient term of reconstruction guidance towards the known frames when "
                             f"filling or starting from a neutral face (default {weight:g})")
    parser.add_argument("--no-anchor", dest="anchor", action="store_const", const=False, default=None,
                        help="leave out reconstruction guidance's anchor term (with --reconstruction 0: the "
                             "paper's Alg. 3/4 as written)")


def sampling_config(args: argparse.Namespace):
    """The ``face4d.generate.SamplingConfig`` of the sampling options that were given; the others
    keep its defaults."""
    from dataclasses import replace

    from face4d.settings import SamplingConfig

    defaults = SamplingConfig()
    guidance = {key: value for key, value in (("lam", getattr(args, "guidance_lambda", None)),
                                              ("steps", getattr(args, "guidance_steps", None)),
                                              ("lr", getattr(args, "guidance_lr", None)),
                                              ("norm", getattr(args, "guidance_norm", None))) if value is not None}
    options = given(args, "sampler", "steps", "reconstruction", "variance", "eta", "condition_scale", "anchor",
                    "label_control", "calibrate")
    return replace(defaults, guidance=replace(defaults.guidance, **guidance),
                   text_guidance=replace(defaults.text_guidance, **guidance), **options)


def pipeline(args):
    """The ``Pipeline`` of the command's ``--model``, ``--decoder`` and ``--device`` (those it has)."""
    from face4d.errors import Face4DError
    from face4d.pipeline import Pipeline

    decoder = getattr(args, "decoder", None)
    if decoder is not None and (args.method == "rbf" or args.landmark_ids is not None):
        raise Face4DError("--decoder only applies to the learned decoder, not to the RBF fallback")
    if decoder is not None and args.method is None:
        args.method = "learned"  # a decoder given is a decoder to use
    return Pipeline.from_pretrained(getattr(args, "model", None), decoder, device=args.device)
