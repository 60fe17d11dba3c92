"""The model kinds a model directory can hold, and where the embedded default models live.

A *bundle* is a directory of model directories (``face4d.checkpoint``): ``denoiser/`` and the
noise-aware classifiers ``classifier_I/`` and ``classifier_S/``; a text guide (kind ``text_guide``)
serves text control. The default bundle ships inside the package (``face4d/weights/default``), so
generation works offline right after install.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from face4d.checkpoint import load_model
from face4d.data.normalize import LandmarkNormalizer
from face4d.errors import Face4DError
from face4d.models.classifier import Classifier, ClassifierConfig
from face4d.models.denoiser import Denoiser, DenoiserConfig
from face4d.models.ic import ICConfig, IndependentClassifier
from face4d.models.text_guide import TextGuide, TextGuideConfig

MODEL_KINDS = {
    "denoiser": (DenoiserConfig, Denoiser),
    "classifier": (ClassifierConfig, Classifier),
    "ic": (ICConfig, IndependentClassifier),
    "text_guide": (TextGuideConfig, TextGuide),
}


def default_bundle() -> Path:
    """The bundle shipped with the package."""
    return Path(str(resources.files("face4d") / "weights" / "default"))


def load_pretrained(directory: str | os.PathLike, kind: str,
                    device: str | torch.device = "cpu") -> tuple[nn.Module, dict, LandmarkNormalizer | None]:
    """Load a model directory that must hold a model of ``kind``; returns (model in eval mode, config.json, normaliser)."""
    model, config, normalizer = load_model(directory, MODEL_KINDS, device)
    if config["kind"] != kind:
        raise Face4DError(f"{directory}: holds a {config['kind']!r} model, expected a {kind!r} model")
    return model, config, normalizer
