"""Timelines: a shot described as timed keys, e.g. ``0s:neutral, 1.2s:high_smile@0.8, 2.5s:surprise``.

A **key** says what the face shows at a time: a label at its apex, ``neutral`` (the person's own
neutral face), a quoted text (``2s:"disgust high smile"``) or one frame of an interchange file
(``3s:pose.npz#12``: frame 12; without ``#N`` the file's frame farthest from its neutral one),
optionally at an intensity (``@0.8``: how far from the neutral face, as ``--intensity``). Times are
seconds (``1.2s``, or a bare number) or frames at the timeline's fps (``36f``).

Between keys the face moves from one to the next, the motion itself being the model's
(``face4d.windows``): each key is *held* for ``hold`` seconds after it lands, and longer when the
next key is far, so that a transition never takes more than ``transition`` seconds (the length of
an onset in the training data: an expression that takes five seconds to build is not one the model
has seen). Before the first key the face holds it; after the last key it holds it to the end, or
with ``loop`` moves back to the first key so that the last frame joins the first.

The same timeline can come as a JSON file (``load_timeline``)::

    {"fps": 30, "duration": 10, "hold": 0.3, "loop": false,
     "keys": [{"time": 0, "label": "neutral"},
              {"time": "1.2s", "label": "high_smile", "intensity": 0.8, "hold": 1.0},
              {"time": "75f", "text": "disgust high smile"},
              {"time": 4, "keyframe": "pose.npz", "frame": 12}]}

Every check runs when the ``Timeline`` is made, so bad input is one ``Face4DError`` line before
any model is loaded or anything is written. The format's reference: docs/timeline.md.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from face4d.data.labels import get_label
from face4d.errors import Face4DError
from face4d.jsonfile import read_json

NEUTRAL = "neutral"
KINDS = ("neutral", "label", "text", "keyframe")
FPS_RANGE = (1.0, 120.0)
"""Output frame rates a timeline accepts (24, 25, 30 and 60 are the usual ones)."""
DEFAULT_HOLD = 0.3
"""Seconds a key is held after it lands, at least (``--hold``)."""
DEFAULT_TRANSITION = 1.0
"""Longest transition between two keys, in seconds: a key is held until the next transition has
to start. One second is about the longest onset of the training data's 40-frame sequences, and it
fits one sampling window with context on both sides (``face4d.windows``)."""
MAX_DURATION = 3600.0
"""Longest shot, in seconds (an hour): cost and memory grow linearly, this only stops typos."""
_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([sf]?)\s*$")
_TOKENS = re.compile(r'(?:[^,"]|"[^"]*")+')


@dataclass(frozen=True)
class Key:
    """One key of a timeline: a ``time`` (in ``unit`` ``s``, or ``f`` frames at the timeline's fps)
    and exactly one condition: ``label`` (a label name or ``neutral``), ``text``, or ``keyframe``
    (an interchange file; ``frame`` of its sequence ``sequence``, None: the frame farthest from its
    neutral one). ``intensity`` scales the key's displacement from the neutral face; ``hold``
    overrides the timeline's hold for this key (seconds)."""

    time: float
    unit: str = "s"
    label: str | None = None
    text: str | None = None
    keyframe: str | None = None
    frame: int | None = None
    sequence: int = 0
    intensity: float = 1.0
    hold: float | None = None

    @property
    def kind(self) -> str:
        """``neutral``, ``label``, ``text`` or ``keyframe``."""
        if self.label is not None:
            return "neutral" if self.label == NEUTRAL else "label"
        return "text" if self.text is not None else "keyframe"

    @property
    def condition(self) -> str:
        """The key's condition as written on the command line."""
        if self.kind == "text":
            return f'"{self.text}"'
        if self.kind == "keyframe":
            return self.keyframe + ("" if self.frame is None else f"#{self.frame}")
        return self.label

    def __str__(self) -> str:
        intensity = "" if self.intensity == 1.0 else f"@{self.intensity:g}"
        return f"{self.time:g}{self.unit}:{self.condition}{intensity}"

    def seconds(self, fps: float) -> float:
        return self.time if self.unit == "s" else self.time / fps


@dataclass
class Timeline:
    """A checked shot: its ``keys`` in time order, the output ``fps``, the ``duration`` in seconds
    (None: a second after the last key), how long keys are held (``hold``, seconds), the longest
    ``transition`` (seconds), and ``loop`` (the last frame joins the first).
    ``num_frames`` = round(duration * fps) frames at times ``k / fps``."""

    keys: tuple[Key, ...]
    fps: float = 30.0
    duration: float | None = None
    hold: float = DEFAULT_HOLD
    loop: bool = False
    transition: float = DEFAULT_TRANSITION

    def __post_init__(self) -> None:
        self.keys = tuple(self.keys)
        if not self.keys:
            raise Face4DError("the timeline has no keys; give at least one, e.g. '0s:neutral, 1s:high_smile'")
        self.fps = _number(self.fps, "the timeline's fps")
        low, high = FPS_RANGE
        if not low <= self.fps <= high:
            raise Face4DError(f"the timeline's fps must be from {low:g} to {high:g} (24, 25, 30, 60, ...), "
                              f"got {self.fps:g}")
        self.hold = _number(self.hold, "the hold")
        if self.hold < 0:
            raise Face4DError(f"the hold must be >= 0 seconds, got {self.hold:g}")
        self.transition = _number(self.transition, "the transition")
        if not 0 < self.transition <= 10:
            raise Face4DError(f"the longest transition must be more than 0 and at most 10 seconds, "
                              f"got {self.transition:g}")
        if not isinstance(self.loop, bool):
            raise Face4DError(f"loop must be true or false, got {self.loop!r}")
        for key in self.keys:
            _check_key(key)
        times = [key.seconds(self.fps) for key in self.keys]
        for (a, ta), (b, tb) in zip(zip(self.keys, times), zip(self.keys[1:], times[1:])):
            if tb <= ta:
                raise Face4DError(f"timeline keys must be in time order: {b} comes after {a}")
        if self.duration is None:
            self.duration = times[-1] + 1.0
        self.duration = _number(self.duration, "the duration")
        if not 0 < self.duration <= MAX_DURATION:
            raise Face4DError(f"the duration must be more than 0 and at most {MAX_DURATION:g} seconds, "
                              f"got {self.duration:g}")
        if self.num_frames < 2:
            raise Face4DError(f"a {self.duration:g} s shot at {self.fps:g} fps has fewer than 2 frames")
        for key, t in zip(self.keys, times):
            if t > self.duration + 1e-9:
                raise Face4DError(f"key {key} is past the end of the shot ({self.duration:g} s)")
        frames = self.key_frames(self.fps)
        for i in range(1, len(frames)):
            if frames[i] == frames[i - 1]:
                raise Face4DError(f"keys {self.keys[i - 1]} and {self.keys[i]} fall on the same frame at "
                                  f"{self.fps:g} fps; put them further apart")

    @property
    def num_frames(self) -> int:
        return int(round(self.duration * self.fps))

    @property
    def times(self) -> list[float]:
        """Each key's time in seconds."""
        return [key.seconds(self.fps) for key in self.keys]

    def key_frames(self, fps: float) -> list[int]:
        """Each key's frame at ``fps`` on this shot's duration (a key at the very end lands on the
        last frame)."""
        last = int(round(self.duration * fps)) - 1
        return [min(int(round(t * fps)), last) for t in self.times]

    def holds(self) -> list[float]:
        """Each key's own hold, in seconds."""
        return [self.hold if key.hold is None else key.hold for key in self.keys]

    def labels(self) -> list[str]:
        """The labels of the shot's label keys, in order (for the manifest and captions)."""
        return [key.label for key in self.keys if key.kind == "label"]

    def __str__(self) -> str:
        return ", ".join(str(key) for key in self.keys)

    def to_dict(self) -> dict:
        """The JSON form (``load_timeline`` reads it back)."""
        keys = []
        for key in self.keys:
            entry = {"time": f"{key.time:g}{key.unit}"}
            for name in ("label", "text", "keyframe", "frame", "hold"):
                if getattr(key, name) is not None:
                    entry[name] = getattr(key, name)
            if key.kind == "keyframe" and key.sequence:
                entry["sequence"] = key.sequence
            if key.intensity != 1.0:
                entry["intensity"] = key.intensity
            keys.append(entry)
        return {"fps": self.fps, "duration": self.duration, "hold": self.hold, "loop": self.loop,
                "transition": self.transition, "keys": keys}


def _number(value, what: str) -> float:
    if isinstance(value, bool):
        raise Face4DError(f"{what} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise Face4DError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise Face4DError(f"{what} must be a finite number, got {value!r}")
    return value


def _check_key(key: Key) -> None:
    """One key's own checks (order and duration are the timeline's)."""
    from face4d.generate import INTENSITY_RANGE

    given = [name for name in ("label", "text", "keyframe") if getattr(key, name) is not None]
    if len(given) != 1:
        raise Face4DError(f"a timeline key needs exactly one of label, text or keyframe, got "
                          f"{', '.join(given) or 'none'} (at {key.time:g}{key.unit})")
    if key.unit not in ("s", "f") or not (isinstance(key.time, (int, float)) and math.isfinite(key.time)
                                          and key.time >= 0):
        raise Face4DError(f"bad time {key.time!r}{key.unit} of a timeline key: use seconds (1.2s) or frames (36f)")
    if key.kind == "label":
        get_label(key.label)
    if key.kind == "text" and not key.text.strip():
        raise Face4DError(f"key at {key.time:g}{key.unit}: the text is empty")
    if key.kind == "keyframe":
        if not Path(key.keyframe).is_file():
            raise Face4DError(f"key {key}: no such keyframe file {key.keyframe}")
        for name, value in (("frame", key.frame), ("sequence", key.sequence)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise Face4DError(f"key {key}: the keyframe's {name} must be an integer >= 0, got {value!r}")
    low, high = INTENSITY_RANGE
    intensity = _number(key.intensity, f"the intensity of key {key}")
    if not low <= intensity <= high:
        raise Face4DError(f"key {key}: intensity must be in [{low:g}, {high:g}], got {intensity:g}")
    if key.kind == "neutral" and intensity != 1.0:
        raise Face4DError(f"key {key}: the neutral face takes no intensity")
    if key.hold is not None and not _number(key.hold, f"the hold of key {key}") >= 0:
        raise Face4DError(f"key {key}: the hold must be >= 0 seconds, got {key.hold!r}")


# ------------------------------------------------------------------------------------ parsing

def parse_time(text: str) -> tuple[float, str]:
    """``"1.2s"``, ``"1.2"`` (seconds) or ``"36f"`` (frames) as ``(value, unit)``."""
    match = _TIME.match(str(text))
    if match is None:
        raise Face4DError(f"bad time {text!r} of a timeline key: use seconds (1.2s) or frames (36f)")
    unit = match.group(2) or "s"
    value = float(match.group(1))
    if unit == "f" and value != int(value):
        raise Face4DError(f"bad time {text!r}: a frame number is a whole number")
    return value, unit


def parse_key(text: str) -> Key:
    """One key of the command-line form: ``TIME:CONDITION[@INTENSITY]`` (see the module docstring)."""
    text = text.strip()
    if ":" not in text:
        raise Face4DError(f"bad timeline key {text!r}: write TIME:CONDITION, e.g. 1.2s:high_smile@0.8")
    when, condition = text.split(":", 1)
    time, unit = parse_time(when)
    condition, intensity = condition.strip(), 1.0
    match = re.match(r'^(.*?)\s*@\s*([^@"]*)$', condition)
    if match is not None:
        condition, intensity = match.group(1).strip(), _number(match.group(2), f"the intensity of key {text!r}")
    if not condition:
        raise Face4DError(f"bad timeline key {text!r}: no condition after the time")
    if condition.startswith('"'):
        if len(condition) < 2 or not condition.endswith('"'):
            raise Face4DError(f"bad timeline key {text!r}: a text must be in double quotes")
        return Key(time, unit, text=condition[1:-1], intensity=intensity)
    path, frame = condition, None
    if "#" in condition:
        path, number = condition.rsplit("#", 1)
        if not number.strip().isdigit():
            raise Face4DError(f"bad timeline key {text!r}: write FILE.npz#FRAME with a frame number")
        frame = int(number)
    if path.lower().endswith(".npz"):
        return Key(time, unit, keyframe=path, frame=frame, intensity=intensity)
    return Key(time, unit, label=condition, intensity=intensity)


def parse_timeline(text: str, **options) -> Timeline:
    """A ``Timeline`` from the command-line form: keys separated by commas (quoted texts may hold
    commas); ``options`` are ``Timeline``'s other fields."""
    tokens = [token.strip() for token in _TOKENS.findall(str(text))]
    if text.count('"') % 2:
        raise Face4DError(f"bad timeline {text!r}: unbalanced double quote")
    return Timeline(tuple(parse_key(token) for token in tokens if token), **options)


_KEY_FIELDS = {"time", "label", "text", "keyframe", "frame", "sequence", "intensity", "hold"}
_TIMELINE_FIELDS = {"keys", "fps", "duration", "hold", "loop", "transition"}


def load_timeline(path: str | Path, **options) -> Timeline:
    """A ``Timeline`` from a JSON file (the form of the module docstring; keyframe paths are relative
    to the file's folder). ``options`` given (not None) override the file's."""
    path = Path(path)
    data = read_json(path, "timeline JSON")
    unknown = sorted(set(data) - _TIMELINE_FIELDS)
    if unknown:
        raise Face4DError(f"{path}: unknown timeline field(s) {', '.join(unknown)}; "
                          f"expected {', '.join(sorted(_TIMELINE_FIELDS))}")
    if not isinstance(data.get("keys"), list):
        raise Face4DError(f"{path}: 'keys' must be a list of keys")
    keys = []
    for i, entry in enumerate(data["keys"]):
        if not isinstance(entry, dict):
            raise Face4DError(f"{path}: key {i} must be an object such as {{\"time\": 1.2, \"label\": \"high_smile\"}}")
        for name in ("label", "text", "keyframe"):
            if name in entry and not isinstance(entry[name], str):
                raise Face4DError(f"{path}: key {i}: {name} must be a string, got {entry[name]!r}")
        if "keyframe" in entry:
            entry = dict(entry, keyframe=str(path.parent / entry["keyframe"]))
        keys.append(key_from(entry, f"{path}: key {i}"))
    fields = {name: data[name] for name in _TIMELINE_FIELDS - {"keys"} if name in data}
    fields.update({name: value for name, value in options.items() if value is not None})
    return Timeline(tuple(keys), **fields)


def timeline_arg(value: str | Path | Timeline, fps: float | None = None, duration: float | None = None,
                 hold: float | None = None, loop: bool | None = None) -> Timeline:
    """The ``Timeline`` of ``--timeline``: a ``.json`` file, else the command-line form; the options
    given (not None) override the file's or the defaults. A ``Timeline`` given stays as it is,
    with those options replaced."""
    options = {name: value for name, value in (("fps", fps), ("duration", duration), ("hold", hold),
                                               ("loop", loop)) if value is not None}
    if isinstance(value, Timeline):
        return replace(value, **options) if options else value
    if str(value).lower().endswith(".json"):
        return load_timeline(value, **options)
    return parse_timeline(str(value), **options)


def key_from(value: Key | dict | str, where: str = "timeline key") -> Key:
    """A key given as a ``Key``, a dict of the JSON form, or a string of the command-line form;
    ``where`` names it in errors."""
    if isinstance(value, Key):
        return value
    if isinstance(value, str):
        return parse_key(value)
    unknown = sorted(set(value) - _KEY_FIELDS)
    if unknown or "time" not in value:
        raise Face4DError(f"{where} " + (f"has unknown field(s) {', '.join(unknown)}" if unknown else "has no time"))
    time, unit = parse_time(value["time"])
    return Key(time, unit, **{k: v for k, v in value.items() if k != "time"})


def make_timeline(keys: Sequence[Key | dict | str] | str, **options) -> Timeline:
    """A ``Timeline`` from Python values: a command-line string, or a list of keys (``Key``, dicts
    of the JSON form, or key strings); ``options`` as ``Timeline``'s fields."""
    if isinstance(keys, str):
        return timeline_arg(keys, **options)
    return Timeline(tuple(key_from(key) for key in keys), **options)

