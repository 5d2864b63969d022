"""The refinement layer's payload (format version 3): what the prediction leaves, coded
in integers up to the exact original.

The decoder holds a prediction of every pixel (the network's colour, or the gray alone)
and refines it with integer *corrections*, one per pixel and coded channel, each a
multiple of the layer's ``step`` away from a prediction made from corrections already
decoded. With an odd step ``2K + 1`` every corrected value is within ``K`` of the
original; step 1 is lossless.

Pixels are coded in interlaced passes, coarse to fine, so that every pass is one array
operation and the decoder never walks pixel by pixel:

* pass 0, the *coarse grid* (every 16th pixel both ways), row by row, each predicted
  from the one above;
* then for spacing ``s`` = 16, 8, 4, 2: the *centres* of the ``s`` squares from their
  four corners, then the *edge midpoints* from their four axial neighbours.

A correction is predicted from its (up to four) decoded neighbours: along the
direction whose pair differs less, when all four are there (edge-directed
interpolation), else their mean. Its *context* is the pass group (coarse, centres or
edges at spacing 2, 4, or 8 and over) and the spread of those neighbours in steps, in 16
classes. The coder is semi-static: per channel and context the encoder picks the
cheapest of 64 frozen two-sided geometric tables (integers derived by integer
arithmetic only) and writes the pick in the payload.

The image is coded in independent tiles of 1024 x 1024 pixels, so memory stays bounded
on any photo.

Every quantity the decoder's probabilities depend on is an integer computed from
integers (the gray, the step, decoded corrections): the same bytes decode to the same
corrections on every machine. This module is the format only: numpy and constriction.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from invgray_cli.format.entropy import EntropyCodingError, categorical_model

SPACE_CHROMA = 1  # Cb, Cr in half levels on the network's prediction (lossy: up to the gray's bound)
SPACE_RGB = 2  # R and B on the gray, G from the luma relation; no network (exact and max-error modes)
SPACES = (SPACE_CHROMA, SPACE_RGB)
MAX_STEP = 255
COARSE_SPACING = 16
DIRECT = 63  # |q| <= DIRECT coded directly
ESCAPE = 2 * DIRECT + 1  # the index announcing a larger |q|, then q + ESCAPE_OFFSET in ESCAPE_BITS uniform bits
ALPHABET = ESCAPE + 1
ESCAPE_BITS = 11
ESCAPE_OFFSET = 1 << (ESCAPE_BITS - 1)
ACTIVITY_CLASSES = 16
GROUPS = 10  # coarse; centres, row edges and column edges at spacing 2, 4, >= 8
FREQUENCY_BITS = 16
# Ratios (of 2^16) of the two-sided geometric tables: scales from about 0.1 to 150 steps.
GEOMETRIC_RATIOS = (
    16, 38, 85, 174, 327, 577, 958, 1506, 2255, 3234, 4463, 5949, 7691, 9673, 11871, 14253, 16780, 19414,
    22114, 24840, 27558, 30235, 32845, 35365, 37778, 40072, 42239, 44272, 46170, 47933, 49565, 51069, 52450,
    53716, 54871, 55924, 56881, 57750, 58537, 59249, 59892, 60472, 60995, 61465, 61888, 62269, 62611, 62917,
    63192, 63439, 63660, 63859, 64036, 64195, 64337, 64464, 64578, 64680, 64771, 64852, 64925, 64990, 65049,
    65101,
)
# luma = (R * 19595 + G * 38470 + B * 7471 + 2^15) >> 16, as Pillow's convert("L") computes it
LUMA_R, LUMA_G, LUMA_B = 19595, 38470, 7471


class RefinementError(EntropyCodingError):
    """A refinement payload that does not decode (damaged, or not for this gray)."""


CENTRES = (0, 1, -1)  # tables centred on 0, on +1/2 (p(0) = p(1)) and on -1/2 (p(0) = p(-1))
TABLES = len(GEOMETRIC_RATIOS) * len(CENTRES)


@lru_cache(maxsize=1)
def geometric_tables() -> np.ndarray:
    """(TABLES, ALPHABET) uint32 frequencies, each >= 1, rows summing to 2^16: two-sided
    geometric distributions over -DIRECT..DIRECT (centred on 0, or halfway to +1 or -1)
    plus their tail on the escape. Integer arithmetic only, so every machine builds the
    same tables."""
    rows = []
    for centre in CENTRES:
        for ratio in GEOMETRIC_RATIOS:
            weights = [1 << 48]
            for _ in range(DIRECT + 2):
                weights.append((weights[-1] * ratio) >> 16)
            # centre +1: 0 and 1 are nearest, then -1 and 2, ...; centre -1 mirrors it
            distance = [abs(q) if centre == 0 else abs(q) - 1 if q * centre > 0 else abs(q)
                        for q in range(-DIRECT, DIRECT + 1)]
            row = [weights[d] for d in distance]
            row.append((2 * weights[DIRECT + 1] << 16) // ((1 << 16) - ratio))
            total = sum(row)
            spare = (1 << FREQUENCY_BITS) - ALPHABET
            frequencies = [1 + (w * spare) // total for w in row]
            frequencies[DIRECT] += (1 << FREQUENCY_BITS) - sum(frequencies)
            rows.append(frequencies)
    return np.array(rows, dtype=np.uint32)


@lru_cache(maxsize=1)
def _table_costs() -> np.ndarray:
    """Bits of each symbol under each table (the encoder's choice only; never decoded)."""
    return -np.log2(geometric_tables().astype(np.float64) / (1 << FREQUENCY_BITS))


def _model(table: int):
    return categorical_model(geometric_tables()[table].tobytes())


@lru_cache(maxsize=1)
def _index_model():
    """The table picks are coded as differences to the previous pick (mod TABLES)."""
    return _peaked(TABLES)


LEVELS = 41  # an explicit table gives each index a weight 2^((level - 1) / 2); level 0: absent


def _peaked(size: int):
    """Differences mod ``size``, small ones likelier (the picks and levels change slowly)."""
    distance = np.minimum(np.arange(size), size - np.arange(size))
    weights = (1 << 20) >> np.minimum(2 * distance, 20)
    return constriction.stream.model.Categorical(weights.astype(np.float64), perfect=False)


@lru_cache(maxsize=1)
def _level_delta_model():
    return _peaked(LEVELS)


@lru_cache(maxsize=1)
def _flag_model():
    return constriction.stream.model.Categorical(np.array([7.0, 1.0]), perfect=False)  # 1: an explicit table


def explicit_frequencies(levels: np.ndarray) -> np.ndarray:
    """The integer table an explicit context's levels stand for (each entry >= 1, sum 2^16)."""
    levels = np.asarray(levels, np.int64)
    exponent = np.maximum(levels - 1, 0)
    weights = np.where(levels > 0, np.where(exponent % 2 == 0, 1024, 1448) << (exponent // 2), 0)
    spare = (1 << FREQUENCY_BITS) - ALPHABET
    frequencies = 1 + (weights * spare) // max(int(weights.sum()), 1)
    frequencies[int(np.argmax(frequencies))] += (1 << FREQUENCY_BITS) - int(frequencies.sum())
    return frequencies.astype(np.uint32)


def _levels_of(counts: np.ndarray) -> np.ndarray:
    return np.where(counts > 0, np.clip(np.round(2 * np.log2(np.maximum(counts, 1))) + 1, 1, LEVELS - 1),
                    0).astype(np.int64)


def _model_bits(model_weights: np.ndarray, symbol: int) -> float:
    return float(-np.log2(model_weights[symbol] / model_weights.sum()))


def _activity_class(spread: np.ndarray, step: int) -> np.ndarray:
    """floor(2 log2(1 + spread // step)), capped: the bit length of the square minus one,
    exact (frexp of an integer below 2^53 is exact)."""
    ratio = spread // step + 1
    bits = np.frexp((ratio * ratio).astype(np.float64))[1] - 1
    return np.minimum(bits, ACTIVITY_CLASSES - 1).astype(np.int64)


@dataclass(frozen=True)
class Pass:
    group: int
    ys: np.ndarray
    xs: np.ndarray
    offsets: tuple[tuple[int, int], ...]  # the inner neighbours, in opposite pairs (0, 1), (2, 3), ...

    @property
    def pairs(self) -> int:
        return len(self.offsets) // 2


def schedule(height: int, width: int) -> list[Pass]:
    """The interlaced passes after the coarse grid, coarse to fine: at each spacing s
    (h = s / 2) the centres of the s-squares, then the midpoints of their horizontal
    sides, then those of their vertical sides (which see the row midpoints too)."""
    passes = []
    spacing = COARSE_SPACING
    ys, xs = np.mgrid[0:height, 0:width]
    while spacing > 1:
        half = spacing // 2
        level = {2: 0, 4: 1}.get(spacing, 2)
        diagonals = ((-half, -half), (half, half), (-half, half), (half, -half))
        axes = ((-half, 0), (half, 0), (0, -half), (0, half))
        for kind, mask, inner in (
                (0, (ys % spacing == half) & (xs % spacing == half), diagonals),
                (1, (ys % spacing == 0) & (xs % spacing == half), axes),
                (2, (ys % spacing == half) & (xs % spacing == 0), axes + diagonals)):
            where_y, where_x = np.nonzero(mask)
            passes.append(Pass(1 + 3 * level + kind, where_y, where_x, inner))
        spacing = half
    return passes


def _neighbours(plane: np.ndarray, p: Pass) -> tuple[np.ndarray, np.ndarray]:
    """Values and presence of the inner neighbours, then of the outer ones (the same
    lines, one spacing further: three times the inner offsets)."""
    height, width = plane.shape
    values, present = [], []
    for dy, dx in p.offsets + tuple((3 * dy, 3 * dx) for dy, dx in p.offsets):
        y, x = p.ys + dy, p.xs + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        values.append(plane[np.clip(y, 0, height - 1), np.clip(x, 0, width - 1)])
        present.append(inside)
    return np.stack(values), np.stack(present)


def _predict(values: np.ndarray, present: np.ndarray, pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, spread) of each pixel from its neighbours' corrections: along each
    line through an opposite pair, the cubic (-1, 9, 9, -1) estimate where the outer
    points are there (else the pair's mean), weighted by 1 / (1 + the pair's difference);
    the rounded mean of the inner neighbours where one is missing."""
    count = 2 * pairs
    inner, near = values[:count], present[:count]
    number = near.sum(0)
    mean = (2 * np.where(near, inner, 0).sum(0) + number) // (2 * number)
    total = np.zeros(values.shape[1], np.int64)
    weights = np.zeros(values.shape[1], np.int64)
    for k in range(pairs):
        first, second = values[2 * k], values[2 * k + 1]
        outer = present[count + 2 * k] & present[count + 2 * k + 1]
        estimate = np.where(outer, 9 * (first + second) - values[count + 2 * k] - values[count + 2 * k + 1],
                            8 * (first + second))
        weight = (1 << 16) // (np.abs(first - second) + 1)
        total += weight * estimate
        weights += weight
    directed = (total + 8 * weights) // (16 * weights)
    prediction = np.where(near.all(0), directed, mean)
    high = np.where(near, inner, np.iinfo(np.int64).min).max(0)
    low = np.where(near, inner, np.iinfo(np.int64).max).min(0)
    return prediction, high - low


def quantise(error: np.ndarray, step: int) -> np.ndarray:
    """The multiple of ``step`` nearest to each error (halves away from zero), as a count of steps."""
    return np.sign(error) * ((2 * np.abs(error) + step) // (2 * step))


def _luma(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (r * LUMA_R + g * LUMA_G + b * LUMA_B + (1 << 15)) >> 16


def green_base(gray: np.ndarray, red: np.ndarray, blue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest green whose luma with ``red`` and ``blue`` reaches the gray, and how many
    greens (0 to 2) give exactly the gray; all integers."""
    needed = (gray << 16) - (1 << 15) - LUMA_R * red - LUMA_B * blue
    green = np.clip(-(-needed // LUMA_G), 0, 255)
    matches = sum((_luma(red, np.minimum(green + k, 255), blue) == gray) & (green + k <= 255) for k in (0, 1))
    return green, matches


BETA_SCALE = 32  # coefficients are in 32nds, -2 to 2
BETA_LIMIT = 2 * BETA_SCALE
BETA_VALUES = 2 * BETA_LIMIT + 1


def cross_channel_coefficients(ideal: np.ndarray, regressors: list[np.ndarray]) -> list[int]:
    """Least-squares coefficients, in 32nds, of the regressors (the neighbours' departures from
    the prediction, the earlier channels' residuals at the same pixels) for this channel's
    error (the encoder's choice; the decoder reads them)."""
    if not regressors or ideal.size < 16:
        return [0] * len(regressors)
    design = np.stack(regressors, axis=1).astype(np.float64)
    gram = design.T @ design
    if np.linalg.matrix_rank(gram) < len(regressors):
        return [0] * len(regressors)
    solution = np.linalg.solve(gram + 1e-6 * np.eye(len(regressors)), design.T @ ideal.astype(np.float64))
    return [int(v) for v in np.clip(np.round(BETA_SCALE * solution), -BETA_LIMIT, BETA_LIMIT)]


class _Coder:
    """The pass walk shared by encoder and decoder.

    For each chunk (a coarse row, or one pass, of one channel) the walk asks
    ``coefficients(channel, ideal, regressors)`` for the cross-channel coefficients (the
    encoder chooses them from the ideal error, the decoder reads them) and then
    ``code(channel, group, classes, ideal)`` for the quantised errors (the encoder
    quantises the ideal, the decoder decodes). ``ideal`` is None in the decoder."""

    def __init__(self, space: int, step: int, gray: np.ndarray, bases: list[np.ndarray]) -> None:
        self.space, self.step, self.gray = space, step, gray.astype(np.int64)
        self.height, self.width = gray.shape
        self.bases = bases
        self.channels = 3 if space == SPACE_RGB else 2
        self.limit = 255 if space == SPACE_RGB else 510

    def run(self, coefficients: Callable[[int, np.ndarray | None, list[np.ndarray]], list[int]],
            code: Callable[[int, int, np.ndarray, np.ndarray | None], np.ndarray],
            targets: list[np.ndarray] | None) -> list[np.ndarray]:
        h, w = self.height, self.width
        corrections = [np.zeros((h, w), np.int64) for _ in range(self.channels)]
        coarse_xs = np.arange(0, w, COARSE_SPACING)
        previous = None
        for y in range(0, h, COARSE_SPACING):  # pass 0: the coarse grid, row by row, each from the row above
            ys = np.full(coarse_xs.shape, y)
            spreads, predictions = [], []
            for c in range(self.channels):
                if c == 2 or previous is None:
                    prediction = spread = np.zeros(coarse_xs.shape, np.int64)
                else:
                    prediction = corrections[c][previous, coarse_xs]
                    spread = np.abs(prediction - corrections[c][max(previous - COARSE_SPACING, 0), coarse_xs])
                spreads.append(spread)
                predictions.append(prediction)
            self._chunk(0, ys, coarse_xs, predictions, spreads, corrections, targets, coefficients, code)
            previous = y
        for p in schedule(h, w):
            spreads, predictions, departures = [], [], []
            for c in range(self.channels):
                values, present = _neighbours(corrections[c], p)
                if c == 2:  # green: its base already holds the luma relation
                    predictions.append(np.zeros(p.ys.shape, np.int64))
                    spreads.append(np.where(present[:2 * p.pairs], np.abs(values[:2 * p.pairs]), 0).sum(0))
                else:
                    prediction, spread = _predict(values, present, p.pairs)
                    predictions.append(prediction)
                    spreads.append(spread)
                    departures.append([np.where(present[k], values[k] - prediction, 0) for k in range(len(values))])
            self._chunk(p.group, p.ys, p.xs, predictions, spreads, corrections, targets, coefficients, code,
                        departures)
        return corrections

    def _chunk(self, group: int, ys: np.ndarray, xs: np.ndarray, predictions: list[np.ndarray],
               spreads: list[np.ndarray], corrections: list[np.ndarray], targets: list[np.ndarray] | None,
               coefficients: Callable[[int, np.ndarray | None, list[np.ndarray]], list[int]],
               code: Callable[[int, int, np.ndarray, np.ndarray | None], np.ndarray],
               departures: list[list[np.ndarray]] | None = None) -> None:
        """Code every channel at these pixels, in order. A prediction adds, times coefficients
        the encoder fits to this chunk, its neighbours' departures from it (R and B, past
        the coarse grid) and the earlier channels' residuals here."""
        residuals: list[np.ndarray] = []
        for c in range(self.channels):
            base = self._base(c, ys, xs, corrections)
            low, high = -base, self.limit - base
            prediction = np.clip(predictions[c], low, high)
            ideal = None if targets is None else targets[c][ys, xs] - base - prediction
            regressors = (departures[c] if departures and c < len(departures) else []) + residuals
            betas = coefficients(c, ideal, regressors)
            if any(betas):
                shift = (sum(b * r for b, r in zip(betas, regressors, strict=True)) + BETA_SCALE // 2) // BETA_SCALE
                prediction = np.clip(prediction + shift, low, high)
                ideal = None if targets is None else targets[c][ys, xs] - base - prediction
            classes = self._classes(c, spreads[c], ys, xs, corrections)
            q = code(c, group, classes, ideal)
            corrections[c][ys, xs] = np.clip(prediction + q * self.step, low, high)
            residuals.append(corrections[c][ys, xs] - prediction)

    def _base(self, c: int, ys: np.ndarray, xs: np.ndarray, corrections: list[np.ndarray]) -> np.ndarray:
        if self.space == SPACE_CHROMA:
            return self.bases[c][ys, xs]
        gray = self.gray[ys, xs]
        if c < 2:
            return gray
        return green_base(gray, gray + corrections[0][ys, xs], gray + corrections[1][ys, xs])[0]

    def _classes(self, c: int, spread: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                 corrections: list[np.ndarray]) -> np.ndarray:
        if c == 2:
            gray = self.gray[ys, xs]
            _, matches = green_base(gray, gray + corrections[0][ys, xs], gray + corrections[1][ys, xs])
            return np.minimum(matches, 2) * 5 + np.minimum(_activity_class(spread, self.step), 4)
        return _activity_class(spread, self.step)


def _context(group: int, classes: np.ndarray) -> np.ndarray:
    return group * ACTIVITY_CLASSES + classes


def _coded_index(q: np.ndarray) -> np.ndarray:
    return np.where(np.abs(q) <= DIRECT, q + DIRECT, ESCAPE)


@dataclass
class _Chunk:
    channel: int
    betas: list[int]
    context: np.ndarray
    q: np.ndarray


TILE = 1024  # tiles are coded independently: memory stays bounded on any photo
_WORDS = struct.Struct("<I")


def tiles(height: int, width: int) -> list[tuple[slice, slice]]:
    """The tiles, row-major."""
    return [(slice(y, min(y + TILE, height)), slice(x, min(x + TILE, width)))
            for y in range(0, height, TILE) for x in range(0, width, TILE)]


def encode(space: int, step: int, gray: np.ndarray, targets: list[np.ndarray],
           bases: list[np.ndarray] | None = None) -> tuple[bytes, list[np.ndarray]]:
    """Range-code the corrections that bring the prediction to ``targets`` (integer planes:
    R, B, G in the RGB space; Cb, Cr in half levels in the chroma space, with ``bases``
    the prediction's). Returns the payload and the decoded corrections (what a decoder
    will rebuild). The payload is each tile's word count (u32) and words, row-major."""
    _check(space, step)
    corrections = [np.zeros(gray.shape, np.int16) for _ in targets]
    payload = bytearray()
    for rows, cols in tiles(*gray.shape):
        words, tile_corrections = _encode_tile(space, step, gray[rows, cols],
                                               [t[rows, cols].astype(np.int64) for t in targets],
                                               [b[rows, cols].astype(np.int64) for b in bases or []])
        payload += _WORDS.pack(len(words) // 4) + words
        for whole, part in zip(corrections, tile_corrections, strict=True):
            whole[rows, cols] = part
    return bytes(payload), corrections


def decode(space: int, step: int, gray: np.ndarray, payload: bytes,
           bases: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """The corrections :func:`encode` wrote; RefinementError when the payload is damaged."""
    _check(space, step, RefinementError)
    corrections = [np.zeros(gray.shape, np.int16) for _ in range(3 if space == SPACE_RGB else 2)]
    position = 0
    for rows, cols in tiles(*gray.shape):
        if position + _WORDS.size > len(payload):
            raise RefinementError("refinement payload ends before its last tile")
        (count,) = _WORDS.unpack_from(payload, position)
        start, position = position + _WORDS.size, position + _WORDS.size + 4 * count
        if position > len(payload):
            raise RefinementError("refinement payload ends inside a tile")
        parts = _decode_tile(space, step, gray[rows, cols], payload[start:position],
                             [b[rows, cols].astype(np.int64) for b in bases or []])
        for whole, part in zip(corrections, parts, strict=True):
            whole[rows, cols] = part
    if position != len(payload):
        raise RefinementError(f"refinement payload has {len(payload) - position} bytes after its last tile")
    return corrections


def _encode_tile(space: int, step: int, gray: np.ndarray, targets: list[np.ndarray],
                 bases: list[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    coder = _Coder(space, step, gray, bases or [])
    chunks: list[_Chunk] = []

    def choose(c: int, ideal: np.ndarray | None, regressors: list[np.ndarray]) -> list[int]:
        betas = cross_channel_coefficients(ideal, regressors)
        chunks.append(_Chunk(c, betas, np.empty(0, np.int64), np.empty(0, np.int64)))
        return betas

    def quantise_and_record(c: int, group: int, classes: np.ndarray, ideal: np.ndarray | None) -> np.ndarray:
        q = quantise(ideal, step)
        chunks[-1].context, chunks[-1].q = _context(group, classes), q
        return q

    corrections = coder.run(choose, quantise_and_record, targets)
    encoder = constriction.stream.queue.RangeEncoder()
    tables = _write_tables(encoder, chunks, coder.channels)
    beta_model = constriction.stream.model.Uniform(BETA_VALUES)
    for chunk in chunks:  # in the walk's order: betas, then the symbols by context, then escapes
        for beta in chunk.betas:
            encoder.encode(beta + BETA_LIMIT, beta_model)
        indices = _coded_index(chunk.q)
        for k in np.unique(chunk.context):
            encoder.encode(indices[chunk.context == k].astype(np.int32), tables[chunk.channel][k])
        for value in chunk.q[indices == ESCAPE]:
            encoder.encode(int(value) + ESCAPE_OFFSET, constriction.stream.model.Uniform(1 << ESCAPE_BITS))
    return encoder.get_compressed().astype("<u4").tobytes(), corrections


def _write_tables(encoder, chunks: list[_Chunk], channels: int) -> list[list]:
    """Choose and write each channel's and context's table: the cheapest of the frozen ones
    (its index, as a difference to the previous index), or, where it pays for its
    description, an explicit one (its levels). Returns the coder's models."""
    contexts = GROUPS * ACTIVITY_CLASSES
    histogram = np.zeros((channels, contexts, ALPHABET), np.int64)
    for chunk in chunks:
        np.add.at(histogram[chunk.channel], (chunk.context, _coded_index(chunk.q)), 1)
    frozen_costs = histogram @ _table_costs().T
    peaked_tables = _peaked_weights(TABLES)
    peaked_levels = _peaked_weights(LEVELS)
    models: list[list] = []
    for c in range(channels):
        previous = 0
        row = []
        for k in range(contexts):
            counts = histogram[c, k]
            pick = int(np.argmin(frozen_costs[c, k])) if counts.any() else previous
            frozen = frozen_costs[c, k, pick] + _model_bits(peaked_tables, (pick - previous) % TABLES)
            levels = _levels_of(counts)
            present = np.flatnonzero(levels)
            explicit = np.inf
            if present.size:
                lo, hi = int(present[0]), int(present[-1])
                description = levels[lo:hi + 1]
                frequencies = explicit_frequencies(levels)
                explicit = float(counts @ -np.log2(frequencies / (1 << FREQUENCY_BITS))) + 2 * 7 + 5.4
                explicit += sum(_model_bits(peaked_levels, int(d) % LEVELS) for d in np.diff(description))
            if explicit + 3 < frozen:
                encoder.encode(1, _flag_model())
                encoder.encode(lo, constriction.stream.model.Uniform(ALPHABET))
                if lo < ALPHABET - 1:
                    encoder.encode(hi - lo, constriction.stream.model.Uniform(ALPHABET - lo))
                encoder.encode(int(description[0]), constriction.stream.model.Uniform(LEVELS))
                for d in np.diff(description):
                    encoder.encode(int(d) % LEVELS, _level_delta_model())
                row.append(categorical_model(frequencies.tobytes()))
            else:
                encoder.encode(0, _flag_model())
                encoder.encode((pick - previous) % TABLES, _index_model())
                previous = pick
                row.append(_model(pick))
        models.append(row)
    return models


def _read_tables(decoder, channels: int) -> list[list]:
    models: list[list] = []
    for _ in range(channels):
        previous = 0
        row = []
        for _ in range(GROUPS * ACTIVITY_CLASSES):
            if decoder.decode(_flag_model()):
                lo = int(decoder.decode(constriction.stream.model.Uniform(ALPHABET)))
                hi = lo if lo == ALPHABET - 1 else lo + int(decoder.decode(constriction.stream.model.Uniform(ALPHABET - lo)))
                levels = np.zeros(ALPHABET, np.int64)
                levels[lo] = int(decoder.decode(constriction.stream.model.Uniform(LEVELS)))
                for i in range(lo + 1, hi + 1):
                    levels[i] = (levels[i - 1] + int(decoder.decode(_level_delta_model()))) % LEVELS
                row.append(categorical_model(explicit_frequencies(levels).tobytes()))
            else:
                previous = (previous + int(decoder.decode(_index_model()))) % TABLES
                row.append(_model(previous))
        models.append(row)
    return models


@lru_cache(maxsize=4)
def _peaked_weights(size: int) -> np.ndarray:
    distance = np.minimum(np.arange(size), size - np.arange(size))
    return ((1 << 20) >> np.minimum(2 * distance, 20)).astype(np.float64)


def _decode_tile(space: int, step: int, gray: np.ndarray, payload: bytes,
                 bases: list[np.ndarray]) -> list[np.ndarray]:
    coder = _Coder(space, step, gray, bases)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        tables = _read_tables(decoder, coder.channels)
        beta_model = constriction.stream.model.Uniform(BETA_VALUES)

        def read_betas(c: int, ideal: np.ndarray | None, regressors: list[np.ndarray]) -> list[int]:
            return [int(decoder.decode(beta_model)) - BETA_LIMIT for _ in regressors]

        def decode_chunk(c: int, group: int, classes: np.ndarray, ideal: np.ndarray | None) -> np.ndarray:
            context = _context(group, classes)
            indices = np.empty(context.shape, np.int64)
            for k in np.unique(context):
                where = context == k
                indices[where] = decoder.decode(tables[c][k], int(where.sum()))
            q = indices - DIRECT
            for i in np.flatnonzero(indices == ESCAPE):
                q[i] = int(decoder.decode(constriction.stream.model.Uniform(1 << ESCAPE_BITS))) - ESCAPE_OFFSET
            return q

        return coder.run(read_betas, decode_chunk, None)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as error:  # noqa: BLE001 - constriction reports damaged input as a Rust panic too
        raise RefinementError(f"refinement payload does not decode ({type(error).__name__})") from None


def _check(space: int, step: int, error: type[Exception] = ValueError) -> None:
    if space not in SPACES:
        raise error(f"unknown refinement space {space}")
    if not 1 <= step <= MAX_STEP:
        raise error(f"refinement step {step} outside 1..{MAX_STEP}")
