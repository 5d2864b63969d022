"""Encoder effort: refining one photo's symbols beyond the encoder network's single pass.

The encoder network is amortised: one pass gives every photo good symbols, none the
best ones for itself. At a higher ``effort`` the symbols are improved for this photo
by gradient descent on its latent, against the objective the network was trained on:
RGB mean squared error of what the decoder network will restore from them, plus
lambda x their code length under the model's own frozen entropy tables (the training
rate term of :class:`invgray_cli.model.code_length.LearnedTables`, rounding passed
straight through). The decoder and the file format are untouched: a refined residual
is an ordinary residual of the same model, and decodes to the same pixels on every
machine. What changes is the encoder's cost (torch and a decoder pass forwards and
backwards per iteration) and its reproducibility: float sums in the backward pass
depend on the thread count and device, so refined symbols may differ between
machines (each file still decodes exactly everywhere). Effort 1 (the default) stays
bit-reproducible.

Large photos are refined in tiles (:func:`invgray_cli.engines.tiling.tiles`): each tile's core
cells move, its halo holds the neighbours' current symbols as context. The refined
symbols are kept only where the whole photo's real cost is lower (pixels through the
decoder network, bytes through the range coder); otherwise the single-pass symbols stay.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from invgray_cli.engines import tiling
from invgray_cli.format.entropy import EntropyTables, encode_symbols

if TYPE_CHECKING:  # torch is imported only when a photo is refined: effort 1 never needs it
    import torch

    from invgray_cli.model.network import InvGrayNet

EFFORT_ITERATIONS = {1: 0, 2: 30, 3: 100}
EFFORTS = tuple(EFFORT_ITERATIONS)
DEFAULT_EFFORT = 1
# The rate weight every bundled network was trained with (--lmbda 2e-3, bits per pixel
# against RGB MSE on [0, 1]): refining against it keeps each rate level the operating
# point its step was chosen for.
TRAINING_LAMBDA = 2e-3
LEARNING_RATE = 0.3  # in quantisation steps; on 8 CBSD68 photos the best of 0.1, 0.2, 0.3, 0.5 or within 0.1 % of it
REFINE_TILE = 768  # core pixels per tile side: autograd through the decoder needs ~0.5 GB a tile


def refine_symbols(model: InvGrayNet, tables: EntropyTables, rgb: np.ndarray, decoded_gray: np.ndarray,
                   step: float, symbols: np.ndarray, effort: int, device: torch.device | str = "cpu") -> np.ndarray:
    """Symbols for ``rgb`` at ``step`` that cost less than ``symbols`` (the encoder
    network's single pass) by MSE + lambda x bits, or ``symbols`` themselves."""
    iterations = EFFORT_ITERATIONS[effort]
    if not iterations:
        return symbols
    import torch

    from invgray_cli.engines.torch_engine import (
        decoder_halo,
        gate_thresholds,
        latent_image,
        plane_steps,
    )
    from invgray_cli.model.code_length import LearnedTables

    device = torch.device(device)
    thresholds = gate_thresholds(model)
    steps = tiling.plane_broadcast(plane_steps(model, step))
    scaled = latent_image(model, rgb, decoded_gray, device) / steps
    rate_model = LearnedTables(tables, model.cfg.symbol_planes, model.cfg.transform_block ** 2).to(device)
    for parameter in rate_model.parameters():
        parameter.requires_grad_(False)
    stride, halo = model.cfg.symbol_stride, decoder_halo(model)
    height, width = decoded_gray.shape
    single = height <= REFINE_TILE and width <= REFINE_TILE
    regions = [((slice(0, height), slice(0, width)), (slice(0, height), slice(0, width)))] if single else \
        list(tiling.tiles(height, width, stride, REFINE_TILE, halo))
    # only the latent learns: no gradients for the (shared, cached) network's weights
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    try:
        for parameter in trainable:
            parameter.requires_grad_(False)
        with torch.enable_grad():
            for core, context in regions:
                _refine_region(model, rate_model, scaled, rgb, decoded_gray, step, core, context, iterations, device)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    refined = tiling.quantise(scaled * steps, plane_steps(model, step), thresholds)
    if np.array_equal(refined, symbols):
        return symbols
    return refined if refinement_cost(model, tables, rgb, decoded_gray, step, refined, device) < \
        refinement_cost(model, tables, rgb, decoded_gray, step, symbols, device) else symbols


def _refine_region(model: InvGrayNet, rate_model: torch.nn.Module, scaled: np.ndarray, rgb: np.ndarray,
                   gray: np.ndarray, step: float, core: tuple[slice, slice], context: tuple[slice, slice],
                   iterations: int, device: torch.device) -> None:
    """Gradient steps on the core cells of one region of ``scaled`` (the latent in
    quantisation steps, updated in place); the halo cells stay as they are."""
    import torch
    stride = model.cfg.symbol_stride
    (ys, xs), (cys, cxs) = core, context
    cell_rows = slice(cys.start // stride, -(-cys.stop // stride))
    cell_cols = slice(cxs.start // stride, -(-cxs.stop // stride))
    target = torch.from_numpy(tiling.padded_unit_float(rgb[cys, cxs], stride)).to(device)
    gray_in = torch.from_numpy(tiling.padded_unit_float(gray[cys, cxs], stride)).to(device)
    # the loss counts the core's pixels only, and only the core's cells move
    pixel_mask = torch.zeros_like(gray_in)
    pixel_mask[..., ys.start - cys.start:ys.stop - cys.start, xs.start - cxs.start:xs.stop - cxs.start] = 1
    cell_mask = torch.zeros((1, 1, *scaled[:, cell_rows, cell_cols].shape[1:]), device=device)
    cell_mask[..., ys.start // stride - cell_rows.start:-(-ys.stop // stride) - cell_rows.start,
              xs.start // stride - cell_cols.start:-(-xs.stop // stride) - cell_cols.start] = 1
    pixels = float(pixel_mask.sum())
    latent = torch.from_numpy(np.ascontiguousarray(scaled[:, cell_rows, cell_cols]))[None].to(device)
    latent.requires_grad_(True)
    optimiser = torch.optim.Adam([latent], lr=LEARNING_RATE)
    for _ in range(iterations):
        gated, gate = model.gate(latent)
        rounded = gated + (torch.round(gated) - gated).detach()
        restored = model.synthesise(gray_in, rounded, step)
        distortion = (((restored - target) ** 2) * pixel_mask).sum() / (3 * pixels)
        kept = cell_mask.expand_as(gated)
        bits = rate_model.code_length(gated * kept, step, gate * kept, latent * kept).sum()
        loss = distortion + TRAINING_LAMBDA * bits / pixels
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        latent.grad.mul_(cell_mask)
        optimiser.step()
    scaled[:, cell_rows, cell_cols] = latent.detach()[0].to("cpu").numpy()


def refinement_cost(model: InvGrayNet, tables: EntropyTables, rgb: np.ndarray, gray: np.ndarray, step: float,
          symbols: np.ndarray, device: torch.device) -> float:
    """The photo's real cost: MSE of the restored 8-bit pixels + lambda x range-coded bits per pixel."""
    from invgray_cli.engines.torch_engine import synthesise_image

    restored = synthesise_image(model, gray, symbols, step, device)
    error = np.mean((restored.astype(np.float64) - rgb.astype(np.float64)) ** 2) / 255.0 ** 2
    return float(error + TRAINING_LAMBDA * len(encode_symbols(symbols, step, tables)) * 8 / gray.size)
