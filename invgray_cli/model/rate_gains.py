"""Rate-level gains: the encoder knows the rate level through one learned gain per symbol
plane and level, so each level quantises each plane with its own step (as a JPEG
quality scales each frequency's quantiser differently) instead of one step for all.

A residual file stores one quantisation step ``s`` (the level). Plane ``p`` is
quantised and dequantised with ``s * exp(-g_p(s))``, where ``g_p`` is a learned log gain,
piecewise linear in ``log2(s)`` between :data:`ANCHORS` (one value per octave, held
constant beyond the ends). All-zero gains give every plane the step itself: the design
of invgray-v1, whose files carry no gains. The method follows the gain units of
variable-rate learned codecs (Cui et al., "Asymmetric Gained Deep Image Compression
With Continuous Rate Adaptation", CVPR 2021), with the gain applied as a per-plane step.

Numpy only: the encoder's quantiser and every engine use :func:`plane_steps`, computed
in float64 and rounded once to float32, so the steps, and so the symbols, do not depend
on the engine that computed the latent (``InvGrayNet.plane_steps`` follows the same
arithmetic in torch).
"""

from __future__ import annotations

import numpy as np

ANCHORS = np.arange(-2, 7, dtype=np.float64)  # log2 of the steps 0.25 .. 64, one gain row each


def plane_steps(log_gains: np.ndarray, step: float) -> np.ndarray:
    """(planes,) float32 quantisation steps of one rate level ``step`` from the
    (len(ANCHORS), planes) log gains."""
    position = np.clip(np.log2(np.float64(step)), ANCHORS[0], ANCHORS[-1]) - ANCHORS[0]
    index = min(int(np.floor(position)), len(ANCHORS) - 2)
    fraction = position - index
    gains = log_gains.astype(np.float64)
    log_gain = (1.0 - fraction) * gains[index] + fraction * gains[index + 1]
    return (np.float64(step) * np.exp(-log_gain)).astype(np.float32)
