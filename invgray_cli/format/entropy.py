"""The residual's probability model and its range coder (format version 2).

Symbols are coded plane by plane. Each symbol's distribution is a frozen integer
frequency table chosen by integers only, so a decoder on any machine, thread count or
device picks bit-identical probabilities (float noise of a network never reaches the
coder; CompressAI's quantised CDFs follow the same rule):

* the **rate class**: the quantisation step's position on a grid of quarter octaves,
  found by comparing the file's float32 step with float32 bounds stored in the tables;
* the **plane** (64 for the bundled networks: 4 latent channels x 16 DCT frequencies);
* the **context**: how much of the colour this cell already carries, from the planes
  decoded before (the sum of the magnitudes of the lower frequencies of the same
  latent channel; for a channel's DC plane, the DC planes of the channels before it),
  in 5 classes. The decoded gray is deliberately not a context (models/MODEL_CARD.md has
  what it would save): a gray re-saved lossily still decodes, best effort, as with
  format 1, where a context read from its pixels would derail the coder.

Values from -15 to 15 are coded directly; others as an escape followed by an order-0
Exp-Golomb code of ``|v| - 16`` (its length from a table, its bits and sign uniform).
The coder is ``constriction``'s range coder (MIT/Apache): one queue of 32-bit words.

Tables are fitted on the training photos' own symbols (``python -m invgray_cli.training.tables``)
or learned with the network (:class:`invgray_cli.model.code_length.LearnedTables`), and
stored beside the network (``models/*.entropy.npz``); they are part of the model's
identity, so a file names the exact tables that coded it. This module is the format
only: numpy and constriction, nothing of torch, images or training.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import constriction
import numpy as np

HEAD = 15  # |value| <= HEAD is coded directly
ESCAPE = 2 * HEAD + 1  # the symbol index that announces a larger value
ALPHABET = 2 * HEAD + 2
MAX_PREFIX = 24  # Exp-Golomb prefix lengths 0..23: magnitudes up to 2^24 + 15
CONTEXTS = 5  # magnitude classes: 0, 1, 2-3, 4-7, 8+
FREQUENCY_BITS = 16  # every table sums to 2^16, every entry at least 1
STEP_CLASS_OCTAVE_FRACTION = 4  # rate classes are quarter octaves of the step
STEP_CLASS_RANGE = (-4, 20)  # class centres 2^(k/4): steps 0.5 .. 32; steps outside use the end classes


class EntropyCodingError(ValueError):
    """A payload that the tables cannot decode (damaged, or not made with them)."""


def magnitude_class(total: np.ndarray) -> np.ndarray:
    """0, 1, 2-3, 4-7, 8+ -> classes 0..4 (integer input, exact)."""
    return np.select([total == 0, total == 1, total <= 3, total <= 7], [0, 1, 2, 3], 4)


def colour_so_far(decoded_magnitudes: np.ndarray, plane: int, planes_per_channel: int) -> np.ndarray:
    """How much colour each cell carries before ``plane``: the magnitudes of the same
    channel's lower frequencies (for a DC plane, the DC planes of the channels before)."""
    channel, frequency = divmod(plane, planes_per_channel)
    if frequency:
        return decoded_magnitudes[channel * planes_per_channel:plane].sum(axis=0)
    return decoded_magnitudes[0:plane:planes_per_channel].sum(axis=0)


def plane_context(decoded_magnitudes: np.ndarray, plane: int, planes_per_channel: int) -> np.ndarray:
    """Context index (0..CONTEXTS-1) of every cell of ``plane``, from the magnitudes of
    the planes before it (``decoded_magnitudes[:plane]``, int64)."""
    return magnitude_class(colour_so_far(decoded_magnitudes, plane, planes_per_channel))


@dataclass(frozen=True)
class EntropyTables:
    """Frozen integer tables: ``frequencies[class, plane, context]`` over the ALPHABET,
    ``prefix[class]`` over Exp-Golomb lengths, and the float32 step bounds between
    classes."""

    frequencies: np.ndarray  # (classes, planes, CONTEXTS, ALPHABET) uint32, rows sum to 2^16
    prefix: np.ndarray  # (classes, MAX_PREFIX) uint32, rows sum to 2^16
    step_bounds: np.ndarray  # (classes - 1,) float32, increasing
    planes_per_channel: int

    def __post_init__(self) -> None:
        classes, planes, contexts, alphabet = self.frequencies.shape
        total = 1 << FREQUENCY_BITS
        if contexts != CONTEXTS or alphabet != ALPHABET or self.prefix.shape != (classes, MAX_PREFIX) \
                or self.step_bounds.shape != (classes - 1,) or planes % self.planes_per_channel:
            raise ValueError("entropy tables have the wrong shape")
        if (self.frequencies.min() < 1 or self.prefix.min() < 1 or (self.frequencies.sum(-1) != total).any()
                or (self.prefix.sum(-1) != total).any() or (np.diff(self.step_bounds) <= 0).any()):
            raise ValueError("entropy tables are not normalised integer frequencies")

    @property
    def planes(self) -> int:
        return self.frequencies.shape[1]

    def rate_class(self, step: float) -> int:
        """Exact: a float32 comparison against stored float32 bounds."""
        return int(np.searchsorted(self.step_bounds, np.float32(step), side="right"))

    def coded_size(self, symbols: np.ndarray, step: float) -> int:
        """Bytes of the range-coded payload of these symbols (validation's ``payload_bytes``)."""
        return len(encode_symbols(symbols, step, self))

    def digest(self) -> bytes:
        digest = hashlib.sha256()
        for array in (self.frequencies, self.prefix, self.step_bounds):
            digest.update(f"{array.dtype}|{array.shape}|".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(self.planes_per_channel).encode())
        return digest.digest()

    def widened(self, planes: int) -> EntropyTables:
        """These tables for a network with more latent channels: each extra channel's planes
        start as copies of the last channel's (training starts from them, then learns)."""
        per = self.planes_per_channel
        if planes < self.planes or planes % per:
            raise ValueError(f"cannot widen tables of {self.planes} planes to {planes}")
        copies = [self.frequencies[:, -per:]] * ((planes - self.planes) // per)
        return EntropyTables(np.concatenate([self.frequencies, *copies], axis=1), self.prefix, self.step_bounds, per)

    def save(self, path: Path) -> None:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, frequencies=self.frequencies, prefix=self.prefix, step_bounds=self.step_bounds,
                            planes_per_channel=np.int64(self.planes_per_channel))
        path.write_bytes(buffer.getvalue())

    @staticmethod
    def load(path: Path) -> EntropyTables:
        with np.load(path, allow_pickle=False) as data:
            return EntropyTables(data["frequencies"].astype(np.uint32), data["prefix"].astype(np.uint32),
                                 data["step_bounds"].astype(np.float32), int(data["planes_per_channel"]))


@lru_cache(maxsize=16384)  # a model's tables hold about 8,000 rows; training validates with new ones
def categorical_model(table: bytes):  # noqa: ANN201 - a constriction model
    """The coder's model of one frequency table (its uint32 bytes), built once per table."""
    return constriction.stream.model.Categorical(np.frombuffer(table, np.uint32).astype(np.float64), perfect=False)


def _model(frequencies: np.ndarray):  # noqa: ANN001, ANN202
    return categorical_model(np.ascontiguousarray(frequencies, np.uint32).tobytes())


def _uniform(size: int):  # noqa: ANN202
    return constriction.stream.model.Uniform(size)


def encode_symbols(symbols: np.ndarray, step: float, tables: EntropyTables) -> bytes:
    """Range-code integer symbols (planes x rows x cols)."""
    planes, rows, cols = symbols.shape
    if planes != tables.planes:
        raise ValueError(f"{planes} symbol planes, tables for {tables.planes}")
    rate = tables.rate_class(step)
    values = symbols.astype(np.int64)
    magnitudes = np.abs(values)
    encoder = constriction.stream.queue.RangeEncoder()
    for plane in range(planes):
        context = plane_context(magnitudes, plane, tables.planes_per_channel).ravel()
        flat = values[plane].ravel()
        coded = np.where(np.abs(flat) <= HEAD, flat + HEAD, ESCAPE).astype(np.int32)
        for ctx in np.unique(context):
            encoder.encode(coded[context == ctx], _model(tables.frequencies[rate, plane, ctx]))
        for value in flat[coded == ESCAPE]:
            encode_escape(encoder, int(value), tables.prefix[rate])
    return encoder.get_compressed().astype("<u4").tobytes()


def encode_escape(encoder, value: int, prefix_table: np.ndarray) -> None:  # noqa: ANN001
    magnitude = abs(value) - HEAD - 1
    length = (magnitude + 1).bit_length() - 1
    if length >= MAX_PREFIX:
        raise ValueError(f"symbol {value} is too large for the residual format")
    encoder.encode(length, _model(prefix_table))
    if length:
        encoder.encode((magnitude + 1) - (1 << length), _uniform(1 << length))
    encoder.encode(int(value < 0), _uniform(2))


def decode_symbols(payload: bytes, shape: tuple[int, int, int], step: float, tables: EntropyTables) -> np.ndarray:
    """Inverse of :func:`encode_symbols`; int32 symbols (planes x rows x cols)."""
    planes, rows, cols = shape
    if planes != tables.planes:
        raise EntropyCodingError(f"{planes} symbol planes, tables for {tables.planes}")
    if len(payload) % 4:
        raise EntropyCodingError("range-coded payload is not a whole number of 32-bit words")
    rate = tables.rate_class(step)
    magnitudes = np.zeros(shape, np.int64)
    out = np.zeros(shape, np.int32)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        for plane in range(planes):
            context = plane_context(magnitudes, plane, tables.planes_per_channel).ravel()
            coded = np.empty(rows * cols, np.int64)
            for ctx in np.unique(context):
                where = context == ctx
                coded[where] = decoder.decode(_model(tables.frequencies[rate, plane, ctx]), int(where.sum()))
            flat = coded - HEAD
            for index in np.flatnonzero(coded == ESCAPE):
                flat[index] = decode_escape(decoder, tables.prefix[rate])
            out[plane] = flat.reshape(rows, cols)
            magnitudes[plane] = np.abs(out[plane])
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EntropyCodingError(f"range-coded payload does not decode ({error})") from None
    return out


def decode_escape(decoder, prefix_table: np.ndarray) -> int:  # noqa: ANN001
    length = int(decoder.decode(_model(prefix_table)))
    rest = int(decoder.decode(_uniform(1 << length))) if length else 0
    negative = int(decoder.decode(_uniform(2)))
    magnitude = (1 << length) + rest - 1 + HEAD + 1
    return -magnitude if negative else magnitude


# ---------------------------------------------------------- building tables (fitting, training)

def quantise_frequencies(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities (..., n) -> integer frequencies, each >= 1, every row summing to 2^16
    (largest remainders). Deterministic: the same probabilities give the same tables everywhere."""
    total = 1 << FREQUENCY_BITS
    n = probabilities.shape[-1]
    p = probabilities / probabilities.sum(-1, keepdims=True)
    raw = p * (total - n)
    base = np.floor(raw).astype(np.int64) + 1
    short = total - base.sum(-1)
    order = np.argsort(-(raw - np.floor(raw)), axis=-1, kind="stable")
    ranks = np.argsort(order, axis=-1, kind="stable")
    base += ranks < short[..., None]
    return base.astype(np.uint32)


def class_centres() -> np.ndarray:
    """The steps the rate classes stand for: quarter octaves over STEP_CLASS_RANGE."""
    low, high = STEP_CLASS_RANGE
    return 2.0 ** (np.arange(low, high + 1) / STEP_CLASS_OCTAVE_FRACTION)


def class_bounds() -> np.ndarray:
    """The float32 step bounds between neighbouring classes (geometric midpoints of the
    centres), as stored in :attr:`EntropyTables.step_bounds`."""
    centres = class_centres()
    return np.sqrt(centres[:-1] * centres[1:]).astype(np.float32)
