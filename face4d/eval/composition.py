"""Which expressions a motion mixes: its landmark displacement as a non-negative mix of prototypes.

Compositional text prompts ("disgust high smile") must give expressions that mix their parts. A
*prototype* is a landmark displacement (68, 3): every label of the dataset is a recipe of action
units on the head model (``face4d.data.labels``), so each has an exact one on the mean face (its
variants averaged, at full intensity; ``label_prototypes``), and a prompt has the mean motion of
its samples. A motion from a neutral frame is fitted by non-negative least squares as a sum of
prototypes plus a free rigid motion (three translations and three small rotations about the
neutral face's centre: heads move in the data and in samples); each prototype's *share* is its
weight times its norm over the sum of those, the part of the motion it explains. One prototype
alone gets a share of 1; a blend of two splits the shares by how much motion each part brings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from face4d.data.interchange import NUM_LANDMARKS
from face4d.data.labels import LABEL_NAMES, get_label
from face4d.data.synth import recipe_weights
from face4d.errors import Face4DError
from meshops.head import HeadModel


def label_prototypes(head: HeadModel | None = None) -> dict[str, np.ndarray]:
    """Each label's landmark displacement (68, 3) on the mean face, its variants averaged, in
    ``LABEL_NAMES`` order. ``head`` defaults to ``HeadModel.load()``."""
    head = HeadModel.load() if head is None else head
    rest = head.landmarks()
    return {name: np.mean([head.landmarks(expression_weights=recipe_weights(head, variant)) - rest
                           for variant in get_label(name).variants], axis=0) for name in LABEL_NAMES}


@dataclass(frozen=True)
class Mixture:
    """``shares``: prototype name -> share of the fitted motion (they sum to 1), largest first;
    ``residual``: the norm of what the fit leaves over the norm of the motion (rigid motion removed)."""

    shares: dict[str, float]
    residual: float

    def top(self, count: int = 3) -> str:
        """The ``count`` largest shares, e.g. ``"high_smile 0.52, disgust 0.31, lips_up 0.08"``."""
        return ", ".join(f"{name} {share:.2f}" for name, share in list(self.shares.items())[:count])


def mixture(neutral: np.ndarray, expression: np.ndarray, prototypes: Mapping[str, np.ndarray]) -> Mixture:
    """The mix of ``prototypes`` (name -> (68, 3) displacement, e.g. ``label_prototypes()``) that
    best explains the motion from ``neutral`` to ``expression`` (both (68, 3), centimetres), with
    non-negative weights and a free rigid motion."""
    neutral, expression = (np.asarray(a, np.float64) for a in (neutral, expression))
    if neutral.shape != (NUM_LANDMARKS, 3) or expression.shape != (NUM_LANDMARKS, 3):
        raise Face4DError(f"a neutral and an expression of shape ({NUM_LANDMARKS}, 3) are needed, "
                          f"got {neutral.shape} and {expression.shape}")
    if not prototypes:
        raise Face4DError("no prototypes to decompose on")
    names = list(prototypes)
    basis = np.stack([np.asarray(prototypes[name], np.float64).reshape(-1) for name in names])
    centred = neutral - neutral.mean(0)
    rigid = np.stack([np.broadcast_to(axis, centred.shape) for axis in np.eye(3)]
                     + [np.cross(axis, centred) for axis in np.eye(3)]).reshape(6, -1)
    columns = np.concatenate([basis, rigid, -rigid]).T
    displacement = (expression - neutral).ravel()
    weights, _ = nnls(columns, displacement, maxiter=50 * columns.shape[1])
    motion = displacement - columns[:, len(names):] @ weights[len(names):]
    fitted = basis.T @ weights[:len(names)]
    residual = float(np.linalg.norm(motion - fitted) / max(np.linalg.norm(motion), 1e-12))
    amounts = weights[:len(names)] * np.linalg.norm(basis, axis=1)
    shares = amounts / amounts.sum() if amounts.sum() > 0 else amounts
    order = np.argsort(-shares, kind="stable")
    return Mixture({names[i]: float(shares[i]) for i in order}, residual)
