from __future__ import annotations

import numpy as np
import pytest

from invgray_cli.format.container import (
    MAGIC,
    OVERHEAD,
    InvalidResidualError,
    Residual,
    gray_fingerprint,
    gray_signature,
    read_residual,
    signature_distance,
    write_residual,
)
from invgray_cli.format.packing import pack_symbols, raw_size_of


def _residual() -> Residual:
    symbols = np.zeros((64, 1, 1), np.int32)
    symbols[5, 0, 0] = -5
    payload = pack_symbols(symbols)
    gray = np.arange(20 * 30, dtype=np.uint8).reshape(20, 30)
    return Residual("0123456789abcdef", 30, 20, 64, 32, 0.75, gray_fingerprint(gray), gray_signature(gray),
                    raw_size_of(payload), payload)


def test_round_trip() -> None:
    original = _residual()
    data = write_residual(original)
    assert data[:4] == MAGIC
    assert len(data) == OVERHEAD + len(original.payload)
    assert read_residual(data) == original


def test_truncated_file() -> None:
    data = write_residual(_residual())
    for cut in (0, 3, 5, OVERHEAD - 1, len(data) - 1):
        with pytest.raises(InvalidResidualError):
            read_residual(data[:cut])


def test_trailing_bytes() -> None:
    with pytest.raises(InvalidResidualError, match="trailing"):
        read_residual(write_residual(_residual()) + b"x")


def test_bad_magic() -> None:
    data = bytearray(write_residual(_residual()))
    data[0] ^= 0xFF
    with pytest.raises(InvalidResidualError, match="magic"):
        read_residual(bytes(data))


def test_unknown_version_is_refused_clearly() -> None:
    data = bytearray(write_residual(_residual()))
    data[4] = 99
    with pytest.raises(InvalidResidualError, match="version 99 is not supported"):
        read_residual(bytes(data))


def test_any_bit_flip_is_detected() -> None:
    data = write_residual(_residual())
    for position in range(5, len(data)):
        corrupted = bytearray(data)
        corrupted[position] ^= 0x10
        with pytest.raises(InvalidResidualError):
            read_residual(bytes(corrupted))


def test_fingerprint_depends_on_pixels_and_shape() -> None:
    gray = np.zeros((4, 6), np.uint8)
    assert gray_fingerprint(gray) != gray_fingerprint(gray.reshape(6, 4))
    changed = gray.copy()
    changed[2, 3] = 1
    assert gray_fingerprint(gray) != gray_fingerprint(changed)


def test_signature_tolerates_small_changes_only() -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (50, 70), dtype=np.uint8)
    noisy = np.clip(gray.astype(int) + rng.integers(-3, 4, gray.shape), 0, 255).astype(np.uint8)
    assert len(gray_signature(gray)) == 16
    assert signature_distance(gray_signature(gray), gray_signature(noisy)) <= 1
    assert signature_distance(gray_signature(gray), gray_signature(255 - gray)) > 10
    assert len(gray_signature(np.zeros((1, 1), np.uint8))) == 16
