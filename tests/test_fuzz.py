"""A short run of the fuzzing harness (benchmarks/fuzz.py runs it at length)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.fuzz import mutate_image, mutate_residual, seed_images, seed_inputs
from invgray_cli.codec import GrayRecompressedWarning, decode_array, encode
from invgray_cli.engines.registry import UnknownModelError
from invgray_cli.format.container import InvalidResidualError
from invgray_cli.imaging.images import ImageReadError, read_photo

PAIRS = seed_inputs()
IMAGES = seed_images()


@settings(max_examples=400, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.integers(0, len(PAIRS) - 1))
def test_mutated_residuals_decode_or_are_refused(seed: int, which: int) -> None:
    gray, residual = PAIRS[which]
    _, mutated = mutate_residual(residual, np.random.default_rng(seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GrayRecompressedWarning)
        try:
            restored = decode_array(gray, mutated)
        except (InvalidResidualError, UnknownModelError):
            return
    assert restored.dtype == np.uint8 and restored.ndim == 3


@settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1))
def test_mutated_images_encode_or_are_refused(seed: int) -> None:
    rng = np.random.default_rng(seed)
    data = mutate_image(IMAGES[rng.integers(len(IMAGES))], rng)
    try:
        photo = read_photo(data)
    except ImageReadError:
        return
    encoded = encode(photo)
    assert decode_array(encoded.gray, encoded.residual).shape == photo.rgb.shape


@pytest.mark.parametrize("cut", [0, 1, 10, 65])
def test_every_seed_is_valid_and_truncations_are_refused(cut: int) -> None:
    for gray, residual in PAIRS:
        assert decode_array(gray, residual).ndim == 3
        with pytest.raises(InvalidResidualError):
            decode_array(gray, residual[:cut])
