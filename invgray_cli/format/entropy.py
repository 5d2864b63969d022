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
  in 5 classes. The decoded gray is deliberately not a context (a gray texture class
  saved a further 1 % on validation): a gray re-saved lossily still decodes, best
  effort, as with format 1, where a context read from its pixels would derail the coder.

Values from -15 to 15 are coded directly; others as an escape followed by an order-0
Exp-Golomb code of ``|v| - 16`` (its length from a table, its bits and sign uniform).
The coder is ``constriction``'s range coder (MIT/Apache): one queue of 32-bit words.

Tables are fitted on the training photos' own symbols (``python -m invgray_cli.format.entropy``)
and stored beside the network (``models/*.entropy.npz``); they are part of the model's
identity, so a file names the exact tables that coded it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

HEAD = 15  # |value| <= HEAD is coded directly
ESCAPE = 2 * HEAD + 1  # the symbol index that announces a larger value
ALPHABET = 2 * HEAD + 2
MAX_PREFIX = 24  # Exp-Golomb prefix lengths 0..23: magnitudes up to 2^24 + 15
CONTEXTS = 5  # magnitude classes: 0, 1, 2-3, 4-7, 8+
FREQUENCY_BITS = 16  # every table sums to 2^16, every entry at least 1
STEP_CLASS_OCTAVE_FRACTION = 4  # rate classes are quarter octaves of the step
STEP_CLASS_RANGE = (-4, 20)  # class centres 2^(k/4): steps 0.5 .. 32; steps outside use the end classes
FORMAT_NOTE = "range-coded, frozen context tables"


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
def _categorical(table: bytes):  # noqa: ANN202 - a constriction model
    import constriction

    return constriction.stream.model.Categorical(np.frombuffer(table, np.uint32).astype(np.float64), perfect=False)


def _model(frequencies: np.ndarray):  # noqa: ANN001, ANN202
    return _categorical(np.ascontiguousarray(frequencies, np.uint32).tobytes())


def _uniform(size: int):  # noqa: ANN202
    import constriction

    return constriction.stream.model.Uniform(size)


def encode_symbols(symbols: np.ndarray, step: float, tables: EntropyTables) -> bytes:
    """Range-code integer symbols (planes x rows x cols)."""
    import constriction

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
            _encode_escape(encoder, int(value), tables.prefix[rate])
    return encoder.get_compressed().astype("<u4").tobytes()


def _encode_escape(encoder, value: int, prefix_table: np.ndarray) -> None:  # noqa: ANN001
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
    import constriction

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
                flat[index] = _decode_escape(decoder, tables.prefix[rate])
            out[plane] = flat.reshape(rows, cols)
            magnitudes[plane] = np.abs(out[plane])
    except (RuntimeError, ValueError, AssertionError) as error:
        raise EntropyCodingError(f"range-coded payload does not decode ({error})") from None
    return out


def _decode_escape(decoder, prefix_table: np.ndarray) -> int:  # noqa: ANN001
    length = int(decoder.decode(_model(prefix_table)))
    rest = int(decoder.decode(_uniform(1 << length))) if length else 0
    negative = int(decoder.decode(_uniform(2)))
    magnitude = (1 << length) + rest - 1 + HEAD + 1
    return -magnitude if negative else magnitude


# ------------------------------------------------------------------------ fitting (export time)

def quantise_frequencies(probabilities: np.ndarray) -> np.ndarray:
    """Probabilities (..., n) -> integer frequencies, each >= 1, every row summing to 2^16
    (largest remainders). Deterministic; runs once, at export."""
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
    low, high = STEP_CLASS_RANGE
    return 2.0 ** (np.arange(low, high + 1) / STEP_CLASS_OCTAVE_FRACTION)


class TableFitter:
    """Counts of the symbols coded in each (class, plane, context), turned into tables
    with back-off to the plane's own counts where a context has few samples."""

    def __init__(self, planes: int, planes_per_channel: int) -> None:
        classes = len(class_centres())
        self.planes_per_channel = planes_per_channel
        self.counts = np.zeros((classes, planes, CONTEXTS, ALPHABET), np.float64)
        self.prefix_counts = np.zeros((classes, MAX_PREFIX), np.float64)

    def add(self, rate: int, symbols: np.ndarray) -> None:
        values = symbols.astype(np.int64)
        magnitudes = np.abs(values)
        for plane in range(values.shape[0]):
            context = plane_context(magnitudes, plane, self.planes_per_channel).ravel()
            flat = values[plane].ravel()
            coded = np.where(np.abs(flat) <= HEAD, flat + HEAD, ESCAPE)
            np.add.at(self.counts[rate, plane], (context, coded), 1)
            escaped = np.abs(flat[coded == ESCAPE]) - HEAD - 1
            lengths = np.minimum(np.floor(np.log2(escaped + 1)).astype(np.int64), MAX_PREFIX - 1)
            np.add.at(self.prefix_counts[rate], lengths, 1)

    def tables(self, backoff: float = 16.0, floor: float = 0.02) -> EntropyTables:
        plane_totals = self.counts.sum(axis=2, keepdims=True)
        plane_p = (plane_totals + floor) / (plane_totals + floor).sum(-1, keepdims=True)
        n = self.counts.sum(-1, keepdims=True)
        probabilities = (self.counts + backoff * plane_p) / (n + backoff)
        prefix = (self.prefix_counts + 0.5) / (self.prefix_counts + 0.5).sum(-1, keepdims=True)
        centres = class_centres()
        bounds = np.sqrt(centres[:-1] * centres[1:]).astype(np.float32)
        return EntropyTables(quantise_frequencies(probabilities), quantise_frequencies(prefix), bounds,
                             self.planes_per_channel)


def symbols_at_steps(model, rgb: np.ndarray, gray: np.ndarray, steps: np.ndarray) -> list[np.ndarray]:  # noqa: ANN001
    """The symbols the product path gives at each step, from one encoder pass (the step
    only divides the transformed latent before the gate)."""
    from invgray_cli.engines.tiling import quantise
    from invgray_cli.engines.torch_engine import gate_thresholds, latent_image

    latent, thresholds = latent_image(model, rgb, gray), gate_thresholds(model)
    return [quantise(latent, float(step), thresholds) for step in steps]


def main(argv: list[str] | None = None) -> None:
    """Fit the tables of a bundled network on training photos."""
    import torch

    from invgray_cli.imaging.gray import jpeg_round_trip, luma
    from invgray_cli.training.train import list_images, load_rgb, read_checkpoint

    parser = argparse.ArgumentParser(prog="python -m invgray_cli.format.entropy",
                                     description="Fit a network's entropy tables on training photos.")
    parser.add_argument("weights", type=Path, help="bundled models/*.pt or a training checkpoint")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training photo folders")
    parser.add_argument("--out", type=Path, required=True, help="the tables file (.entropy.npz)")
    parser.add_argument("--images", type=int, default=300, help="photos drawn at random from --data")
    parser.add_argument("--quality", type=int, nargs=2, default=(50, 100), metavar=("MIN", "MAX"),
                        help="gray JPEG quality per photo, uniform (and 15 %% lossless), as in training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = read_checkpoint(args.weights)
    rng = np.random.default_rng(args.seed)
    files = list_images(args.data)
    chosen = [files[i] for i in rng.choice(len(files), min(args.images, len(files)), replace=False)]
    cfg = model.cfg
    fitter = TableFitter(cfg.symbol_planes, cfg.transform_block ** 2)
    centres = class_centres()
    for index, path in enumerate(chosen):
        rgb = load_rgb(path)
        gray = luma(rgb)
        if rng.random() >= 0.15:
            gray = jpeg_round_trip(gray, int(rng.integers(args.quality[0], args.quality[1] + 1)))
        for rate, symbols in enumerate(symbols_at_steps(model, rgb, gray, centres)):
            fitter.add(rate, symbols)
        if (index + 1) % 25 == 0:
            print(f"{index + 1}/{len(chosen)} photos", flush=True)
    tables = fitter.tables()
    tables.save(args.out)
    print(f"{args.out}: {len(centres)} rate classes x {cfg.symbol_planes} planes x {CONTEXTS} contexts, "
          f"{args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()


# ------------------------------------------------------------------ training (the same model, learnable)

def learned_tables_module(initial: EntropyTables | None, planes: int, planes_per_channel: int):  # noqa: ANN201
    """The tables as a torch module whose code length is the training rate term; see
    :class:`LearnedTables`. torch is imported only here (training), never for coding."""
    import torch
    from torch import nn

    class LearnedTables(nn.Module):
        """Log-probabilities per (rate class, plane, context) over the coded alphabet and
        per rate class over escape lengths, learned with the network; ``freeze()`` turns
        them into the integer :class:`EntropyTables` a file is coded with.

        ``code_length`` is the number of bits the range coder spends on the symbols,
        with the contexts taken from the rounded symbols exactly as the coder takes them.
        For a value between two integers it interpolates the code lengths of the two
        magnitudes around it linearly (same sign), which gives the encoder a gradient
        towards cheaper, smaller symbols (the slope of the table) while an integer
        symbol's cost is exact."""

        def __init__(self) -> None:
            super().__init__()
            classes = len(class_centres())
            centres = class_centres()
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

            # Interpolate along the magnitude, towards zero: a symbol at exactly zero (the SEP
            # dead zone) gets no push either way, where a one-sided slope would drag it negative
            # until it opened (measured: non-zero symbols 40 % -> 64 % in 200 steps).
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

        def freeze(self) -> EntropyTables:
            with torch.no_grad():
                probabilities = torch.softmax(self.logits.double(), dim=-1).cpu().numpy()
                prefix = torch.softmax(self.prefix_logits.double(), dim=-1).cpu().numpy()
            centres = class_centres()
            bounds = np.sqrt(centres[:-1] * centres[1:]).astype(np.float32)
            return EntropyTables(quantise_frequencies(probabilities), quantise_frequencies(prefix), bounds,
                                 self.planes_per_channel)

    return LearnedTables()
