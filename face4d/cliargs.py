"""Command-line pieces shared by every ``face4d`` sub-command module: the training options of
``face4d.training.TrainConfig`` (and its subclasses) and reading back the options that were given.

An option left out keeps its dataclass default (``given``), so defaults live in one place and the
command-line modules need no torch.
"""
from __future__ import annotations

import argparse


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
