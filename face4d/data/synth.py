"""A labelled 4D expression generator built on the morphable head.

No 4D face dataset can be downloaded here, so face4d makes its own: each sequence is a person
(identity weights ~ N(0, I)) performing one labelled expression, neutral -> apex (N2E) or
apex -> neutral (E2N), as blendshape weights over time. Unlike captured data it has exact ground
truth: the stored weights rebuild every mesh. The variation a model needs to learn from is all
drawn from a seed: apex intensity, per-unit jitter, left/right asymmetry, onset, duration and
easing, per-unit lags, small activations of unrelated units and, optionally, rigid head motion.

Sequence ``i`` of a seed depends on nothing but ``(seed, i)`` and the config, so a dataset of 100
sequences is the first 100 of one of 2000.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from face4d.data.interchange import LandmarkSequences
from face4d.data.labels import LABEL_NAMES, get_label
from face4d.errors import Face4DError
from meshops.facs import ACTION_UNITS
from meshops.head import HeadModel
from meshops.pose import apply_head_pose

EASINGS = {
    "linear": lambda u: u,
    "smoothstep": lambda u: u * u * (3 - 2 * u),
    "ease_in_out_cubic": lambda u: np.where(u < 0.5, 4 * u**3, 1 - (-2 * u + 2) ** 3 / 2),
    "ease_out_sine": lambda u: np.sin(u * np.pi / 2),
    "ease_in_quad": lambda u: u * u,
}
# Units that would change the label's look if added as noise (eyes closing, the jaw dropping).
_NEVER_DISTRACT = ("eyeBlink_L", "eyeBlink_R", "jawOpen", "jawLeft", "jawRight", "mouthLeft", "mouthRight")
_ID_STREAM, _SEQ_STREAM, _SPLIT_STREAM = 0, 1, 2


@dataclass
class SynthConfig:
    """Everything that shapes the generated data besides the seed (saved in the dataset manifest)."""

    frames: int = 40
    variable_length: bool = False
    min_frames: int = 35
    max_frames: int = 45
    fps: float = 30.0
    labels: tuple[str, ...] = LABEL_NAMES
    num_identities: int = 200
    identity_std: float = 1.0
    intensity: tuple[float, float] = (0.5, 1.0)
    unit_jitter: float = 0.12  # relative std of each unit's apex weight
    asymmetry: float = 0.15  # largest relative left/right difference
    onset: tuple[float, float] = (0.0, 0.25)  # start of the motion, fraction of the sequence
    duration: tuple[float, float] = (0.35, 0.65)  # length of the motion, fraction of the sequence
    unit_lag: float = 0.06  # per-unit onset offsets, fraction of the sequence
    distractors: float = 1.5  # mean number of unrelated units (Poisson)
    distractor_max: float = 0.12  # their largest apex weight
    head_motion: bool = False
    head_motion_degrees: float = 3.0
    head_motion_cm: float = 0.3
    easings: tuple[str, ...] = field(default_factory=lambda: tuple(EASINGS))

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.intensity, self.onset, self.duration = tuple(self.intensity), tuple(self.onset), tuple(self.duration)
        self.easings = tuple(self.easings)
        for name in self.labels:
            get_label(name)
        if not self.labels:
            raise Face4DError("at least one label is needed")
        if self.frames <= 0:
            raise Face4DError(f"frames must be positive, got {self.frames}")
        if self.variable_length and not 2 <= self.min_frames <= self.max_frames:
            raise Face4DError(f"need 2 <= min_frames <= max_frames, got {self.min_frames}, {self.max_frames}")
        if self.num_identities < 3:
            raise Face4DError("num_identities must be at least 3 (one each for train, val and test)")
        unknown = set(self.easings) - set(EASINGS)
        if unknown:
            raise Face4DError(f"unknown easing(s) {sorted(unknown)}; known: {', '.join(EASINGS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "SynthConfig":
        return cls(**values)


class ExpressionSynthesizer:
    """Draws labelled expression sequences for one seed; see the module docstring."""

    def __init__(self, head: HeadModel, config: SynthConfig | None = None, seed: int = 0):
        self.head, self.config, self.seed = head, config or SynthConfig(), int(seed)
        rng = self._rng(_ID_STREAM)
        self.identities = (rng.standard_normal((self.config.num_identities, head.num_identity))
                           * self.config.identity_std).astype(np.float32)
        self._recipes = {name: [recipe_weights(head, v) for v in get_label(name).variants]
                         for name in self.config.labels}
        names = head.expression_names
        self._mirror = np.array([head.blendshape_index(_mirror_name(n)) for n in names])
        self._side = np.array([1.0 if n.endswith("_L") else -1.0 if n.endswith("_R") else 0.0 for n in names])
        self._distractable = np.array([n not in _NEVER_DISTRACT for n in names])
        self._label_order = self._rng(_SPLIT_STREAM).permutation(len(self.config.labels))

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key))

    # -- splits ---------------------------------------------------------------------------------
    def identity_splits(self, val: float = 0.1, test: float = 0.1) -> dict[str, list[int]]:
        """Identity ids of the train/val/test splits (at least one identity each)."""
        return split_identities(range(self.config.num_identities), self._rng(_SPLIT_STREAM, 1), val, test)

    # -- one sequence ---------------------------------------------------------------------------
    def sample(self, index: int, label: str | None = None, sequence_type: str | None = None,
               identity: int | np.ndarray | None = None, frames: int | None = None,
               intensity: float | None = None, clean: bool = False) -> dict:
        """Draw sequence ``index``. Keyword arguments pin what is otherwise drawn; ``clean`` drops
        jitter, asymmetry, distractors and head motion (for previews that show the recipe itself)."""
        cfg, rng = self.config, self._rng(_SEQ_STREAM, index)
        draws = {
            "label": cfg.labels[self._label_order[index % len(cfg.labels)]],
            "type": ("N2E", "E2N")[int(rng.integers(2))],
            "identity": int(rng.integers(cfg.num_identities)),
            "frames": int(rng.integers(cfg.min_frames, cfg.max_frames + 1)) if cfg.variable_length else cfg.frames,
            "intensity": float(rng.uniform(*cfg.intensity)),
        }
        label = draws["label"] if label is None else get_label(label).name
        sequence_type = draws["type"] if sequence_type is None else sequence_type
        if sequence_type not in ("N2E", "E2N"):
            raise Face4DError(f"unknown sequence type {sequence_type!r}; expected N2E or E2N")
        frames = draws["frames"] if frames is None else int(frames)
        if frames <= 0:
            raise Face4DError(f"frames must be positive, got {frames}")
        intensity = draws["intensity"] if intensity is None else float(intensity)
        if identity is None:
            identity_id, identity_weights = draws["identity"], self.identities[draws["identity"]]
        elif np.ndim(identity) == 0:
            identity_id, identity_weights = int(identity), self.identities[int(identity)]
        else:
            identity_id, identity_weights = -1, np.asarray(identity, np.float32)

        recipes = self._recipes.get(label) or [self._recipe_vector(v) for v in get_label(label).variants]
        apex = recipes[int(rng.integers(len(recipes)))] * intensity
        active = apex != 0
        if not clean:
            apex = apex * (1 + cfg.unit_jitter * rng.standard_normal(apex.shape)).astype(np.float32)
            skew = rng.uniform(-cfg.asymmetry, cfg.asymmetry)
            apex = apex * (1 + skew * self._side)
            candidates = np.flatnonzero(~active & ~active[self._mirror] & self._distractable)
            extra = rng.choice(candidates, min(rng.poisson(cfg.distractors), len(candidates)), replace=False)
            apex[extra] = rng.uniform(0, cfg.distractor_max, len(extra))
        apex = np.clip(apex, -1.0, 1.0).astype(np.float32)
        curve = self._curves(rng, frames, len(apex), clean)
        if sequence_type == "E2N":
            curve = curve[::-1]
        weights = (curve * apex).astype(np.float32)
        pose = self._head_motion(rng, frames) if cfg.head_motion and not clean else None
        return {"label": label, "type": sequence_type, "identity": identity_id, "identity_weights": identity_weights,
                "expression_weights": weights, "head_pose": pose, "intensity": intensity}

    def _curves(self, rng: np.random.Generator, frames: int, units: int, clean: bool) -> np.ndarray:
        """Activation over time (F, units) of an N2E sequence: rest, eased rise, hold at apex."""
        cfg = self.config
        span = max(frames - 1, 1)
        onset = rng.uniform(*cfg.onset) * span
        duration = max(rng.uniform(*cfg.duration) * span, 1.0)
        lags = np.zeros(units) if clean else rng.uniform(-cfg.unit_lag, cfg.unit_lag, units) * span
        ease = EASINGS[cfg.easings[int(rng.integers(len(cfg.easings)))]]
        progress = (np.arange(frames)[:, None] - onset - lags[None]) / duration
        curve = ease(np.clip(progress, 0.0, 1.0))
        curve[-1] = 1.0  # the apex is reached by the last frame, whatever the draws
        if frames > 1:
            curve[0] = 0.0  # and the first frame is neutral
        return curve

    def _head_motion(self, rng: np.random.Generator, frames: int) -> np.ndarray:
        """Smooth small rigid motion (F, 6): two low-frequency sinusoids per axis."""
        cfg = self.config
        t = np.linspace(0, 1, frames)[:, None]
        freq = rng.uniform(0.3, 1.2, (2, 6))
        phase = rng.uniform(0, 2 * np.pi, (2, 6))
        amp = np.concatenate([np.full(3, np.deg2rad(cfg.head_motion_degrees)), np.full(3, cfg.head_motion_cm)])
        wave = sum(np.sin(2 * np.pi * freq[k] * t + phase[k]) for k in range(2)) / 2
        return (amp * (wave - wave[:1])).astype(np.float32)  # starts at rest pose

    # -- batches --------------------------------------------------------------------------------
    def generate(self, indices, **pins) -> tuple[LandmarkSequences, list[dict]]:
        """Sequences ``indices`` as an interchange batch, plus each one's record (label, identity...)."""
        samples = [self.sample(int(i), **pins) for i in indices]
        return self.to_sequences(samples), samples

    def to_sequences(self, samples: list[dict]) -> LandmarkSequences:
        if not samples:
            raise Face4DError("no sequences to generate")
        lengths = np.array([len(s["expression_weights"]) for s in samples])
        f, n = int(lengths.max()), len(samples)
        weights = np.zeros((n, f, self.head.num_expressions), np.float32)
        pose = np.zeros((n, f, 6), np.float32) if any(s["head_pose"] is not None for s in samples) else None
        for k, s in enumerate(samples):
            weights[k, : lengths[k]] = s["expression_weights"]
            if pose is not None and s["head_pose"] is not None:
                pose[k, : lengths[k]] = s["head_pose"]
        ids = np.stack([s["identity_weights"] for s in samples])
        landmarks = self.head.landmarks(ids[:, None], weights)
        if pose is not None:
            landmarks = apply_head_pose(landmarks, pose, self.head.neck_pivot)
        landmarks[np.arange(f)[None] >= lengths[:, None]] = 0.0
        labels = [get_label(s["label"]) for s in samples]
        return LandmarkSequences(
            landmarks=landmarks, lengths=lengths, labels=[s["label"] for s in samples],
            types=[s["type"] for s in samples], fps=self.config.fps, identity_weights=ids,
            expression_weights=weights, head_pose=pose, texts=[lab.text for lab in labels],
            texts_enriched=[lab.enriched_text(s["type"]) for lab, s in zip(labels, samples)])


def recipe_weights(head: HeadModel, recipe: dict[str, float]) -> np.ndarray:
    """The head's expression weights (num_expressions,) float32 of a label variant's recipe: each
    action unit's value on its blendshapes (a name that is no action unit is a blendshape)."""
    weights = np.zeros(head.num_expressions, np.float32)
    for unit, value in recipe.items():
        for name in ACTION_UNITS.get(unit, (unit,)):
            weights[head.blendshape_index(name)] = value
    return weights


def split_identities(ids: Iterable, rng: np.random.Generator, val: float = 0.1, test: float = 0.1,
                     what: str = "identities") -> dict[str, list]:
    """The identity split: ``ids`` (people) shuffled by ``rng`` into train/val/test, each part sorted.

    ``test`` and ``val`` are fractions of the people, rounded, at least one person each; train
    keeps the rest and must keep at least one, so fewer than 3 people is an error (naming them
    ``what``). Used for generated identities and imported subjects alike.
    """
    ids = list(ids)
    n = len(ids)
    n_test, n_val = max(1, round(n * test)), max(1, round(n * val))
    if n - n_test - n_val < 1:
        raise Face4DError(f"the identity split needs at least {n_test + n_val + 1} {what} (train, val and test "
                          f"each keep one at least), got {n}")
    order = rng.permutation(n)
    parts = {"train": order[n_test + n_val:], "val": order[n_test:n_test + n_val], "test": order[:n_test]}
    return {name: sorted(ids[i] for i in picked) for name, picked in parts.items()}


def sequence_vertices(head: HeadModel, seqs: LandmarkSequences, i: int) -> np.ndarray:
    """Rebuild the full meshes (F, V, 3) of sequence ``i`` from its stored weights."""
    if seqs.identity_weights is None or seqs.expression_weights is None:
        raise Face4DError("these sequences carry no blendshape weights, so their meshes cannot be rebuilt")
    f = int(seqs.lengths[i])
    verts = head.vertices(seqs.identity_weights[i][None], seqs.expression_weights[i, :f])
    if seqs.head_pose is not None:
        verts = apply_head_pose(verts, seqs.head_pose[i, :f], head.neck_pivot)
    return verts


def _mirror_name(name: str) -> str:
    if name.endswith("_L"):
        return name[:-2] + "_R"
    if name.endswith("_R"):
        return name[:-2] + "_L"
    for a, b in (("Left", "Right"), ("Right", "Left")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return name
