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

* the gray features and the rate feature, once (each phase's ``base``);
* the groups of planes decoded before in the same cell (a product with the masked in-cell weights);
* for the second phase, the anchors' 3x3 neighbourhood, once the anchors are decoded
  (added to its ``base``).

Its integers equal :func:`integer_prior.frequencies` on the whole symbol array
(``tests/test_prior_coding.py``), and both sides of the coder use it, so encoder and
decoder build the same frequencies on every machine.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache

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
        # Per phase, everything in the phase's cells only, contiguous: a group's step is a few
        # small products. Where no partial sum of these integers can reach 2^53 (checked once,
        # here) the step runs in float64, with weights and biases pre-scaled by 2^-bits and the
        # rounding's half folded into the biases: every value is then an integer times 2^-bits,
        # held exactly, so floor() is the integer network's rounding shift. Otherwise int64.
        in_cell = (t["planes.weight"] * ip.plane_mask(self.planes, self.hidden, self.group)) \
            .reshape(self.planes, self.hidden, 2 * self.planes)
        out_weight = np.ascontiguousarray(t["out.weight"].reshape(self.planes, -1, self.hidden).transpose(0, 2, 1))
        out_bias = t["out.bias"].reshape(self.planes, 1, -1)
        self.spatial_weight = t["spatial.weight"] if cfg.checkerboard else None
        symbol_max = HEAD * ip.SYMBOL_GAIN
        anchors_max = _magnitude(self.spatial_weight) * symbol_max * self.spatial_weight[0].size \
            if cfg.checkerboard else 0
        half = 1 << (self.bits - 1)
        self.exact_float = (
            _magnitude(in_cell) * symbol_max * 2 * self.planes + _magnitude(side) + anchors_max + half < ip.EXACT_FLOAT
            and _magnitude(out_weight) * ip.ACTIVATION_MAX * self.hidden + _magnitude(out_bias) + half < ip.EXACT_FLOAT)
        self.dtype = np.float64 if self.exact_float else np.int64
        scale = 2.0 ** -self.bits if self.exact_float else 1
        offset = half if self.exact_float else 0  # the int64 path adds it in round_shift
        self.scale = scale
        self.in_cell = (in_cell.astype(self.dtype) * scale).reshape(self.planes * self.hidden, 2 * self.planes)
        self.per_channel = cfg.planes_per_channel
        self.out_weight = out_weight.astype(self.dtype) * scale
        self.out_bias = (out_bias + offset).astype(self.dtype) * scale
        # the float path's output layer with its bias as a last input row (hidden units get a constant 1)
        self.out_augmented = np.concatenate([self.out_weight, self.out_bias], axis=1)
        # where a group's hidden units start from in each phase: the side term, plus (second
        # phase) the anchors' term once they are decoded
        self.base = [(np.ascontiguousarray(side[:, :, cells]) + offset).astype(self.dtype) * scale
                     for cells in self.phases]
        self.inputs = [np.zeros((2 * self.planes, cells.size), self.dtype) for cells in self.phases]

    def _logits(self, phase: int, group: int | None = None) -> np.ndarray:
        """(planes x cells, ALPHABET) integer logits of one group, or of every plane at once
        (``group=None``: the encoder, which knows every symbol; the in-cell weights' mask
        makes the unseen planes' terms exact zeros)."""
        inputs, rows = self.inputs[phase], self.hidden
        if group is None:  # channel by channel, each with only the inputs its planes can see
            planes = slice(None)
            product = np.concatenate([
                self.in_cell[start * rows:(start + self.per_channel) * rows, :2 * (start + self.per_channel - self.group)]
                @ inputs[:2 * (start + self.per_channel - self.group)]
                for start in range(0, self.planes, self.per_channel)])
        else:
            planes, seen = slice(group * self.group, (group + 1) * self.group), 2 * group * self.group
            product = self.in_cell[planes.start * rows:planes.stop * rows, :seen] @ inputs[:seen]
        acc = self.base[phase][planes] + product.reshape(-1, rows, product.shape[-1])
        if self.exact_float:
            hidden = np.ones((acc.shape[0], acc.shape[2], rows + 1))
            np.clip(np.floor(acc), 0, ip.ACTIVATION_MAX, out=hidden[:, :, :rows].transpose(0, 2, 1))
            logits = hidden @ self.out_augmented[planes]
            np.floor(logits, out=logits)
            integers = np.empty(logits.shape, np.intp)  # clipped and made integers in one pass
            np.clip(logits, -ip.LOGIT_MAX, ip.LOGIT_MAX, out=integers, casting="unsafe")
            return integers.reshape(-1, integers.shape[-1])
        hidden = ip.activation(acc, self.bits)
        logits = ip.round_shift(hidden.transpose(0, 2, 1) @ self.out_weight[planes] + self.out_bias[planes], self.bits)
        return np.clip(logits, -ip.LOGIT_MAX, ip.LOGIT_MAX).reshape(-1, logits.shape[-1])

    def _frequency_rows(self, logits: np.ndarray) -> np.ndarray:
        return ip.clipped_frequency_rows(logits) if self.exact_float else ip.frequency_rows_float(logits)

    def frequencies(self, phase: int, group: int) -> np.ndarray:
        """(planes of the group x cells of the phase, ALPHABET) uint32 frequencies there,
        plane-major, each row summing to 2^16."""
        return self._frequency_rows(self._logits(phase, group)).astype(np.uint32)

    def probabilities(self, phase: int, group: int | None = None) -> np.ndarray:
        """The same as the coder's float64 probabilities (k / 2^16: exact), in C order:
        constriction reads the buffer row by row whatever its strides (a transposed view
        would code, and decode, under scrambled distributions). ``group=None``: every plane
        of the phase at once, plane-major, once every symbol is recorded (the encoder)."""
        return np.ascontiguousarray(self._frequency_rows(self._logits(phase, group)) * 2.0 ** -FREQUENCY_BITS)

    def record(self, phase: int, group: int, values: np.ndarray) -> None:
        """Take the decoded symbols of ``group`` in ``phase``'s cells (plane-major) as context from now on."""
        clipped = np.clip(values.astype(np.int64), -HEAD, HEAD).reshape(self.group, -1) * ip.SYMBOL_GAIN
        first = 2 * group * self.group
        self.inputs[phase][first:first + 2 * self.group:2] = clipped
        self.inputs[phase][first + 1:first + 2 * self.group:2] = np.abs(clipped)
        if self.spatial_weight is not None and phase == 0 and group == self.groups - 1:
            self.base[1] = self.base[1] + self._anchor_term().astype(self.dtype) * self.scale

    def record_all(self, values: np.ndarray) -> None:
        """Take every symbol, (planes, rows x cols), as context at once (the encoder, which knows
        them all): the same state as :meth:`record` of every group of every phase in turn."""
        clipped = np.clip(values.astype(np.int64), -HEAD, HEAD) * ip.SYMBOL_GAIN
        for phase, cells in enumerate(self.phases):
            self.inputs[phase][0::2] = clipped[:, cells]
            self.inputs[phase][1::2] = np.abs(clipped[:, cells])
        if self.spatial_weight is not None:
            self.base[1] = self.base[1] + self._anchor_term().astype(self.dtype) * self.scale

    def _anchor_term(self) -> np.ndarray:
        """(P, H, second-phase cells) int64: the 3x3 grouped convolution of the anchors' inputs
        (zero elsewhere and outside), evaluated only where the second phase needs it: around a
        second-phase cell only the four edge neighbours are anchors (its centre and corners
        hold zeros), so only their four taps are computed."""
        channels = 2 * self.planes
        anchored = np.zeros((channels, self.rows * self.cols), np.int64)
        anchored[:, self.phases[0]] = self.inputs[0]
        padded = np.pad(anchored.reshape(channels, self.rows, self.cols), ((0, 0), (1, 1), (1, 1)))
        cells = self.phases[1]
        columns = np.stack([padded[:, dy:dy + self.rows, dx:dx + self.cols].reshape(channels, -1)[:, cells]
                            for dy, dx in _EDGE_TAPS], axis=1)  # (channels, 4, cells)
        groups = self.planes // self.prior.config.planes_per_channel
        taps = len(_EDGE_TAPS)
        weight = np.ascontiguousarray(self.spatial_weight[:, :, [dy for dy, _ in _EDGE_TAPS], [dx for _, dx in _EDGE_TAPS]])
        weight = weight.reshape(groups, -1, channels // groups * taps)
        out = ip.integer_matmul(weight, columns.reshape(groups, channels // groups * taps, cells.size))
        return out.reshape(self.planes, self.hidden, cells.size)


@cache
def _openblas():  # threadpoolctl's controller, for numpy's OpenBLAS
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(internal_api="openblas")


def one_blas_thread() -> AbstractContextManager:
    """numpy's OpenBLAS on one thread for the coder's products. They are small (a few planes'
    hidden units by a few hundred cells): a second BLAS thread gains nothing alone and, on a
    busy machine (a folder run's workers, training beside it), makes a decode about 5x slower
    while the threads wait on each other (docs/RESULTS.md)."""
    return _openblas().limit(limits=1)


_EDGE_TAPS = ((0, 1), (1, 0), (1, 2), (2, 1))  # (dy, dx) of a 3x3 kernel: the cells that share an edge


def _magnitude(array: np.ndarray) -> int:
    return int(np.abs(array).max()) if array.size else 0


def encode_symbols(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> bytes:
    """Range-code (planes, rows, cols) integer symbols given the decoded ``gray`` (H, W) uint8."""
    with one_blas_thread():
        return _encode_symbols(prior, gray, symbols, step)


def _encode_symbols(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> bytes:
    planes, rows, cols = symbols.shape
    if planes != prior.config.planes:
        raise ValueError(f"{planes} symbol planes, a prior for {prior.config.planes}")
    model = PlaneModel(prior, gray, step, rows, cols)
    values = symbols.reshape(planes, rows * cols).astype(np.int64)
    # The encoder knows every symbol: it records them all, then evaluates each phase's planes
    # in one pass (the same integers as the decoder's group-by-group steps)
    model.record_all(values)
    encoder = constriction.stream.queue.RangeEncoder()
    for phase, cells in enumerate(model.phases):
        if not cells.size:
            continue
        probabilities = model.probabilities(phase)
        phase_values = values[:, cells].ravel()  # plane-major, so group by group
        coded = np.where(np.abs(phase_values) <= HEAD, phase_values + HEAD, ESCAPE).astype(np.int32)
        # A group's escapes follow the group: the symbols up to the end of each group that has
        # escapes go in one call (the same stream as a call per group), then its escapes
        rows_per_group = model.group * cells.size
        start = 0
        for group in np.unique(np.flatnonzero(coded == ESCAPE) // rows_per_group):
            stop = (group + 1) * rows_per_group
            encoder.encode(coded[start:stop], _FAMILY, probabilities[start:stop])
            for value in phase_values[group * rows_per_group:stop][coded[group * rows_per_group:stop] == ESCAPE]:
                encode_escape(encoder, int(value), ip.ESCAPE_PREFIX)
            start = stop
        if start < coded.size:
            encoder.encode(coded[start:], _FAMILY, probabilities[start:])
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_symbols(prior: IntegerPrior, gray: np.ndarray, payload: bytes, shape: tuple[int, int, int],
                   step: float) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int32 symbols (planes, rows, cols)."""
    with one_blas_thread():
        return _decode_symbols(prior, gray, payload, shape, step)


def _decode_symbols(prior: IntegerPrior, gray: np.ndarray, payload: bytes, shape: tuple[int, int, int],
                    step: float) -> np.ndarray:
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
                coded = decoder.decode(_FAMILY, model.probabilities(phase, group)).astype(np.int64)
                group_values = coded - HEAD
                for index in np.flatnonzero(coded == ESCAPE):
                    group_values[index] = decode_escape(decoder, ip.ESCAPE_PREFIX)
                out[group * model.group:(group + 1) * model.group, cells] = group_values.reshape(model.group, -1)
                model.record(phase, group, group_values)
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EntropyCodingError(f"range-coded payload does not decode ({error})") from None
    return out.reshape(shape)


__all__ = ["PlaneModel", "decode_symbols", "encode_symbols"]
