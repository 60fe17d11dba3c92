"""A thin-plate-spline warp of an image from its landmarks to target landmarks, in torch and batched.

CCFExp can take the identity image already warped to the target landmarks as extra input channels
(``CCFExpConfig.warp_input``): the network then starts from the person's own pixels in the right
place and learns what a warp cannot give (the mouth's interior, the far cheek of a turned head,
shading), which a small model trained on a CPU budget does not learn from cross-attention alone. The
evaluation's non-learned baseline is a different warp (scikit-image's piecewise-affine one, in
``metrics.warp_baseline``); this one is smooth, differentiable and runs on the model's device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BORDER = 4
"""Anchors per image side (corners included) that keep the border in place."""


def _border(size: int, like: torch.Tensor) -> torch.Tensor:
    edge = torch.linspace(0, size, BORDER, dtype=like.dtype, device=like.device)
    inner = edge[1:-1]
    zero, full = torch.zeros_like(edge), torch.full_like(edge, float(size))
    points = torch.cat([torch.stack([edge, zero], 1), torch.stack([edge, full], 1),
                        torch.stack([zero[1:-1], inner], 1), torch.stack([full[1:-1], inner], 1)])
    return points.expand(len(like), -1, -1)


def _kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The TPS radial basis U(r) = r² log r² between point sets (B, N, 2) and (B, M, 2)."""
    d2 = torch.cdist(a, b).square()
    return d2 * torch.log(d2.clamp_min(1e-12))


def tps_warp(image: torch.Tensor, landmarks: torch.Tensor, target_landmarks: torch.Tensor,
             regularization: float = 1e-3) -> torch.Tensor:
    """``image`` (B, C, S, S) with pixel ``landmarks`` (B, K, 2) warped so that they land on
    ``target_landmarks`` (B, K, 2); the border stays put. The spline maps target positions back to
    image positions (a backward warp, sampled bilinearly); ``regularization`` smooths it and keeps the
    system solvable when target points coincide (a closed mouth's inner lips)."""
    size = image.shape[-1]
    dtype = torch.float64  # the spline system is small; double precision keeps it well conditioned
    src = torch.cat([target_landmarks, _border(size, target_landmarks)], 1).to(dtype) / size
    dst = torch.cat([landmarks, _border(size, landmarks)], 1).to(dtype) / size
    b, n = src.shape[:2]
    ones = torch.ones(b, n, 1, dtype=dtype, device=src.device)
    p = torch.cat([ones, src], 2)
    system = torch.zeros(b, n + 3, n + 3, dtype=dtype, device=src.device)
    system[:, :n, :n] = _kernel(src, src) + regularization * torch.eye(n, dtype=dtype, device=src.device)
    system[:, :n, n:] = p
    system[:, n:, :n] = p.transpose(1, 2)
    rhs = torch.cat([dst, torch.zeros(b, 3, 2, dtype=dtype, device=src.device)], 1)
    coef = torch.linalg.solve(system, rhs)  # (B, n + 3, 2): kernel weights, then the affine part
    centres = (torch.arange(size, dtype=dtype, device=src.device) + 0.5) / size
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(1, -1, 2).expand(b, -1, -1)
    basis = torch.cat([_kernel(grid, src), torch.ones(b, grid.shape[1], 1, dtype=dtype, device=src.device), grid], 2)
    where = (basis @ coef).reshape(b, size, size, 2) * 2 - 1  # grid_sample's [-1, 1], pixel centres at +0.5
    return F.grid_sample(image, where.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)
