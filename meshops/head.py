"""The morphable head: ICT Face Model Light, shipped with the package.

A mesh is ``neutral + identity_weights @ identity_basis + expression_weights @ expression_basis``.
Weights may carry any leading batch dimensions; numpy inputs give numpy outputs and torch inputs
give torch outputs (on the inputs' device and dtype), so the same model serves data generation,
training losses and export.
"""
from __future__ import annotations

import os
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from meshops.facs import ACTION_UNITS

NUM_LANDMARKS = 68


def default_model_path() -> Path:
    """Path of the ICT head shipped as package data (its licence file lies beside it)."""
    return Path(str(resources.files("meshops") / "data" / "ict_face_light.npz"))


class HeadModel:
    """Linear identity + expression blendshape head with 68 landmark vertices."""

    def __init__(self, neutral: np.ndarray, faces: np.ndarray, identity_basis: np.ndarray,
                 expression_basis: np.ndarray, expression_names: list[str], landmark_ids: np.ndarray,
                 regions: dict[str, tuple[int, int]]):
        self.neutral = np.ascontiguousarray(neutral, np.float32)
        self.faces = np.ascontiguousarray(faces, np.int64)
        self.identity_basis = np.ascontiguousarray(identity_basis, np.float32)
        self.expression_basis = np.ascontiguousarray(expression_basis, np.float32)
        self.expression_names = tuple(str(n) for n in expression_names)
        self.landmark_ids = np.ascontiguousarray(landmark_ids, np.int64)
        self.regions = {str(k): (int(a), int(b)) for k, (a, b) in regions.items()}
        self._index = {n: i for i, n in enumerate(self.expression_names)}
        self._torch_cache: dict[tuple, Any] = {}
        if self.landmark_ids.shape != (NUM_LANDMARKS,):
            raise ValueError(f"expected {NUM_LANDMARKS} landmark ids, got shape {self.landmark_ids.shape}")

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "HeadModel":
        """Load a head in the ``ict_face_light.npz`` layout; the shipped one by default."""
        path = Path(path) if path is not None else default_model_path()
        with np.load(path, allow_pickle=False) as d:
            regions = {str(n): tuple(r) for n, r in zip(d["region_names"], d["region_ranges"])}
            return cls(d["neutral"], d["faces"], d["identity_basis"], d["expression_basis"],
                       list(d["expression_names"]), d["landmarks68"], regions)

    # -- sizes and names ------------------------------------------------------------------------
    @property
    def num_vertices(self) -> int:
        return len(self.neutral)

    @property
    def num_identity(self) -> int:
        return len(self.identity_basis)

    @property
    def num_expressions(self) -> int:
        return len(self.expression_basis)

    def blendshape_index(self, name: str) -> int:
        """Index of a blendshape by its ARKit name (``"jawOpen"``)."""
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"unknown blendshape {name!r}; known: {', '.join(self.expression_names)}") from None

    def blendshape_indices(self, names: list[str] | tuple[str, ...]) -> np.ndarray:
        return np.array([self.blendshape_index(n) for n in names], np.int64)

    @staticmethod
    def au_blendshapes(au: str) -> tuple[str, ...]:
        """Blendshape names of a FACS action unit (``"AU12"`` -> both smile shapes)."""
        try:
            return ACTION_UNITS[au]
        except KeyError:
            raise KeyError(f"unknown action unit {au!r}; known: {', '.join(ACTION_UNITS)}") from None

    def region_ids(self, name: str) -> np.ndarray:
        """Vertex ids of a region (``face``, ``head_neck``, ``eyeball_left``, ``eyeball_right``)."""
        if name not in self.regions:
            raise KeyError(f"unknown region {name!r}; known: {', '.join(self.regions)}")
        a, b = self.regions[name]
        return np.arange(a, b)

    # -- building meshes ------------------------------------------------------------------------
    @cached_property
    def landmark_neutral(self) -> np.ndarray:
        return self.neutral[self.landmark_ids]

    @cached_property
    def landmark_identity_basis(self) -> np.ndarray:
        return np.ascontiguousarray(self.identity_basis[:, self.landmark_ids])

    @cached_property
    def landmark_expression_basis(self) -> np.ndarray:
        return np.ascontiguousarray(self.expression_basis[:, self.landmark_ids])

    @cached_property
    def neck_pivot(self) -> np.ndarray:
        """Point the head turns about under rigid motion: the centre of the neck's lowest vertices
        (of the mean face), so that a small pose nods the head on its neck."""
        neck = self.neutral[self.region_ids("head_neck")]
        low = neck[neck[:, 1] <= np.quantile(neck[:, 1], 0.05)]
        return low.mean(0).astype(np.float32)

    def vertices(self, identity_weights=None, expression_weights=None):
        """Mesh vertices, shape ``(*batch, V, 3)``; missing weights mean zero (the neutral head)."""
        return self._blend(self.neutral, self.identity_basis, self.expression_basis,
                           identity_weights, expression_weights, "full")

    def landmarks(self, identity_weights=None, expression_weights=None):
        """The 68 landmarks, shape ``(*batch, 68, 3)``: the same as ``vertices(...)[..., landmark_ids, :]``
        but computed from the landmark rows alone, which is what makes dataset building fast."""
        return self._blend(self.landmark_neutral, self.landmark_identity_basis, self.landmark_expression_basis,
                           identity_weights, expression_weights, "landmarks")

    def _blend(self, neutral, id_basis, ex_basis, id_w, ex_w, key):
        like = id_w if id_w is not None else ex_w
        if like is not None and not isinstance(like, np.ndarray) and _is_torch(like):
            neutral, id_basis, ex_basis = self._torch_arrays(key, (neutral, id_basis, ex_basis), like)
            lib_reshape = lambda x, s: x.reshape(s)  # noqa: E731
        else:
            id_w = None if id_w is None else np.asarray(id_w, np.float32)
            ex_w = None if ex_w is None else np.asarray(ex_w, np.float32)
            lib_reshape = np.reshape
        out = neutral
        for w, basis, name in ((id_w, id_basis, "identity"), (ex_w, ex_basis, "expression")):
            if w is None:
                continue
            if w.shape[-1] != basis.shape[0]:
                raise ValueError(f"{name} weights have {w.shape[-1]} entries, the head model has {basis.shape[0]}")
            offset = w.reshape(-1, w.shape[-1]) @ basis.reshape(basis.shape[0], -1)
            out = out + lib_reshape(offset, (*w.shape[:-1], *basis.shape[1:]))
        if out is neutral:
            return neutral.copy()
        return out

    def _torch_arrays(self, key, arrays, like):
        cache_key = (key, like.device, like.dtype)
        if cache_key not in self._torch_cache:
            import torch
            self._torch_cache[cache_key] = tuple(torch.as_tensor(a).to(like.device, like.dtype) for a in arrays)
        return self._torch_cache[cache_key]


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")
