"""The refinement layer's chroma space (format version 3, space 1): corrections of the
network's Cb and Cr, transform-coded.

What the network leaves in the chroma is mostly fine, noise-like detail with a smooth
part on top; coded pixel by pixel every bit of the noise costs, in 8 x 8 blocks of an
integer DCT a dead zone drops most of it and the smooth part takes a few
coefficients (RESULTS, "The refinement layer"). Per 1024 px tile and channel, the
correction field (in half levels) is cut into 8 x 8 blocks from the tile's corner; each
block's coefficients are integers ``q`` that stand for ``q x step`` in the orthonormal
DCT's scale, coded position by position in zigzag order: position ``k`` of every block,
then position ``k + 1``. A coefficient's context is its frequency band (u + v, capped at
7) and how much of its block the earlier positions hold (the sum of their ``|q|``:
0, 1, 2-3, 4+), with the semi-static tables of :mod:`invgray_cli.format.context_tables`.

The decoder's inverse transform is integer (HEVC's 8-point matrix, whose rows are 181
times the orthonormal DCT's to within 0.02 %): ``(M^T Y M + 2^14) >> 15`` with
``Y = q x step``. So the probabilities and the corrections are integers of integers,
the same everywhere; only the prediction they correct comes from the network.
"""

from __future__ import annotations

import math
from functools import lru_cache

import constriction
import numpy as np

from invgray_cli.format.context_tables import Chunk, read_symbols, read_tables, write_symbols, write_tables

BLOCK = 8
BANDS = 8
FILLED_CLASSES = 4
CONTEXTS = BANDS * FILLED_CLASSES
LIMIT = 510  # half-level chroma: 0..510
DEAD_ZONE = 0.2  # the encoder rounds |c| / step + 0.5 - DEAD_ZONE down (its choice; not decoded)
HEVC_DCT8 = np.array([
    [64, 64, 64, 64, 64, 64, 64, 64],
    [89, 75, 50, 18, -18, -50, -75, -89],
    [83, 36, -36, -83, -83, -36, 36, 83],
    [75, -18, -89, -50, 50, 89, 18, -75],
    [64, -64, -64, 64, 64, -64, -64, 64],
    [50, -89, 18, 75, -75, -18, 89, -50],
    [36, -83, 83, -36, -36, 83, -83, 36],
    [18, -50, 75, -89, 89, -75, 50, -18],
], dtype=np.int64)


@lru_cache(maxsize=1)
def zigzag() -> np.ndarray:
    """Positions u * 8 + v in JPEG's zigzag order."""
    order = sorted(((u, v) for u in range(BLOCK) for v in range(BLOCK)),
                   key=lambda p: (p[0] + p[1], p[1] if (p[0] + p[1]) % 2 else p[0]))
    return np.array([u * BLOCK + v for u, v in order])


@lru_cache(maxsize=1)
def _orthonormal() -> np.ndarray:
    n = np.arange(BLOCK)
    basis = np.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * BLOCK)) * math.sqrt(2 / BLOCK)
    basis[0] /= math.sqrt(2)
    return basis


def _blocks(plane: np.ndarray) -> np.ndarray:
    """(H, W) -> (rows, cols, 8, 8), zero-padded to whole blocks."""
    height, width = plane.shape
    rows, cols = -(-height // BLOCK), -(-width // BLOCK)
    padded = np.zeros((rows * BLOCK, cols * BLOCK), plane.dtype)
    padded[:height, :width] = plane
    return padded.reshape(rows, BLOCK, cols, BLOCK).transpose(0, 2, 1, 3)


def inverse(coefficients: np.ndarray, height: int, width: int) -> np.ndarray:
    """Integer inverse transform of (rows, cols, 8, 8) coefficients in orthonormal scale:
    the (height, width) field, int64."""
    spatial = (np.einsum("ku,rcuv,vl->rckl", HEVC_DCT8, coefficients.astype(np.int64), HEVC_DCT8)
               + (1 << 14)) >> 15
    rows, cols = spatial.shape[:2]
    return spatial.transpose(0, 2, 1, 3).reshape(rows * BLOCK, cols * BLOCK)[:height, :width]


def _contexts(q: np.ndarray) -> list[np.ndarray]:
    """Each zigzag position's contexts, from the positions before it: (blocks,) arrays."""
    order = zigzag()
    flat = q.reshape(-1, BLOCK * BLOCK)
    filled = np.zeros(flat.shape[0], np.int64)
    contexts = []
    for position in order:
        u, v = divmod(int(position), BLOCK)
        band = min(u + v, BANDS - 1)
        filled_class = np.select([filled == 0, filled == 1, filled <= 3], [0, 1, 2], 3)
        contexts.append(band * FILLED_CLASSES + filled_class)
        filled += np.abs(flat[:, position])
    return contexts


def encode_tile(step: int, targets: list[np.ndarray], bases: list[np.ndarray]) -> tuple[bytes, list[np.ndarray]]:
    """(range-coded words, decoded corrections) of one tile's Cb and Cr."""
    basis = _orthonormal()
    chunks: list[Chunk] = []
    corrections = []
    for c, (target, base) in enumerate(zip(targets, bases, strict=True)):
        error = _blocks((target - base).astype(np.float64))
        coefficients = np.einsum("ku,rckl,vl->rcuv", basis, error, basis)
        q = (np.sign(coefficients) * np.floor(np.abs(coefficients) / step + 0.5 - DEAD_ZONE)).astype(np.int64)
        q = np.clip(q, -(1 << 10) + 1, (1 << 10) - 1)  # the escape's range; never reached by 0..510 fields
        flat = q.reshape(-1, BLOCK * BLOCK)
        for position, context in zip(zigzag(), _contexts(q), strict=True):
            chunks.append(Chunk(c, [], context, flat[:, position]))
        corrections.append(_clipped(inverse(q * step, *target.shape), base))
    encoder = constriction.stream.queue.RangeEncoder()
    tables = write_tables(encoder, chunks, len(targets), CONTEXTS)
    for chunk in chunks:
        write_symbols(encoder, chunk, tables)
    return encoder.get_compressed().astype("<u4").tobytes(), corrections


def decode_tile(step: int, payload: bytes, bases: list[np.ndarray]) -> list[np.ndarray]:
    """What :func:`encode_tile` decoded; constriction's errors propagate to the caller."""
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
    tables = read_tables(decoder, len(bases), CONTEXTS)
    corrections = []
    for c, base in enumerate(bases):
        height, width = base.shape
        blocks = -(-height // BLOCK) * -(-width // BLOCK)
        flat = np.zeros((blocks, BLOCK * BLOCK), np.int64)
        filled = np.zeros(blocks, np.int64)
        for position in zigzag():
            u, v = divmod(int(position), BLOCK)
            band = min(u + v, BANDS - 1)
            context = band * FILLED_CLASSES + np.select([filled == 0, filled == 1, filled <= 3], [0, 1, 2], 3)
            flat[:, position] = read_symbols(decoder, c, context, tables)
            filled += np.abs(flat[:, position])
        q = flat.reshape(-(-height // BLOCK), -(-width // BLOCK), BLOCK, BLOCK)
        corrections.append(_clipped(inverse(q * step, height, width), base))
    return corrections


def _clipped(correction: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The correction that keeps base + correction within 0..510."""
    base = base.astype(np.int64)
    return np.clip(base + correction, 0, LIMIT) - base
