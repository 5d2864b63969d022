"""Differentiable estimate of the packed residual size, used as the training rate term.

The packing (``packing.py``) spends about ``BITS_PER_NONZERO`` bits on the position
and sign of every surviving (non-zero) symbol and ``BITS_PER_MAGNITUDE_OCTAVE``
bits per doubling of its magnitude; zeros are nearly free (zstd codes their runs).
The two constants are a least-squares fit of real packed sizes against these two
statistics over validation latents (per image and quantisation step). This L0 + log-magnitude proxy is checked against real zstd bytes on the
validation set during training (``val_bpp`` vs ``val_proxy_bpp`` in the log).
"""

from __future__ import annotations

import torch

BITS_PER_NONZERO = 6.0
BITS_PER_MAGNITUDE_OCTAVE = 0.5


def estimated_bits(gated: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Total estimated bits of each batch element: (N,) from (N, C, h, w) tensors."""
    magnitude_bits = BITS_PER_MAGNITUDE_OCTAVE * torch.log2(1.0 + gated.abs())
    return (gate * BITS_PER_NONZERO + magnitude_bits).flatten(1).sum(dim=1)
