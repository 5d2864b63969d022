"""Running the network on whole images: numpy uint8 arrays in, arrays out.

Shared by the codec, training's validation and the benchmarks, so that every
figure is measured on exactly the product path.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from .network import DECODER_DILATIONS, InvGrayNet


def _to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.array(array, copy=True)).to(device=device, dtype=torch.float32) / 255.0
    if t.ndim == 2:
        return t[None, None]
    return t.permute(2, 0, 1)[None]


def _pad(t: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph == 0 and pw == 0:
        return t
    return F.pad(t, (0, pw, 0, ph), mode="replicate")


def symbol_shape(model: InvGrayNet, height: int, width: int) -> tuple[int, int, int]:
    stride = model.cfg.symbol_stride
    return model.cfg.symbol_planes, -(-height // stride), -(-width // stride)


TILE_CORE = 1024  # pixels of output per tile side (a multiple of every symbol cell size)
# Context on each side of an encoder tile: measured exact (tiled == untiled) from 64 px.
ENCODER_HALO = 64
WHOLE_IMAGE_PIXELS = 4 * 1024 * 1024  # at most this many pixels run in one piece


def _tiles(height: int, width: int, stride: int, core: int, halo: int):  # noqa: ANN202 - generator of slices
    """(core slice, context slice) pairs in pixels, both aligned to ``stride``."""
    for y0 in range(0, height, core):
        for x0 in range(0, width, core):
            y1, x1 = min(y0 + core, height), min(x0 + core, width)
            cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
            cy1, cx1 = min(height, y1 + halo), min(width, x1 + halo)
            yield (slice(y0, y1), slice(x0, x1)), (slice(cy0, cy1), slice(cx0, cx1))
    assert core % stride == 0 and halo % stride == 0


def decoder_halo(model: InvGrayNet) -> int:
    """Context on each side of a decoder tile: the decoder's whole receptive field
    (latent path at 1/8 resolution plus the 1/4-resolution body, head and bilinear
    coefficient upsampling), rounded up to whole symbol cells."""
    eighth_cells = 1 + 2 + 3 + 1  # latent stem, two residual blocks (dilations 1, 2), latent_up
    dilations = DECODER_DILATIONS[: model.cfg.decoder_blocks]
    quarter_cells = 1 + sum(d + 1 for d in dilations) + 1 + 1  # gray stem, body, head, upsampling
    radius = eighth_cells * 8 + quarter_cells * 4
    stride = model.cfg.symbol_stride
    return -(-radius // stride) * stride


def exact_float32(device: torch.device) -> contextlib.AbstractContextManager:
    """On CUDA: full float32 convolutions (no TF32) and deterministic cuDNN kernels, so the
    codec's numbers come as close to the CPU's as float32 allows and do not change from
    run to run. A no-op elsewhere."""
    if device.type == "cuda":
        return torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False)
    return contextlib.nullcontext()


def _use_tiles(height: int, width: int, tile: bool | None) -> bool:
    return height * width > WHOLE_IMAGE_PIXELS if tile is None else tile


@torch.inference_mode()
def analyse_image(model: InvGrayNet, rgb: np.ndarray, decoded_gray: np.ndarray, step: float = 1.0,
                  device: torch.device | str = "cpu", tile: bool | None = None) -> np.ndarray:
    """Integer symbols (:func:`symbol_shape`) for an (H, W, 3) uint8 photo and the
    (H, W) uint8 gray exactly as a decoder will see it. Large images run in
    overlapping tiles (``tile=None`` decides by size), so memory stays bounded."""
    device = torch.device(device)
    with exact_float32(device):
        return _analyse_image(model, rgb, decoded_gray, step, device, tile)


def _analyse_image(model: InvGrayNet, rgb: np.ndarray, decoded_gray: np.ndarray, step: float,
                   device: torch.device, tile: bool | None) -> np.ndarray:
    stride = model.cfg.symbol_stride
    height, width = decoded_gray.shape
    if not _use_tiles(height, width, tile):
        symbols = model.quantise(_pad(_to_tensor(rgb, device), stride),
                                 _pad(_to_tensor(decoded_gray, device), stride), step)
        return symbols[0].to("cpu", torch.int32).numpy()
    out = np.zeros(symbol_shape(model, height, width), np.int32)
    for (ys, xs), (cys, cxs) in _tiles(height, width, stride, TILE_CORE, ENCODER_HALO):
        symbols = model.quantise(_pad(_to_tensor(rgb[cys, cxs], device), stride),
                                 _pad(_to_tensor(decoded_gray[cys, cxs], device), stride), step)[0]
        oy, ox = (ys.start - cys.start) // stride, (xs.start - cxs.start) // stride
        ny, nx = -(-(ys.stop - ys.start) // stride), -(-(xs.stop - xs.start) // stride)
        out[:, ys.start // stride:ys.start // stride + ny, xs.start // stride:xs.start // stride + nx] = \
            symbols[:, oy:oy + ny, ox:ox + nx].to("cpu", torch.int32).numpy()
    return out


@torch.inference_mode()
def synthesise_image(model: InvGrayNet, decoded_gray: np.ndarray, symbols: np.ndarray, step: float = 1.0,
                     device: torch.device | str = "cpu", tile: bool | None = None) -> np.ndarray:
    """(H, W, 3) uint8 colour from the decoded gray and the integer symbols; large
    images in overlapping tiles (see :func:`analyse_image`)."""
    device = torch.device(device)
    stride = model.cfg.symbol_stride
    height, width = decoded_gray.shape
    if not _use_tiles(height, width, tile):
        return _synthesise(model, decoded_gray, symbols, step, device)
    out = np.empty((height, width, 3), np.uint8)
    for (ys, xs), (cys, cxs) in _tiles(height, width, stride, TILE_CORE, decoder_halo(model)):
        cells = symbols[:, cys.start // stride:-(-cys.stop // stride), cxs.start // stride:-(-cxs.stop // stride)]
        colour = _synthesise(model, decoded_gray[cys, cxs], cells, step, device)
        out[ys, xs] = colour[ys.start - cys.start:ys.stop - cys.start, xs.start - cxs.start:xs.stop - cxs.start]
    return out


def _synthesise(model: InvGrayNet, decoded_gray: np.ndarray, symbols: np.ndarray, step: float,
                device: torch.device) -> np.ndarray:
    return synthesise_batch(model, [decoded_gray], [symbols], [step], device)[0]


def synthesis_inputs(model: InvGrayNet, grays: list[np.ndarray], symbols: list[np.ndarray], steps: list[float],
                     device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked decoder inputs for same-size images: padded grays (N, 1, H, W), symbols
    (N, planes, h, w) and quantisation steps (N, 1, 1, 1), all float32 on ``device``."""
    device = torch.device(device)
    gray = torch.cat([_pad(_to_tensor(g, device), model.cfg.symbol_stride) for g in grays])
    sym = torch.stack([torch.from_numpy(np.ascontiguousarray(s)) for s in symbols]).to(device, torch.float32)
    step = torch.tensor(steps, dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    return gray, sym, step


@torch.inference_mode()
def synthesise_batch(model: InvGrayNet, grays: list[np.ndarray], symbols: list[np.ndarray], steps: list[float],
                     device: torch.device | str = "cpu") -> list[np.ndarray]:
    """:func:`synthesise_image` for several same-size images in one forward pass (no tiling).
    A model converted to float16 or bfloat16 gets its inputs in that precision."""
    device = torch.device(device)
    precision = next(model.parameters()).dtype
    with exact_float32(device):
        rgb = model.synthesise(*(t.to(precision) for t in synthesis_inputs(model, grays, symbols, steps, device)))
    pixels = (rgb.float().clamp(0, 1) * 255.0).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    return [np.ascontiguousarray(image[:g.shape[0], :g.shape[1]]) for image, g in zip(pixels, grays)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Whole-image PSNR in dB of two uint8 arrays (all channels together)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
