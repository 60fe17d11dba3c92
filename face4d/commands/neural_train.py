"""``face4d train neural-evaluators|neural-faces|neural-edit|neural-region|neural-video``: the neural
renderer's models, trained on a portrait dataset (``face4d dataset portraits``) through ``render.neural``'s training functions.

Each runs on one process or on many under ``accelerate launch`` (``--num_processes N``, ``--cpu`` for
CPU processes); rerunning the same command resumes from ``--out``'s checkpoint, and the same
``--seed`` gives the same weights."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands.options import EXAMPLES, given
from face4d.errors import Face4DError

HELPS = {"neural-evaluators": "the landmark regressor, identity encoder and expression classifier (judges "
                              "of the image models, and CCFExp's loss networks)",
         "neural-faces": "CCFExp, identity image + target landmarks -> image",
         "neural-edit": "the label + VAE editing model, image + label -> image",
         "neural-region": "local expression diffusion, eye and mouth crops redrawn from a text",
         "neural-video": "FacEnhance, low-res frame + identity image + previous frame -> high-res frame "
                         "(on the dataset's clips)"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from face4d.commands.train import _channels as _ints  # comma-separated integers (train imports this module)

    for kind, text in HELPS.items():
        cmd = sub.add_parser(kind, help=f"train {text}", epilog=EXAMPLES,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--data", required=True, type=Path, help="portrait dataset ('face4d dataset portraits')")
        cmd.add_argument("--out", required=True, type=Path, help="model directory; one holding a run is resumed")
        group = cmd.add_argument_group("training (defaults: render.neural.training.NeuralTrainConfig)")
        group.add_argument("--steps", type=int, help="total optimiser steps, resumed ones included")
        group.add_argument("--batch-size", type=int, help="global batch, split over accelerate's processes")
        group.add_argument("--lr", type=float, help="AdamW learning rate")
        group.add_argument("--ema-decay", type=float, help="0 for no EMA")
        group.add_argument("--grad-clip", type=float, help="gradient norm limit, 0 for none")
        group.add_argument("--seed", type=int, help="the same seed gives the same weights")
        group.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
        group.add_argument("--init", type=Path, help="start a new run from this saved model's weights (same kind and "
                                                     "architecture, e.g. a shipped default) instead of random ones")
        group.add_argument("--device", choices=("cpu", "auto"), default="cpu",
                           help="cpu (default) or auto (the accelerator accelerate finds)")
        group.add_argument("--quiet", action="store_true", help="no progress bar")
        arch = cmd.add_argument_group("architecture (defaults: the model's config dataclass)")
        if kind == "neural-evaluators":
            arch.add_argument("--widths", type=_ints, help="CNN widths, one per stride-2 level, e.g. 32,64,96,128")
            continue
        arch.add_argument("--channels", type=_ints, help="UNet block widths, e.g. 32,64,96")
        if kind == "neural-video":
            _add_video_args(cmd, arch)
            continue
        if kind == "neural-faces":
            cmd.add_argument("--evaluators", type=Path, help="trained evaluators ('face4d train neural-evaluators'): "
                                                             "the identity and landmark losses' networks")
            arch.add_argument("--dim", type=int, help="token width of the condition")
            arch.add_argument("--warp-input", action=argparse.BooleanOptionalAction,
                              help="also give the UNet the identity image warped to the target landmarks")
            arch.add_argument("--prediction", choices=("epsilon", "sample"),
                              help="epsilon: the noise (the paper's); sample: the clean image")
            ablation = cmd.add_argument_group("ablations (the paper's table)")
            ablation.add_argument("--no-landmarks", action="store_true", help="no landmark encoder, maps or loss")
            ablation.add_argument("--no-cross-fusion", action="store_true", help="concatenate the raw tokens")
            ablation.add_argument("--no-cycle", action="store_true", help="no cycle step (its loss weight 0)")
            loss = cmd.add_argument_group("loss (defaults: render.neural.ccfexp_training.CCFExpLossConfig)")
            loss.add_argument("--identity-weight", type=float, help="λ of the time-dependent identity loss")
            loss.add_argument("--landmark-weight", type=float, help="γ of the landmark loss")
            loss.add_argument("--cycle-weight", type=float, help="σ of the cycle step's loss")
        elif kind == "neural-region":
            arch.add_argument("--text-dropout", type=float, help="share of null texts (classifier-free guidance)")
            arch.add_argument("--crop-size", dest="size", type=int,
                              help="side of the crops the UNet draws (the paper's: 64)")
            arch.add_argument("--attention-levels", type=int,
                              help="how many of the lowest-resolution levels attend to the text")
        else:
            arch.add_argument("--variant", choices=("vae", "label"), default="vae",
                              help="vae: label + the source's VAE latent (the paper's); label: label only")
            arch.add_argument("--label-dropout", type=float, help="share of null labels (classifier-free guidance)")
            arch.add_argument("--source-input", action=argparse.BooleanOptionalAction,
                              help="also give the UNet the source image itself (concatenated)")
            arch.add_argument("--prediction", choices=("epsilon", "sample"),
                              help="epsilon: the noise (the paper's); sample: the clean image")
            cmd.add_argument("--vae-steps", type=int, help="steps of the VAE stage (default: --steps)")


def run(args: argparse.Namespace) -> None:
    from face4d.neural import neural_errors

    with neural_errors():
        from render.neural.data import load_images, load_neutrals, read_manifest
        from render.neural.training import NeuralTrainConfig

        manifest = read_manifest(args.data)
        config = NeuralTrainConfig(**given(args, "steps", "batch_size", "lr", "ema_decay", "grad_clip", "seed",
                                           "checkpoint_every"),
                                   init=None if args.init is None else str(args.init.resolve()))
        common = {"progress": not args.quiet, "cpu": args.device == "cpu"}
        video = args.train_command == "neural-video"  # trains on the clips, not the images
        images = None if video else load_images(args.data, "train")  # the test identities stay unseen
        if args.train_command == "neural-evaluators":
            from render.neural.evaluators import EvaluatorConfig, train_evaluators

            result = train_evaluators(images, args.out, config, manifest["labels"],
                                      evaluator_config=EvaluatorConfig(**given(args, "widths")), **common)
        elif args.train_command == "neural-faces":
            result = _train_faces(args, images, load_neutrals(args.data), config, common)
        elif args.train_command == "neural-region":
            from face4d.data.region_texts import text_table
            from render.neural.local_expression_model import RegionConfig
            from render.neural.local_expression_training import train_region

            region_config = RegionConfig(**given(args, "channels", "text_dropout", "size", "attention_levels"))
            result = train_region(images, text_table(manifest["labels"]), args.out, config, region_config, **common)
        elif args.train_command == "neural-edit":
            from render.neural.conditional_diffusion_model import EditConfig
            from render.neural.conditional_diffusion_training import train_edit

            edit_config = EditConfig(variant=args.variant, **given(args, "channels", "label_dropout", "source_input",
                                                                   "prediction"))
            result = train_edit(images, args.out, config, manifest["labels"], edit_config,
                                vae_steps=args.vae_steps, **common)
        else:
            result = _train_video(args, config, common)
    if result.is_main:
        resumed = f" (resumed from step {result.start_step})" if result.start_step else ""
        print(f"{args.train_command} at step {result.step}{resumed}; model saved in {args.out}")


def _train_faces(args, images, neutrals, config, common):
    from render.neural.ccfexp_model import CCFExpConfig
    from render.neural.ccfexp_training import CCFExpLossConfig, train_ccfexp
    from render.neural.evaluators import Evaluators

    loss = CCFExpLossConfig(**given(args, "identity_weight", "landmark_weight", "cycle_weight"))
    if args.no_cycle:
        loss.cycle_weight = 0.0
    model = CCFExpConfig(landmarks=not args.no_landmarks, cross_fusion=not args.no_cross_fusion,
                         **given(args, "channels", "dim", "warp_input", "prediction"))
    needs = loss.identity_weight > 0 or (model.landmarks and loss.landmark_weight > 0)
    if needs and args.evaluators is None:
        raise Face4DError("the identity and landmark losses need --evaluators DIR ('face4d train "
                          "neural-evaluators'), or --identity-weight 0 --landmark-weight 0")
    evaluators = Evaluators.from_pretrained(args.evaluators) if args.evaluators is not None else None
    return train_ccfexp(images, neutrals, args.out, config, model, loss, evaluators, **common)


def _add_video_args(cmd: argparse.ArgumentParser, arch: argparse._ArgumentGroup) -> None:
    arch.add_argument("--prediction", choices=("previous", "epsilon", "sample"),
                      help="previous: x_(t-stride) directly (the paper's); epsilon: the noise; sample: the clean "
                           "frame (both DDIM sampling)")
    arch.add_argument("--stride", type=int, help="the x_(t-stride) step; sampling takes timesteps/stride calls")
    arch.add_argument("--no-residual", action="store_true",
                      help="diffuse the whole frame, as the paper does, not its difference from the detail-"
                           "transfer guess (the upsampled low-res frame plus the identity image's detail)")
    ablation = cmd.add_argument_group("ablations (the paper's table 3)")
    ablation.add_argument("--no-expression-encoder", action="store_true",
                          help="no attention to the low-res frame's encoding: it enters only as the concatenated "
                               "image (the detail-transfer guess, or with --no-residual the upsampled frame)")
    ablation.add_argument("--no-previous-frame", action="store_true", help="frame by frame: no previous frame")
    ablation.add_argument("--previous-noise", type=float, help="σ of the noise on the previous frame (0: not "
                                                               "noised; default FacEnhanceConfig's)")


def _train_video(args, config, common):
    from render.neural.facenhance_data import load_clips
    from render.neural.facenhance_model import FacEnhanceConfig
    from render.neural.facenhance_training import train_facenhance

    model = FacEnhanceConfig(expression_encoder=not args.no_expression_encoder,
                             previous_frame=not args.no_previous_frame,
                             residual=not args.no_residual,
                             **given(args, "channels", "prediction", "stride", "previous_noise"))
    return train_facenhance(load_clips(args.data, "train"), args.out, config, model, **common)
