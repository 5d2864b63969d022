"""invgray-v2's integer prior (invgray_cli/model/integer_prior.py, numpy only): exact and
deterministic integer frequencies, and the checkerboard's and the planes' masks (a symbol's
distribution depends only on what a decoder has decoded before it). No torch here: the
torch twin's agreement is tests/test_conditional.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from invgray_cli.format.entropy import ALPHABET, FREQUENCY_BITS, HEAD
from invgray_cli.model.integer_prior import (
    CELL,
    EXP_BASE,
    IntegerPrior,
    PriorConfig,
    anchor_mask,
    exp_table,
    frequencies,
    ideal_bits,
    logits_to_frequencies,
)

PLANES, PER_CHANNEL, HIDDEN = 32, 16, 4


def random_prior(seed: int = 0, **options: object) -> IntegerPrior:
    """An integer prior with random weights of the sizes training gives (about 2^10 x 0.1)."""
    cfg = PriorConfig(planes=PLANES, planes_per_channel=PER_CHANNEL, hidden=HIDDEN, **options)
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 100) -> np.ndarray:
        return np.round(rng.normal(0, scale, shape)).astype(np.int64)

    tensors, channels = {}, 1
    for k, (width, stride) in enumerate(zip(cfg.gray_widths, cfg.gray_strides)):
        tensors[f"gray{k}.weight"], tensors[f"gray{k}.bias"] = w(width, channels * stride * stride), w(width)
        channels = width
    tensors["gray_cell.weight"], tensors["gray_cell.bias"] = w(channels, channels, 3, 3, scale=30), w(channels)
    tensors["side.weight"] = w(PLANES * HIDDEN, cfg.gray_features + 1)
    tensors["side.bias"] = w(PLANES * HIDDEN, scale=3000)
    tensors["planes.weight"] = w(PLANES * HIDDEN, 2 * PLANES)
    tensors["spatial.weight"] = w(PLANES * HIDDEN, 2 * PER_CHANNEL, 3, 3)
    tensors["out.weight"] = w(PLANES * ALPHABET, HIDDEN, scale=400)
    tensors["out.bias"] = w(PLANES * ALPHABET, scale=20000)
    return IntegerPrior(cfg, tensors)


def random_inputs(seed: int, n: int = 2, rows: int = 3, cols: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    gray = rng.integers(0, 256, (n, rows * CELL, cols * CELL), dtype=np.uint8)
    symbols = np.round(rng.laplace(0, 1.5, (n, PLANES, rows, cols))).astype(np.int64)
    symbols[0, 3, 1, 1] = 40  # an escape
    return gray, symbols


def test_frequencies_are_normalised_integers() -> None:
    gray, symbols = random_inputs(1)
    freq = frequencies(random_prior(), gray, symbols, 2.0)
    assert freq.dtype == np.uint32 and freq.shape == (*symbols.shape, ALPHABET)
    assert freq.min() >= 1 and (freq.astype(np.int64).sum(-1) == 1 << FREQUENCY_BITS).all()
    assert len(np.unique(freq.reshape(-1, ALPHABET), axis=0)) > 10  # the weights do condition them


def test_frequencies_repeat_exactly_and_do_not_depend_on_the_batch() -> None:
    prior = random_prior(2)
    gray, symbols = random_inputs(3, n=3)
    whole = frequencies(prior, gray, symbols, 1.5)
    assert np.array_equal(whole, frequencies(prior, gray, symbols, 1.5))
    split = np.concatenate([frequencies(prior, gray[i:i + 1], symbols[i:i + 1], 1.5) for i in range(3)])
    assert np.array_equal(whole, split)
    assert np.array_equal(whole[1:], frequencies(prior, gray[1:], symbols[1:], 1.5))


def test_exp_table_and_normalisation() -> None:
    d = -np.arange(0, 2000)
    table = exp_table(d)
    assert table[0] == 1 << 24 and (np.diff(table) <= 0).all() and table[-1] == 0
    assert table[16] == EXP_BASE[0] >> 1 and table[33] == EXP_BASE[1] >> 2
    flat = logits_to_frequencies(np.zeros((1, ALPHABET), np.int64))
    assert flat.sum() == 1 << FREQUENCY_BITS and flat.max() - flat.min() <= ALPHABET
    peaked = logits_to_frequencies(np.array([[0] * 5 + [2000] + [0] * (ALPHABET - 6)]))
    assert peaked[0, 5] == (1 << FREQUENCY_BITS) - (ALPHABET - 1) and (np.delete(peaked, 5) == 1).all()


def test_anchors_see_no_other_cell_and_the_second_half_only_anchors() -> None:
    """Changing a non-anchor cell changes no other cell's frequencies; changing an anchor
    changes no other anchor, and non-anchors only within its 3x3 neighbourhood."""
    prior = random_prior(4)
    gray, symbols = random_inputs(5, n=1, rows=4, cols=5)
    base = frequencies(prior, gray, symbols, 2.0)
    anchors = anchor_mask(4, 5).astype(bool)
    for cell in [(1, 2), (2, 2)]:  # (1 + 2) odd: a second-half cell; (2 + 2) even: an anchor
        changed = symbols.copy()
        changed[0, :, cell[0], cell[1]] += 3
        moved = (frequencies(prior, gray, changed, 2.0) != base).any(axis=(0, 1, 4))  # per cell (rows, cols)
        moved[cell] = False
        if anchors[cell]:
            near = np.zeros_like(anchors)
            near[max(0, cell[0] - 1):cell[0] + 2, max(0, cell[1] - 1):cell[1] + 2] = True
            assert not moved[anchors].any() and not moved[~near].any() and moved[near & ~anchors].any()
        else:
            assert not moved.any()


def test_without_checkerboard_no_cell_sees_another() -> None:
    prior = random_prior(4, checkerboard=False)
    prior.tensors.pop("spatial.weight")
    gray, symbols = random_inputs(5, n=1, rows=4, cols=5)
    changed = symbols.copy()
    changed[0, :, 2, 2] += 3
    moved = (frequencies(prior, gray, changed, 2.0) != frequencies(prior, gray, symbols, 2.0)).any(axis=(0, 1, 4))
    assert moved[2, 2] and moved.sum() == 1


@pytest.mark.parametrize("plane", [0, 5, 16, PLANES - 1])
def test_a_plane_sees_only_the_planes_before_it(plane: int) -> None:
    prior = random_prior(6)
    gray, symbols = random_inputs(7, n=1)
    base = frequencies(prior, gray, symbols, 3.0)
    changed = symbols.copy()
    changed[0, plane, 1, 2] -= 5
    moved = (frequencies(prior, gray, changed, 3.0) != base).any(axis=-1)[0, :, 1, 2]  # per plane of that cell
    assert not moved[:plane + 1].any()
    assert plane == PLANES - 1 or moved[plane + 1:].any()


def test_the_gray_and_the_step_condition_the_frequencies() -> None:
    prior = random_prior(8)
    gray, symbols = random_inputs(9, n=1)
    base = frequencies(prior, gray, symbols, 2.0)
    assert not np.array_equal(base, frequencies(prior, 255 - gray, symbols, 2.0))
    assert not np.array_equal(base, frequencies(prior, gray, symbols, 4.0))
    assert np.array_equal(base, frequencies(prior, gray, symbols, 2.01))  # the same rate class
    blind = random_prior(8, gray=False)
    assert np.array_equal(frequencies(blind, gray, symbols, 2.0), frequencies(blind, 255 - gray, symbols, 2.0))


def test_ideal_bits_are_minus_log2_of_the_frequencies(tmp_path: Path) -> None:
    prior = random_prior(10)
    gray, symbols = random_inputs(11)
    freq = frequencies(prior, gray, symbols, 2.0).astype(np.float64)
    inside = np.abs(symbols) <= HEAD
    index = np.where(inside, symbols + HEAD, ALPHABET - 1)
    chosen = np.take_along_axis(freq, index[..., None], -1)[..., 0]
    expected = (FREQUENCY_BITS - np.log2(chosen)).reshape(2, -1).sum(1)
    escape_extra = ideal_bits(prior, gray, symbols, 2.0) - expected
    assert escape_extra[1] == pytest.approx(0) and escape_extra[0] > 1  # one escape, in image 0
    prior.save(tmp_path / "prior.npz")
    loaded = IntegerPrior.load(tmp_path / "prior.npz")
    assert loaded.config == prior.config
    assert np.array_equal(frequencies(loaded, gray, symbols, 2.0), freq.astype(np.uint32))


def test_frequency_rows_in_float64_equal_the_integer_division() -> None:
    from invgray_cli.model.integer_prior import LOGIT_MAX, clipped_frequency_rows, frequency_rows

    rng = np.random.default_rng(11)
    z = np.concatenate([rng.integers(-LOGIT_MAX, LOGIT_MAX + 1, (20000, ALPHABET)),
                        rng.integers(-40, 41, (20000, ALPHABET)),  # near-flat rows: many ties
                        np.zeros((1, ALPHABET), np.int64), np.full((1, ALPHABET), LOGIT_MAX)])
    z[-3, 5] = LOGIT_MAX  # one dominant entry
    weights = exp_table(z - z.max(axis=1, keepdims=True))
    expected = 1 + weights * ((1 << FREQUENCY_BITS) - ALPHABET) // weights.sum(axis=1, keepdims=True)
    expected[np.arange(len(z)), weights.argmax(axis=1)] += (1 << FREQUENCY_BITS) - expected.sum(axis=1)
    assert np.array_equal(frequency_rows(z), expected)
    assert np.array_equal(clipped_frequency_rows(z.astype(np.intp)), expected)  # the coder's shorter path


def test_saved_prior_keeps_every_integer_and_its_digest(tmp_path: Path) -> None:
    """Tensors are stored in the narrowest integer type that holds them and read back as int64."""
    prior = random_prior(12)
    prior.tensors["out.bias"][0] = -(1 << 40)  # needs int64
    prior.tensors["side.bias"][0] = 1 << 20  # needs int32
    prior.save(tmp_path / "prior.npz")
    with np.load(tmp_path / "prior.npz") as stored:
        assert stored["out.bias"].dtype == np.int64 and stored["side.bias"].dtype == np.int32
        assert stored["planes.weight"].dtype == np.int16
    loaded = IntegerPrior.load(tmp_path / "prior.npz")
    assert sorted(loaded.tensors) == sorted(prior.tensors)
    assert all(loaded.tensors[k].dtype == np.int64 and np.array_equal(loaded.tensors[k], v)
               for k, v in prior.tensors.items())
    assert loaded.digest() == prior.digest()
    prior.tensors["planes.weight"][0, 0] += 1
    assert loaded.digest() != prior.digest()


@pytest.mark.parametrize("path", ["float64", "int64"])
def test_gray_features_agree_on_every_path(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gray's layers run in float32, float64 or int64, whichever the weights' bound allows:
    the same integers on each."""
    from invgray_cli.model import integer_prior

    prior = random_prior(13)
    gray, _ = random_inputs(14)
    fast = integer_prior.gray_features(prior, gray)
    monkeypatch.setattr(integer_prior, "EXACT_FLOAT32", 0)
    if path == "int64":
        monkeypatch.setattr(integer_prior, "EXACT_FLOAT", 0)
    assert np.array_equal(integer_prior.gray_features(prior, gray), fast)
    assert fast.min() >= 0 and fast.max() <= 255 and fast.std() > 0
