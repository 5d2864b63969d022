"""invgray-v2's probability model as an integer network (numpy only: no torch here).

For every residual symbol, a categorical distribution over format 2's alphabet (values
-HEAD..HEAD and an escape, ``format/entropy.py``), predicted from what a decoder holds
when it decodes that symbol:

* the decoded **gray** (free: the decoder has it before the residual), through a few
  non-overlapping strided layers down to the symbol cell's resolution (1/32) and one
  3x3 layer there;
* the **rate level**: the format's rate class of the quantisation step (an exact
  float32 comparison, as format 2 picks its tables);
* the **planes of the same cell decoded before** (a 1x1 layer whose plane p sees the
  planes q < p only);
* for the second half of a **checkerboard** of cells, the first half's symbols (the
  anchors, all planes) in the 3x3 neighbourhood: decoding is two passes over the cells,
  each one call per plane, never one symbol at a time.

Exact decoding needs every probability bit for bit on any machine, engine and thread
count, so the network is an integer network (Balle, Johnston & Minnen 2019, "Integer
networks for data compression"): integer inputs, weights and biases, int64 sums, a
rounding right shift by ``weight_bits`` and a clip to 0..255 after each hidden layer,
integer logits in units of 1/``LOGIT_SCALE`` bit. Probabilities come from an integer
exp table (powers of two in 16 fractional steps, shifted) normalised to frequencies
that sum to 2^16 with every entry at least 1, as format 2's tables are. The torch
twin that trains it (``invgray_cli/model/conditional.py``) computes the same integers
in eval mode; ``tests/test_integer_prior.py`` holds the two to it.

Tensor layout (``IntegerPrior.tensors``, int64; O = outputs, I = inputs):

* ``gray{k}.weight`` (O, I * s * s), ``gray{k}.bias`` (O,): the strided gray layers
  (stride s = kernel; inputs in ``pixel_unshuffle`` order), then ``gray_cell.weight``
  (O, I, 3, 3) and its bias at the cell resolution (zero padding);
* ``side.weight`` (P * H, G + 1), ``side.bias``: from the gray features (G, when the
  gray is used) and the rate feature to every plane's H hidden units;
* ``planes.weight`` (P * H, 2P): the in-cell context (masked: lower planes only);
* ``spatial.weight`` (P * H, 2 * planes_per_channel, 3, 3): the anchors' symbols, each
  latent channel's planes to that channel's hidden units (grouped);
* ``out.weight`` (P * A, H), ``out.bias`` (P * A,): each plane's logits from its own
  hidden units.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from invgray_cli.format.entropy import (
    ALPHABET,
    ESCAPE,
    FREQUENCY_BITS,
    HEAD,
    MAX_PREFIX,
    STEP_CLASS_RANGE,
    class_bounds,
    quantise_frequencies,
)

ACTIVATION_MAX = 255  # hidden units are integers 0..255
LOGIT_SCALE = 16  # logits are in 1/16 bit: p ~ 2^(z / 16)
LOGIT_MAX = 1023  # logits are clipped to -LOGIT_MAX..LOGIT_MAX
GRAY_OFFSET = 128  # the gray enters as value - 128
SYMBOL_GAIN = 16  # a symbol enters as clip(s, -HEAD, HEAD) * 16 and min(|s|, HEAD) * 16
RATE_GAIN = 8  # the rate feature: (rate class + STEP_CLASS_RANGE[0]) * 8, i.e. 32 x log2(step)
CELL = 32  # image pixels per symbol cell along each axis (1/8 latent x 4x4 DCT blocks)
# round(2^24 * 2^(-r/16)) for r = 0..15, written out so that no libm takes part
EXP_BASE = np.array([16777216, 16065917, 15384775, 14732511, 14107901, 13509772, 12937002, 12388516,
                     11863283, 11360319, 10878679, 10417458, 9975792, 9552851, 9147842, 8760003], np.int64)
EXP_MAX_SHIFT = 40  # 2^24 >> 40 is 0: every logit that far under the row's maximum weighs nothing
# Escaped magnitudes are coded as format 2 codes them (an Exp-Golomb length, its bits, the
# sign), the length from this fixed table (about l + 1 bits for length l): escapes are rare.
ESCAPE_PREFIX = quantise_frequencies(2.0 ** -(np.arange(MAX_PREFIX) + 1.0))


@dataclass(frozen=True)
class PriorConfig:
    """Shape of the probability model; ``planes`` and ``planes_per_channel`` follow the network."""

    planes: int = 96
    planes_per_channel: int = 16
    hidden: int = 8  # hidden units per plane
    gray: bool = True  # condition on the decoded gray (False: the ablation without it)
    checkerboard: bool = True  # the second half of the cells sees the anchors
    gray_widths: tuple[int, ...] = (16, 32, 32, 32)  # outputs of the strided gray layers
    gray_strides: tuple[int, ...] = (4, 2, 2, 2)  # their strides (= kernels): product CELL
    weight_bits: int = 10  # fractional bits of every weight: the right shift after each sum
    # planes decoded together: a plane sees the planes of the groups before its own (1: every plane before it)
    plane_group: int = 1

    def __post_init__(self) -> None:
        if int(np.prod(self.gray_strides)) != CELL or len(self.gray_widths) != len(self.gray_strides):
            raise ValueError(f"the gray layers' strides must multiply to {CELL}")
        if self.planes % self.planes_per_channel:
            raise ValueError("planes must be whole latent channels")
        if self.plane_group < 1 or self.planes_per_channel % self.plane_group:
            raise ValueError("plane groups must divide a latent channel's planes")

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(values: dict) -> PriorConfig:
        values = dict(values)
        for key in ("gray_widths", "gray_strides"):
            if key in values:
                values[key] = tuple(int(v) for v in values[key])
        return PriorConfig(**values)

    @property
    def gray_features(self) -> int:
        return self.gray_widths[-1] if self.gray else 0


@dataclass
class IntegerPrior:
    """The integer network: its configuration and its int64 tensors (module docstring)."""

    config: PriorConfig
    tensors: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """An uncompressed .npz, each tensor in the narrowest of int16, int32 and int64 that
        holds it: a fresh process loads it in 2 ms instead of 11 (compressed int64), and a
        wheel compresses it anyway. Loading reads every tensor back as int64."""
        buffer = io.BytesIO()
        config = np.frombuffer(repr(self.config.to_dict()).encode(), np.uint8)
        np.savez(buffer, __config__=config, **{k: _narrowest(v) for k, v in self.tensors.items()})
        path.write_bytes(buffer.getvalue())

    def digest(self) -> bytes:
        """SHA-256 over the configuration and every tensor (name, shape, int64 bytes, in
        name order): what a model's id covers."""
        digest = hashlib.sha256(repr(sorted(self.config.to_dict().items())).encode())
        for name in sorted(self.tensors):
            tensor = np.ascontiguousarray(self.tensors[name], dtype="<i8")
            digest.update(f"|{name}|{tensor.shape}|".encode())
            digest.update(tensor.tobytes())
        return digest.digest()

    @staticmethod
    def load(path: Path) -> IntegerPrior:
        import ast

        with np.load(path, allow_pickle=False) as data:
            config = PriorConfig.from_dict(ast.literal_eval(bytes(data["__config__"]).decode()))
            return IntegerPrior(config, {k: data[k].astype(np.int64) for k in data.files if k != "__config__"})


def _narrowest(tensor: np.ndarray) -> np.ndarray:
    tensor = np.asarray(tensor, np.int64)
    for dtype in (np.int16, np.int32):
        if not tensor.size or (tensor.min() >= np.iinfo(dtype).min and tensor.max() <= np.iinfo(dtype).max):
            return tensor.astype(dtype)
    return tensor


# ------------------------------------------------------------------ the integer building blocks

def rate_feature(step: float) -> int:
    """The rate input: format 2's rate class of ``step`` (exact float32 comparison),
    centred so that it is 4 x log2 of the class's step, times RATE_GAIN."""
    index = int(np.searchsorted(class_bounds(), np.float32(step), side="right"))
    return (index + STEP_CLASS_RANGE[0]) * RATE_GAIN


def anchor_mask(rows: int, cols: int) -> np.ndarray:
    """1 on the checkerboard's first half of cells (the anchors, (row + col) even), else 0."""
    return ((np.arange(rows)[:, None] + np.arange(cols)[None, :]) % 2 == 0).astype(np.int64)


def plane_mask(planes: int, hidden: int, group: int = 1) -> np.ndarray:
    """(planes * hidden, 2 * planes) 0/1: plane p's hidden units see the inputs of the planes
    of the groups (``group`` consecutive planes) before p's: with groups of 1, every q < p."""
    mask = np.zeros((planes * hidden, 2 * planes), np.int64)
    for p in range(planes):
        mask[p * hidden:(p + 1) * hidden, :2 * (p - p % group)] = 1
    return mask


def symbol_inputs(symbols: np.ndarray) -> np.ndarray:
    """(N, P, h, w) integer symbols -> (N, 2P, h, w): per plane clip(s) * 16, min(|s|, 15) * 16."""
    s = np.clip(symbols.astype(np.int64), -HEAD, HEAD)
    n, planes, h, w = s.shape
    return (np.stack([s, np.abs(s)], axis=2) * SYMBOL_GAIN).reshape(n, 2 * planes, h, w)


def round_shift(acc: np.ndarray, bits: int) -> np.ndarray:
    """acc / 2^bits rounded half up (an arithmetic shift: floor of acc / 2^bits + 1/2)."""
    return (acc + (1 << (bits - 1))) >> bits


def activation(acc: np.ndarray, bits: int) -> np.ndarray:
    return np.clip(round_shift(acc, bits), 0, ACTIVATION_MAX)


def unshuffle(x: np.ndarray, r: int) -> np.ndarray:
    """torch's pixel_unshuffle: (N, C, H, W) -> (N, C r^2, H/r, W/r), channel c r^2 + i r + j."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4).reshape(n, c * r * r, h // r, w // r)


EXACT_FLOAT = 1 << 53  # every integer of smaller magnitude is a float64, and so is every partial sum of them


def integer_matmul(weight: np.ndarray, x: np.ndarray) -> np.ndarray:
    """weight (..., O, K) @ x (..., K, M) in int64, exactly. Through float64 (BLAS) when no
    partial sum can reach 2^53: then every product and every partial sum is an integer that
    float64 holds exactly, in whatever order the library adds them."""
    if weight.size and x.size:
        bound = int(np.abs(weight).max()) * int(np.abs(x).max()) * weight.shape[-1]
        if bound < EXACT_FLOAT:
            return np.matmul(weight.astype(np.float64), x.astype(np.float64)).astype(np.int64)
    return np.matmul(weight, x)


def conv1x1(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    n, c, h, w = x.shape
    out = integer_matmul(weight, x.reshape(n, c, h * w)).reshape(n, -1, h, w)
    return out if bias is None else out + bias[None, :, None, None]


def conv3x3(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, groups: int = 1) -> np.ndarray:
    """Zero-padded 3x3 convolution, torch's layout (O, I / groups, 3, 3); exact in int64."""
    n, c, h, w = x.shape
    o = weight.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    # im2col: (n, groups, c / groups * 9, h * w), rows in the weight's (input, dy, dx) order
    columns = np.stack([padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)], axis=2)
    columns = columns.reshape(n, groups, c // groups * 9, h * w)
    out = integer_matmul(weight.reshape(groups, o // groups, c // groups * 9), columns).reshape(n, o, h, w)
    return out if bias is None else out + bias[None, :, None, None]


def exp_table(d: np.ndarray) -> np.ndarray:
    """2^24 x 2^(d / 16) for d <= 0, in integers: EXP_BASE[-d mod 16] >> (-d div 16)."""
    e = -d
    return EXP_BASE[e % LOGIT_SCALE] >> np.minimum(e // LOGIT_SCALE, EXP_MAX_SHIFT)


_EXP_LOOKUP_FLOAT = exp_table(np.arange(-2 * LOGIT_MAX, 1)).astype(np.float64)  # every difference of two clipped logits


def logits_to_frequencies(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """Integer logits -> integer frequencies along ``axis``: every entry >= 1, each row
    summing to 2^FREQUENCY_BITS; the rounding's shortfall goes to the row's (first) largest."""
    z = np.moveaxis(np.asarray(z, np.int64), axis, -1)
    freq = frequency_rows(z.reshape(-1, z.shape[-1]))
    return np.moveaxis(freq.reshape(z.shape), -1, axis).astype(np.uint32)


def frequency_rows(z: np.ndarray) -> np.ndarray:
    """:func:`logits_to_frequencies` of (rows, alphabet) int64 logits, as int64.

    In float64, exactly: every weight is an integer of at most 2^24, so the products with the
    room (under 2^16) are exact below 2^40 and the row sums below 2^53; the quotient by a sum
    b >= 2^24 is within 2^-37 of the true one, while a true quotient that is not an integer
    lies at least 1/b >= 2^-29 from one, so its floor is the integer division's."""
    return frequency_rows_float(np.asarray(z, np.int64)).astype(np.int64)


def frequency_rows_float(z: np.ndarray) -> np.ndarray:
    """:func:`frequency_rows` of integer logits held in any integer or float64 array, as
    float64 integers (the coder's path: no conversions on the way)."""
    peak = z.argmax(axis=1)  # the first largest logit is the first largest weight
    rows = np.arange(len(z))
    d = z - z[rows, peak][:, None]
    if d.size and d.min() >= -2 * LOGIT_MAX:
        d += 2 * LOGIT_MAX
        weights = _EXP_LOOKUP_FLOAT[d.astype(np.intp)]
    else:
        weights = exp_table(d.astype(np.int64)).astype(np.float64)
    room = float((1 << FREQUENCY_BITS) - z.shape[1])
    totals = weights.sum(axis=1, keepdims=True)
    freq = np.multiply(weights, room, out=weights)
    np.divide(freq, totals, out=freq)  # one division of exact integers: see frequency_rows
    np.floor(freq, out=freq)
    freq += 1
    freq[rows, peak] += (1 << FREQUENCY_BITS) - freq.sum(axis=1)
    return freq


@cache
def _scaled_exp_lookup(alphabet: int) -> np.ndarray:
    """Every weight of :data:`_EXP_LOOKUP_FLOAT` times the room (2^16 - alphabet): exact integers under 2^40."""
    return _EXP_LOOKUP_FLOAT * float((1 << FREQUENCY_BITS) - alphabet)


def clipped_frequency_rows(z: np.ndarray, out: np.ndarray | None = None, index: np.ndarray | None = None) -> np.ndarray:
    """:func:`frequency_rows_float` of integer logits already clipped to -LOGIT_MAX..LOGIT_MAX
    (integers held in any integer or float array; the coder's path), in fewer passes: the
    weights come out of the table already times the room, and their row sum, room x the
    weights' sum, is divided back exactly, so each entry is still one division of the same
    exact integers. ``out`` (float64) and ``index`` (intp), of z's shape, are work arrays
    to reuse: the result is ``out``."""
    peak = z.argmax(axis=1)
    rows = np.arange(len(z))
    room = float((1 << FREQUENCY_BITS) - z.shape[1])
    if index is None:
        index = np.empty(z.shape, np.intp)
    np.subtract(z, (z[rows, peak] - 2 * LOGIT_MAX)[:, None], out=index, casting="unsafe")  # exact integers
    scaled = np.take(_scaled_exp_lookup(z.shape[1]), index, out=out, mode="clip")  # (in range: unbuffered)
    totals = scaled.sum(axis=1, keepdims=True)
    totals /= room
    freq = np.divide(scaled, totals, out=scaled)
    np.floor(freq, out=freq)
    freq += 1
    freq[rows, peak] += (1 << FREQUENCY_BITS) - freq.sum(axis=1)
    return freq


# ------------------------------------------------------------------ the network

def gray_features(prior: IntegerPrior, gray: np.ndarray) -> np.ndarray:
    """(N, H, W) uint8 decoded gray (sides multiples of CELL) -> (N, G, H/32, W/32) 0..255."""
    cfg, t = prior.config, prior.tensors
    half = 1 << (cfg.weight_bits - 1)
    # The strided layers see the gray as 0..255, the offset folded into the first layer's bias:
    # the same integer sums. Each layer's largest partial sum, in units of 2^-bits:
    bounds = [int(np.abs(t[f"gray{k}.weight"]).max()) * ACTIVATION_MAX * t[f"gray{k}.weight"].shape[1]
              + int(np.abs(_gray_bias(t, k, half)).max()) for k in range(len(cfg.gray_strides))]
    # In floats where every partial sum is an integer times 2^-bits under the format's exact range
    # (2^24 units in float32, 2^53 in float64): floor() is then the integer network's shift, exactly
    dtype = np.float32 if max(bounds) < EXACT_FLOAT32 else np.float64 if max(bounds) < EXACT_FLOAT else None
    if dtype is not None:
        scale = 2.0 ** -cfg.weight_bits
        x = gray[:, None]
        for k, stride in enumerate(cfg.gray_strides):
            x = unshuffle(x, stride)
            n, c, h, w = x.shape
            acc = np.matmul((t[f"gray{k}.weight"] * scale).astype(dtype), x.reshape(n, c, h * w).astype(dtype))
            acc += (_gray_bias(t, k, half) * scale).astype(dtype)[None, :, None]
            np.floor(acc, out=acc)
            x = np.clip(acc, 0, ACTIVATION_MAX, out=acc).reshape(n, -1, h, w)
        x = x.astype(np.int64)
    else:
        x = gray.astype(np.int64)[:, None] - GRAY_OFFSET
        for k, stride in enumerate(cfg.gray_strides):
            x = activation(conv1x1(unshuffle(x, stride), t[f"gray{k}.weight"], t[f"gray{k}.bias"]), cfg.weight_bits)
    return activation(conv3x3(x, t["gray_cell.weight"], t["gray_cell.bias"]), cfg.weight_bits)


EXACT_FLOAT32 = 1 << 24


def _gray_bias(t: dict[str, np.ndarray], k: int, half: int) -> np.ndarray:
    """Layer k's bias plus the rounding's half; for the first layer also the gray's offset
    (-GRAY_OFFSET times each row's weights), so that it reads the gray as 0..255."""
    bias = t[f"gray{k}.bias"] + half
    return bias - GRAY_OFFSET * t[f"gray{k}.weight"].sum(axis=1) if k == 0 else bias


def logits(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> np.ndarray:
    """(N, P, ALPHABET, h, w) int64 logits of every symbol (module docstring). The
    distribution of plane p in a cell depends only on the symbols a decoder has by then."""
    cfg, t = prior.config, prior.tensors
    n, planes, h, w = symbols.shape
    if planes != cfg.planes or gray.shape[1:] != (h * CELL, w * CELL):
        raise ValueError(f"symbols {symbols.shape} and gray {gray.shape} do not fit a {cfg.planes}-plane prior")
    side = [np.full((n, 1, h, w), rate_feature(step), np.int64)]
    if cfg.gray:
        side.insert(0, gray_features(prior, gray))
    acc = conv1x1(np.concatenate(side, axis=1), t["side.weight"], t["side.bias"])
    inputs = symbol_inputs(symbols)
    acc = acc + conv1x1(inputs, t["planes.weight"] * plane_mask(planes, cfg.hidden, cfg.plane_group))
    if cfg.checkerboard:
        anchors = anchor_mask(h, w)
        spatial = conv3x3(inputs * anchors, t["spatial.weight"], groups=planes // cfg.planes_per_channel)
        acc = acc + spatial * (1 - anchors)
    hidden = activation(acc, cfg.weight_bits).reshape(n, planes, cfg.hidden, h, w)
    out = np.einsum("pah,nphyx->npayx", t["out.weight"].reshape(planes, ALPHABET, cfg.hidden), hidden)
    out = out + t["out.bias"].reshape(1, planes, ALPHABET, 1, 1)
    return np.clip(round_shift(out, cfg.weight_bits), -LOGIT_MAX, LOGIT_MAX)


def frequencies(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> np.ndarray:
    """(N, P, h, w, ALPHABET) uint32 frequencies (each row sums to 2^16, entries >= 1) of
    every symbol of ``symbols`` (N, P, h, w) given the decoded ``gray`` (N, 32h, 32w) uint8
    and the quantisation step: the coder's exact model, the same on every machine."""
    return np.moveaxis(logits_to_frequencies(logits(prior, gray, symbols, step), axis=2), 2, -1)


def escape_bits(symbols: np.ndarray) -> np.ndarray:
    """Bits an escaped symbol spends after its escape class (length, its bits, sign); 0 if not escaped."""
    magnitude = np.abs(symbols.astype(np.int64)) - HEAD - 1
    escaped = magnitude >= 0
    length = np.floor(np.log2(np.maximum(magnitude, 0) + 1)).astype(np.int64).clip(max=MAX_PREFIX - 1)
    prefix = -np.log2(ESCAPE_PREFIX[length] / float(1 << FREQUENCY_BITS))
    return np.where(escaped, prefix + length + 1.0, 0.0)


def ideal_bits(prior: IntegerPrior, gray: np.ndarray, symbols: np.ndarray, step: float) -> np.ndarray:
    """(N,) ideal code length in bits of each image's symbols: -log2 of their frequencies / 2^16,
    plus what escaped magnitudes cost."""
    freq = frequencies(prior, gray, symbols, step)
    s = symbols.astype(np.int64)
    index = np.where(np.abs(s) <= HEAD, s + HEAD, ESCAPE)
    chosen = np.take_along_axis(freq, index[..., None], -1)[..., 0].astype(np.float64)
    bits = FREQUENCY_BITS - np.log2(chosen) + escape_bits(s)
    return bits.reshape(len(s), -1).sum(axis=1)


def pad_gray(gray: np.ndarray) -> np.ndarray:
    """(H, W) gray -> sides up to multiples of CELL by repeating the last row and column, as
    the network's input is padded (``engines/tiling.py``)."""
    h, w = gray.shape
    return np.pad(gray, ((0, -h % CELL), (0, -w % CELL)), mode="edge")
