"""The noise-aware classifier ``p_phi(y | x_t, t)`` that steers label control (Sec. 3.2, Alg. 1).

A second bidirectional transformer, distinct from the denoiser: frames become tokens as there
(feature embedding + frame positional encoding + timestep embedding), and a learnable class token
is prepended, as in BERT; the logits are read from that token (the trunk, ``ClassTokenBiT``, is
shared with the text guide of ``face4d.models.text_guide``). Because label control differentiates
the classifier at *every* noise level of the reverse process, it is trained on ``x_t = q_sample(x0,
t)`` for ``t`` uniform over the whole schedule (``face4d.training.classifier_loss``), never on clean data only.

Sec. 5 uses two kinds of classifier:

* ``"I"`` (order-insensitive) predicts the expression label alone: ``num_classes`` outputs.
* ``"S"`` (order-sensitive) predicts the label *and* the sequence type, N2E or E2N (indices of
  ``face4d.data.interchange.SEQUENCE_TYPES``): ``2 * num_classes`` outputs, the joint class of
  label ``l`` and type ``s`` being ``2 * l + s`` (``target_index``).

``label_log_probs`` turns either kind's logits into ``log p(label)``, so guidance code need not
care which kind it holds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from face4d.data.interchange import SEQUENCE_TYPES
from face4d.data.labels import LABEL_NAMES
from face4d.errors import Face4DError
from face4d.models.layers import ClassTokenBiT, Pretrained, TransformerConfig, check_transformer_config

CLASSIFIER_KINDS = ("I", "S")
NUM_TYPES = len(SEQUENCE_TYPES)


@dataclass
class ClassifierConfig(TransformerConfig):
    """Hyper-parameters of ``Classifier`` (the transformer's: ``TransformerConfig``); round-trips through
    JSON with ``to_dict``/``from_dict``."""

    num_classes: int = len(LABEL_NAMES)
    kind: str = "I"

    def __post_init__(self) -> None:
        check_transformer_config(self, ("num_classes", "num_landmarks"))
        _check_kind(self.kind)

    @property
    def num_outputs(self) -> int:
        """Logits per sequence: one per label (kind I) or per (label, type) pair (kind S)."""
        return self.num_classes * (NUM_TYPES if self.kind == "S" else 1)


def _check_kind(kind: str) -> None:
    if kind not in CLASSIFIER_KINDS:
        raise Face4DError(f"unknown classifier kind {kind!r}; expected one of {CLASSIFIER_KINDS}")


def type_index(name: str) -> int:
    """Index of a sequence type name, ``"N2E"`` -> 0 and ``"E2N"`` -> 1, as kind-S targets use it."""
    if name not in SEQUENCE_TYPES:
        raise Face4DError(f"unknown sequence type {name!r}; expected one of {SEQUENCE_TYPES}")
    return SEQUENCE_TYPES.index(name)


class Classifier(Pretrained, ClassTokenBiT):
    """``p_phi``: (B, F, N, 3) noisy landmarks, (B,) training timesteps, (B, F) validity ->
    (B, num_outputs) logits, read by a linear head from the class token (``ClassTokenBiT``).

    Padded frames are excluded as attention keys, so neither their values nor their number change
    the logits: a sequence classifies the same alone or padded in a batch.
    """

    config: ClassifierConfig

    kind = "classifier"

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        config = config if config is not None else ClassifierConfig()
        super().__init__(config, config.num_outputs)


def target_index(label_idx: torch.Tensor, type_idx: torch.Tensor | None, kind: str) -> torch.Tensor:
    """The class index a ``kind`` classifier is trained to predict: the label for kind I (which
    ignores ``type_idx``, as every batch carries one), ``2 * label + type`` for kind S."""
    _check_kind(kind)
    if kind == "I":
        return label_idx.long()
    if type_idx is None:
        raise Face4DError("a type-S classifier needs the sequence type (0 = N2E, 1 = E2N) of every sample")
    type_idx = type_idx.to(label_idx.device).long()
    # Out-of-range types would silently alias the neighbouring label's classes.
    if ((type_idx < 0) | (type_idx >= NUM_TYPES)).any():
        raise Face4DError(f"sequence type indices must be in [0, {NUM_TYPES}), got {type_idx.tolist()}")
    return NUM_TYPES * label_idx.long() + type_idx


def label_log_probs(logits: torch.Tensor, kind: str, types: torch.Tensor | None = None) -> torch.Tensor:
    """Per-label log-probabilities (B, num_classes) from a ``kind`` classifier's logits (B, K).

    Kind I: ``log_softmax``. Kind S: without ``types``, the marginal ``log p(label) = logsumexp``
    over both types (guidance toward a label in either order); with ``types`` (B,), the joint
    ``log p(label, types[b])`` (guidance toward a label *and* an order). A type-I classifier cannot
    condition on the order, so ``types`` is an error there rather than silently ignored.
    """
    _check_kind(kind)
    log_probs = torch.log_softmax(logits, dim=-1)
    if kind == "I":
        if types is not None:
            raise Face4DError("a type-I classifier is order-insensitive: it cannot take sequence types")
        return log_probs
    if logits.shape[-1] % NUM_TYPES:
        raise Face4DError(f"a type-S classifier has an even number of outputs, got {logits.shape[-1]}")
    joint = log_probs.view(logits.shape[0], -1, NUM_TYPES)  # (B, num_classes, type)
    if types is None:
        return torch.logsumexp(joint, dim=-1)
    types = types.to(logits.device).long()
    if types.shape != (logits.shape[0],) or ((types < 0) | (types >= NUM_TYPES)).any():
        raise Face4DError(f"types must be (B,) indices in [0, {NUM_TYPES}), got {types.tolist()}")
    return joint.gather(2, types.view(-1, 1, 1).expand(-1, joint.shape[1], 1)).squeeze(2)
