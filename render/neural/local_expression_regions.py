"""The eye and mouth regions of local expression diffusion (Chen et al., Sec. 3.1): boxes placed from the
68 landmarks by the paper's Eqs. 1-4, crops resized to the model's size, paste-back into the full image
(feathered, or hard for comparison) and the seam score that compares the two.

Eqs. 1-4 put a box from ``a1 - m`` to ``a2 + m`` in x and ``a1.y ± m_y`` in y, with ``a1``/``a2`` the
right/left eye (the subject's; iBUG 36-41 / 42-47, at image left/right) for the eyes and the mouth
corners (48 / 54) for the mouth. The paper's margins are pixels of its 320² aligned crops (eyes
``m_x = m_y = 50``, mouth ``m_x = 10, m_y = 40``); here they are fractions of the distance between the
eye centres, so that one rule fits any image size: with the ~100 px eye distance of such a crop the
fractions ``0.5, 0.5`` and ``0.1, 0.4`` are the paper's pixels.

Coordinates are pixels with centres at integer + 0.5 (the portrait contract), so a box's pixels are
sampled with ``grid_sample(align_corners=False)`` and no half-pixel shift is lost either way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

REGIONS = ("eyes", "mouth")
EYE_RIGHT, EYE_LEFT = slice(36, 42), slice(42, 48)
MOUTH_RIGHT, MOUTH_LEFT = 48, 54
MARGINS = {"eyes": (0.5, 0.5), "mouth": (0.1, 0.4)}
"""(m_x, m_y) per region, in eye-centre distances (see the module docstring)."""


def anchors(landmarks: torch.Tensor, region: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's ``a1`` (image left) and ``a2`` (image right) points (..., 2) of a region."""
    if region == "eyes":
        return landmarks[..., EYE_RIGHT, :].mean(-2), landmarks[..., EYE_LEFT, :].mean(-2)
    if region == "mouth":
        return landmarks[..., MOUTH_RIGHT, :], landmarks[..., MOUTH_LEFT, :]
    raise ValueError(f"unknown region {region!r}; regions: {', '.join(REGIONS)}")


def boxes(landmarks: torch.Tensor, region: str, margins: tuple[float, float] | None = None) -> torch.Tensor:
    """(..., 4) boxes ``[x, y, w, h]`` (top-left corner, size; pixels) of ``region`` from (..., 68, 2)
    landmarks, by Eqs. 1-4 with margins in eye-centre distances (default ``MARGINS[region]``)."""
    a1, a2 = anchors(landmarks, region)
    left, right = anchors(landmarks, "eyes")
    scale = (right - left).norm(dim=-1)
    mx, my = (margins or MARGINS[region])
    mx, my = mx * scale, my * scale
    x = a1[..., 0] - mx  # Eq. 1
    y = a1[..., 1] - my  # Eq. 2
    w = (a2[..., 0] + mx) - (a1[..., 0] - mx)  # Eq. 3
    h = (a1[..., 1] + my) - (a1[..., 1] - my)  # Eq. 4
    return torch.stack([x, y, w, h], dim=-1)


def _grid(box: torch.Tensor, size: tuple[int, int], extent: tuple[int, int]) -> torch.Tensor:
    """Normalised sampling grid (B, h, w, 2) of ``size`` (h, w) output pixels spread over ``box`` in an
    image of ``extent`` (H, W) pixels."""
    h, w = size
    steps_y = (torch.arange(h, device=box.device, dtype=box.dtype) + 0.5) / h
    steps_x = (torch.arange(w, device=box.device, dtype=box.dtype) + 0.5) / w
    xs = box[:, 0, None] + steps_x[None] * box[:, 2, None]  # (B, w) pixel positions
    ys = box[:, 1, None] + steps_y[None] * box[:, 3, None]
    u = (2 * xs / extent[1] - 1)[:, None, :].expand(-1, h, -1)
    v = (2 * ys / extent[0] - 1)[:, :, None].expand(-1, -1, w)
    return torch.stack([u, v], dim=-1)


def crop(images: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, size, size) crops of (B, C, H, W) ``images`` over ``box`` (B, 4), bilinear. A box much
    larger than ``size`` is read from an area-averaged copy of the image, so that a crop of a large
    photograph is not aliased."""
    factor = int((box[:, 2:].min() / size).floor().clamp(min=1).item()) if len(box) else 1
    if factor > 1:
        images, box = F.avg_pool2d(images, factor, ceil_mode=True), box / factor
    grid = _grid(box, (size, size), images.shape[-2:])
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def paste_mask(box: torch.Tensor, extent: tuple[int, int], feather: float) -> torch.Tensor:
    """(B, 1, H, W) weights of a pasted crop: 1 inside ``box``, 0 outside; ``feather`` > 0 ramps them
    smoothly (smoothstep) to 0 over that fraction of the box's shorter side inside its border, so the
    crop fades into the image instead of meeting it at a step."""
    H, W = extent
    ys = torch.arange(H, device=box.device, dtype=box.dtype) + 0.5
    xs = torch.arange(W, device=box.device, dtype=box.dtype) + 0.5
    dx = torch.minimum(xs[None] - box[:, 0, None], box[:, 0, None] + box[:, 2, None] - xs[None])  # (B, W)
    dy = torch.minimum(ys[None] - box[:, 1, None], box[:, 1, None] + box[:, 3, None] - ys[None])  # (B, H)
    inside = torch.minimum(dy[:, :, None], dx[:, None, :])  # (B, H, W): distance to the nearest border
    if feather <= 0:
        return (inside > 0).to(box.dtype)[:, None]
    ramp = (inside / (feather * box[:, 2:].min(-1).values)[:, None, None]).clamp(0, 1)
    return (ramp * ramp * (3 - 2 * ramp))[:, None]


def paste(images: torch.Tensor, crops: torch.Tensor, box: torch.Tensor, feather: float) -> torch.Tensor:
    """``images`` (B, C, H, W) with ``crops`` (B, C, s, s) resized back into ``box`` (B, 4) and blended
    by ``paste_mask`` (``feather`` 0: a hard paste)."""
    H, W = images.shape[-2:]
    s = crops.shape[-1]
    # the inverse of crop's map: full-image pixel centres -> positions in the crop
    inverse = torch.stack([-box[:, 0] * s / box[:, 2], -box[:, 1] * s / box[:, 3],
                           W * s / box[:, 2], H * s / box[:, 3]], dim=-1)
    back = F.grid_sample(crops, _grid(inverse, (H, W), (s, s)), mode="bilinear", padding_mode="border",
                         align_corners=False)
    mask = paste_mask(box, (H, W), feather)
    return images * (1 - mask) + back * mask


def seam_score(edited: torch.Tensor, source: torch.Tensor, box: torch.Tensor, band: float = 0.2) -> torch.Tensor:
    """(B,) gradient jump across a pasted border: the RMS of the finite differences of ``edited -
    source`` (images in [-1, 1], reported in 0..255 levels per pixel) over the pixels within ``band``
    of the box's shorter side of its border, on both sides. Outside the box the difference is 0, so a
    hard paste shows its whole step there and a feathered one spreads it over the ramp."""
    delta = (edited - source) * 127.5
    gx = F.pad(delta[..., :, 1:] - delta[..., :, :-1], (0, 1))
    gy = F.pad(delta[..., 1:, :] - delta[..., :-1, :], (0, 0, 0, 1))
    energy = (gx**2 + gy**2).sum(1)  # (B, H, W)
    width = band * box[:, 2:].min(-1).values
    outer = paste_mask(torch.cat([box[:, :2] - width[:, None], box[:, 2:] + 2 * width[:, None]], -1),
                       delta.shape[-2:], 0)
    inner = paste_mask(torch.cat([box[:, :2] + width[:, None], box[:, 2:] - 2 * width[:, None]], -1),
                       delta.shape[-2:], 0)
    ring = (outer - inner)[:, 0]
    return ((energy * ring).sum((-2, -1)) / ring.sum((-2, -1)).clamp(min=1)).sqrt()
