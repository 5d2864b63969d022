from __future__ import annotations

import numpy as np
import pytest
import zstandard

from invgray_cli.format.packing import (
    PackingError,
    max_raw_size,
    pack_symbols,
    raw_size_of,
    unpack_symbols,
)


@pytest.mark.parametrize("density", [0.0, 0.02, 0.3, 1.0])
@pytest.mark.parametrize("magnitude", [1, 100, 300, 65791])
def test_round_trip(density: float, magnitude: int) -> None:
    rng = np.random.default_rng(int(density * 100) + magnitude)
    shape = (8, 13, 21)
    symbols = (rng.random(shape) < density) * rng.integers(-magnitude, magnitude + 1, shape)
    payload = pack_symbols(symbols)
    assert np.array_equal(unpack_symbols(payload, shape, raw_size_of(payload)), symbols)


def test_sparse_symbols_pack_small() -> None:
    symbols = np.zeros((8, 64, 96), np.int32)
    symbols[0, 10:12, 20:30] = 3
    assert len(pack_symbols(symbols)) < 60


def test_too_large_magnitude_is_refused() -> None:
    with pytest.raises(ValueError):
        pack_symbols(np.array([[[70000]]]))


def test_declared_size_must_match_frame() -> None:
    symbols = np.ones((2, 4, 4), np.int32)
    payload = pack_symbols(symbols)
    with pytest.raises(PackingError):
        unpack_symbols(payload, symbols.shape, raw_size_of(payload) + 1)


def test_bomb_is_refused_before_decompression() -> None:
    shape = (1, 2, 2)
    bomb = zstandard.ZstdCompressor().compress(b"\x01" + bytes(10_000_000))
    with pytest.raises(PackingError):
        unpack_symbols(bomb, shape, raw_size_of(bomb))
    assert max_raw_size(shape) < 100


def test_garbage_payload_is_refused() -> None:
    with pytest.raises(PackingError):
        unpack_symbols(b"not zstd at all", (1, 2, 2), 5)


def test_smooth_planes_are_row_delta_coded_and_smaller() -> None:
    ramp = np.tile(np.arange(40) // 3, (12, 1))[None].repeat(2, axis=0)
    noise = np.random.default_rng(3).integers(-1, 2, (2, 12, 40))
    symbols = np.concatenate([ramp, noise])
    payload = pack_symbols(symbols)
    raw = zstandard.ZstdDecompressor().decompress(payload)
    assert raw[0] & 0x80 and raw[1] == 0b11000000  # the two ramps, not the noise
    assert np.array_equal(unpack_symbols(payload, symbols.shape, raw_size_of(payload)), symbols)
