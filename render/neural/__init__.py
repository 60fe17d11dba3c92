"""Neural face renderers on top of the landmark animation: image diffusion models that draw a person.

- ``data``: portrait shard folders (the data contract of issue 17) as dicts and torch Datasets, and
  landmark rasterisation for conditioning;
- ``ccfexp_model`` / ``ccfexp_training``: CCFExp (Gao & Xia), an identity image plus target
  landmarks gives that person with that expression;
- ``conditional_diffusion_model`` / ``conditional_diffusion_training``: label + VAE editing (Tang et
  al.), a source image plus one of the 18 labels;
- ``evaluators``: the small landmark regressor, identity encoder and expression classifier trained
  on renders, used by the losses and by ``metrics``;
- ``training``: the one training loop (accelerate, EMA, resumable, deterministic from a seed).

Needs the ``neural`` extra (diffusers, accelerate, scikit-image). Imports numpy, torch and diffusers,
never ``face4d``; ``render/__init__`` does not import this package, so previews work without it.
"""
