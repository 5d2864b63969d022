"""The torch engine: the network on whole images or tiles, numpy uint8 arrays in and out.

It runs on CUDA, for refinement and training's validation, and as the benchmarks'
reference; the CPU product path runs the same network in onnxruntime
(:mod:`invgray_cli.engines.onnx_engine`). Both share the padding, tiling and
quantisation of :mod:`invgray_cli.engines.tiling`, so they agree up to float noise.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from invgray_cli.engines import tiling
from invgray_cli.engines.registry import decode_only, model_id_of
from invgray_cli.model import rate_gains
from invgray_cli.model.network import DECODER_DILATIONS, InvGrayNet


def _to_tensor(array: np.ndarray, device: torch.device, multiple: int = 1) -> torch.Tensor:
    """(1, C, H', W') float32 in [0, 1] on ``device``, padded to ``multiple`` as the
    onnxruntime engine pads (:func:`tiling.padded_unit_float`), so both see the same input."""
    return torch.from_numpy(tiling.padded_unit_float(array, multiple)).to(device)


def symbol_shape(model: InvGrayNet, height: int, width: int) -> tuple[int, int, int]:
    return (model.cfg.symbol_planes, *tiling.cells(height, width, model.cfg.symbol_stride))


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


def gate_thresholds(model: InvGrayNet) -> np.ndarray:
    """The SEP gate's dead zone per symbol plane, in quantisation steps (float32)."""
    with torch.no_grad():
        return model.gate.thresholds().detach().to("cpu", torch.float32).flatten().numpy()


def plane_steps(model: InvGrayNet, step: float) -> float | np.ndarray:
    """The step of each symbol plane at rate level ``step`` (:mod:`invgray_cli.model.rate_gains`);
    the step itself for a model without rate gains."""
    if model.rate_gains is None:
        return step
    with torch.no_grad():
        log_gains = model.rate_gains.log_gains.detach().to("cpu", torch.float32).numpy()
    return rate_gains.plane_steps(log_gains, step)


@torch.inference_mode()
def latent_image(model: InvGrayNet, rgb: np.ndarray, decoded_gray: np.ndarray, device: torch.device | str = "cpu",
                 tile: bool | None = None) -> np.ndarray:
    """(planes, h, w) float32 transformed latent, before the step: what every
    quantisation step of one photo starts from. Large images in overlapping tiles."""
    if getattr(model, "decode_only", False):
        raise decode_only(model_id_of(model))
    device = torch.device(device)
    stride = model.cfg.symbol_stride

    def encoder(rgb_crop: np.ndarray, gray_crop: np.ndarray) -> np.ndarray:
        with exact_float32(device):
            latent = model.transform(model.encoder(_to_tensor(rgb_crop, device, stride),
                                                   _to_tensor(gray_crop, device, stride), model.chroma_gain))
        return latent[0].to("cpu", torch.float32).numpy()

    return tiling.run_encoder(encoder, rgb, decoded_gray, stride, model.cfg.symbol_planes, tile)


def analyse_image(model: InvGrayNet, rgb: np.ndarray, decoded_gray: np.ndarray, step: float = 1.0,
                  device: torch.device | str = "cpu", tile: bool | None = None) -> np.ndarray:
    """Integer symbols (:func:`symbol_shape`) for an (H, W, 3) uint8 photo and the
    (H, W) uint8 gray exactly as a decoder will see it. Large images run in
    overlapping tiles (``tile=None`` decides by size), so memory stays bounded.
    Equal to ``model.quantise`` on the whole image: quantisation is elementwise."""
    return tiling.quantise(latent_image(model, rgb, decoded_gray, device, tile), plane_steps(model, step),
                           gate_thresholds(model))


@torch.inference_mode()
def synthesise_image(model: InvGrayNet, decoded_gray: np.ndarray, symbols: np.ndarray, step: float = 1.0,
                     device: torch.device | str = "cpu", tile: bool | None = None) -> np.ndarray:
    """(H, W, 3) uint8 colour from the decoded gray and the integer symbols; large
    images in overlapping tiles (see :func:`analyse_image`)."""
    device = torch.device(device)

    def decoder(gray_crop: np.ndarray, symbol_crop: np.ndarray) -> np.ndarray:
        return _synthesise(model, gray_crop, symbol_crop, step, device)

    return tiling.run_decoder(decoder, decoded_gray, symbols, model.cfg.symbol_stride, decoder_halo(model), tile)


def _synthesise(model: InvGrayNet, decoded_gray: np.ndarray, symbols: np.ndarray, step: float,
                device: torch.device) -> np.ndarray:
    return synthesise_batch(model, [decoded_gray], [symbols], [step], device)[0]


def synthesis_inputs(model: InvGrayNet, grays: list[np.ndarray], symbols: list[np.ndarray], steps: list[float],
                     device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stacked decoder inputs for same-size images: padded grays (N, 1, H, W), symbols
    (N, planes, h, w) and quantisation steps (N, 1, 1, 1), all float32 on ``device``."""
    device = torch.device(device)
    gray = torch.cat([_to_tensor(g, device, model.cfg.symbol_stride) for g in grays])
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


class TorchEngine:
    """An :class:`~invgray_cli.model.network.InvGrayNet` on a torch device."""

    name = "torch"

    def __init__(self, model: InvGrayNet, device: torch.device | str = "cpu") -> None:
        self.model, self.device = model, torch.device(device)
        self.model_id = model_id_of(model)
        self.symbol_planes, self.symbol_stride = model.cfg.symbol_planes, model.cfg.symbol_stride

    def latent(self, rgb: np.ndarray, gray: np.ndarray, tile: bool | None = None) -> np.ndarray:
        return latent_image(self.model, rgb, gray, self.device, tile)

    def thresholds(self) -> np.ndarray:
        return gate_thresholds(self.model)

    def plane_steps(self, step: float) -> float | np.ndarray:
        return plane_steps(self.model, step)

    def synthesise(self, gray: np.ndarray, symbols: np.ndarray, step: float, tile: bool | None = None) -> np.ndarray:
        return synthesise_image(self.model, gray, symbols, step, self.device, tile)
