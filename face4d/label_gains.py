"""Per-label amplitude calibration of a bundle: ``label_gains.json``.

Label guidance reaches each label's expression with its own strength: the paper's classifier guidance
over-acts some labels about twice (fear, lips_back) and under-acts others (anger, mouth_side), at any
one guidance strength (docs/results.md, *Motion quality*, per label). A label's gain is the data's
mean apex amplitude for that label over the model's, measured on the training dataset by
``scripts/calibrate_labels.py``; generation moves every frame of a label-guided sequence to
``neutral + gain * intensity * (frame - neutral)`` (``face4d.generate.scale_intensity``), so
``--intensity 1`` means the data's amplitude for every label. Timing is untouched, and jitter scales
with the motion, as with ``--intensity``.

Gains belong to the label control they were measured with (``SamplingConfig.label_control``
resolved): another control reaches other amplitudes, so it is left uncalibrated. They also depend a
little on the fast sampler's step count (fewer steps over-act some labels more; docs/tuning.md,
*Fast-sampler steps*): the main table was measured at ``MAIN_STEPS``, and a bundle may hold tables
for other step counts (``by_steps``), which sampling with those steps uses instead.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json
from face4d.settings import SamplingConfig

GAINS_FILE = "label_gains.json"
GAINS_FORMAT = "face4d-label-gains"
GAINS_VERSION = 1
MAIN_STEPS = SamplingConfig().steps
"""The fast-sampler steps of the main table: the package's default."""
GAIN_RANGE = (0.25, 4.0)
"""Gains outside this range mean the model misses a label altogether; scaling would only amplify
noise (or erase the expression), so the calibration refuses them."""


@dataclass(frozen=True)
class LabelGains:
    label_control: str
    """The resolved label control the gains were measured with (``classifier`` or ``conditional``)."""
    gains: dict[str, float]
    measured: dict[str, Any] = field(default_factory=dict)
    """How they were measured: dataset, sequences per label, seed, the command (for the record)."""
    by_steps: dict[int, dict[str, Any]] = field(default_factory=dict)
    """Tables for other fast-sampler step counts than ``MAIN_STEPS``: steps -> ``{"gains": {label:
    gain}, "measured": {...}}``."""

    def __post_init__(self) -> None:
        for table in [self.gains] + [entry["gains"] for entry in self.by_steps.values()]:
            _check_gains(table)

    def gain(self, label: str | None, steps: int | None = None) -> float:
        """``label``'s gain (1 for None or a label without one), from the table of ``steps`` fast-sampler
        steps when the bundle has one, else from the main table."""
        table = self.by_steps[steps]["gains"] if steps in self.by_steps else self.gains
        return 1.0 if label is None else float(table.get(label, 1.0))

    def with_steps(self, steps: int, gains: dict[str, float], measured: dict[str, Any]) -> "LabelGains":
        """These gains with the table of ``steps`` fast-sampler steps added or replaced (the main table's
        when ``steps`` is ``MAIN_STEPS``)."""
        if steps == MAIN_STEPS:
            return LabelGains(self.label_control, gains, measured, self.by_steps)
        return LabelGains(self.label_control, self.gains, self.measured,
                          {**self.by_steps, steps: {"gains": gains, "measured": measured}})

    def to_dict(self) -> dict[str, Any]:
        data = {"format": GAINS_FORMAT, "version": GAINS_VERSION, "label_control": self.label_control,
                "gains": _rounded(self.gains), "measured": self.measured}
        if self.by_steps:
            data["by_steps"] = {str(steps): {"gains": _rounded(entry["gains"]), "measured": entry["measured"]}
                                for steps, entry in sorted(self.by_steps.items())}
        return data


def _check_gains(gains: dict[str, float]) -> None:
    low, high = GAIN_RANGE
    for label, gain in gains.items():
        if not low <= float(gain) <= high:
            raise Face4DError(f"label gain of {label!r} is {gain}, outside [{low:g}, {high:g}]: the model "
                              f"misses that label; calibrating would not fix it")


def _rounded(gains: dict[str, float]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in gains.items()}


def read_gains(bundle: str | os.PathLike) -> LabelGains | None:
    """The bundle's ``label_gains.json``, or None when it has none (generation is then uncalibrated)."""
    path = Path(bundle) / GAINS_FILE
    if not path.is_file():
        return None
    data = read_json(path, "label gains")
    if data.get("format") != GAINS_FORMAT or data.get("version") != GAINS_VERSION:
        raise Face4DError(f"{path}: not a {GAINS_FORMAT} v{GAINS_VERSION} file")
    try:
        by_steps = {int(steps): {"gains": {str(k): float(v) for k, v in entry["gains"].items()},
                                 "measured": dict(entry.get("measured", {}))}
                    for steps, entry in data.get("by_steps", {}).items()}
        return LabelGains(str(data["label_control"]), {str(k): float(v) for k, v in data["gains"].items()},
                          dict(data.get("measured", {})), by_steps)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Face4DError(f"{path}: invalid label gains ({exc})") from None


def write_gains(bundle: str | os.PathLike, gains: LabelGains) -> Path:
    """Write ``gains`` into the bundle directory, atomically (the old file or the new one, whole)."""
    path = Path(bundle) / GAINS_FILE
    write_json(path, gains.to_dict())
    return path


def gains_from_amplitudes(data: dict[str, float], generated: dict[str, float]) -> dict[str, float]:
    """Each label's gain: the data's mean apex amplitude over the generated one."""
    missing = sorted(set(data) ^ set(generated))
    if missing:
        raise Face4DError(f"amplitudes of both the data and the model are needed for every label; missing {missing}")
    return {label: data[label] / generated[label] for label in data}
