"""face4d: 4D facial animation from a diffusion model over 3D landmark sequences.

The package in layers, each using only the ones before it (``meshops`` and ``render`` come before
all of them; ``tests/test_layering.py`` checks the rules that matter most):

1. ``face4d.errors``, ``face4d.jsonfile``, ``face4d.text``, ``face4d.settings``, ``face4d.threads``:
   the one-line error type, JSON files, text encoders, the sampling settings and the command line's
   choices (no torch, so ``face4d --help`` loads none), torch's thread control.
2. ``face4d.data`` (the interchange format ``LandmarkSequences``, labels, datasets, loaders) and
   ``face4d.landmarks`` (checking and reading user landmarks).
3. ``face4d.diffusion`` (the DDPM math) and the networks: ``face4d.models`` (with their shared
   layers) and the mesh decoders of ``face4d.decoder.model``.
4. ``face4d.checkpoint``: model directories, the registry of model kinds, bundles (``bundle.json``:
   the diffusion and normaliser their members share), the default bundle.
5. ``face4d.guidance``, ``face4d.filling``, ``face4d.generate`` (Alg. 1-4: ``LandmarkGenerator``)
   and ``face4d.training`` (the trainer and every loss).
6. the rest of ``face4d.decoder``: landmarks -> meshes (retargeting, the blendshape path, the RBF
   fallback, the target mesh, the decoder's training and evaluation), and ``face4d.flame`` (a
   user's FLAME model fitted to landmark sequences).
7. ``face4d.outputs``, ``face4d.pipeline``, ``face4d.demo``: condition -> meshes -> exports -> preview.
8. ``face4d.commands``, ``face4d.cli``: the command line.
9. ``face4d.eval``: the paper's evaluation (``scripts/eval_*.py``); no other layer imports it.
"""
from face4d.errors import Face4DError

__version__ = "0.1.0"
__all__ = ["Face4DError", "__version__"]
