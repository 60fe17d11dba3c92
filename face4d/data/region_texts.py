"""Texts of the eye and mouth regions for local expression editing (``render.neural.local_expression_*``):
two short descriptions per label and region, written from each label's recipe (``face4d.data.labels``),
and their sentence embeddings.

A label that moves only the mouth (``mouth_open``) has neutral eyes, and one that moves only the brows
(``eyebrow``) a neutral mouth, so each region's crop is described by what that region shows. Neutral
images (label -1) use the ``neutral`` texts.

The embeddings come from ``face4d.text`` (all-MiniLM-L6-v2 by default). Those of the texts below are
also stored in ``region_texts.safetensors`` beside this module, so that training runs on machines
without the sentence encoder; a text that is not stored is encoded. ``python -m
face4d.data.region_texts`` writes the file again after the texts change.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from face4d.data.labels import LABEL_NAMES
from face4d.errors import Face4DError
from face4d.text import DEFAULT_TEXT_ENCODER, get_text_encoder

REGIONS = ("eyes", "mouth")
NEUTRAL = "neutral"
CACHE = Path(__file__).with_name("region_texts.safetensors")

_EYES = ("relaxed neutral eyes", "calm eyes under resting brows")
_MOUTH = ("a relaxed closed mouth", "neutral lips at rest")
REGION_TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    NEUTRAL: {"eyes": _EYES, "mouth": _MOUTH},
    "bareteeth": {"eyes": _EYES, "mouth": ("bared teeth", "lips pulled apart showing the teeth")},
    "cheeks_in": {"eyes": _EYES, "mouth": ("cheeks sucked in", "hollow cheeks and pursed lips")},
    "eyebrow": {"eyes": ("raised or lowered eyebrows", "moving eyebrows above the eyes"), "mouth": _MOUTH},
    "high_smile": {"eyes": ("smiling eyes with raised cheeks", "squinting happy eyes"),
                   "mouth": ("a high smile", "a broad smile with parted lips")},
    "lips_back": {"eyes": _EYES, "mouth": ("lips pulled back", "lips stretched tight and thin")},
    "lips_up": {"eyes": _EYES, "mouth": ("the upper lip raised", "a raised upper lip")},
    "mouth_down": {"eyes": _EYES, "mouth": ("mouth corners pulled down", "a downturned mouth")},
    "mouth_extreme": {"eyes": _EYES, "mouth": ("an extremely stretched open mouth", "a wide open stretched mouth")},
    "mouth_middle": {"eyes": _EYES, "mouth": ("lips pushed forward", "pouting lips")},
    "mouth_open": {"eyes": _EYES, "mouth": ("an open mouth", "the jaw dropped open")},
    "mouth_side": {"eyes": _EYES, "mouth": ("the mouth pulled to one side", "a sideways mouth")},
    "mouth_up": {"eyes": _EYES, "mouth": ("the chin and lips pushed up", "pressed lips under a raised chin")},
    "anger": {"eyes": ("angry eyes under lowered brows", "a glaring frown"),
              "mouth": ("angry pressed lips", "tightly pressed lips")},
    "disgust": {"eyes": ("narrowed eyes over a wrinkled nose", "disgusted eyes"),
                "mouth": ("a disgusted mouth", "the upper lip curled in disgust")},
    "fear": {"eyes": ("wide fearful eyes", "raised tense brows over wide eyes"),
             "mouth": ("a fearful stretched mouth", "lips stretched in fear")},
    "happiness": {"eyes": ("happy smiling eyes", "cheeks raised under the eyes"),
                  "mouth": ("a happy smile", "a smiling mouth")},
    "sadness": {"eyes": ("sad eyes with raised inner brows", "sad eyes"),
                "mouth": ("a sad mouth", "mouth corners turned down in sadness")},
    "surprise": {"eyes": ("wide surprised eyes with raised brows", "surprised eyes"),
                 "mouth": ("a surprised open mouth", "the jaw dropped in surprise")},
}


def all_texts() -> list[str]:
    """Every distinct region text, in a fixed order."""
    return list(dict.fromkeys(t for label in REGION_TEXTS.values() for texts in label.values() for t in texts))


def _cached(encoder: str) -> dict[str, torch.Tensor]:
    if encoder != DEFAULT_TEXT_ENCODER or not CACHE.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(CACHE), "pt") as f:
        meta = f.metadata()
        if meta.get("encoder") != encoder:
            return {}
        vectors = f.get_tensor("embeddings")
    return dict(zip(json.loads(meta["texts"]), vectors))


def embed(texts: Sequence[str], encoder: str = DEFAULT_TEXT_ENCODER) -> torch.Tensor:
    """(N, dim) embeddings of ``texts``: stored ones from the cache, the others from ``encoder``."""
    cached = _cached(encoder)
    missing = [t for t in texts if t.strip() not in cached]
    if missing:
        fresh = dict(zip(missing, get_text_encoder(encoder).encode(missing)))
    return torch.stack([cached[t.strip()] if t.strip() in cached else fresh[t] for t in texts])


def text_table(labels: Sequence[str], encoder: str = DEFAULT_TEXT_ENCODER) -> torch.Tensor:
    """(labels + 1, regions, 2, dim) embeddings: row 0 the neutral texts, row k + 1 those of ``labels[k]``
    (a portrait manifest's labels), the table ``render.neural.local_expression_training`` takes."""
    unknown = [label for label in labels if label not in REGION_TEXTS]
    if unknown:
        raise Face4DError(f"no region texts for labels {unknown}; known: {', '.join(LABEL_NAMES)}")
    rows = [NEUTRAL, *labels]
    texts = [t for label in rows for region in REGIONS for t in REGION_TEXTS[label][region]]
    return embed(texts, encoder).view(len(rows), len(REGIONS), 2, -1)


def write_cache() -> Path:
    """Encode every region text with the default encoder into ``CACHE`` (atomically)."""
    from safetensors.torch import save_file

    from meshops.atomic import atomic_file

    texts = all_texts()
    vectors = get_text_encoder(DEFAULT_TEXT_ENCODER).encode(texts).contiguous()
    with atomic_file(CACHE, overwrite=True) as tmp:
        save_file({"embeddings": vectors}, str(tmp),
                  metadata={"encoder": DEFAULT_TEXT_ENCODER, "texts": json.dumps(texts)})
    return CACHE


if __name__ == "__main__":
    print(f"wrote {write_cache()}")
