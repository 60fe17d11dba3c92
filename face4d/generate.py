"""Generating landmark sequences with the trained models: unconditional, or label-controlled (Alg. 1).

``LandmarkGenerator`` composes the pieces the way a diffusers pipeline does: the noise model, a
sampler (the schedule's own, from ``face4d.diffusion``) and, for label control, a guidance hook
(``face4d.guidance``) around the noise-aware classifier. Two samplers:

* ``paper``: ancestral sampling over all T = 2000 steps, as in the paper;
* ``fast``: the same DDPM on a respaced schedule of ``steps`` strided steps (default 50).

Every conditioning in the package works with both, since they only differ by schedule.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from face4d.data.interchange import DEFAULT_FPS, NUM_LANDMARKS, SEQUENCE_TYPES, LandmarkSequences
from face4d.data.labels import get_label, label_index
from face4d.data.normalize import LandmarkNormalizer
from face4d.diffusion import GaussianDiffusion, linear_beta_schedule
from face4d.errors import Face4DError
from face4d.guidance import GradientGuidance, GuidanceConfig, label_objective
from face4d.models.classifier import Classifier, type_index
from face4d.models.denoiser import Denoiser
from face4d.pretrained import default_bundle, load_pretrained

SAMPLERS = ("fast", "paper")


@dataclass
class SamplingConfig:
    """How to sample: ``sampler`` (``fast`` or ``paper``), ``steps`` of the fast sampler, and the
    label guidance's settings."""

    sampler: str = "fast"
    steps: int = 50
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise Face4DError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise Face4DError(f"sampler steps must be >= 1, got {self.steps}")


class LandmarkGenerator:
    """The unconditional DDPM plus the classifiers that steer it."""

    def __init__(self, denoiser: Denoiser, diffusion: GaussianDiffusion, normalizer: LandmarkNormalizer,
                 classifiers: dict[str, Classifier] | None = None, fps: float = DEFAULT_FPS):
        self.denoiser = denoiser.eval()
        self.diffusion = diffusion
        self.normalizer = normalizer
        self.classifiers = {kind: c.eval() for kind, c in (classifiers or {}).items()}
        self.fps = fps

    @classmethod
    def from_pretrained(cls, bundle: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu") -> "LandmarkGenerator":
        """Load a bundle (``denoiser/``, ``classifier_I/``, ``classifier_S/``); the embedded default if None.
        Classifier directories that are missing only disable label control of that type."""
        if bundle is None:
            bundle = default_bundle()
            if not (bundle / "denoiser").is_dir():
                raise Face4DError("this installation has no embedded default model; train one ('face4d train "
                                  "denoiser', 'face4d train classifier') and pass its bundle directory (--model)")
        denoiser, config, normalizer = load_pretrained(os.path.join(bundle, "denoiser"), "denoiser", device)
        if normalizer is None:
            raise Face4DError(f"{bundle}/denoiser: config.json has no landmark normaliser")
        diffusion = GaussianDiffusion(linear_beta_schedule(config["diffusion"]["num_timesteps"]))
        classifiers = {}
        for kind in ("I", "S"):
            path = os.path.join(bundle, f"classifier_{kind}")
            if os.path.isdir(path):
                classifier, c_config, _ = load_pretrained(path, "classifier", device)
                if c_config["diffusion"]["num_timesteps"] != diffusion.num_timesteps:
                    raise Face4DError(f"{path}: trained for T={c_config['diffusion']['num_timesteps']}, "
                                      f"the denoiser for T={diffusion.num_timesteps}")
                classifiers[classifier.config.kind] = classifier
        return cls(denoiser, diffusion, normalizer, classifiers)

    @property
    def max_frames(self) -> int:
        """Longest sequence the denoiser accepts (its positional encoding's documented range)."""
        return self.denoiser.config.max_frames

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def generate(self, label: str | None = None, frames: int = 40, num: int = 1, seed: int = 0,
                 sequence_type: str | None = None, sampling: SamplingConfig | None = None,
                 progress: bool = False) -> LandmarkSequences:
        """``num`` sequences of ``frames`` frames, in centimetres; label-guided when ``label`` is given.

        ``sequence_type`` (``N2E``/``E2N``) asks the order-sensitive (type S) classifier for that
        order too; without it the type I classifier guides the label alone. The same seed and
        settings give the same sequences.
        """
        sampling = sampling or SamplingConfig()
        if label is not None:
            label = get_label(label).name
        if not 1 <= frames <= self.max_frames:
            raise Face4DError(f"frames must be between 1 and {self.max_frames}, got {frames}")
        if num < 1:
            raise Face4DError(f"num must be >= 1, got {num}")
        if sequence_type is not None and sequence_type not in SEQUENCE_TYPES:
            raise Face4DError(f"unknown sequence type {sequence_type!r}; use N2E or E2N")
        if sequence_type is not None and label is None:
            raise Face4DError("a sequence type is only enforced together with a label")
        if sampling.sampler == "fast" and sampling.steps > self.diffusion.num_timesteps:
            raise Face4DError(f"sampler steps must be at most T={self.diffusion.num_timesteps}, got {sampling.steps}")
        diffusion = self.diffusion if sampling.sampler == "paper" else self.diffusion.respaced(sampling.steps)
        hook = None
        if label is not None:
            hook = GradientGuidance(diffusion, self._label_objective(label, sequence_type, num), sampling.guidance)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        x = diffusion.p_sample_loop(self.denoiser, (num, frames, NUM_LANDMARKS, 3), generator=generator,
                                    progress=progress, step_hook=hook, device=self.device)
        landmarks = self.normalizer.denormalize(x.detach().cpu()).numpy()
        text = get_label(label).text if label else ""
        enriched = get_label(label).enriched_text(sequence_type) if label and sequence_type else ""
        return LandmarkSequences(landmarks=landmarks, lengths=np.full(num, frames), labels=[label or ""] * num,
                                 types=[sequence_type or ""] * num, fps=self.fps, texts=[text] * num,
                                 texts_enriched=[enriched] * num)

    def _label_objective(self, label: str, sequence_type: str | None, num: int):
        kind = "S" if sequence_type is not None else "I"
        if kind not in self.classifiers:
            raise Face4DError(f"this model bundle has no type {kind} classifier, needed for "
                              f"{'label + sequence type' if kind == 'S' else 'label'} control")
        labels = torch.full((num,), label_index(label), dtype=torch.long, device=self.device)
        types = None if sequence_type is None else torch.full((num,), type_index(sequence_type), device=self.device)
        return label_objective(self.classifiers[kind], labels, types)
