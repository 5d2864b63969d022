"""Range coding of invgray-v2's symbols under its integer prior (``model/integer_prior.py``).

The order is the decoder's: the checkerboard's anchor cells first, group of planes by
group (``PriorConfig.plane_group`` consecutive planes; 1: plane by plane), then the other
cells, group by group (one pass over all cells without a checkerboard). Each (phase,
group) is one vectorised call of the range coder, every symbol with its own frequencies,
plane-major; magnitudes over ``HEAD`` follow their phase and group as escapes, coded as
format 2 codes them but with the prior's fixed prefix table.

:class:`PlaneModel` computes a group's frequencies from only what a decoder holds by
then, and in parts, so that decoding is one small step per (phase, group) instead of
the whole network each time:

* the gray features and the rate feature, once (``side``);
* the groups of planes decoded before in the same cell (a product with the masked in-cell weights);
* for the second phase, the anchors' 3x3 neighbourhood, once the anchors are decoded.

Its integers equal :func:`integer_prior.frequencies` on the whole symbol array
(``tests/test_prior_coding.py``), and both sides of the coder use it, so encoder and
decoder build the same frequencies on every machine.
"""

from __future__ import annotations

import constriction
import numpy as np

from invgray_cli.format.entropy import ESCAPE, FREQUENCY_BITS, HEAD, EntropyCodingError, decode_escape, encode_escape
from invgray_cli.model import integer_prior as ip
from invgray_cli.model.integer_prior import IntegerPrior

_FAMILY = constriction.stream.model.Categorical(perfect=False)  # one distribution per symbol


class PlaneModel:
    """The prior's frequencies for one checkerboard phase and one group of planes at a time (module docstring)."""

    def __init__(self, prior: IntegerPrior, gray: np.ndarray, step: float, rows: int, cols: int) -> None:
        cfg, t = prior.config, prior.tensors
        gray = ip.pad_gray(np.asarray(gray, np.uint8))
        if gray.shape != (rows * ip.CELL, cols * ip.CELL):
            raise ValueError(f"a {gray.shape[1]}x{gray.shape[0]} gray (padded) does not hold {rows}x{cols} cells")
        self.prior, self.rows, self.cols = prior, rows, cols
        self.planes, self.hidden, self.bits, self.group = cfg.planes, cfg.hidden, cfg.weight_bits, cfg.plane_group
        self.groups = self.planes // self.group
        side = [np.full((1, 1, rows, cols), ip.rate_feature(step), np.int64)]
        if cfg.gray:
            side.insert(0, ip.gray_features(prior, gray[None]))
        side = ip.conv1x1(np.concatenate(side, axis=1), t["side.weight"], t["side.bias"])[0] \
            .reshape(self.planes, self.hidden, rows * cols)
        self.anchors = ip.anchor_mask(rows, cols).ravel()
        self.checkerboard = cfg.checkerboard
        self.phases = ([np.flatnonzero(self.anchors), np.flatnonzero(1 - self.anchors)] if cfg.checkerboard
                       else [np.arange(rows * cols)])
        # Per phase, everything in the phase's cells only, contiguous: one plane's step is a few
        # small products. float64 products and sums are exact below 2^53 (ip.integer_matmul);
        # the bounds are checked here, once, and the int64 path taken where they do not hold.
        in_cell = (t["planes.weight"] * ip.plane_mask(self.planes, self.hidden, self.group)) \
            .reshape(self.planes, self.hidden, 2 * self.planes)
        out_weight = t["out.weight"].reshape(self.planes, -1, self.hidden)
        out_bias = t["out.bias"].reshape(self.planes, -1)
        symbol_max = HEAD * ip.SYMBOL_GAIN
        spatial_max = _magnitude(t["spatial.weight"]) * symbol_max * t["spatial.weight"][0].size if cfg.checkerboard else 0
        exact = (_magnitude(in_cell) * symbol_max * 2 * self.planes + _magnitude(side) + spatial_max < ip.EXACT_FLOAT
                 and _magnitude(out_weight) * ip.ACTIVATION_MAX * self.hidden + _magnitude(out_bias) < ip.EXACT_FLOAT)
        self.dtype = np.float64 if exact else np.int64
        self.in_cell = in_cell.astype(self.dtype)
        self.out_weight_t = np.ascontiguousarray(out_weight.transpose(0, 2, 1)).astype(self.dtype)  # (P, H, A)
        self.out_bias = out_bias.astype(self.dtype)[:, None, :]
        # what a group's hidden units start from in each phase: the side term, plus (second
        # phase) the anchors' term once they are decoded
        self.base = [np.ascontiguousarray(side[:, :, cells]).astype(self.dtype) for cells in self.phases]
        self.inputs = [np.zeros((2 * self.planes, cells.size), self.dtype) for cells in self.phases]
        self.half, self.scale = float(1 << (self.bits - 1)), 2.0 ** -self.bits

    def frequencies(self, phase: int, group: int) -> np.ndarray:
        """(planes of the group x cells of the phase, ALPHABET) uint32 frequencies there,
        plane-major, each row summing to 2^16."""
        planes, seen = slice(group * self.group, (group + 1) * self.group), 2 * group * self.group
        acc = self.base[phase][planes] + self.in_cell[planes, :, :seen] @ self.inputs[phase][:seen]
        if self.dtype is np.float64:
            # the integer network's rounding shift in float64: (acc + half) * 2^-bits is exact
            # for these integers under 2^53, and so is its floor
            hidden = np.clip(np.floor((acc + self.half) * self.scale), 0, ip.ACTIVATION_MAX)
            out = hidden.transpose(0, 2, 1) @ self.out_weight_t[planes] + self.out_bias[planes]
            logits = np.clip(np.floor((out + self.half) * self.scale), -ip.LOGIT_MAX, ip.LOGIT_MAX).astype(np.int64)
        else:
            hidden = ip.activation(acc, self.bits)
            out = hidden.transpose(0, 2, 1) @ self.out_weight_t[planes] + self.out_bias[planes]
            logits = np.clip(ip.round_shift(out, self.bits), -ip.LOGIT_MAX, ip.LOGIT_MAX)
        return ip.logits_to_frequencies(logits.reshape(-1, logits.shape[-1]), axis=-1)

    def record(self, phase: int, group: int, values: np.ndarray) -> None:
        """Take the decoded symbols of ``group`` in ``phase``'s cells (plane-major) as context from now on."""
        clipped = np.clip(values.astype(np.int64), -HEAD, HEAD).reshape(self.group, -1) * ip.SYMBOL_GAIN
        first = 2 * group * self.group
        self.inputs[phase][first:first + 2 * self.group:2] = clipped
        self.inputs[phase][first + 1:first + 2 * self.group:2] = np.abs(clipped)
        if self.checkerboard and phase == 0 and group == self.groups - 1:
            anchored = np.zeros((2 * self.planes, self.rows * self.cols), np.int64)
            anchored[:, self.phases[0]] = self.inputs[0]
            groups = self.planes // self.prior.config.planes_per_channel
            spatial = ip.conv3x3(anchored.reshape(1, 2 * self.planes, self.rows, self.cols),
                                 self.prior.tensors["spatial.weight"], groups=groups)[0]
            spatial = spatial.reshape(self.planes, self.hidden, self.rows * self.cols)[:, :, self.phases[1]]
            self.base[1] = self.base[1] + spatial.astype(self.dtype)


def _magnitude(array: np.ndarray) -> int:
    return int(np.abs(array).max()) if array.size else 0


def _escape_prefix() -> np.ndarray:
    return ip.ESCAPE_PREFIX


def encode_symbols(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> bytes:
    """Range-code (planes, rows, cols) integer symbols given the decoded ``gray`` (H, W) uint8."""
    planes, rows, cols = symbols.shape
    if planes != prior.config.planes:
        raise ValueError(f"{planes} symbol planes, a prior for {prior.config.planes}")
    model = PlaneModel(prior, gray, step, rows, cols)
    values = symbols.reshape(planes, rows * cols).astype(np.int64)
    encoder = constriction.stream.queue.RangeEncoder()
    for phase, cells in enumerate(model.phases):
        if not cells.size:
            continue
        for group in range(model.groups):
            group_values = values[group * model.group:(group + 1) * model.group][:, cells].ravel()
            coded = np.where(np.abs(group_values) <= HEAD, group_values + HEAD, ESCAPE).astype(np.int32)
            encoder.encode(coded, _FAMILY, _probabilities(model.frequencies(phase, group)))
            for value in group_values[coded == ESCAPE]:
                encode_escape(encoder, int(value), _escape_prefix())
            model.record(phase, group, group_values)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_symbols(prior: IntegerPrior, gray: np.ndarray, payload: bytes, shape: tuple[int, int, int],
                   step: float) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int32 symbols (planes, rows, cols)."""
    planes, rows, cols = shape
    if planes != prior.config.planes:
        raise EntropyCodingError(f"{planes} symbol planes, a prior for {prior.config.planes}")
    if len(payload) % 4:
        raise EntropyCodingError("range-coded payload is not a whole number of 32-bit words")
    model = PlaneModel(prior, gray, step, rows, cols)
    out = np.zeros((planes, rows * cols), np.int32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        for phase, cells in enumerate(model.phases):
            if not cells.size:
                continue
            for group in range(model.groups):
                coded = decoder.decode(_FAMILY, _probabilities(model.frequencies(phase, group))).astype(np.int64)
                group_values = coded - HEAD
                for index in np.flatnonzero(coded == ESCAPE):
                    group_values[index] = decode_escape(decoder, _escape_prefix())
                out[group * model.group:(group + 1) * model.group, cells] = group_values.reshape(model.group, -1)
                model.record(phase, group, group_values)
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EntropyCodingError(f"range-coded payload does not decode ({error})") from None
    return out.reshape(shape)


def _probabilities(frequencies: np.ndarray) -> np.ndarray:
    """Frequencies as the coder's probabilities: k / 2^16 is exact in float64, and constriction
    quantises the same float64 values the same way on every machine. C order: constriction
    reads the buffer row by row whatever its strides (a transposed view codes, and decodes,
    under scrambled distributions)."""
    return np.ascontiguousarray(frequencies, np.float64) / float(1 << FREQUENCY_BITS)


__all__ = ["PlaneModel", "decode_symbols", "encode_symbols"]
