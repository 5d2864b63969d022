"""Image quality measures shared by the CLI, the rate targets and the benchmarks (numpy only)."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Whole-image PSNR in dB of two uint8 arrays (all channels together)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
