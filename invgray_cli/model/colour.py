"""Colour-space arithmetic shared by the network, the codec and training.

Everything works in full-range BT.601 Y'CbCr on gamma-encoded sRGB values scaled to
[0, 1] (the JPEG/JFIF convention, the same matrix Pillow's ``convert("L")`` uses for
luma). Chroma is centred on zero.
"""

from __future__ import annotations

import torch


def rgb_to_ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 3, H, W) Y in [0, 1], Cb/Cr centred on 0."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    return torch.cat([y, cb, cr], dim=1)


def ycbcr_to_rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` for (N, 1, H, W) planes; returns (N, 3, H, W)."""
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return torch.cat([r, g, b], dim=1)
