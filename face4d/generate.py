"""Generating landmark sequences with the trained models: unconditional, or label-controlled (Alg. 1).

Also expression filling (``fill``, Alg. 3) and geometry-adaptive generation from a neutral face
(``generate_from_neutral``, Alg. 4), whose sampling lives in ``face4d.filling``.

``LandmarkGenerator`` composes the pieces the way a diffusers pipeline does: the noise model, a
sampler (the schedule's own, from ``face4d.diffusion``) and, for label control, a guidance hook
(``face4d.guidance``) around the noise-aware classifier. Two samplers:

* ``paper``: ancestral sampling over all T = 2000 steps, as in the paper;
* ``fast``: the same DDPM on a respaced schedule of ``steps`` strided steps (default 50).

Every conditioning in the package works with both, since they only differ by schedule.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from face4d.checkpoint import BUNDLE_FILE, BUNDLE_MEMBERS, BundleConfig, default_bundle, load_pretrained, read_bundle
from face4d.data.interchange import DEFAULT_FPS, NUM_LANDMARKS, SEQUENCE_TYPES, LandmarkSequences
from face4d.data.labels import get_label, label_index
from face4d.data.normalize import LandmarkNormalizer
from face4d.diffusion import GaussianDiffusion
from face4d.errors import Face4DError
from face4d.filling import check_known, sample_with_known_frames
from face4d.guidance import GradientGuidance, label_objective, text_objective
from face4d.label_gains import LabelGains, read_gains
from face4d.landmarks import check_neutral, check_units
from face4d.models.classifier import Classifier, type_index
from face4d.models.denoiser import Denoiser
from face4d.models.text_guide import TextGuide, embed_texts
from face4d.settings import LABEL_CONTROLS, SAMPLERS, SamplingConfig  # noqa: F401 (their home is face4d.settings)

INTENSITY_RANGE = (0.0, 1.5)
"""``intensity`` bounds: 0 holds the neutral face, 1.5 goes half again as far as the model does."""


class LandmarkGenerator:
    """The unconditional DDPM plus the classifiers that steer it."""

    def __init__(self, denoiser: Denoiser, diffusion: GaussianDiffusion, normalizer: LandmarkNormalizer,
                 classifiers: dict[str, Classifier] | None = None, fps: float = DEFAULT_FPS,
                 text_guide: TextGuide | None = None, label_gains: LabelGains | None = None):
        self.denoiser = denoiser.eval()
        self.diffusion = diffusion
        self.normalizer = normalizer
        self.classifiers = {kind: c.eval() for kind, c in (classifiers or {}).items()}
        self.text_guide = None if text_guide is None else text_guide.eval()
        self.fps = fps
        self.label_gains = label_gains

    @classmethod
    def from_pretrained(cls, bundle: str | os.PathLike | None = None,
                        device: str | torch.device = "cpu") -> "LandmarkGenerator":
        """Load a bundle (``denoiser/``, ``classifier_I/``, ``classifier_S/``, ``text_guide/``); the
        embedded default if None. A missing guidance directory only disables that kind of control.
        The diffusion (schedule and prediction) and the landmark normaliser come from the bundle's
        ``bundle.json`` (``face4d.checkpoint.BundleConfig``), or from the denoiser's config.json in a
        bundle without one; every member must agree with them."""
        if bundle is None:
            bundle = default_bundle()
            if not (bundle / "denoiser").is_dir():
                raise Face4DError("this installation has no embedded default model; train one ('face4d train "
                                  "denoiser', 'face4d train classifier') and pass its bundle directory (--model)")
        stored = read_bundle(bundle)
        path = os.path.join(bundle, "denoiser")
        denoiser, config, normalizer = load_pretrained(path, "denoiser", device)
        shared = stored or BundleConfig.of_denoiser(config, normalizer, path)
        shared.check_member(config, normalizer, path)
        classifiers, text_guide = {}, None
        for name, kind in BUNDLE_MEMBERS.items():
            path = os.path.join(bundle, name)
            if kind == "denoiser" or not os.path.isdir(path):
                continue
            model, m_config, m_normalizer = load_pretrained(path, kind, device)
            shared.check_member(m_config, m_normalizer, path, BUNDLE_FILE if stored else "the denoiser")
            if kind == "classifier":
                classifiers[model.config.kind] = model
            else:
                text_guide = model
        diffusion = shared.diffusion.build(x0_range=_x0_range(config))
        normalizer = shared.normalizer
        return cls(denoiser, diffusion, normalizer, classifiers, text_guide=text_guide, label_gains=read_gains(bundle))

    @property
    def max_frames(self) -> int:
        """Longest sequence the denoiser accepts (its positional encoding's documented range)."""
        return self.denoiser.config.max_frames

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def generate(self, label: str | Sequence[str] | None = None, frames: int = 40, num: int = 1, seed: int = 0,
                 sequence_type: str | Sequence[str] | None = None, sampling: SamplingConfig | None = None,
                 progress: bool = False, text: str | Sequence[str] | None = None,
                 intensity: float = 1.0) -> LandmarkSequences:
        """``num`` sequences of ``frames`` frames, in centimetres; label-guided when ``label`` is given,
        text-guided (Alg. 2) when ``text`` is given (one of the two). ``intensity`` scales every
        frame's displacement from the neutral one (``scale_intensity``), times the bundle's gain for
        the label (``face4d.label_gains``) when it has one.

        ``label`` (and ``sequence_type``) may also be a list with one entry per sequence, which is
        how evaluation asks for one sample per test sequence in a single batch; ``num`` is then the
        list's length. ``sequence_type`` (``N2E``/``E2N``) asks the order-sensitive (type S)
        classifier for that order too; without it the type I classifier guides the label alone.
        The same seed and settings give the same sequences.
        """
        sampling = sampling or SamplingConfig()
        check_intensity(intensity)
        if num < 1:
            raise Face4DError(f"num must be >= 1, got {num}")
        if text is not None and label is not None:
            raise Face4DError("give a label or a text, not both")
        texts_in = _per_sample(text, num, "text")
        num = len(texts_in)
        labels = _per_sample(label, num, "label")
        num = len(labels)
        types = _per_sample(sequence_type, num, "sequence_type")
        if text is not None and sequence_type is not None:
            raise Face4DError("a sequence type is enforced with a label; for text control, say it in the text "
                              "(e.g. 'from a neutral face to a smile')")
        if None in labels and any(labels):
            raise Face4DError("either every sequence of a batch has a label or none has")
        labels = [None if name is None else get_label(name).name for name in labels]
        if not 1 <= frames <= self.max_frames:
            raise Face4DError(f"frames must be between 1 and {self.max_frames}, got {frames}")
        for name in types:
            if name is not None and name not in SEQUENCE_TYPES:
                raise Face4DError(f"unknown sequence type {name!r}; use N2E or E2N")
        if any(types) and labels[0] is None:
            raise Face4DError("a sequence type is only enforced together with a label")
        if any(types) and None in types:
            raise Face4DError("either every sequence of a batch has a sequence type or none has")
        diffusion = self.sampling_diffusion(sampling)
        hook = None
        if labels[0] is not None:
            hook = self.label_guidance(diffusion, labels, types, sampling)
        elif text is not None:
            hook = GradientGuidance(diffusion, self.text_objective(texts_in), sampling.text_guidance)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        x = diffusion.sample_loop(self.noise_model(labels, types, sampling), (num, frames, NUM_LANDMARKS, 3),
                                  generator=generator, progress=progress, step_hook=hook, device=self.device)
        landmarks = self.normalizer.denormalize(x.detach().cpu()).numpy()
        texts = texts_in if text is not None else [get_label(name).text if name else "" for name in labels]
        enriched = [get_label(name).enriched_text(kind) if name and kind else "" for name, kind in zip(labels, types)]
        seqs = LandmarkSequences(landmarks=landmarks, lengths=np.full(num, frames),
                                 labels=[name or "" for name in labels], types=[kind or "" for kind in types],
                                 fps=self.fps, texts=texts, texts_enriched=enriched)
        factors = intensity * self.gains(labels, sampling)
        if np.all(factors == 1.0):
            return seqs
        neutral_types = list(types) if all(types) else self.infer_types(seqs)
        return scale_intensity(seqs, factors, neutral_types)

    def gains(self, labels: Sequence[str | None], sampling: SamplingConfig) -> np.ndarray:
        """Each sequence's amplitude gain (``face4d.label_gains``): the bundle's gain for its label (from
        its table for the fast sampler's step count when it has one), or 1 without a label, without
        gains, with ``sampling.calibrate`` off, or under another label control than the gains were
        measured with."""
        gains = self.label_gains
        if (gains is None or not sampling.calibrate or labels[0] is None
                or self.label_control(sampling) != gains.label_control):
            return np.ones(len(labels))
        steps = sampling.steps if sampling.sampler == "fast" else None
        return np.array([gains.gain(name, steps) for name in labels])

    def infer_types(self, seqs: LandmarkSequences) -> list[str]:
        """Each sequence's order (``N2E``/``E2N``) as the type S classifier reads it on the clean
        sequence: the marginal over labels of its joint label x order classes. Where generation did
        not fix the order (a label without ``sequence_type``, a text), this says which end is the
        neutral face."""
        if "S" not in self.classifiers:
            raise Face4DError("this model bundle has no type S classifier, needed to find the neutral end of "
                              "sequences generated without a sequence type; give one (N2E or E2N)")
        lengths = torch.as_tensor(seqs.lengths)
        mask = (torch.arange(seqs.num_frames)[None] < lengths[:, None]).to(self.device)
        x = self.normalizer.normalize(torch.as_tensor(seqs.landmarks, device=self.device))
        x = torch.where(mask[..., None, None], x, torch.zeros_like(x))
        with torch.no_grad():
            logits = self.classifiers["S"](x, torch.zeros(len(seqs), dtype=torch.long, device=self.device), mask=mask)
        joint = torch.log_softmax(logits, dim=-1).view(len(seqs), -1, len(SEQUENCE_TYPES))
        return [SEQUENCE_TYPES[i] for i in torch.logsumexp(joint, dim=1).argmax(dim=1).tolist()]

    def text_objective(self, texts: list[str]):
        """The text guide's objective towards ``texts`` (one per sample), for a ``GradientGuidance``."""
        if self.text_guide is None:
            raise Face4DError("this model bundle has no text guide (text_guide/), needed for text control; "
                              "train one with 'face4d train text-guide'")
        return text_objective(self.text_guide, embed_texts(self.text_guide, texts).to(self.device))

    @property
    def conditional(self) -> bool:
        """Whether the denoiser reads labels itself (classifier-free guidance, ``Denoiser``)."""
        return bool(self.denoiser.config.num_labels)

    def label_control(self, sampling: SamplingConfig) -> str:
        """``sampling.label_control`` with ``auto`` resolved, checked against this bundle."""
        control = sampling.label_control
        if control == "auto":
            return "conditional" if self.conditional else "classifier"
        if control != "classifier" and not self.conditional:
            raise Face4DError(f"label control {control!r} needs a conditional denoiser ('face4d train denoiser "
                              "--conditional'); this bundle's is unconditional")
        return control

    def noise_model(self, labels: list[str | None], types: list[str | None], sampling: SamplingConfig):
        """The denoiser, asked for ``labels`` (and ``types``) when it steers them itself."""
        if labels[0] is None or self.label_control(sampling) == "classifier":
            return self.denoiser
        label_ids = torch.tensor([label_index(name) for name in labels], dtype=torch.long, device=self.device)
        type_ids = None if types[0] is None else torch.tensor([type_index(name) for name in types], device=self.device)
        return self.denoiser.conditioned(label_ids, type_ids, sampling.condition_scale)

    def label_guidance(self, diffusion: GaussianDiffusion, labels: list[str], types: list[str | None],
                       sampling: SamplingConfig, mask: torch.Tensor | None = None) -> GradientGuidance | None:
        """Classifier guidance towards ``labels`` (Alg. 1); None when the denoiser steers them alone."""
        if self.label_control(sampling) == "conditional":
            return None
        return GradientGuidance(diffusion, self.label_objective(labels, types), sampling.guidance, mask=mask)

    def label_objective(self, labels: list[str], types: list[str | None]):
        """The guiding classifier's objective towards ``labels`` (type S with ``types``, else type I)."""
        kind = "S" if types[0] is not None else "I"
        if kind not in self.classifiers:
            raise Face4DError(f"this model bundle has no type {kind} classifier, needed for "
                              f"{'label + sequence type' if kind == 'S' else 'label'} control")
        label_ids = torch.tensor([label_index(name) for name in labels], dtype=torch.long, device=self.device)
        type_ids = None if kind == "I" else torch.tensor([type_index(name) for name in types], device=self.device)
        return label_objective(self.classifiers[kind], label_ids, type_ids)

    # ------------------------------------------------------------- filling (Alg. 3) and Alg. 4

    def fill(self, seqs: LandmarkSequences | np.ndarray, known: np.ndarray, num: int = 1, seed: int = 0,
             label: str | None = None, sampling: SamplingConfig | None = None, progress: bool = False,
             passes: int = 1) -> LandmarkSequences:
        """Expression filling (Alg. 3): complete the unknown frames of partial sequences.

        ``seqs``: a batch of B sequences, or an array (F, 68, 3) / (B, F, 68, 3), in centimetres;
        only the known frames are read. ``known``: (F,) or (B, F) bool, True on known frames (see
        ``face4d.filling.parse_known``); every sequence needs one known and one unknown frame.
        Returns ``num`` fillings of each sequence (B * num, sequence-major), in centimetres, whose
        known frames equal the input. ``label`` guides the filled frames towards a label (type I
        classifier, Alg. 1) and is then recorded as the output's label; otherwise labels are empty:
        what the filled frames show is the model's guess. ``passes`` > 1 adds the harmonising
        passes of Alg. 4 (the paper fills in one pass).
        """
        sampling = sampling or SamplingConfig()
        if isinstance(seqs, LandmarkSequences):
            landmarks, lengths, fps = seqs.landmarks, seqs.lengths, seqs.fps
        else:
            landmarks = np.asarray(seqs, dtype=np.float32)
            if landmarks.ndim == 3:
                landmarks = landmarks[None]
            if landmarks.ndim != 4 or landmarks.shape[2:] != (NUM_LANDMARKS, 3):
                raise Face4DError(f"sequences to fill must have shape (F, {NUM_LANDMARKS}, 3) or "
                                  f"(B, F, {NUM_LANDMARKS}, 3), got {landmarks.shape}")
            if not np.isfinite(landmarks).all():
                raise Face4DError("sequences to fill contain NaN or infinity")
            lengths, fps = np.full(len(landmarks), landmarks.shape[1]), self.fps
        b, f = landmarks.shape[:2]
        if num < 1:
            raise Face4DError(f"num must be >= 1, got {num}")
        if passes < 1:
            raise Face4DError(f"passes must be >= 1, got {passes}")
        if not 2 <= f <= self.max_frames:
            raise Face4DError(f"sequences to fill must have between 2 and {self.max_frames} frames, got {f}")
        known = check_known(known, f, lengths, batch=b)
        valid = np.arange(f)[None] < np.asarray(lengths)[:, None]
        check_units(landmarks[valid], self.normalizer.mean, "the landmarks to fill", "the model's mean face")
        label = get_label(label).name if label is not None else None
        diffusion = self.sampling_diffusion(sampling)

        n = b * num
        landmarks, lengths = np.repeat(landmarks, num, axis=0), np.repeat(lengths, num)
        known, valid = np.repeat(known, num, axis=0), np.repeat(valid, num, axis=0)
        valid_t = torch.as_tensor(valid, device=self.device)
        x0 = self.normalizer.normalize(torch.as_tensor(landmarks, device=self.device))
        x0 = torch.where(valid_t[..., None, None], x0, torch.zeros_like(x0))
        mask = None if valid.all() else valid_t
        hook = None
        if label is not None:
            hook = self.label_guidance(diffusion, [label] * n, [None] * n, sampling, mask=mask)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        x = sample_with_known_frames(diffusion, self.noise_model([label] * n, [None] * n, sampling), x0, known,
                                     passes=passes, guidance=hook, mask=mask, generator=generator, progress=progress,
                                     device=self.device, reconstruction=sampling.reconstruction,
                                     anchor=sampling.anchor)
        out = self.normalizer.denormalize(x.detach().cpu()).numpy()
        out[~valid] = 0.0
        text = get_label(label).text if label else ""
        return LandmarkSequences(landmarks=out, lengths=lengths, labels=[label or ""] * n, types=[""] * n, fps=fps,
                                 texts=[text] * n, texts_enriched=[""] * n)

    def generate_from_neutral(self, neutral: np.ndarray, frames: int = 40, sequence_type: str = "N2E",
                              label: str | None = None, num: int = 1, seed: int = 0, passes: int = 5,
                              sampling: SamplingConfig | None = None, progress: bool = False,
                              text: str | Sequence[str] | None = None, intensity: float = 1.0) -> LandmarkSequences:
        """Geometry-adaptive generation (Alg. 4): sequences of a given person, from their neutral face.

        ``neutral``: the person's neutral landmarks (68, 3) in centimetres (see
        ``face4d.landmarks.neutral_landmarks_from_mesh`` / ``neutral_landmarks_from_file``). It is
        enforced as frame 0 for ``N2E`` and as the last frame for ``E2N``, and the other frames are
        filled, harmonised over ``passes`` runs (paper: 5). With ``label`` every pass is guided by
        the type S classifier towards that label *in that order*; with ``text`` (a string, or one per
        sequence) by the text guide towards that text (Alg. 2; say the order in the text, e.g. "from a
        neutral face to a smile"); without either, the expression is the model's free choice.
        Output in centimetres, typed ``sequence_type``; ``intensity`` scales every frame's
        displacement from the neutral face (``scale_intensity``), times the label's gain as in ``generate``.
        """
        sampling = sampling or SamplingConfig()
        check_intensity(intensity)
        neutral = check_neutral(neutral, "neutral")
        if sequence_type not in SEQUENCE_TYPES:
            raise Face4DError(f"unknown sequence type {sequence_type!r}; use N2E or E2N")
        if not 2 <= frames <= self.max_frames:
            raise Face4DError(f"frames must be between 2 and {self.max_frames} (one is the neutral), got {frames}")
        if num < 1:
            raise Face4DError(f"num must be >= 1, got {num}")
        if passes < 1:
            raise Face4DError(f"passes must be >= 1, got {passes}")
        check_units(neutral, self.normalizer.mean, "the neutral landmarks", "the model's mean face")
        if text is not None and label is not None:
            raise Face4DError("give a label or a text, not both")
        texts = None if text is None else _per_sample(text, num, "text")
        num = num if texts is None else len(texts)
        label = get_label(label).name if label is not None else None
        seqs = self.from_neutrals(np.broadcast_to(neutral, (num, NUM_LANDMARKS, 3)), frames, [sequence_type] * num,
                                   [label] * num, seed, passes, sampling, progress, texts)
        return seqs if intensity == 1.0 else scale_intensity(seqs, intensity, list(seqs.types))

    def from_neutrals(self, neutrals: np.ndarray, frames: int, types: list[str], labels: list[str | None],
                       seed: int, passes: int, sampling: SamplingConfig, progress: bool = False,
                       texts: list[str] | None = None) -> LandmarkSequences:
        """Alg. 4 for a batch: sequence ``i`` keeps ``neutrals[i]`` (68, 3), in centimetres, as its
        frame 0 (``types[i]`` N2E) or last frame (E2N), guided towards ``labels[i]`` in that order
        by the type S classifier, or with ``texts`` towards ``texts[i]`` by the text guide (every
        label None and no texts: unguided). Arguments are checked by the caller
        (``generate_from_neutral``; the evaluation of Table 4 batches one neutral per test sequence)."""
        num = len(neutrals)
        diffusion = self.sampling_diffusion(sampling)
        index = np.array([0 if kind == "N2E" else frames - 1 for kind in types])
        known = np.zeros((num, frames), dtype=bool)
        known[np.arange(num), index] = True
        x0 = torch.zeros((num, frames, NUM_LANDMARKS, 3), device=self.device)
        x0[np.arange(num), index] = self.normalizer.normalize(torch.as_tensor(np.array(neutrals, np.float32),
                                                                              device=self.device))
        hook = None
        if labels[0] is not None:
            hook = self.label_guidance(diffusion, list(labels), list(types), sampling)
        elif texts is not None:
            hook = GradientGuidance(diffusion, self.text_objective(list(texts)), sampling.text_guidance)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        x = sample_with_known_frames(diffusion, self.noise_model(list(labels), list(types), sampling), x0, known,
                                     passes=passes, guidance=hook, generator=generator, progress=progress,
                                     device=self.device, reconstruction=sampling.reconstruction,
                                     anchor=sampling.anchor)
        landmarks = self.normalizer.denormalize(x.detach().cpu()).numpy()
        seqs = LandmarkSequences(landmarks=landmarks, lengths=np.full(num, frames),
                                 labels=[name or "" for name in labels], types=list(types), fps=self.fps,
                                 texts=list(texts) if texts is not None else
                                 [get_label(name).text if name else "" for name in labels],
                                 texts_enriched=[get_label(name).enriched_text(kind) if name else ""
                                                 for name, kind in zip(labels, types)])
        factors = self.gains(list(labels), sampling)
        return seqs if np.all(factors == 1.0) else scale_intensity(seqs, factors, list(types))

    def sampling_diffusion(self, sampling: SamplingConfig) -> GaussianDiffusion:
        """The diffusion ``sampling`` runs: the trained one (``paper``) or its ``steps``-step respacing."""
        if sampling.sampler == "fast" and sampling.steps > self.diffusion.num_timesteps:
            raise Face4DError(f"sampler steps must be at most T={self.diffusion.num_timesteps}, got {sampling.steps}")
        diffusion = self.diffusion.with_sampler(sampling.variance, sampling.eta)
        return diffusion if sampling.sampler == "paper" else diffusion.respaced(sampling.steps)


def check_intensity(intensity: float) -> float:
    """``intensity`` as a float, or a ``Face4DError`` if it is not a number in ``INTENSITY_RANGE``."""
    low, high = INTENSITY_RANGE
    try:
        value = float(intensity)
    except (TypeError, ValueError):
        raise Face4DError(f"intensity must be a number in [{low:g}, {high:g}], got {intensity!r}") from None
    if not low <= value <= high:
        raise Face4DError(f"intensity must be in [{low:g}, {high:g}], got {intensity!r}")
    return value


def scale_intensity(seqs: LandmarkSequences, intensity: float | Sequence[float],
                    types: Sequence[str]) -> LandmarkSequences:
    """``seqs`` with every frame moved to ``neutral + intensity * (frame - neutral)``, the neutral
    frame being the first of an ``N2E`` sequence and the last valid one of an ``E2N`` (``types``, one
    per sequence). The neutral face stays exactly where it was and the apex goes ``intensity`` times
    as far; timing is untouched, and jitter scales with the motion, so it is not added to.
    ``intensity``: a user's intensity (checked against ``INTENSITY_RANGE``) or one factor per
    sequence (a user's intensity times a label's gain, ``face4d.label_gains``)."""
    if np.ndim(intensity) == 0:
        intensity = np.full(len(seqs), check_intensity(intensity))
    intensity = np.asarray(intensity, np.float64)
    if intensity.shape != (len(seqs),) or not np.all(np.isfinite(intensity)) or np.any(intensity < 0):
        raise Face4DError(f"intensity factors must be {len(seqs)} non-negative numbers, got {intensity}")
    if len(types) != len(seqs) or any(kind not in SEQUENCE_TYPES for kind in types):
        raise Face4DError(f"scaling the intensity needs an N2E or E2N type per sequence, got {list(types)}")
    index = np.where(np.asarray(types) == "N2E", 0, seqs.lengths - 1)
    neutral = seqs.landmarks[np.arange(len(seqs)), index][:, None].astype(np.float64)
    landmarks = neutral + intensity[:, None, None, None] * (seqs.landmarks - neutral)
    valid = np.arange(seqs.num_frames)[None] < seqs.lengths[:, None]
    landmarks[~valid] = 0.0
    return replace(seqs, landmarks=landmarks.astype(np.float32))


X0_RANGE_MARGIN = 0.1
"""How far beyond the training data's range (as a fraction of it, per coordinate) a predicted clean
sequence may go before the sampler clamps it: room for faces and expressions a little beyond those
seen, while still stopping the early-step blow-up that ``GaussianDiffusion.x0_range`` explains."""


def _x0_range(config: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """The clamp bounds of a denoiser's config.json (its training data's range, widened), if recorded."""
    if "x0_range" not in config:
        return None
    low, high = (np.asarray(config["x0_range"][key], np.float32) for key in ("low", "high"))
    margin = X0_RANGE_MARGIN * (high - low)
    return low - margin, high + margin


def _per_sample(value: str | Sequence[str] | None, num: int, name: str) -> list[str | None]:
    """``value`` repeated ``num`` times, or a list's own entries (then ``num`` must be 1 or its length)."""
    if value is None or isinstance(value, str):
        return [value] * num
    values = list(value)
    if not values or num not in (1, len(values)):
        raise Face4DError(f"{name} lists need one entry per sequence: got {len(values)} for num={num}")
    return values
