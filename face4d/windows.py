"""A timeline of any length sampled in overlapping windows of the denoiser's trained length.

The denoiser was trained on sequences of 35-45 frames at 30 fps; a one-minute shot is 1,800. So a
shot (``face4d.timeline.Timeline``) is generated the way body-motion diffusion does in-betweening
(PriorMDM's DoubleTake, MDM): by expression filling (Alg. 3, ``face4d.filling``) in windows of
``WINDOW`` frames, each conditioned on what is already fixed inside it.

1. **Key targets** (``key_targets``): every key becomes one landmark frame of the shot's person.
   ``neutral`` is the person's neutral face; a label or a text is the apex (the frame farthest from
   the neutral face) of one sequence generated from that face (Alg. 4, one pass, type S
   classifier in N2E order, or the text guide); a keyframe is the file's frame carried onto the
   person (its displacement from the file's own neutral frame). The intensity then scales the
   displacement from the neutral face, as ``--intensity`` does.
2. **Plan** (``plan_shot``), at the model's frame rate: each key's frame is known, and so are the
   frames it is held (``Timeline.hold``, and longer where the next key is more than
   ``Timeline.transition`` away). What is left are *transitions*, runs of unknown frames.
3. **Windows**: a run shorter than ``WINDOW - 2 * CONTEXT`` is filled by one window centred on
   it, so both keys it joins are in the window, with at least ``CONTEXT`` frames of either side:
   the held frames, or the frames the previous window produced (the overlap). A longer run is
   chained: cut into equal pieces, each filled by a window that starts ``CONTEXT`` frames before
   it, with those frames (made by the previous window) known. Every known frame is re-imposed after each reverse step and pulls the others by
   reconstruction guidance (``SamplingConfig.reconstruction``), so a window continues what it
   overlaps with, position and velocity, and the result is one continuous sequence.
   A transition between the neutral face and a label (or a text) is also guided towards it (the
   type S classifier in that order, N2E into the label and E2N out of it; the text guide for a
   text), so the way the expression builds is the label's. Windows whose frames do not depend on
   each other are sampled in one batch (``BATCH`` at most), the others in order: cost grows
   linearly with the number of transitions, memory is bounded by the batch.
4. **Resampling** to the output fps (``resample``): a cubic spline through the model-rate frames
   (periodic with ``loop``), read at a time warp that is linear between keys and puts every key
   exactly on its output frame.

``loop``: the frames after the end are the first ones (known once made), so the transition back
to the first key is a window that sees the start of the shot as its right-hand context.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from face4d.data.interchange import NUM_LANDMARKS, LandmarkSequences, load_sequences
from face4d.errors import Face4DError
from face4d.timeline import Timeline

WINDOW = 40
"""Frames per window: the middle of the denoiser's trained lengths (35-45 frames at 30 fps)."""
CONTEXT = 5
"""Known frames a window keeps on each side of what it fills, at least: enough for the model to
read position and velocity across the join, while a one-second transition (30 frames) still fits."""
BATCH = 8
"""Independent windows sampled together (memory: BATCH x WINDOW frames)."""
MIN_TRANSITION = 0.2
"""Seconds a hold leaves for the move to the next key when keys are close (a hold is shortened)."""
APEX_FRAMES = 40
"""Frames of the sequence a label or text key takes its apex from."""
BLEND = 10
"""Frames over which a window's ends are blended into the frames it joins (``inertialize``)."""
GUIDE_MIN_INTENSITY = 0.5
"""Transitions into (or out of) a label key weaker than this are not classifier-guided: guidance
pulls towards the label's full expression, which would overshoot a soft key on the way."""


@dataclass
class Window:
    """One window: frames ``[start, start + length)`` of the (extended) model-rate shot, producing
    frames ``[first, stop)``; ``run``: the transition it belongs to."""

    start: int
    length: int
    first: int
    stop: int
    run: int


@dataclass
class ShotPlan:
    """What is known and what each window does, at the model's frame rate ``fps``.

    ``frames``: the shot's frames M; ``extended``: M plus the loop's copy of the first frames;
    ``key``: (extended,) index of the key a known frame holds, -1 on frames to generate;
    ``key_frames``: each key's frame; ``runs``: ``(first, stop, from_key, to_key)`` per transition;
    ``windows`` in the order they are sampled."""

    fps: float
    frames: int
    extended: int
    key: np.ndarray
    key_frames: list[int]
    runs: list[tuple[int, int, int, int]]
    windows: list[Window] = field(default_factory=list)

    @property
    def joins(self) -> np.ndarray:
        """Frame pairs ``(f, f + 1)``, given by ``f``, where a window's frames meet frames it did
        not make (a hold, or the previous window): where a seam would show."""
        found = set()
        for w in self.windows:
            found.update((w.first - 1, w.stop - 1))
        return np.array(sorted(f % self.frames for f in found if 0 <= f < self.extended - 1), dtype=np.int64)


@dataclass
class Shot:
    """A sampled timeline: ``landmarks`` (N, 68, 3) at the output fps, ``model_landmarks`` (M, 68,
    3) at the model's, the ``targets`` (K, 68, 3) of the keys, their output frames
    ``key_frames``, and the ``plan``."""

    timeline: Timeline
    landmarks: np.ndarray
    model_landmarks: np.ndarray
    targets: np.ndarray
    key_frames: list[int]
    plan: ShotPlan
    neutral: np.ndarray

    def sequences(self) -> LandmarkSequences:
        """The shot as a one-sequence interchange batch (its text: the timeline)."""
        return LandmarkSequences(landmarks=self.landmarks[None], lengths=[len(self.landmarks)], labels=[""],
                                 types=[""], fps=self.timeline.fps, texts=[str(self.timeline)], texts_enriched=[""])


# ------------------------------------------------------------------------------------ plan

def plan_shot(timeline: Timeline, fps: float) -> ShotPlan:
    """Known frames, transitions and windows of ``timeline`` at the model's frame rate ``fps``."""
    frames = int(round(timeline.duration * fps))
    if frames < 2:
        raise Face4DError(f"the shot is shorter than two frames at the model's {fps:g} fps")
    keys = timeline.key_frames(fps)
    for (a, fa), (b, fb) in zip(zip(timeline.keys, keys), zip(timeline.keys[1:], keys[1:])):
        if fb <= fa:
            raise Face4DError(f"keys {a} and {b} fall on the same frame at the model's {fps:g} fps; "
                              "put them further apart")
    holds = [int(round(h * fps)) for h in timeline.holds()]
    cap, least = int(round(timeline.transition * fps)), max(1, int(round(MIN_TRANSITION * fps)))
    ends = keys[1:] + ([frames] if timeline.loop else [])
    extended = frames + (CONTEXT if timeline.loop else 0)
    key = np.full(extended, -1, dtype=np.int64)
    key[: keys[0] + 1] = 0
    for k, start in enumerate(keys):
        if k < len(ends):
            gap = ends[k] - start
            if timeline.loop and k == len(keys) - 1 and gap < least:
                raise Face4DError(f"in a loop the last key ({timeline.keys[-1]}) must leave at least "
                                  f"{MIN_TRANSITION:g} s to get back to the first")
            hold = max(min(holds[k], max(0, gap - least)), gap - cap)
            key[start: start + hold + 1] = k
        else:
            key[start:frames] = k
    if timeline.loop:
        key[frames:] = key[:CONTEXT]
    runs = []
    unknown = np.flatnonzero(key[:frames] < 0)  # the loop's copied frames are made with the first ones
    if unknown.size:
        breaks = np.flatnonzero(np.diff(unknown) > 1)
        for first, last in zip(np.r_[unknown[0], unknown[breaks + 1]], np.r_[unknown[breaks], unknown[-1]]):
            runs.append((int(first), int(last) + 1, int(key[first - 1]), int(key[(last + 1) % frames]
                                                                               if timeline.loop else key[last + 1])))
    plan = ShotPlan(fps, frames, extended, key, keys, runs)
    plan.windows = _windows(plan)
    return plan


def _windows(plan: ShotPlan) -> list[Window]:
    length = min(WINDOW, plan.extended)
    windows = []
    for r, (first, stop, _, _) in enumerate(plan.runs):
        if stop - first <= length - 2 * CONTEXT:  # one window, centred
            start = min(max(first - (length - (stop - first)) // 2, 0), plan.extended - length)
            windows.append(Window(start, length, first, stop, r))
            continue
        # chained: equal pieces, each window starting CONTEXT frames before its piece, so that every
        # window continues the previous one and the last still has room to reach the next key
        pieces = -(-(stop - first) // (length - 2 * CONTEXT))
        bounds = np.linspace(first, stop, pieces + 1).round().astype(int)
        for a, b in zip(bounds[:-1], bounds[1:]):
            windows.append(Window(min(max(int(a) - CONTEXT, 0), plan.extended - length), length, int(a), int(b), r))
    return windows


def _batches(plan: ShotPlan) -> list[list[Window]]:
    """Windows grouped so that no window reads a frame another window of its group makes."""
    maker = np.full(plan.extended, -1, dtype=np.int64)
    for i, w in enumerate(plan.windows):
        maker[w.first: w.stop] = i
    if plan.extended > plan.frames:
        maker[plan.frames:] = maker[: plan.extended - plan.frames]
    batches, current = [], []
    for i, w in enumerate(plan.windows):
        reads = set(maker[w.start: w.start + w.length].tolist()) - {-1, i}
        if len(current) == BATCH or reads & set(current):
            batches.append(current)
            current = []
        current.append(i)
    return [[plan.windows[i] for i in batch] for batch in batches + ([current] if current else [])]


# ------------------------------------------------------------------------------------ targets

def key_targets(generator, timeline: Timeline, neutral: np.ndarray, seed: int = 0, sampling=None,
                progress: bool = False) -> np.ndarray:
    """Each key's landmark frame (K, 68, 3) on the person of ``neutral`` (68, 3), in centimetres
    (see the module docstring)."""
    from face4d.generate import SamplingConfig
    from face4d.landmarks import check_units

    sampling = sampling or SamplingConfig()
    neutral = np.asarray(neutral, np.float32)
    targets = np.repeat(neutral[None], len(timeline.keys), axis=0)
    for kind in ("label", "text"):
        index = [i for i, key in enumerate(timeline.keys) if key.kind == kind]
        if not index:
            continue
        texts = [timeline.keys[i].text for i in index] if kind == "text" else None
        labels = [timeline.keys[i].label for i in index] if kind == "label" else [None] * len(index)
        seqs = generator.from_neutrals(np.repeat(neutral[None], len(index), axis=0), APEX_FRAMES,
                                       ["N2E"] * len(index), labels, seed + (kind == "text"), 1, sampling,
                                       progress, texts)
        for j, i in enumerate(index):
            targets[i] = apex(seqs.landmarks[j], neutral)
    for i, key in enumerate(timeline.keys):
        if key.kind != "keyframe":
            continue
        seqs = load_sequences(key.keyframe)
        if key.sequence >= len(seqs):
            raise Face4DError(f"key {key}: the file holds {len(seqs)} sequence(s), no sequence {key.sequence}")
        frames = seqs.sequence(key.sequence)
        rest = frames[seqs.neutral_frames()[key.sequence]]
        if key.frame is not None and key.frame >= len(frames):
            raise Face4DError(f"key {key}: the sequence has {len(frames)} frames, no frame {key.frame}")
        check_units(frames, neutral, f"key {key}", "the shot's neutral face")
        frame = apex(frames, rest) if key.frame is None else frames[key.frame]
        targets[i] = neutral + (frame - rest)
    scale = np.array([key.intensity for key in timeline.keys], np.float32)[:, None, None]
    return (neutral + scale * (targets - neutral)).astype(np.float32)


def apex(frames: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """The frame (68, 3) of ``frames`` (F, 68, 3) farthest from ``neutral`` (mean landmark distance)."""
    return frames[int(np.linalg.norm(frames - neutral, axis=-1).mean(-1).argmax())]


# ------------------------------------------------------------------------------------ sampling

def sample_shot(generator, timeline: Timeline, neutral: np.ndarray, seed: int = 0, sampling=None,
                progress: bool = False) -> Shot:
    """The landmark motion of ``timeline`` on the person of ``neutral`` (68, 3, centimetres), by
    ``generator`` (a ``face4d.generate.LandmarkGenerator``); see the module docstring."""
    from tqdm.auto import tqdm

    from face4d.filling import sample_with_known_frames
    from face4d.generate import SamplingConfig
    from face4d.guidance import GradientGuidance

    sampling = sampling or SamplingConfig()
    plan = plan_shot(timeline, generator.fps)
    targets = key_targets(generator, timeline, neutral, seed, sampling)
    x = np.zeros((plan.extended, NUM_LANDMARKS, 3), np.float32)
    known = plan.key >= 0
    x[known] = targets[plan.key[known]]
    done = known.copy()
    diffusion = generator.sampling_diffusion(sampling)
    torch_generator = torch.Generator(device=generator.device).manual_seed(
        int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint64)[0]))
    batches = _batches(plan)
    for batch in tqdm(batches, desc="sampling windows", unit="batch", disable=not progress or len(batches) < 2):
        groups: dict[str, list[tuple[Window, tuple]]] = {}
        for w in batch:  # one sampling per kind of guidance; labels and texts may differ per window
            condition = _guidance(timeline, plan.runs[w.run])
            groups.setdefault(condition[0] if condition else "", []).append((w, condition))
        for kind, members in groups.items():
            windows, conditions = [w for w, _ in members], [c for _, c in members]
            x0 = np.stack([x[w.start: w.start + w.length] for w in windows])
            mask = np.stack([done[w.start: w.start + w.length] for w in windows])
            x0 = generator.normalizer.normalize(torch.as_tensor(x0, device=generator.device))
            hook, model = None, generator.denoiser
            if kind == "label":
                labels, types = [c[1] for c in conditions], [c[2] for c in conditions]
                hook = generator.label_guidance(diffusion, labels, types, sampling)
                model = generator.noise_model(labels, types, sampling)
            elif kind == "text":
                hook = GradientGuidance(diffusion, generator.text_objective([c[1] for c in conditions]),
                                        sampling.text_guidance)
            out = sample_with_known_frames(diffusion, model, x0, mask, guidance=hook,
                                           generator=torch_generator, device=generator.device,
                                           reconstruction=sampling.reconstruction, anchor=sampling.anchor)
            out = generator.normalizer.denormalize(out.detach().cpu()).numpy()
            for w, values in zip(windows, out):
                x[w.first: w.stop] = values[w.first - w.start: w.stop - w.start]
                right = w.stop < plan.extended and done[w.stop]
                inertialize(x, w.first, w.stop, left=w.first > 0, right=right, done=done)
                done[w.first: w.stop] = True
        if plan.extended > plan.frames:  # the loop's copy of the first frames
            x[plan.frames:], done[plan.frames:] = x[: plan.extended - plan.frames], done[: plan.extended - plan.frames]
    model = x[: plan.frames]
    output_keys = timeline.key_frames(timeline.fps)
    landmarks = resample(model, timeline.num_frames, plan.key_frames, output_keys, timeline.loop)
    return Shot(timeline, landmarks, model, targets, output_keys, plan, np.asarray(neutral, np.float32))


def _guidance(timeline: Timeline, run: tuple[int, int, int, int]) -> tuple:
    """How a transition is guided: ``("label", name, "N2E"|"E2N")``, ``("text", text)`` or ``()``."""
    a, b = timeline.keys[run[2]], timeline.keys[run[3]]
    kinds = (a.kind, b.kind)
    if kinds == ("neutral", "label") and b.intensity >= GUIDE_MIN_INTENSITY:
        return ("label", b.label, "N2E")
    if kinds == ("label", "neutral") and a.intensity >= GUIDE_MIN_INTENSITY:
        return ("label", a.label, "E2N")
    if kinds == ("neutral", "text") and b.intensity >= GUIDE_MIN_INTENSITY:
        return ("text", b.text)
    if kinds == ("text", "neutral") and a.intensity >= GUIDE_MIN_INTENSITY:
        return ("text", a.text)
    return ()


def inertialize(x: np.ndarray, first: int, stop: int, left: bool = True, right: bool = True,
                blend: int = BLEND, done: np.ndarray | None = None) -> None:
    """Blend the frames ``x[first:stop]`` a window made into the fixed frames around them, in place.

    Filling keeps the known frames exactly and reconstruction guidance pulls the made ones towards
    them, but the first made frame still lands a step away, moving at the sample's own speed where
    a held key stands still: on the shipped model a seam 3-6x faster than the motion elsewhere
    (docs/results.md, section timeline). This removes the step the way game animation blends a
    transition (*inertialization*, Bollo, GDC 2016): the offset between where the made motion,
    continued backwards by its own velocity, would be at the fixed frame and where that frame is,
    and the difference of their velocities, are added to the made frames and decayed to zero over
    ``blend`` frames by a cubic Hermite curve (zero value and slope at its end), so position and
    velocity are continuous at the join and the made motion is untouched beyond ``blend`` frames.
    ``left``/``right``: blend at ``first`` (fixed frames before it) and at ``stop`` (fixed after it).
    ``done`` (bool, per frame of ``x``): which frames are fixed; the fixed side's velocity is taken
    only between two fixed frames (else it is taken as 0, a hold).
    """
    length = stop - first
    n = min(blend, length)
    if n < 1 or length < 2:
        return
    tau = np.arange(1, n + 1, dtype=np.float64)[:, None, None] / (n + 1)
    fade, slope = 2 * tau**3 - 3 * tau**2 + 1, (tau**3 - 2 * tau**2 + tau) * (n + 1)
    for side in ("left", "right"):
        if not (left if side == "left" else right):
            continue
        if side == "left":
            fixed, before, made, after = first - 1, first - 2, first, first + 1
            frames = slice(first, first + n)
        else:
            fixed, before, made, after = stop, stop + 1, stop - 1, stop - 2
            frames = slice(stop - 1, stop - n - 1 if stop - n - 1 >= 0 else None, -1)
        # velocities pointing into the made frames; the made motion continued back to the fixed frame
        fixed_velocity = (x[fixed] - x[before] if 0 <= before < len(x) and (done is None or done[before])
                          else 0.0)
        made_velocity = x[after] - x[made]
        offset = x[fixed] - (x[made] - made_velocity)
        x[frames] += (fade * offset + slope * (fixed_velocity - made_velocity)).astype(x.dtype)


# ------------------------------------------------------------------------------------ resampling

def time_warp(frames: int, model_frames: int, output_keys: Sequence[int], model_keys: Sequence[int],
              loop: bool = False) -> np.ndarray:
    """The model-rate position (float) of each of ``frames`` output frames: linear between knots
    that put every output key frame on its model key frame, and the ends on the ends (with
    ``loop``, frame ``frames`` on ``model_frames``, the first frame again)."""
    end = (frames, model_frames) if loop else (frames - 1, model_frames - 1)
    kept = [(0, 0)]
    for i, j in [(int(i), int(j)) for i, j in zip(output_keys, model_keys)] + [end]:
        if i > kept[-1][0] and j > kept[-1][1]:
            kept.append((i, j))
        elif len(kept) == 1 and (i, j) != end:  # a key on (or next to) the first frame replaces the start
            kept[0] = (i, j)
    xs, ys = np.array(kept, dtype=np.float64).T
    return np.interp(np.arange(frames, dtype=np.float64), xs, ys)


def resample(model: np.ndarray, frames: int, model_keys: Sequence[int], output_keys: Sequence[int],
             loop: bool = False) -> np.ndarray:
    """``model`` (M, 68, 3) at the model's rate read at ``frames`` output frames (``time_warp``), by a
    cubic spline through every model frame (periodic with ``loop``): keys land exactly."""
    from scipy.interpolate import CubicSpline

    m = len(model)
    values = model.reshape(m, -1).astype(np.float64)
    if loop:
        spline = CubicSpline(np.arange(m + 1), np.concatenate([values, values[:1]]), bc_type="periodic")
    else:
        spline = CubicSpline(np.arange(m), values, bc_type="not-a-knot") if m > 2 else None
    positions = time_warp(frames, m, output_keys, model_keys, loop)
    if spline is None:
        out = np.stack([np.interp(positions, np.arange(m), values[:, c]) for c in range(values.shape[1])], 1)
    else:
        out = spline(positions)
    whole = np.isclose(positions, np.round(positions), atol=1e-9)
    out[whole] = values[np.round(positions[whole]).astype(int) % m]  # exact where a frame is hit
    return out.reshape(frames, *model.shape[1:]).astype(np.float32)
