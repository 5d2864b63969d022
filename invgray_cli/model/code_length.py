"""The training rate terms: how many bits the residual's symbols will cost, differentiably.

* :func:`estimated_bits`, format 1 (zstd-packed symbols, ``packing.py``): about
  ``BITS_PER_NONZERO`` bits on the position and sign of every surviving (non-zero)
  symbol and ``BITS_PER_MAGNITUDE_OCTAVE`` bits per doubling of its magnitude; zeros
  are nearly free (zstd codes their runs). The two constants are a least-squares fit of
  real packed sizes against these two statistics over validation latents (per image and
  quantisation step). Training checks this proxy against the real packed bytes on the
  validation set (``val_bpp`` against ``val_proxy_bpp`` in the log).
* :class:`LearnedTables`, format 2 (range-coded, ``format/entropy.py``): the code length
  of the coder's own context tables, learned with the network and frozen into the
  integer tables a file is coded with. Used by ``train --rate tables`` and by the
  encoder's refinement (``codec/effort.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from invgray_cli.format.entropy import (
    ALPHABET,
    CONTEXTS,
    ESCAPE,
    FREQUENCY_BITS,
    HEAD,
    MAX_PREFIX,
    EntropyTables,
    class_bounds,
    class_centres,
    quantise_frequencies,
)

BITS_PER_NONZERO = 6.0
BITS_PER_MAGNITUDE_OCTAVE = 0.5


def estimated_bits(gated: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Total estimated bits of each batch element: (N,) from (N, C, h, w) tensors."""
    magnitude_bits = BITS_PER_MAGNITUDE_OCTAVE * torch.log2(1.0 + gated.abs())
    return (gate * BITS_PER_NONZERO + magnitude_bits).flatten(1).sum(dim=1)


def interpolated_bits(bits_at: Callable[[torch.Tensor], torch.Tensor], values: torch.Tensor, rounded: torch.Tensor,
                      gate: torch.Tensor | None, latent: torch.Tensor | None) -> torch.Tensor:
    """(N,) bits of each batch element's symbols, with ``bits_at`` the cost of integer
    symbols: exact at integers, and between two integers the linear interpolation of the
    costs of the magnitudes around it (same sign), so the encoder gets the table's slope
    towards cheaper, smaller symbols. With the SEP ``gate`` and the ungated ``latent``, a
    closed entry costs a zero and an open one its latent's interpolated cost."""
    # Interpolate along the magnitude, towards zero: a symbol at exactly zero (the SEP
    # dead zone) gets no push either way, where a one-sided slope would drag it negative
    # until it opened.
    def interpolated(v: torch.Tensor) -> torch.Tensor:
        sign = torch.sign(v.detach())
        magnitude = v.abs()
        low = torch.floor(magnitude.detach())
        fraction = magnitude - low
        return (1 - fraction) * bits_at(sign * low) + fraction * bits_at(sign * (low + 1))

    if gate is None or latent is None:
        cost = interpolated(values)
    else:
        closed = bits_at(torch.zeros_like(rounded))
        cost = closed + gate * (interpolated(latent) - closed)
    return cost.flatten(1).sum(dim=1)


class LearnedTables(nn.Module):
    """Log-probabilities per (rate class, plane, context) over the coded alphabet and
    per rate class over escape lengths, learned with the network; ``freeze()`` turns
    them into the integer :class:`EntropyTables` a file is coded with.

    ``code_length`` is the number of bits the range coder spends on the symbols,
    with the contexts taken from the rounded symbols exactly as the coder takes them.
    For a value between two integers it interpolates the code lengths of the two
    magnitudes around it linearly (same sign), which gives the encoder a gradient
    towards cheaper, smaller symbols (the slope of the table) while an integer
    symbol's cost is exact.

    ``initial``: tables to start from (None: a Laplace-like start, cheaper towards zero)."""

    def __init__(self, initial: EntropyTables | None, planes: int, planes_per_channel: int) -> None:
        super().__init__()
        centres = class_centres()
        classes = len(centres)
        self.register_buffer("log_centres", torch.tensor(np.log(centres), dtype=torch.float32), persistent=False)
        if initial is not None:
            logits = np.log(initial.frequencies.astype(np.float64) / (1 << FREQUENCY_BITS))
            prefix = np.log(initial.prefix.astype(np.float64) / (1 << FREQUENCY_BITS))
        else:
            values = np.abs(np.arange(ALPHABET) - HEAD).astype(np.float64)
            logits = np.broadcast_to(-values, (classes, planes, CONTEXTS, ALPHABET)).copy()
            prefix = np.broadcast_to(-np.arange(MAX_PREFIX, dtype=np.float64), (classes, MAX_PREFIX)).copy()
        self.logits = nn.Parameter(torch.tensor(logits, dtype=torch.float32))
        self.prefix_logits = nn.Parameter(torch.tensor(prefix, dtype=torch.float32))
        self.planes_per_channel = planes_per_channel

    def rate_class(self, step: float) -> int:
        return int(torch.argmin((self.log_centres - float(np.log(step))).abs()))

    def contexts(self, rounded: torch.Tensor) -> torch.Tensor:
        """(N, P, h, w) integer-valued symbols -> (N, P, h, w) context indices."""
        magnitudes = rounded.abs()
        n, planes, h, w = magnitudes.shape
        per = self.planes_per_channel
        grouped = magnitudes.view(n, planes // per, per, h, w)
        lower = torch.cumsum(grouped, dim=2) - grouped  # same channel, lower frequencies
        dc = grouped[:, :, 0]
        earlier_dc = torch.cumsum(dc, dim=1) - dc  # DC planes of the channels before
        total = torch.cat([earlier_dc[:, :, None], lower[:, :, 1:]], dim=2).view(n, planes, h, w)
        return ((total >= 1).long() + (total >= 2).long() + (total >= 4).long() + (total >= 8).long())

    def code_length(self, values: torch.Tensor, step: float, gate: torch.Tensor | None = None,
                    latent: torch.Tensor | None = None) -> torch.Tensor:
        """Bits of each batch element: (N,) from (N, P, h, w) symbols before rounding.

        In training, pass the SEP ``gate`` (hard forward, relaxed backward) and the
        ``latent`` before it: a closed entry then costs what a zero costs, and the
        gate learns from the difference to what the entry would cost open (without
        this the dead zone only hears the distortion and keeps opening)."""
        rate = self.rate_class(step)
        rounded = torch.round(values.detach())
        context = self.contexts(rounded)
        log2p = torch.log_softmax(self.logits[rate], dim=-1) / float(np.log(2))  # (P, C, A)
        prefix_log2p = torch.log_softmax(self.prefix_logits[rate], dim=-1) / float(np.log(2))
        planes = torch.arange(values.shape[1], device=values.device).view(1, -1, 1, 1).expand_as(context)

        def bits_at(integer: torch.Tensor) -> torch.Tensor:
            inside = integer.abs() <= HEAD
            index = torch.where(inside, integer + HEAD, torch.full_like(integer, ESCAPE)).long()
            bits = -log2p[planes, context, index]
            magnitude = (integer.abs() - HEAD - 1).clamp(min=0)
            length = torch.floor(torch.log2(magnitude + 1)).clamp(max=MAX_PREFIX - 1).long()
            escape = -prefix_log2p[length] + length.float() + 1.0  # length, its bits, the sign
            return bits + torch.where(inside, torch.zeros_like(bits), escape)

        return interpolated_bits(bits_at, values, rounded, gate, latent)

    def freeze(self) -> EntropyTables:
        with torch.no_grad():
            probabilities = torch.softmax(self.logits.double(), dim=-1).cpu().numpy()
            prefix = torch.softmax(self.prefix_logits.double(), dim=-1).cpu().numpy()
        return EntropyTables(quantise_frequencies(probabilities), quantise_frequencies(prefix), class_bounds(),
                             self.planes_per_channel)
