"""Running the network on whole images: numpy uint8 arrays in, arrays out.

Shared by the codec, training's validation and the benchmarks, so that every
figure is measured on exactly the product path.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .network import InvGrayNet


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


@torch.inference_mode()
def analyse_image(model: InvGrayNet, rgb: np.ndarray, decoded_gray: np.ndarray, step: float = 1.0,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Integer symbols (:func:`symbol_shape`) for an (H, W, 3) uint8 photo and the
    (H, W) uint8 gray exactly as a decoder will see it."""
    device = torch.device(device)
    stride = model.cfg.symbol_stride
    symbols = model.quantise(_pad(_to_tensor(rgb, device), stride), _pad(_to_tensor(decoded_gray, device), stride),
                             step)
    return symbols[0].to("cpu", torch.int32).numpy()


@torch.inference_mode()
def synthesise_image(model: InvGrayNet, decoded_gray: np.ndarray, symbols: np.ndarray, step: float = 1.0,
                     device: torch.device | str = "cpu") -> np.ndarray:
    """(H, W, 3) uint8 colour from the decoded gray and the integer symbols."""
    device = torch.device(device)
    h, w = decoded_gray.shape
    gray = _pad(_to_tensor(decoded_gray, device), model.cfg.symbol_stride)
    sym = torch.from_numpy(np.ascontiguousarray(symbols)).to(device=device, dtype=torch.float32)[None]
    rgb = model.synthesise(gray, sym, step)[0, :, :h, :w]
    return (rgb.clamp(0, 1) * 255.0).round().to("cpu", torch.uint8).permute(1, 2, 0).numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Whole-image PSNR in dB of two uint8 arrays (all channels together)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)
