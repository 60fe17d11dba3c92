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
resolved): another control reaches other amplitudes, so it is left uncalibrated.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from face4d.errors import Face4DError
from face4d.jsonfile import read_json, write_json

GAINS_FILE = "label_gains.json"
GAINS_FORMAT = "face4d-label-gains"
GAINS_VERSION = 1
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

    def __post_init__(self) -> None:
        low, high = GAIN_RANGE
        for label, gain in self.gains.items():
            if not low <= float(gain) <= high:
                raise Face4DError(f"label gain of {label!r} is {gain}, outside [{low:g}, {high:g}]: the model "
                                  f"misses that label; calibrating would not fix it")

    def gain(self, label: str | None) -> float:
        return 1.0 if label is None else float(self.gains.get(label, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {"format": GAINS_FORMAT, "version": GAINS_VERSION, "label_control": self.label_control,
                "gains": {k: round(float(v), 4) for k, v in self.gains.items()}, "measured": self.measured}


def read_gains(bundle: str | os.PathLike) -> LabelGains | None:
    """The bundle's ``label_gains.json``, or None when it has none (generation is then uncalibrated)."""
    path = Path(bundle) / GAINS_FILE
    if not path.is_file():
        return None
    data = read_json(path, "label gains")
    if data.get("format") != GAINS_FORMAT or data.get("version") != GAINS_VERSION:
        raise Face4DError(f"{path}: not a {GAINS_FORMAT} v{GAINS_VERSION} file")
    try:
        return LabelGains(str(data["label_control"]), {str(k): float(v) for k, v in data["gains"].items()},
                          dict(data.get("measured", {})))
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
