"""``face4d train``: the landmark models (denoiser, guiding classifiers, text guide), the evaluation's
independent classifier and the mesh decoder; rerunning a command resumes it."""
from __future__ import annotations

import argparse
from pathlib import Path

from face4d.commands import neural_train
from face4d.commands.options import EXAMPLES, add_training_args, given, training_options
from face4d.errors import Face4DError


def add_parser(commands: argparse._SubParsersAction) -> None:
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
            _add_denoiser_options(cmd, group)
        if kind == "classifier":
            group.add_argument("--kind", dest="classifier_kind", choices=("I", "S"), default="I",
                               help="I: label only (order-insensitive); S: label x N2E/E2N (order-sensitive)")
        if kind == "text-guide":
            group.add_argument("--texts", choices=("raw", "enriched", "both"), default="both",
                               help="which of each sequence's texts to learn (both: one of the two per step)")
            group.add_argument("--text-encoder", help="minilm (default), a local sentence-transformers "
                                                      "directory, or clip:DIR")
    _add_decoder_parser(sub)
    neural_train.add_parsers(sub)
    train.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    if args.train_command in neural_train.HELPS:
        neural_train.run(args)
    elif args.train_command == "decoder":
        _train_decoder(args)
    else:
        _train_model(args)


def _train_model(args) -> None:
    from face4d.models.classifier import ClassifierConfig
    from face4d.models.denoiser import DenoiserConfig
    from face4d.models.ic import ICConfig
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

            from face4d.data.labels import LABEL_NAMES

            extra.update(given(args, "prediction", "velocity_weight", "snr_gamma", "snr_floor", "condition_dropout",
                                "init_from"))
            # The skip path suits the prediction (Denoiser's docstring): ours by default, the paper's for epsilon.
            skip = args.skip or ("frame" if extra.get("prediction", DENOISER_PREDICTION) == "epsilon" else "mean")
            config = DenoiserConfig(**arch, skip=skip, num_labels=len(LABEL_NAMES) if args.conditional else 0)
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


def _add_denoiser_options(cmd: argparse.ArgumentParser, group: argparse._ArgumentGroup) -> None:
    """The denoiser's skip path and its loss (``face4d.training``'s defaults)."""
    from face4d.settings import PREDICTIONS, SKIPS

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
    group.add_argument("--conditional", action="store_true",
                       help="also feed the label and order to the network (classifier-free guidance); "
                            "the paper: unconditional")
    group.add_argument("--init-from", metavar="DIR",
                       help="start from a trained denoiser's weights (same architecture and data)")
    loss.add_argument("--condition-dropout", type=float,
                      help="with --conditional, share of sequences trained without their condition "
                           "(default: face4d.training.DENOISER_CONDITION_DROPOUT)")


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _add_decoder_parser(train_commands: argparse._SubParsersAction) -> None:
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


def _train_decoder(args) -> None:
    from face4d.decoder.model import make_config
    from face4d.decoder.training import DecoderTrainConfig, train_decoder

    train_config = DecoderTrainConfig(**training_options(args, "frames_per_mesh", "landmark_weight", "labels"))
    names = ("hidden",) if args.variant == "mlp" else ("encoder_channels", "decoder_channels", "heads",
                                                       "spiral_length")
    other = [n for n in ("hidden", "encoder_channels", "decoder_channels", "heads", "spiral_length")
             if n not in names and getattr(args, n) is not None]
    if other:
        raise Face4DError(f"--{other[0].replace('_', '-')} does not apply to the {args.variant!r} variant")
    trainer = train_decoder(args.data, args.out, train_config, make_config(args.variant, **given(args, *names)),
                            progress=not args.quiet)
    resumed = f" (resumed from step {trainer.start_step})" if trainer.start_step else ""
    print(f"decoder ({args.variant}) at step {trainer.step}{resumed}; model saved in {args.out}")
