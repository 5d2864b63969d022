"""Whole-image and tiled network runs, independent of the engine that runs the network.

Both engines (:mod:`invgray_cli.engines.engine`: onnxruntime on the CPU, torch for CUDA and
training) cut large images the same way, so a photo gives the same symbols whichever
engine encodes it, up to float noise. numpy only: no torch here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

TILE_CORE = 1024  # pixels of output per tile side (a multiple of every symbol cell size)
# Context on each side of an encoder tile: measured exact (tiled == untiled) from 64 px.
ENCODER_HALO = 64
WHOLE_IMAGE_PIXELS = 4 * 1024 * 1024  # at most this many pixels run in one piece

Slices = tuple[slice, slice]


def tiles(height: int, width: int, stride: int, core: int, halo: int) -> Iterator[tuple[Slices, Slices]]:
    """(core slices, context slices) pairs in pixels, both aligned to ``stride``."""
    assert core % stride == 0 and halo % stride == 0
    for y0 in range(0, height, core):
        for x0 in range(0, width, core):
            y1, x1 = min(y0 + core, height), min(x0 + core, width)
            cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
            cy1, cx1 = min(height, y1 + halo), min(width, x1 + halo)
            yield (slice(y0, y1), slice(x0, x1)), (slice(cy0, cy1), slice(cx0, cx1))


def use_tiles(height: int, width: int, tile: bool | None) -> bool:
    return height * width > WHOLE_IMAGE_PIXELS if tile is None else tile


def cells(height: int, width: int, stride: int) -> tuple[int, int]:
    return -(-height // stride), -(-width // stride)


def padded_unit_float(array: np.ndarray, stride: int) -> np.ndarray:
    """(1, C, H', W') float32 in [0, 1], sides padded up to multiples of ``stride`` by
    repeating the last row and column (what torch's replicate padding does)."""
    height, width = array.shape[:2]
    planes = array[:, :, None] if array.ndim == 2 else array
    padded = np.pad(planes, ((0, -height % stride), (0, -width % stride), (0, 0)), mode="edge")
    return (padded.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0))


def to_pixels(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 from a (3, H', W') float image in [0, 1] (unclamped), cropped."""
    cropped = np.clip(rgb[:, :height, :width], 0.0, 1.0) * np.float32(255.0)
    return np.ascontiguousarray(np.rint(cropped).astype(np.uint8).transpose(1, 2, 0))


def run_encoder(encoder: Callable[[np.ndarray, np.ndarray], np.ndarray], rgb: np.ndarray, gray: np.ndarray,
                stride: int, planes: int, tile: bool | None = None) -> np.ndarray:
    """(planes, h, w) float32 latent of a whole (H, W, 3) photo and its (H, W) gray;
    ``encoder(rgb_crop, gray_crop)`` maps one crop to its cells' latent."""
    height, width = gray.shape
    if not use_tiles(height, width, tile):
        return encoder(rgb, gray)
    out = np.zeros((planes, *cells(height, width, stride)), np.float32)
    for (ys, xs), (cys, cxs) in tiles(height, width, stride, TILE_CORE, ENCODER_HALO):
        latent = encoder(rgb[cys, cxs], gray[cys, cxs])
        oy, ox = (ys.start - cys.start) // stride, (xs.start - cxs.start) // stride
        ny, nx = cells(ys.stop - ys.start, xs.stop - xs.start, stride)
        out[:, ys.start // stride:ys.start // stride + ny, xs.start // stride:xs.start // stride + nx] = \
            latent[:, oy:oy + ny, ox:ox + nx]
    return out


def run_decoder(decoder: Callable[[np.ndarray, np.ndarray], np.ndarray], gray: np.ndarray, symbols: np.ndarray,
                stride: int, halo: int, tile: bool | None = None) -> np.ndarray:
    """(H, W, 3) uint8 colour; ``decoder(gray_crop, symbol_crop)`` restores one crop."""
    height, width = gray.shape
    if not use_tiles(height, width, tile):
        return decoder(gray, symbols)
    out = np.empty((height, width, 3), np.uint8)
    for (ys, xs), (cys, cxs) in tiles(height, width, stride, TILE_CORE, halo):
        crop = symbols[:, cys.start // stride:-(-cys.stop // stride), cxs.start // stride:-(-cxs.stop // stride)]
        colour = decoder(gray[cys, cxs], crop)
        out[ys, xs] = colour[ys.start - cys.start:ys.stop - cys.start, xs.start - cxs.start:xs.stop - cxs.start]
    return out


def plane_broadcast(step: float | np.ndarray) -> np.float32 | np.ndarray:
    """A step (one, or one per plane) as float32 that divides a (planes, h, w) latent."""
    return np.asarray(step, np.float32).reshape(-1, 1, 1) if np.ndim(step) else np.float32(step)


def quantise(latent: np.ndarray, step: float | np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Integer symbols from the transformed latent: divide by the step (one, or one per
    plane: :func:`invgray_cli.model.rate_gains.plane_steps`), zero what the SEP gate's dead zone
    holds (``|y| <= threshold``), round half to even. The same float32 operations as
    ``InvGrayNet.quantise``, so both give identical symbols for identical latents."""
    scaled = latent / plane_broadcast(step)
    kept = np.abs(scaled) > thresholds.reshape(-1, 1, 1)
    return np.rint(np.where(kept, scaled, np.float32(0))).astype(np.int32)
