"""The refinement layer, codec side: pixels to corrections and back (format version 3).

Two spaces (:mod:`invgray_cli.format.refinement` codes both):

* **RGB on the gray** (``--lossless``, ``--max-error K``): R and B are corrections of the
  decoded gray, G a correction of the green that the luma relation leaves once R and B
  are known (with an exact gray: one of at most two values). No network runs, so the
  restored pixels are integers of integers: the same on every machine and engine, and
  each channel within K of the input's.
* **Chroma on the network's prediction** (``--refine STEP``, and the targets beyond the
  model's ``max`` level): Cb and Cr in half levels, corrected from the prediction's own,
  and turned back into RGB with the decoded gray. This reaches the gray's bound (the
  original's exact chroma on this gray). The probabilities are integers as above; the
  prediction is the network's, so pixels may differ by a level between engines where
  the network's output rounds differently, as in every lossy decode.
"""

from __future__ import annotations

import numpy as np

from invgray_cli.format import refinement as layer
from invgray_cli.format.refinement import SPACE_CHROMA, SPACE_RGB, green_base

MAX_ERROR = (layer.MAX_STEP - 1) // 2

# BT.601 full-range chroma (JPEG's), in units of 2^-16, as Pillow converts
_CB = (-11058, -21710, 32768)
_CR = (32768, -27439, -5329)
_R_CR, _G_CB, _G_CR, _B_CB = 91881, 22554, 46802, 116130


def step_for_max_error(max_error: int) -> int:
    """The correction step that keeps every channel within ``max_error``: 2K + 1."""
    if not 0 <= max_error <= MAX_ERROR:
        raise ValueError(f"--max-error must be 0 to {MAX_ERROR}, got {max_error}")
    return 2 * max_error + 1


PNG_GRAY_UP_TO = 2  # the largest bound for which a PNG gray makes the smallest pair


def exact_gray_format(max_error: int) -> str:
    """The gray that makes the smallest gray + residual pair for this bound, measured on
    held-out photos (docs/RESULTS.md): PNG up to 2; beyond, a JPEG whose own error the
    bound absorbs (its quality from :func:`exact_gray_quality`, or a JPEG input's own luma)."""
    return "png" if max_error <= PNG_GRAY_UP_TO else "jpg"


def exact_gray_quality(max_error: int) -> int:
    return max(50, 98 - 2 * max_error)


def half_level_chroma(rgb: np.ndarray) -> list[np.ndarray]:
    """Cb and Cr of uint8 RGB in half levels (0 to 510), integer arithmetic, rounded."""
    r, g, b = (rgb[..., i].astype(np.int64) for i in range(3))
    return [(((256 << 16) + 2 * (k[0] * r + k[1] * g + k[2] * b) + (1 << 15)) >> 16).astype(np.int16)
            for k in (_CB, _CR)]


def rgb_from_chroma(gray: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """uint8 RGB from the gray and half-level Cb, Cr, in integers (rounded, clipped)."""
    y = gray.astype(np.int64)
    cb, cr = cb.astype(np.int64) - 256, cr.astype(np.int64) - 256
    half = 1 << 16
    r = y + ((_R_CR * cr + half) >> 17)
    g = y + ((-_G_CB * cb - _G_CR * cr + half) >> 17)
    b = y + ((_B_CB * cb + half) >> 17)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def rgb_from_exact(gray: np.ndarray, corrections: list[np.ndarray]) -> np.ndarray:
    out = np.empty(gray.shape + (3,), np.uint8)
    for rows in range(0, gray.shape[0], 256):  # in bands: int64 intermediates stay small
        band = slice(rows, rows + 256)
        y = gray[band].astype(np.int64)
        red, blue = y + corrections[0][band], y + corrections[1][band]
        green = green_base(y, red, blue)[0] + corrections[2][band]
        out[band] = np.stack([red, green, blue], axis=-1)
    return out


def encode_exact(rgb: np.ndarray, gray: np.ndarray, max_error: int) -> tuple[bytes, int, np.ndarray]:
    """(payload, step, restored RGB) of the RGB-space layer; checks the bound it promises."""
    step = step_for_max_error(max_error)
    payload, corrections = layer.encode(SPACE_RGB, step, gray, [rgb[..., 0], rgb[..., 2], rgb[..., 1]])
    restored = rgb_from_exact(gray, corrections)
    worst = int(np.abs(restored.astype(np.int16) - rgb.astype(np.int16)).max()) if rgb.size else 0
    if worst > max_error:  # the layer's own guarantee: never write a file that breaks it
        raise RuntimeError(f"refinement missed its bound: a channel is {worst} off, the limit is {max_error}")
    return payload, step, restored


def encode_chroma(rgb: np.ndarray, gray: np.ndarray, prediction: np.ndarray, step: int
                  ) -> tuple[bytes, np.ndarray]:
    """(payload, restored RGB) of the chroma-space layer over the network's ``prediction``."""
    bases = half_level_chroma(prediction)
    payload, corrections = layer.encode(SPACE_CHROMA, step, gray, half_level_chroma(rgb), bases)
    return payload, _restore_chroma(gray, bases, corrections)


def _restore_chroma(gray: np.ndarray, bases: list[np.ndarray], corrections: list[np.ndarray]) -> np.ndarray:
    return rgb_from_chroma(gray, bases[0] + corrections[0], bases[1] + corrections[1])


def decode_layer(space: int, step: int, payload: bytes, gray: np.ndarray,
                 prediction: np.ndarray | None = None) -> np.ndarray:
    """The restored uint8 RGB; RefinementError when the payload is damaged."""
    if space == SPACE_RGB:
        return rgb_from_exact(gray, layer.decode(SPACE_RGB, step, gray, payload))
    if prediction is None:
        raise ValueError("a chroma refinement refines the network's prediction: none given")
    bases = half_level_chroma(prediction)
    return _restore_chroma(gray, bases, layer.decode(SPACE_CHROMA, step, gray, payload, bases))


__all__ = ["MAX_ERROR", "SPACE_CHROMA", "SPACE_RGB", "decode_layer", "encode_chroma", "encode_exact",
           "exact_gray_format", "exact_gray_quality",
           "half_level_chroma", "rgb_from_chroma", "step_for_max_error"]
