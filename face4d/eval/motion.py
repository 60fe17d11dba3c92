"""Motion-quality measures of point sequences (landmarks or mesh vertices), per sequence.

The label-control metrics (``face4d.eval.metrics``) ask whether a sequence shows the right
expression; they are blind to how it moves: an LSTM classifier and a Fréchet distance of its
features barely see a tremble of a millimetre, and an expression at half strength can still be
recognised. These measures see both, and compare generated motion with data's:

* ``speed``: mean over frames and points of ``|x_{f+1} - x_f|`` (units per frame);
* ``jitter``: mean of the second difference ``|x_{f+1} - 2 x_f + x_{f-1}|`` (units per frame^2):
  large when consecutive velocities disagree, i.e. for trembling, small for smooth motion at any
  speed;
* ``high_frequency_share``: the share of the motion's power above ``cutoff`` Hz (default 5 Hz)
  at the sequence's frame rate. The line through the first and last frame is removed first, so
  that a sequence that ends away from where it started (every N2E expression) is not mistaken for
  a jump at the wrap-around of the Fourier transform;
* ``apex_amplitude``: the largest mean displacement of the points from the neutral frame;
* ``onset`` / ``apex_time``: seconds from the neutral end until the displacement first reaches
  10% / 90% of its largest value.

Sequences are (F, P, 3) arrays of their valid frames. The neutral frame is the first one for N2E,
the last for E2N. For a sequence of unknown type (e.g. label control without an order) the neutral
end is not known: ``apex_amplitude`` then takes the larger of the two ends (for a monotone
expression both give the neutral-to-apex distance) and the timing is left undefined (NaN).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from face4d.data.interchange import LandmarkSequences
from face4d.errors import Face4DError

HIGH_FREQUENCY_CUTOFF = 5.0  # Hz: facial expressions in the data stay below it; tremble does not
ONSET_LEVEL, APEX_LEVEL = 0.1, 0.9

MEASURES = ("speed", "jitter", "high_frequency_share", "apex_amplitude", "onset", "apex_time")


def _frames(seq: np.ndarray, minimum: int) -> np.ndarray:
    seq = np.asarray(seq, np.float64)
    if seq.ndim != 3 or seq.shape[-1] != 3:
        raise Face4DError(f"a point sequence must be (F, P, 3), got {seq.shape}")
    if len(seq) < minimum:
        raise Face4DError(f"this measure needs at least {minimum} frames, got {len(seq)}")
    return seq


def speed(seq: np.ndarray) -> float:
    """Mean ``|x_{f+1} - x_f|`` over frames and points of ``seq`` (F, P, 3), per frame."""
    return float(np.linalg.norm(np.diff(_frames(seq, 2), axis=0), axis=-1).mean())


def jitter(seq: np.ndarray) -> float:
    """Mean ``|x_{f+1} - 2 x_f + x_{f-1}|`` over frames and points of ``seq`` (F, P, 3), per frame^2."""
    return float(np.linalg.norm(np.diff(_frames(seq, 3), n=2, axis=0), axis=-1).mean())


def high_frequency_share(seq: np.ndarray, fps: float, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> float:
    """Share (0-1) of the power of ``seq``'s motion at frequencies above ``cutoff`` Hz, summed over
    points and coordinates, after removing the line from the first to the last frame; 0 for a still
    sequence."""
    seq = _frames(seq, 3)
    if not fps > 0:
        raise Face4DError(f"fps must be positive, got {fps}")
    ramp = np.linspace(0.0, 1.0, len(seq))[:, None, None]
    residual = seq - (seq[0] + ramp * (seq[-1] - seq[0]))
    power = np.abs(np.fft.rfft(residual, axis=0)) ** 2
    frequencies = np.fft.rfftfreq(len(seq), d=1.0 / fps)
    total = power[1:].sum()
    # Below round-off of the coordinates' size the motion is a straight line (or still): no share.
    floor = residual.size * (1e-9 * max(np.abs(seq).max(), 1e-12)) ** 2
    return float(power[frequencies > cutoff].sum() / total) if total > floor else 0.0


def displacement(seq: np.ndarray, neutral: int) -> np.ndarray:
    """Mean distance (F,) of each frame's points from those of frame ``neutral``."""
    seq = _frames(seq, 1)
    return np.linalg.norm(seq - seq[neutral], axis=-1).mean(axis=-1)


def apex_amplitude(seq: np.ndarray, neutral: int | None = None) -> float:
    """Largest mean displacement from the neutral frame (index ``neutral``; None: either end)."""
    ends = (0, len(seq) - 1) if neutral is None else (neutral,)
    return float(max(displacement(seq, end).max() for end in ends))


def timing(seq: np.ndarray, neutral: int, fps: float) -> tuple[float, float]:
    """``(onset, apex_time)`` in seconds from the neutral end (frame 0 or the last), when the
    displacement first reaches ``ONSET_LEVEL`` and ``APEX_LEVEL`` of its maximum; NaN if still."""
    curve = displacement(seq, neutral)
    if neutral != 0:
        curve = curve[::-1]
    peak = curve.max()
    if peak <= 0:
        return float("nan"), float("nan")
    return (float(np.argmax(curve >= ONSET_LEVEL * peak) / fps), float(np.argmax(curve >= APEX_LEVEL * peak) / fps))


@dataclass
class MotionStats:
    """Per-sequence measures (N,) each, of one set of sequences (``MEASURES`` in order)."""

    speed: np.ndarray
    jitter: np.ndarray
    high_frequency_share: np.ndarray
    apex_amplitude: np.ndarray
    onset: np.ndarray
    apex_time: np.ndarray

    def mean(self, measure: str, where: np.ndarray | None = None) -> float:
        """Mean of one measure over the sequences selected by ``where`` (all by default); NaNs
        (timing of sequences of unknown type) are left out, and an all-NaN selection gives NaN."""
        values = getattr(self, measure)
        values = values if where is None else values[where]
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")


def sequence_stats(seqs: Sequence[np.ndarray], fps: float, neutrals: Sequence[int | None]) -> MotionStats:
    """``MotionStats`` of point sequences (each (F_i, P, 3)) at ``fps``, with their neutral frame
    indices (None where the type is unknown)."""
    rows = []
    for seq, neutral in zip(seqs, neutrals, strict=True):
        onset, apex_time = (float("nan"), float("nan")) if neutral is None else timing(seq, neutral, fps)
        rows.append((speed(seq), jitter(seq), high_frequency_share(seq, fps), apex_amplitude(seq, neutral),
                     onset, apex_time))
    return MotionStats(*(np.array(column, np.float64) for column in zip(*rows)))


def neutral_indices(seqs: LandmarkSequences) -> list[int | None]:
    """Each sequence's neutral frame: 0 for N2E, its last valid frame for E2N, None otherwise."""
    return [0 if kind == "N2E" else int(length) - 1 if kind == "E2N" else None
            for kind, length in zip(seqs.types, seqs.lengths)]


def landmark_stats(seqs: LandmarkSequences) -> MotionStats:
    """``MotionStats`` of a batch of landmark sequences (valid frames only, the batch's fps)."""
    return sequence_stats([seqs.sequence(i) for i in range(len(seqs))], seqs.fps, neutral_indices(seqs))
