"""Torch layers for spiral-convolution mesh autoencoders: SpiralConv and sparse pooling.

Vertex data is laid out ``(..., V, C)``: any leading batch dimensions, then vertices, then
channels, the layout of ``HeadModel`` meshes. Kept apart from ``meshops.spiral`` and
``meshops.hierarchy`` so that those stay free of torch.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


class SpiralConv(nn.Module):
    """Spiral convolution (Neural3DMM / SpiralNet++): one linear map over each vertex's spiral.

    ``indices`` (V, L), from ``meshops.spiral``, lists each vertex's spiral. Output vertex ``v`` is
    ``linear(concat(x[..., indices[v, 0], :], ..., x[..., indices[v, L - 1], :]))``: the
    gathered ``(L, C)`` block is flattened spiral-position-major, so input channel ``c`` of spiral
    position ``l`` meets weight column ``l * in_channels + c``. A fixed spiral order makes this an
    anisotropic filter that is shared by all vertices, like an image convolution's kernel.
    """

    def __init__(self, in_channels: int, out_channels: int, indices: torch.Tensor):
        super().__init__()
        if indices.ndim != 2:
            raise ValueError(f"indices must have shape (V, L), got {tuple(indices.shape)}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_vertices, self.spiral_length = indices.shape
        # Not persistent: the spiral is a function of the mesh topology, rebuilt from its cache,
        # not a learned parameter; checkpoints then carry only the weights.
        self.register_buffer("indices", indices.long().reshape(-1), persistent=False)
        self.linear = nn.Linear(in_channels * self.spiral_length, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., V, in_channels)`` -> ``(..., V, out_channels)``."""
        *batch, v, c = x.shape
        if v != self.num_vertices or c != self.in_channels:
            raise ValueError(f"expected (..., {self.num_vertices}, {self.in_channels}), got {tuple(x.shape)}")
        gathered = x.index_select(-2, self.indices).reshape(*batch, v, self.spiral_length * c)
        return self.linear(gathered)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, vertices={self.num_vertices}, "
                f"spiral_length={self.spiral_length}")


def sparse_to_torch(matrix: sp.spmatrix | sp.sparray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced torch sparse COO tensor of the same shape."""
    coo = sp.coo_matrix(matrix)
    indices = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data).to(dtype)
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()


def pool(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply a sparse ``(V_out, V_in)`` matrix to vertex data ``(..., V_in, C)`` -> ``(..., V_out, C)``.

    The batch is folded into the columns, ``(V_in, B * C)``, so that one ``torch.sparse.mm``
    serves the whole batch instead of a Python loop over it. The matrix is cast to ``x``'s dtype.
    """
    *batch, v, c = x.shape
    if matrix.ndim != 2 or matrix.shape[1] != v:
        raise ValueError(f"matrix of shape {tuple(matrix.shape)} does not apply to {v} vertices")
    columns = x.reshape(-1, v, c).transpose(0, 1).reshape(v, -1)
    out = torch.sparse.mm(matrix.to(x.dtype), columns)
    return out.reshape(matrix.shape[0], -1, c).transpose(0, 1).reshape(*batch, matrix.shape[0], c)


class Pool(nn.Module):
    """``pool`` with its matrix (a down- or up-sampling matrix of a ``MeshHierarchy``) held as a buffer,
    so that it follows the module's ``.to(device)``; not persistent, for the same reason as spirals."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.register_buffer("matrix", matrix.coalesce(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool(x, self.matrix)

    def extra_repr(self) -> str:
        return f"{self.matrix.shape[1]} -> {self.matrix.shape[0]} vertices"
