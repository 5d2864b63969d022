"""Range coding under invgray-v2's integer prior (invgray_cli/model/prior_coding.py): the
decoder's plane-by-plane frequencies are the prior's own, symbols survive the round trip
with escapes and odd sizes, the bytes come close to the ideal code length, and damage or
a different gray fails with the format's error rather than a crash."""

from __future__ import annotations

import numpy as np
import pytest

from invgray_cli.format.entropy import EntropyCodingError
from invgray_cli.model.integer_prior import CELL, frequencies, ideal_bits
from invgray_cli.model.prior_coding import PlaneModel, decode_symbols, encode_symbols
from tests.test_integer_prior import PLANES, random_inputs, random_prior


@pytest.mark.parametrize("options", [{}, {"checkerboard": False}, {"gray": False}, {"plane_group": 4}])
def test_group_by_group_frequencies_are_the_priors(options: dict) -> None:
    prior = random_prior(3, **options)
    gray, symbols = random_inputs(4, n=1)
    whole = frequencies(prior, gray, symbols, 1.5)[0]  # (P, h, w, A)
    _, rows, cols = symbols[0].shape
    model = PlaneModel(prior, gray[0], 1.5, rows, cols)
    flat = symbols[0].reshape(PLANES, -1)
    size = prior.config.plane_group
    for phase, cells in enumerate(model.phases):
        for group in range(PLANES // size):
            planes = slice(group * size, (group + 1) * size)
            expected = whole[planes].reshape(size, rows * cols, -1)[:, cells].reshape(-1, whole.shape[-1])
            assert np.array_equal(model.frequencies(phase, group), expected), (phase, group)
            model.record(phase, group, flat[planes][:, cells].ravel())


@pytest.mark.parametrize("group", [1, 4])
def test_the_encoders_one_pass_equals_the_decoders_steps(group: int) -> None:
    prior = random_prior(3, plane_group=group)
    gray, symbols = random_inputs(4, n=1)
    _, rows, cols = symbols[0].shape
    stepwise, whole = PlaneModel(prior, gray[0], 1.5, rows, cols), PlaneModel(prior, gray[0], 1.5, rows, cols)
    flat = symbols[0].reshape(PLANES, -1)
    expected = []
    for phase, cells in enumerate(stepwise.phases):
        for g in range(PLANES // group):
            part = flat[g * group:(g + 1) * group][:, cells].ravel()
            expected.append(stepwise.coder_weights(phase, g))
            stepwise.record(phase, g, part)
            whole.record(phase, g, part)
    assert np.array_equal(np.concatenate(expected), np.concatenate([whole.coder_weights(p) for p in (0, 1)]))


def test_weights_too_large_for_float64_take_the_integer_path() -> None:
    prior = random_prior(3)
    prior.tensors["out.weight"] = prior.tensors["out.weight"] << 35  # partial sums past 2^53
    gray, symbols = random_inputs(4, n=1)
    whole = frequencies(prior, gray, symbols, 1.5)[0]
    _, rows, cols = symbols[0].shape
    model = PlaneModel(prior, gray[0], 1.5, rows, cols)
    assert model.dtype is np.int64
    flat = symbols[0].reshape(PLANES, -1)
    for phase, cells in enumerate(model.phases):
        for plane in range(PLANES):
            assert np.array_equal(model.frequencies(phase, plane), whole[plane].reshape(rows * cols, -1)[cells])
            model.record(phase, plane, flat[plane, cells])


def test_grouped_planes_see_only_the_groups_before() -> None:
    prior = random_prior(3, plane_group=4, checkerboard=False)  # (the anchors' context crosses groups)
    gray, symbols = random_inputs(4, n=1)
    changed = symbols.copy()
    changed[0, 5] += 3  # plane 5, in the second group
    before, after = frequencies(prior, gray, symbols, 1.5)[0], frequencies(prior, gray, changed, 1.5)[0]
    assert np.array_equal(before[:8], after[:8]) and not np.array_equal(before[8:], after[8:])


@pytest.mark.parametrize("rows, cols, group", [(3, 4, 1), (1, 1, 1), (2, 5, 1), (3, 4, 4)])
def test_round_trip_with_escapes(rows: int, cols: int, group: int) -> None:
    prior = random_prior(5, plane_group=group)
    rng = np.random.default_rng(rows * 10 + cols)
    gray = rng.integers(0, 256, (rows * CELL - 7, cols * CELL - 3), dtype=np.uint8)  # padded inside
    symbols = np.round(rng.laplace(0, 2.0, (PLANES, rows, cols))).astype(np.int64)
    symbols[0, 0, 0], symbols[-1, rows - 1, cols - 1] = 300, -41  # escapes, both signs
    payload = encode_symbols(prior, gray, symbols, 2.0)
    assert np.array_equal(decode_symbols(prior, gray, payload, symbols.shape, 2.0), symbols)


def test_bytes_come_close_to_the_ideal_code_length() -> None:
    prior = random_prior(6)
    gray, symbols = random_inputs(7, n=1, rows=6, cols=8)
    symbols[0, 3, 1, 1] = 0
    ideal = float(ideal_bits(prior, gray, symbols, 1.0)[0])
    real = 8 * len(encode_symbols(prior, gray[0], symbols[0], 1.0))
    assert ideal <= real <= ideal * 1.01 + 64  # the range coder's words and its tail


def test_damage_and_a_different_gray_fail_cleanly() -> None:
    prior = random_prior(8)
    gray, symbols = random_inputs(9, n=1)
    payload = encode_symbols(prior, gray[0], symbols[0], 1.0)
    with pytest.raises(EntropyCodingError):
        decode_symbols(prior, gray[0], payload[:-2], symbols[0].shape, 1.0)
    other = decode_symbols(prior, 255 - gray[0], payload, symbols[0].shape, 1.0)  # decodes, to other symbols
    assert not np.array_equal(other, symbols[0])
    with pytest.raises(EntropyCodingError):
        decode_symbols(prior, gray[0], payload, (PLANES - 1, *symbols[0].shape[1:]), 1.0)


def test_golden_payload_decodes_and_encodes_the_same() -> None:
    """Format 4's bytes, pinned (tests/golden/make_golden.py format4-coder): the coder as
    released wrote this payload, and every later coder must read and write the very same."""
    from pathlib import Path

    from PIL import Image

    from invgray_cli.model.integer_prior import IntegerPrior

    folder = Path(__file__).resolve().parent / "golden" / "format4-coder"
    prior = IntegerPrior.load(folder / "prior.npz")
    gray = np.asarray(Image.open(folder / "gray.png"))
    symbols, payload = np.load(folder / "symbols.npy"), (folder / "payload.bin").read_bytes()
    assert np.array_equal(decode_symbols(prior, gray, payload, symbols.shape, 2.787), symbols)
    assert encode_symbols(prior, gray, symbols, 2.787) == payload


def test_threads_and_sizes_share_no_work_arrays() -> None:
    """The coder's work arrays are its thread's: photos of different sizes coded at once in
    several threads give the bytes and symbols each gives alone."""
    from concurrent.futures import ThreadPoolExecutor

    prior = random_prior(5, plane_group=4)
    cases = []
    for seed, (rows, cols) in enumerate([(3, 4), (5, 7), (2, 2), (4, 4)] * 3):
        gray, symbols = random_inputs(seed, n=1, rows=rows, cols=cols)
        cases.append((gray[0], symbols[0]))
    alone = [encode_symbols(prior, gray, symbols, 1.5) for gray, symbols in cases]

    def round_trip(case: tuple[np.ndarray, np.ndarray]) -> tuple[bytes, np.ndarray]:
        payload = encode_symbols(prior, case[0], case[1], 1.5)
        return payload, decode_symbols(prior, case[0], payload, case[1].shape, 1.5)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(round_trip, cases))
    for (gray, symbols), expected, (payload, decoded) in zip(cases, alone, results):
        assert payload == expected and np.array_equal(decoded, symbols)
