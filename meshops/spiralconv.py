"""The spiral convolution of the mesh decoder (``face4d.decoder.model``), with its fixed sparse operators.

Vertex data is laid out (V, C, N): vertices, channels, then the N meshes or frames of a batch. A
sparse matrix over the vertices then applies to all of them as one (V, C * N) product, and a spiral
layer's weights as one batched product over the vertices, with no transposes in between (a
transpose of the small channel and spiral axes costs more than the arithmetic). Sparse products use
CSR matrices with their transposes precomputed for the backward pass (torch's own backward of a
sparse product transposes the matrix on every call).

Kept apart from ``meshops.spiral`` and ``meshops.hierarchy`` so that those stay free of torch.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn


def sparse_to_torch(matrix: sp.spmatrix | sp.sparray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A scipy sparse matrix as a coalesced torch sparse COO tensor of the same shape."""
    coo = sp.coo_matrix(matrix)
    indices = torch.from_numpy(np.stack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data).to(dtype)
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()


class _SparseMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transposed: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        ctx.transposed = transposed
        return matrix @ dense

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, None, ctx.transposed @ grad


def _csr(matrix: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        return sparse_to_torch(coo).to_sparse_csr()


class SparseOperator(nn.Module):
    """A fixed sparse matrix (V_out, V_in) applied to vertex-major data (V_in, ...) -> (V_out, ...)."""

    def __init__(self, matrix: sp.spmatrix):
        super().__init__()
        self.shape = matrix.shape
        # Not persistent: rebuilt from the topology, like the spirals.
        self.register_buffer("matrix", _csr(matrix), persistent=False)
        self.register_buffer("transposed", _csr(sp.csr_matrix(matrix).T), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.shape[1]:
            raise ValueError(f"matrix of shape {self.shape} does not apply to {x.shape[0]} vertices")
        rest = x.shape[1:]
        out = _SparseMM.apply(self.matrix, self.transposed, x.reshape(self.shape[1], -1))
        return out.view(self.shape[0], *rest)

    def extra_repr(self) -> str:
        return f"{self.shape[1]} -> {self.shape[0]} vertices"


def spiral_matrix(spirals: np.ndarray, up: sp.spmatrix | None = None) -> sp.csr_matrix:
    """``A`` (V, L * V_in) with ``A[v, u * L + l] = up[spirals[v, l], u]`` (``up`` the identity when
    None): an unpooling followed by a spiral's gather, as one matrix (see ``SpiralConv``)."""
    num, length = spirals.shape
    up = sp.identity(num, format="csr") if up is None else sp.csr_matrix(up)
    rows, cols, vals = [], [], []
    for l in range(length):
        block = up[spirals[:, l]].tocoo()
        rows.append(block.row)
        cols.append(block.col.astype(np.int64) * length + l)
        vals.append(block.data)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(num, up.shape[1] * length))


class SpiralConv(nn.Module):
    """Spiral convolution (Neural3DMM / SpiralNet++) of data laid out (V_in, C_in, N) -> (V, C_out, N),
    optionally of its unpooling ``up`` (V, V_in): one linear map over each vertex's spiral.

    ``spirals`` (V, L), from ``meshops.spiral``, lists each vertex's spiral. Output vertex ``v`` is
    ``linear(concat(x[spirals[v, 0]], ..., x[spirals[v, L - 1]]))``, flattened spiral-position-major:
    input channel ``c`` of spiral position ``l`` meets weight column ``l * in_channels + c``. A fixed
    spiral order makes this an anisotropic filter shared by all vertices, like an image kernel. The
    spirals are not in the state dict: they are a function of the topology, rebuilt from its cache.

    Without ``up``, the spirals are gathered, ``(V, L * C_in, N)``, and multiplied by the weights
    (one batched product over the vertices). With ``up``, the layer computes
    ``A @ stack_l(W_l x)`` with ``A = spiral_matrix(spirals, up)`` and ``W_l`` the weight block of
    spiral position ``l``: the multiply-adds of the weights happen at the input's resolution (a
    quarter of the output's after a 4x unpooling) and the unpooling, gather and sum over the spiral
    are one sparse product, so nothing is computed at the output's resolution but that product.
    """

    def __init__(self, in_channels: int, out_channels: int, spirals: np.ndarray, up: sp.spmatrix | None = None):
        super().__init__()
        spirals = np.asarray(spirals)
        if spirals.ndim != 2:
            raise ValueError(f"spirals must have shape (V, L), got {spirals.shape}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_vertices, self.spiral_length = spirals.shape
        self.num_inputs = self.num_vertices if up is None else up.shape[1]
        if up is None:
            self.op = None
            self.register_buffer("indices", torch.from_numpy(spirals.reshape(-1).astype(np.int64)), persistent=False)
        else:
            self.op = SparseOperator(spiral_matrix(spirals, up))
        self.linear = nn.Linear(in_channels * self.spiral_length, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, c, n = x.shape
        if v != self.num_inputs or c != self.in_channels:
            raise ValueError(f"expected ({self.num_inputs}, {self.in_channels}, N), got {tuple(x.shape)}")
        length, out = self.spiral_length, self.out_channels
        if self.op is None:
            gathered = x.index_select(0, self.indices).view(v, length * c, n)  # (l, c) order, as linear.weight
            return torch.bmm(self.linear.weight.expand(v, -1, -1), gathered) + self.linear.bias[:, None]
        # linear.weight (out, L * in), spiral-position-major -> (L * out, in), row l * out + o
        w = self.linear.weight.view(out, length, c).transpose(0, 1).reshape(length * out, c)
        y = torch.bmm(w.expand(v, -1, -1), x).view(v * length, out * n)  # row u * L + l, column (o, n)
        return self.op(y).view(self.num_vertices, out, n) + self.linear.bias[:, None]

    def extra_repr(self) -> str:
        up = "" if self.num_inputs == self.num_vertices else f", unpooled from {self.num_inputs}"
        return (f"{self.in_channels}, {self.out_channels}, vertices={self.num_vertices}, "
                f"spiral_length={self.spiral_length}{up}")
