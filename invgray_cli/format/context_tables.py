"""Semi-static context tables and their range coding, shared by the refinement layer's
two coders (:mod:`invgray_cli.format.refinement`, :mod:`invgray_cli.format.chroma_transform`).

Symbols are integers; ``|q| <= 63`` is coded directly and anything larger as an escape
followed by ``q + 1024`` in 11 uniform bits. For each channel and context the encoder
picks the cheapest of 192 frozen two-sided geometric tables (built by integer
arithmetic only), or, where it pays for its description, an explicit table of its own
histogram's levels, and writes its choice ahead of the symbols. Everything a decoder
builds its probabilities from is an integer, so every machine decodes the same.
numpy and constriction only.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import constriction
import numpy as np

from invgray_cli.format.entropy import categorical_model

DIRECT = 63  # |q| <= DIRECT coded directly
ESCAPE = 2 * DIRECT + 1  # the index announcing a larger |q|, then q + ESCAPE_OFFSET in ESCAPE_BITS uniform bits
ALPHABET = ESCAPE + 1
ESCAPE_BITS = 11
ESCAPE_OFFSET = 1 << (ESCAPE_BITS - 1)
FREQUENCY_BITS = 16
# Ratios (of 2^16) of the two-sided geometric tables: scales from about 0.1 to 150 steps.
GEOMETRIC_RATIOS = (
    16, 38, 85, 174, 327, 577, 958, 1506, 2255, 3234, 4463, 5949, 7691, 9673, 11871, 14253, 16780, 19414,
    22114, 24840, 27558, 30235, 32845, 35365, 37778, 40072, 42239, 44272, 46170, 47933, 49565, 51069, 52450,
    53716, 54871, 55924, 56881, 57750, 58537, 59249, 59892, 60472, 60995, 61465, 61888, 62269, 62611, 62917,
    63192, 63439, 63660, 63859, 64036, 64195, 64337, 64464, 64578, 64680, 64771, 64852, 64925, 64990, 65049,
    65101,
)
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


def coded_index(q: np.ndarray) -> np.ndarray:
    return np.where(np.abs(q) <= DIRECT, q + DIRECT, ESCAPE)


@dataclass
class Chunk:
    """Symbols of one channel coded together, with their contexts (and, for the coders
    that use them, the coefficients written ahead of them)."""

    channel: int
    betas: list[int]
    context: np.ndarray
    q: np.ndarray


def write_tables(encoder, chunks: list[Chunk], channels: int, contexts: int) -> list[list]:
    """Choose and write each channel's and context's table: the cheapest of the frozen ones
    (its index, as a difference to the previous index), or, where it pays for its
    description, an explicit one (its levels). Returns the coder's models."""
    histogram = np.zeros((channels, contexts, ALPHABET), np.int64)
    for chunk in chunks:
        np.add.at(histogram[chunk.channel], (chunk.context, coded_index(chunk.q)), 1)
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


def read_tables(decoder, channels: int, contexts: int) -> list[list]:
    models: list[list] = []
    for _ in range(channels):
        previous = 0
        row = []
        for _ in range(contexts):
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


def write_symbols(encoder, chunk: Chunk, tables: list[list]) -> None:  # noqa: ANN001
    """A chunk's symbols grouped by context in increasing order (each group in the chunk's
    order), then its escapes in order."""
    indices = coded_index(chunk.q)
    for k in np.unique(chunk.context):
        encoder.encode(indices[chunk.context == k].astype(np.int32), tables[chunk.channel][k])
    for value in chunk.q[indices == ESCAPE]:
        encoder.encode(int(value) + ESCAPE_OFFSET, constriction.stream.model.Uniform(1 << ESCAPE_BITS))


def read_symbols(decoder, channel: int, context: np.ndarray, tables: list[list]) -> np.ndarray:  # noqa: ANN001
    """What :func:`write_symbols` wrote for these contexts."""
    indices = np.empty(context.shape, np.int64)
    for k in np.unique(context):
        where = context == k
        indices[where] = decoder.decode(tables[channel][k], int(where.sum()))
    q = indices - DIRECT
    for i in np.flatnonzero(indices == ESCAPE):
        q[i] = int(decoder.decode(constriction.stream.model.Uniform(1 << ESCAPE_BITS))) - ESCAPE_OFFSET
    return q
