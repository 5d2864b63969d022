"""The refinement layer's payload (format version 3): what the prediction leaves, coded
in integers up to the exact original.

Two spaces. The **chroma** space corrects the network's Cb and Cr, transform-coded
(:mod:`invgray_cli.format.chroma_transform`). The **RGB** space rebuilds R, G and B
from the gray alone, each a multiple of the layer's ``step`` away from a prediction made
from what is already decoded; with an odd step ``2K + 1`` every value is within ``K``
of the original, and step 1 is lossless. This module holds the RGB coder, the tiles and
the payload's framing.

RGB pixels are coded in interlaced passes, coarse to fine, so that every pass is one
array operation and the decoder never walks pixel by pixel:

* pass 0, the *coarse grid* (every 16th pixel both ways), row by row, each predicted
  from the one above;
* then for spacing ``s`` = 16, 8, 4, 2: the *centres* of the ``s`` squares from their
  four corners, the midpoints of their horizontal sides, then those of their vertical
  sides, which also see the horizontal ones.

A correction is predicted along the lines through opposite neighbours (a cubic where
the line's outer points are decoded), weighted towards the line that changes least,
plus coefficients the encoder fits per pass: of the neighbours' departures from that
prediction and of the earlier channels' residuals at the same pixel. Its *context* is
the pass group and the spread of its neighbours in steps; green, whose base already
satisfies the luma relation, has its own. Tables: :mod:`invgray_cli.format.context_tables`.

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

import constriction
import numpy as np

from invgray_cli.format import chroma_transform
from invgray_cli.format.context_tables import Chunk, read_symbols, read_tables, write_symbols, write_tables
from invgray_cli.format.entropy import EntropyCodingError

SPACE_CHROMA = 1  # Cb, Cr in half levels on the network's prediction (lossy: up to the gray's bound)
SPACE_RGB = 2  # R and B on the gray, G from the luma relation; no network (exact and max-error modes)
SPACES = (SPACE_CHROMA, SPACE_RGB)
MAX_STEP = 255
COARSE_SPACING = 16
ACTIVITY_CLASSES = 16
GROUPS = 10  # coarse; centres, row edges and column edges at spacing 2, 4, >= 8
CONTEXTS = GROUPS * ACTIVITY_CLASSES
# luma = (R * 19595 + G * 38470 + B * 7471 + 2^15) >> 16, as Pillow's convert("L") computes it
LUMA_R, LUMA_G, LUMA_B = 19595, 38470, 7471


class RefinementError(EntropyCodingError):
    """A refinement payload that does not decode (damaged, or not for this gray)."""


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

    channels = 3  # R, B, G
    limit = 255

    def __init__(self, step: int, gray: np.ndarray) -> None:
        self.step, self.gray = step, gray.astype(np.int64)
        self.height, self.width = gray.shape

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
            base, matches = self._base(c, ys, xs, corrections)
            low, high = -base, self.limit - base
            prediction = np.clip(predictions[c], low, high)
            ideal = None if targets is None else targets[c][ys, xs] - base - prediction
            regressors = (departures[c] if departures and c < len(departures) else []) + residuals
            betas = coefficients(c, ideal, regressors)
            if any(betas):
                shift = (sum(b * r for b, r in zip(betas, regressors, strict=True)) + BETA_SCALE // 2) // BETA_SCALE
                prediction = np.clip(prediction + shift, low, high)
                ideal = None if targets is None else targets[c][ys, xs] - base - prediction
            classes = self._classes(spreads[c], matches)
            q = code(c, group, classes, ideal)
            corrections[c][ys, xs] = np.clip(prediction + q * self.step, low, high)
            residuals.append(corrections[c][ys, xs] - prediction)

    def _base(self, c: int, ys: np.ndarray, xs: np.ndarray,
              corrections: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """The base of channel ``c`` here, and for green how many greens give the gray."""
        gray = self.gray[ys, xs]
        if c < 2:
            return gray, None
        return green_base(gray, gray + corrections[0][ys, xs], gray + corrections[1][ys, xs])

    def _classes(self, spread: np.ndarray, matches: np.ndarray | None) -> np.ndarray:
        if matches is not None:  # green
            return np.minimum(matches, 2) * 5 + np.minimum(_activity_class(spread, self.step), 4)
        return _activity_class(spread, self.step)


def _context(group: int, classes: np.ndarray) -> np.ndarray:
    return group * ACTIVITY_CLASSES + classes


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
    if space == SPACE_CHROMA:
        return chroma_transform.encode_tile(step, targets, bases)
    coder = _Coder(step, gray)
    chunks: list[Chunk] = []

    def choose(c: int, ideal: np.ndarray | None, regressors: list[np.ndarray]) -> list[int]:
        betas = cross_channel_coefficients(ideal, regressors)
        chunks.append(Chunk(c, betas, np.empty(0, np.int64), np.empty(0, np.int64)))
        return betas

    def quantise_and_record(c: int, group: int, classes: np.ndarray, ideal: np.ndarray | None) -> np.ndarray:
        q = quantise(ideal, step)
        chunks[-1].context, chunks[-1].q = _context(group, classes), q
        return q

    corrections = coder.run(choose, quantise_and_record, targets)
    encoder = constriction.stream.queue.RangeEncoder()
    tables = write_tables(encoder, chunks, coder.channels, CONTEXTS)
    beta_model = constriction.stream.model.Uniform(BETA_VALUES)
    for chunk in chunks:  # in the walk's order: betas, then the symbols by context, then escapes
        for beta in chunk.betas:
            encoder.encode(beta + BETA_LIMIT, beta_model)
        write_symbols(encoder, chunk, tables)
    return encoder.get_compressed().astype("<u4").tobytes(), corrections


def _decode_tile(space: int, step: int, gray: np.ndarray, payload: bytes,
                 bases: list[np.ndarray]) -> list[np.ndarray]:
    try:
        if space == SPACE_CHROMA:
            return chroma_transform.decode_tile(step, payload, bases)
        coder = _Coder(step, gray)
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        tables = read_tables(decoder, coder.channels, CONTEXTS)
        beta_model = constriction.stream.model.Uniform(BETA_VALUES)

        def read_betas(c: int, ideal: np.ndarray | None, regressors: list[np.ndarray]) -> list[int]:
            return [int(decoder.decode(beta_model)) - BETA_LIMIT for _ in regressors]

        def decode_chunk(c: int, group: int, classes: np.ndarray, ideal: np.ndarray | None) -> np.ndarray:
            return read_symbols(decoder, c, _context(group, classes), tables)

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
