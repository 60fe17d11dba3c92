"""Landmark-guided mesh decoding (§3.3): landmark sequences -> mesh sequences on a neutral mesh.

* ``face4d.decoder.model``: the paper's spiral encoder-decoder with cross-attention
  (``SpiralDecoder``; variants without attention and S2D-like) and the MLP baseline;
* ``face4d.decoder.rbf``: the non-learned RBF baseline, ``rbf_retarget``, for any topology;
* ``face4d.decoder.training``: ``train_decoder`` (``face4d train decoder``);
* ``face4d.decoder.retarget``: ``retarget``, ``load_decoder`` (``face4d retarget``);
* ``face4d.decoder.evaluate``: Table 5 (``scripts/eval_decoder.py``).

Names load on first use, so that ``import face4d.decoder`` does not import torch.
"""
from importlib import import_module

_EXPORTS = {
    "DecoderTopology": "face4d.decoder.topology",
    "SpiralDecoder": "face4d.decoder.model", "SpiralDecoderConfig": "face4d.decoder.model",
    "MLPDecoder": "face4d.decoder.model", "MLPDecoderConfig": "face4d.decoder.model",
    "make_config": "face4d.decoder.model", "build_decoder": "face4d.decoder.model",
    "rbf_retarget": "face4d.decoder.rbf", "rbf_displacements": "face4d.decoder.rbf",
    "DecoderTrainConfig": "face4d.decoder.training", "train_decoder": "face4d.decoder.training",
    "retarget": "face4d.decoder.retarget", "retarget_files": "face4d.decoder.retarget",
    "load_decoder": "face4d.decoder.retarget", "default_decoder_dir": "face4d.decoder.retarget",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'face4d.decoder' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
