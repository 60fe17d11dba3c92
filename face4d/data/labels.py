"""The 18 expression labels and their recipes: which action units make each one, at what strength.

The labels are CoMA's 12 facial actions and the 6 basic emotions of BU-4DFE, the 18 classes the
paper trains on. Each recipe maps action units (``meshops.facs``) or single blendshapes to an apex
weight. A label with several variants picks one per sequence, as the real data does ("eyebrow"
is brows raised *or* lowered; "mouth_side" goes left *or* right). Emotions follow the EMFACS
prototypes; the CoMA actions follow what their names show.
"""
from __future__ import annotations

from dataclasses import dataclass

from face4d.errors import Face4DError


@dataclass(frozen=True)
class Label:
    name: str
    text: str  # raw description, as a person would type it
    phrase: str  # noun phrase used in the enriched description
    variants: tuple[dict[str, float], ...]

    def enriched_text(self, sequence_type: str) -> str:
        """'from a neutral face to a high smile' (N2E) or 'from a high smile to a neutral face' (E2N)."""
        if sequence_type == "N2E":
            return f"from a neutral face to {self.phrase}"
        if sequence_type == "E2N":
            return f"from {self.phrase} to a neutral face"
        raise Face4DError(f"unknown sequence type {sequence_type!r}; expected N2E or E2N")


def _label(name: str, text: str, phrase: str, *variants: dict[str, float]) -> Label:
    return Label(name, text, phrase, tuple(variants))


LABELS: tuple[Label, ...] = (
    # -- CoMA's 12 facial actions ---------------------------------------------------------------
    _label("bareteeth", "bare teeth", "bared teeth",
           {"AU10": 0.8, "AU11": 0.8, "AU16": 0.7, "AU20": 0.5, "AU12": 0.2}),
    _label("cheeks_in", "cheeks in", "cheeks sucked in",
           {"AU33": -0.9, "AU18": 0.45, "AU22": 0.15}),
    _label("eyebrow", "eyebrow", "a brow movement",
           {"AU1": 0.9, "AU2": 0.9}, {"AU4": 1.0}),
    _label("high_smile", "high smile", "a high smile",
           {"AU12": 1.0, "AU6": 0.8, "AU11": 0.3, "AU26": 0.12}),
    _label("lips_back", "lips back", "lips pulled back",
           {"AU20": 0.95, "AU24": 0.6}),
    _label("lips_up", "lips up", "the upper lip raised",
           {"AU10": 0.95, "AU11": 0.3}),
    _label("mouth_down", "mouth down", "mouth corners pulled down",
           {"AU15": 1.0, "AU17": 0.6}),
    _label("mouth_extreme", "mouth extreme", "an extremely stretched open mouth",
           {"AU27": 1.0, "AU20": 0.8, "AU16": 0.6}),
    _label("mouth_middle", "mouth middle", "lips pushed forward",
           {"AU18": 0.95, "AU22": 0.5}),
    _label("mouth_open", "mouth open", "an open mouth",
           {"AU27": 0.8}),
    _label("mouth_side", "mouth side", "the mouth pulled to one side",
           {"AU30L": 0.5, "mouthLeft": 0.9}, {"AU30R": 0.5, "mouthRight": 0.9}),
    _label("mouth_up", "mouth up", "the chin and lips pushed up",
           {"AU17": 0.9, "AU24": 0.6, "AU28": 0.3}),
    # -- the 6 basic emotions (EMFACS prototypes) -----------------------------------------------
    _label("anger", "anger", "an angry face",
           {"AU4": 0.95, "AU5": 0.5, "AU7": 0.7, "AU24": 0.7}),
    _label("disgust", "disgust", "a disgusted face",
           {"AU9": 0.9, "AU15": 0.6, "AU16": 0.5},
           {"AU9": 0.9, "AU10": 0.6, "AU15": 0.5, "AU16": 0.4}),
    _label("fear", "fear", "a fearful face",
           {"AU1": 0.8, "AU2": 0.6, "AU4": 0.5, "AU5": 0.9, "AU7": 0.3, "AU20": 0.7, "AU26": 0.3}),
    _label("happiness", "happiness", "a happy face",
           {"AU6": 0.55, "AU12": 0.7}),
    _label("sadness", "sadness", "a sad face",
           {"AU1": 0.9, "AU4": 0.6, "AU15": 0.85}),
    _label("surprise", "surprise", "a surprised face",
           {"AU1": 0.9, "AU2": 0.9, "AU5": 0.8, "AU26": 0.4},
           {"AU1": 0.9, "AU2": 0.9, "AU5": 0.8, "AU27": 0.75}),
)

LABEL_NAMES: tuple[str, ...] = tuple(label.name for label in LABELS)
_BY_NAME = {label.name: label for label in LABELS}


def get_label(name: str) -> Label:
    """The label called ``name``; an unknown name raises an error that lists the valid ones."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise Face4DError(f"unknown label {name!r}; valid labels: {', '.join(LABEL_NAMES)}") from None


def label_index(name: str) -> int:
    """Class index of a label, in the order of ``LABEL_NAMES``."""
    get_label(name)
    return LABEL_NAMES.index(name)
