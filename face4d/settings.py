"""The settings of sampling and the choices the command line offers, as plain values and dataclasses.

``SamplingConfig`` (with its ``GuidanceConfig``s and reconstruction weight), the samplers, reverse
variances, network predictions and denoiser skip paths. They live here, below the modules that use
them (``face4d.diffusion``, ``face4d.guidance``, ``face4d.filling``, ``face4d.generate``,
``face4d.models.denoiser``, which import them from here), because this module imports no torch:
``face4d --help`` builds every option and default from it without loading the models' libraries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from face4d.errors import Face4DError

PREDICTIONS = ("epsilon", "sample", "v")
VARIANCES = ("beta", "posterior")
"""What a network predicts (diffusers' ``prediction_type``): the noise ``eps`` (the paper, Eq. 8),
the clean sample ``x_0`` (as MDM) or ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0`` (Salimans & Ho)."""

SAMPLERS = ("fast", "paper")

SKIPS = ("frame", "mean", "none")
"""The denoiser's skip paths from ``x_t`` to its output (``Denoiser``)."""

RECONSTRUCTION_WEIGHT = 0.0
"""Default weight ``w`` of the gradient term of reconstruction guidance (``KnownFrameReconstruction``),
on the error averaged over the known frames; 0 leaves the anchor term alone, which carries the known
frames better on the shipped model, at a third of the cost (no gradient through the network). How
the terms compare: docs/tuning.md."""


def check_reconstruction_weight(weight: float) -> float:
    """``weight`` as a float, or a ``Face4DError`` unless it is >= 0 (0: no reconstruction guidance)."""
    if not weight >= 0:
        raise Face4DError(f"the reconstruction guidance weight must be >= 0, got {weight}")
    return float(weight)


TEXT_LAMBDA = 1e-4
"""``lam`` of text guidance (Alg. 2). Adagrad is blind to the objective's overall scale, so only the
ratio of the fluency term to the condition term matters, and a cosine similarity in [-1, 1] has a far
smaller gradient than a classifier's log-probability: at the label's lambda = 0.01 the fluency term
swamps it. The sweep that chose the value: docs/tuning.md."""


GUIDANCE_NORMS = ("sample", "coordinate")
"""What ``GuidanceConfig.norm`` may be: Adagrad's accumulator per sample (ours) or per coordinate (the paper's)."""


@dataclass
class GuidanceConfig:
    """Settings of the Adagrad refinement of ``GradientGuidance``.

    * ``lam``: the paper's lambda (Sec. 4: 0.01, after Diffusion-LM), the weight of the fluency term
      ``log p_theta(x | x_t)``; larger keeps samples closer to the unguided reverse step.
    * ``steps``: Adagrad steps per reverse step (Sec. 3.2: 3).
    * ``lr``: the Adagrad learning rate *in units of the reverse step's standard deviation*
      ``sigma_t``. The paper does not give one. Adagrad divides the gradient by its own accumulated
      norm, so its first step has the size of the learning rate whatever the gradient's scale: the
      learning rate is a distance in data units, and a fixed one would be far too large at the end
      of sampling (``sigma_1 = 0.01``) or too small for a coarse respaced schedule. Scaling it by
      ``sigma_t`` keeps each refinement step a fraction of the noise the reverse step itself draws,
      so a refined sample stays typical of ``p_theta(. | x_t)`` while hundreds of consistent nudges
      add up to a strong drift toward the condition; it is also independent of the number of
      landmarks and frames, which a raw gradient is not. Lower ``lr`` trades control for diversity.
    * ``norm``: what the Adagrad accumulator normalises. ``sample`` (default): one accumulator per
      sample, so a step moves the sample by an RMS of ``lr * sigma_t`` over its coordinates and
      keeps the gradient's shape: the landmarks the condition is about move most. ``coordinate``:
      one per coordinate, as in torch.optim.Adagrad and the paper (after Diffusion-LM), so every
      coordinate moves by ``lr * sigma_t`` on the first step, wherever its gradient is near zero.
    The sweeps that chose ``sample`` and ``lr`` 0.4: docs/tuning.md.
    """

    lam: float = 0.01
    steps: int = 3
    lr: float = 0.4
    norm: str = "sample"

    def __post_init__(self) -> None:
        if not 0.0 <= self.lam < math.inf:
            raise Face4DError(f"the guidance lambda must be a finite number >= 0, got {self.lam}")
        if self.steps < 0:
            raise Face4DError(f"the guidance steps must be >= 0, got {self.steps}")
        if not 0.0 < self.lr < math.inf:
            raise Face4DError(f"the guidance learning rate (--guidance-lr) must be a finite number > 0, got {self.lr}")
        if self.norm not in GUIDANCE_NORMS:
            raise Face4DError(f"the guidance norm must be one of {', '.join(GUIDANCE_NORMS)}, got {self.norm!r}")


TEXT_GUIDANCE = GuidanceConfig(lam=TEXT_LAMBDA, lr=0.1, norm="coordinate")
"""Text guidance's settings: the paper's per-coordinate Adagrad, at lr 0.1. Per sample it trembles
more per cm of motion than label guidance does, and at 0.1 it already reaches the text's expression
(the sweeps: docs/tuning.md)."""


LABEL_CONTROLS = ("auto", "conditional", "classifier", "both")
"""How a label steers sampling: ``conditional``, the denoiser's own label input (classifier-free
guidance, ``SamplingConfig.condition_scale``); ``classifier``, the paper's classifier guidance (Alg.
1) of the denoiser's unconditional path; ``both``; ``auto``, ``conditional`` when the denoiser is
conditional, else ``classifier``."""


@dataclass
class SamplingConfig:
    """How to sample: ``sampler`` (``fast`` or ``paper``), ``steps`` of the fast sampler, the
    settings of label guidance and of text guidance (whose lambda is ``TEXT_LAMBDA``), and the
    weight of reconstruction guidance towards known frames in filling and geometry-adaptive
    generation (``face4d.filling.RECONSTRUCTION_WEIGHT``; 0: the paper's Alg. 3 and 4 as written).
    ``variance`` and ``eta`` choose the reverse step (``face4d.diffusion.GaussianDiffusion``): the
    DDPM's variance, ``posterior`` (default) or ``beta`` (the paper), or DDIM with ``eta`` when it is
    not None; both samplers use them. Why posterior: on a strided schedule ``beta`` adds, at the
    last steps, noise several times larger than the next step's noise level, which the network
    cannot take out in one step and which stays in the motion as a tremble (the ablation in
    docs/results.md). ``anchor`` adds reconstruction guidance's offset term
    (``face4d.filling.KnownFrameReconstruction``). ``condition_scale`` is the classifier-free
    guidance scale of a conditional denoiser (``Denoiser.conditioned``; 1: the conditional model
    itself); an unconditional one ignores it. ``label_control`` says how labels steer
    (``LABEL_CONTROLS``). ``calibrate`` applies the bundle's per-label amplitude gains
    (``face4d.label_gains``) to label-guided sequences."""

    sampler: str = "fast"
    steps: int = 50
    variance: str = "posterior"
    eta: float | None = None
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    text_guidance: GuidanceConfig = field(default_factory=lambda: replace(TEXT_GUIDANCE))
    reconstruction: float = RECONSTRUCTION_WEIGHT
    condition_scale: float = 1.0
    anchor: bool = True
    label_control: str = "auto"
    calibrate: bool = True

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise Face4DError(f"unknown sampler {self.sampler!r}; use one of {', '.join(SAMPLERS)}")
        if self.steps < 1:
            raise Face4DError(f"sampler steps must be >= 1, got {self.steps}")
        if self.variance not in VARIANCES:
            raise Face4DError(f"unknown reverse variance {self.variance!r}; use one of {', '.join(VARIANCES)}")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise Face4DError(f"DDIM eta must be in [0, 1], got {self.eta}")
        check_reconstruction_weight(self.reconstruction)
        if self.label_control not in LABEL_CONTROLS:
            raise Face4DError(f"unknown label control {self.label_control!r}; use one of {', '.join(LABEL_CONTROLS)}")
        if not 0.0 <= self.condition_scale <= 10.0:
            raise Face4DError(f"the condition scale must be in [0, 10], got {self.condition_scale}")
