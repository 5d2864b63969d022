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
decoder build the same frequencies on every machine. Its steps write into arrays kept per
thread (``_WorkArrays``): on a 768 x 512 photo, fresh arrays of a few MB each cost more in
page faults than the arithmetic on them.
"""

from __future__ import annotations

import math
import threading
from contextlib import AbstractContextManager
from functools import cache

import constriction
import numpy as np

from invgray_cli.format.entropy import ESCAPE, HEAD, EntropyCodingError, decode_escape, encode_escape
from invgray_cli.model import integer_prior as ip
from invgray_cli.model.integer_prior import IntegerPrior

_FAMILY = constriction.stream.model.Categorical(perfect=False)  # one distribution per symbol


class _PriorConstants:
    """What :class:`PlaneModel` takes from a prior whatever the image, built once per prior
    (a coder runs many images under one): the in-cell, output and anchors' weights in the
    layouts of its steps, and the bounds on their partial sums."""

    def __init__(self, prior: IntegerPrior) -> None:
        cfg, t = prior.config, prior.tensors
        planes, hidden, self.bits = cfg.planes, cfg.hidden, cfg.weight_bits
        self.half = 1 << (self.bits - 1)
        self.in_cell = (t["planes.weight"] * ip.plane_mask(planes, hidden, cfg.plane_group)) \
            .reshape(planes * hidden, 2 * planes)
        self.out_weight = np.ascontiguousarray(t["out.weight"].reshape(planes, -1, hidden).transpose(0, 2, 1))
        self.out_bias = t["out.bias"].reshape(planes, 1, -1)
        self.side_weight, self.side_bias = t["side.weight"], t["side.bias"]
        self.spatial_weight = t["spatial.weight"] if cfg.checkerboard else None
        symbol_max = HEAD * ip.SYMBOL_GAIN
        anchors_max = _magnitude(self.spatial_weight) * symbol_max * self.spatial_weight[0].size \
            if cfg.checkerboard else 0
        # bounds on a hidden unit's partial sums, but for the side term (the image's), and on a logit's
        self.hidden_bound = _magnitude(self.in_cell) * symbol_max * 2 * planes + anchors_max + self.half
        self.out_bound = _magnitude(self.out_weight) * ip.ACTIVATION_MAX * hidden + _magnitude(self.out_bias) + self.half
        scale = 2.0 ** -self.bits
        # the float path's weights, scaled by 2^-bits, the rounding's half folded into the biases,
        # the output layer with its bias as a last input row (hidden units get a constant 1)
        self.in_cell_float = self.in_cell * scale
        self.out_augmented = np.concatenate([self.out_weight, self.out_bias + self.half], axis=1) * scale
        # The output layer's partial sums are integers times 2^-bits; under 2^24 of those units
        # float32 holds every one exactly (half the float64 product's memory, and its clip)
        if self.out_bound < ip.EXACT_FLOAT32:
            self.out_augmented = self.out_augmented.astype(np.float32)
        self.side_weight_float = self.side_weight * scale
        self.side_bias_float = (self.side_bias + self.half)[:, None] * scale
        if cfg.checkerboard:  # the four edge taps of the anchors' 3x3 kernel (see PlaneModel._anchor_term)
            groups = planes // cfg.planes_per_channel
            rows_, cols_ = [dy for dy, _ in _EDGE_TAPS], [dx for _, dx in _EDGE_TAPS]
            self.edge_weight = np.ascontiguousarray(self.spatial_weight[:, :, rows_, cols_]) \
                .reshape(groups, -1, 2 * planes // groups * len(_EDGE_TAPS))
            self.edge_weight_float = self.edge_weight * scale


class _WorkArrays(threading.local):
    """The float path's arrays, per thread, reused from step to step and image to image:
    fresh arrays of a few MB cost more in page faults than the arithmetic on them. Arrays
    over ``KEEP`` bytes (a photo of tens of megapixels) are not kept."""

    KEEP = 16 << 20

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = math.prod(shape)
        array = self.arrays.get(name)
        if array is None or array.size < size or array.dtype != dtype:
            array = np.empty(size, dtype)
            if array.nbytes <= self.KEEP:
                self.arrays[name] = array
        return array[:size].reshape(shape)


_WORK = _WorkArrays()


def _constants(prior: IntegerPrior) -> _PriorConstants:
    """The prior's :class:`_PriorConstants`, kept on the prior (its tensors never change once loaded)."""
    constants = prior.__dict__.get("_coder_constants")
    if constants is None:
        constants = prior.__dict__["_coder_constants"] = _PriorConstants(prior)
    return constants


class PlaneModel:
    """The prior's frequencies for one checkerboard phase and one group of planes at a time (module docstring)."""

    def __init__(self, prior: IntegerPrior, gray: np.ndarray, step: float, rows: int, cols: int,
                 work: _WorkArrays | None = None) -> None:
        """``work``: the arrays to hold its state in (a coder's call lends its thread's; by
        default fresh ones)."""
        cfg = prior.config
        self.work = work = work or _WorkArrays()
        gray = ip.pad_gray(np.asarray(gray, np.uint8))
        if gray.shape != (rows * ip.CELL, cols * ip.CELL):
            raise ValueError(f"a {gray.shape[1]}x{gray.shape[0]} gray (padded) does not hold {rows}x{cols} cells")
        c = self.constants = _constants(prior)
        self.prior, self.rows, self.cols = prior, rows, cols
        self.planes, self.hidden, self.bits, self.group = cfg.planes, cfg.hidden, cfg.weight_bits, cfg.plane_group
        self.groups = self.planes // self.group
        self.per_channel = cfg.planes_per_channel
        features = [np.full((1, rows * cols), ip.rate_feature(step), np.int64)]
        if cfg.gray:
            features.insert(0, ip.gray_features(prior, gray[None])[0].reshape(-1, rows * cols))
        features = np.concatenate(features)
        self.anchors = ip.anchor_mask(rows, cols).ravel()
        self.checkerboard = cfg.checkerboard
        self.phases = ([np.flatnonzero(self.anchors), np.flatnonzero(1 - self.anchors)] if cfg.checkerboard
                       else [np.arange(rows * cols)])
        # Per phase, everything in the phase's cells only, contiguous: a group's step is a few
        # small products. Where no partial sum of these integers can reach 2^53 (checked once,
        # here) the step runs in float64, with weights and biases pre-scaled by 2^-bits and the
        # rounding's half folded into the biases: every value is then an integer times 2^-bits,
        # held exactly, so floor() is the integer network's rounding shift. Otherwise int64.
        side_bound = _magnitude(c.side_weight) * _magnitude(features) * features.shape[0] + _magnitude(c.side_bias)
        self.exact_float = c.hidden_bound + side_bound < ip.EXACT_FLOAT and c.out_bound < ip.EXACT_FLOAT
        self.spatial_weight = c.spatial_weight
        if self.exact_float:
            self.dtype, self.scale = np.float64, 2.0 ** -self.bits
            side = np.matmul(c.side_weight_float, features.astype(np.float64),
                             out=work.get("side", (self.planes * self.hidden, rows * cols), np.float64))
            side += c.side_bias_float  # each value exact
            self.in_cell, self.out_augmented = c.in_cell_float, c.out_augmented
        else:
            self.dtype, self.scale = np.int64, 1
            side = ip.integer_matmul(c.side_weight, features) + c.side_bias[:, None]
            self.in_cell, self.out_weight, self.out_bias = c.in_cell, c.out_weight, c.out_bias
        side = side.reshape(self.planes, self.hidden, rows * cols)
        # where a group's hidden units start from in each phase: the side term, plus (second
        # phase) the anchors' term once they are decoded
        self.base = [np.take(side, cells, axis=2, mode="clip",
                             out=work.get(f"base{phase}", (self.planes, self.hidden, cells.size), side.dtype))
                     for phase, cells in enumerate(self.phases)]
        self.inputs = [work.get(f"inputs{phase}", (2 * self.planes, cells.size), self.dtype)
                       for phase, cells in enumerate(self.phases)]
        for inputs in self.inputs:
            inputs.fill(0)

    def _planes_seen(self, first: int, stop: int) -> int:
        """How many of the in-cell inputs planes ``first`` to ``stop`` (groups, in one latent
        channel) can see between them: those of the groups before the last one's (the masked
        weights make the terms of what an earlier group cannot see exact zeros)."""
        return 2 * (stop - self.group)

    def _weights(self, phase: int, first: int, stop: int, work: _WorkArrays | None = None) -> np.ndarray:
        """(planes first..stop x cells of the phase, ALPHABET) frequencies as float64 integers,
        plane-major, C order (see :meth:`coder_weights`). With ``work``, in its arrays: a view
        that the next call overwrites."""
        inputs, rows, cells = self.inputs[phase], self.hidden, self.inputs[phase].shape[1]
        seen, planes, count = self._planes_seen(first, stop), slice(first, stop), stop - first
        if not self.exact_float:
            acc = self.base[phase][planes] + (self.in_cell[first * rows:stop * rows, :seen] @ inputs[:seen]) \
                .reshape(count, rows, cells)
            hidden = ip.activation(acc, self.bits)
            logits = ip.round_shift(hidden.transpose(0, 2, 1) @ self.out_weight[planes] + self.out_bias[planes],
                                    self.bits)
            return ip.frequency_rows_float(np.clip(logits, -ip.LOGIT_MAX, ip.LOGIT_MAX).reshape(-1, logits.shape[-1]))
        work = work or _WorkArrays()
        alphabet = self.out_augmented.shape[-1]
        product = work.get("product", (count * rows, cells), np.float64)
        np.matmul(self.in_cell[first * rows:stop * rows, :seen], inputs[:seen], out=product)
        acc = np.add(self.base[phase][planes], product.reshape(count, rows, cells),
                     out=work.get("acc", (count, rows, cells), np.float64))
        np.floor(acc, out=acc)
        hidden = work.get("hidden", (count, cells, rows + 1), self.out_augmented.dtype)
        hidden[:, :, rows] = 1
        np.clip(acc, 0, ip.ACTIVATION_MAX, out=hidden[:, :, :rows].transpose(0, 2, 1))
        logits = np.matmul(hidden, self.out_augmented[planes],
                           out=work.get("logits", (count, cells, alphabet), self.out_augmented.dtype))
        np.floor(logits, out=logits)
        np.clip(logits, -ip.LOGIT_MAX, ip.LOGIT_MAX, out=logits)
        shape = (count * cells, alphabet)
        return ip.clipped_frequency_rows(logits.reshape(shape), out=work.get("weights", shape, np.float64),
                                         index=work.get("index", shape, np.intp))

    def frequencies(self, phase: int, group: int) -> np.ndarray:
        """(planes of the group x cells of the phase, ALPHABET) uint32 frequencies there,
        plane-major, each row summing to 2^16."""
        return self._weights(phase, group * self.group, (group + 1) * self.group).astype(np.uint32)

    def coder_weights(self, phase: int, group: int | None = None) -> np.ndarray:
        """The frequencies as the range coder takes them: float64 integers, in C order
        (constriction reads the buffer row by row whatever its strides: a transposed view
        would code, and decode, under scrambled distributions). constriction's categorical
        family scales each row by (2^24 - alphabet) / its sum, 2^16, a power of two: every
        product is the same exact float as with the probabilities k / 2^16, so the bytes
        are the same (tests/golden/format4-coder), without a pass to scale them.
        ``group=None``: every plane of the phase, once every symbol is recorded (the encoder's
        view, latent channel by latent channel)."""
        if group is not None:
            return self._weights(phase, group * self.group, (group + 1) * self.group)
        return np.concatenate([self._weights(phase, start, start + self.per_channel)
                               for start in range(0, self.planes, self.per_channel)])

    def record(self, phase: int, group: int, values: np.ndarray) -> None:
        """Take the decoded symbols of ``group`` in ``phase``'s cells (plane-major) as context from now on."""
        clipped = np.clip(values.astype(np.int64), -HEAD, HEAD).reshape(self.group, -1) * ip.SYMBOL_GAIN
        first = 2 * group * self.group
        self.inputs[phase][first:first + 2 * self.group:2] = clipped
        self.inputs[phase][first + 1:first + 2 * self.group:2] = np.abs(clipped)
        if self.spatial_weight is not None and phase == 0 and group == self.groups - 1:
            self.base[1] += self._anchor_term()

    def record_all(self, values: np.ndarray) -> None:
        """Take every symbol, (planes, rows x cols), as context at once (the encoder, which knows
        them all): the same state as :meth:`record` of every group of every phase in turn."""
        clipped = np.clip(values.astype(np.int64), -HEAD, HEAD) * ip.SYMBOL_GAIN
        for phase, cells in enumerate(self.phases):
            self.inputs[phase][0::2] = clipped[:, cells]
            self.inputs[phase][1::2] = np.abs(clipped[:, cells])
        if self.spatial_weight is not None:
            self.base[1] += self._anchor_term()

    def _anchor_term(self) -> np.ndarray:
        """(P, H, second-phase cells), in the base's units: the 3x3 grouped convolution of the
        anchors' inputs (zero elsewhere and outside), evaluated only where the second phase
        needs it: around a second-phase cell only the four edge neighbours are anchors (its
        centre and corners hold zeros), so only their four taps are computed."""
        channels, rows, cols, work = 2 * self.planes, self.rows, self.cols, self.work
        width = cols + 2
        padded = work.get("padded", (channels, (rows + 2) * width), self.dtype)
        padded.fill(0)
        anchors, cells = np.divmod(self.phases[0], cols), np.divmod(self.phases[1], cols)
        padded[:, (anchors[0] + 1) * width + anchors[1] + 1] = self.inputs[0]
        columns = work.get("columns", (channels, len(_EDGE_TAPS), cells[0].size), self.dtype)
        for tap, (dy, dx) in enumerate(_EDGE_TAPS):
            columns[:, tap] = padded[:, (cells[0] + dy) * width + cells[1] + dx]
        c = self.constants
        groups = c.edge_weight.shape[0]
        columns = columns.reshape(groups, c.edge_weight.shape[2], cells[0].size)
        if self.exact_float:  # within the bound checked for the hidden units: exact
            out = np.matmul(c.edge_weight_float, columns,
                            out=work.get("anchor_term", (groups, c.edge_weight.shape[1], cells[0].size), self.dtype))
        else:
            out = ip.integer_matmul(c.edge_weight, columns)
        return out.reshape(self.planes, self.hidden, cells[0].size)


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
    model = PlaneModel(prior, gray, step, rows, cols, _WORK)
    values = symbols.reshape(planes, rows * cols).astype(np.int64)
    # The encoder knows every symbol: it records them all, then evaluates each phase's planes
    # a latent channel at a time (the same integers as the decoder's group-by-group steps)
    model.record_all(values)
    encoder = constriction.stream.queue.RangeEncoder()
    for phase, cells in enumerate(model.phases):
        if not cells.size:
            continue
        phase_values = values[:, cells]
        # latent channel by channel (the same stream as group by group: plane-major), in the
        # work arrays; a group's escapes follow the group, so the symbols up to the end of each
        # group that has escapes go in one call, then its escapes
        for first in range(0, planes, model.per_channel):
            weights = model._weights(phase, first, first + model.per_channel, _WORK)
            chunk = phase_values[first:first + model.per_channel].ravel()
            coded = np.where(np.abs(chunk) <= HEAD, chunk + HEAD, ESCAPE).astype(np.int32)
            rows_per_group = model.group * cells.size
            start = 0
            for group in np.unique(np.flatnonzero(coded == ESCAPE) // rows_per_group):
                stop = (group + 1) * rows_per_group
                encoder.encode(coded[start:stop], _FAMILY, weights[start:stop])
                for value in chunk[group * rows_per_group:stop][coded[group * rows_per_group:stop] == ESCAPE]:
                    encode_escape(encoder, int(value), ip.ESCAPE_PREFIX)
                start = stop
            if start < coded.size:
                encoder.encode(coded[start:], _FAMILY, weights[start:])
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
    model = PlaneModel(prior, gray, step, rows, cols, _WORK)
    out = np.zeros((planes, rows * cols), np.int32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        for phase, cells in enumerate(model.phases):
            if not cells.size:
                continue
            for group in range(model.groups):
                weights = model._weights(phase, group * model.group, (group + 1) * model.group, _WORK)
                coded = decoder.decode(_FAMILY, weights).astype(np.int64)
                group_values = coded - HEAD
                for index in np.flatnonzero(coded == ESCAPE):
                    group_values[index] = decode_escape(decoder, ip.ESCAPE_PREFIX)
                out[group * model.group:(group + 1) * model.group, cells] = group_values.reshape(model.group, -1)
                model.record(phase, group, group_values)
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EntropyCodingError(f"range-coded payload does not decode ({error})") from None
    return out.reshape(shape)


__all__ = ["PlaneModel", "decode_symbols", "encode_symbols"]
