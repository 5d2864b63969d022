"""The Bjontegaard deltas (benchmarks/bjontegaard.py) on synthetic curves whose answer is known."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from benchmarks import bjontegaard
from benchmarks.bjontegaard import bd_psnr, bd_rate

# an invgray-like curve: residual bpp against RGB PSNR, not a polynomial of either
RATE = np.array([0.0049, 0.0085, 0.0149, 0.0261, 0.0440, 0.0695, 0.1078, 0.1281, 0.1483])
PSNR = np.array([28.70, 31.48, 33.53, 35.26, 36.54, 37.41, 37.98, 38.12, 38.23])


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.0, 1.25])
def test_constant_rate_factor_gives_that_factor(factor: float) -> None:
    # log(factor * r) = log(r) + log(factor): the cubic fits differ by exactly that constant
    assert bd_rate(RATE, PSNR, factor * RATE, PSNR) == pytest.approx(100 * (factor - 1), abs=1e-9)


def test_constant_psnr_offset_gives_that_offset() -> None:
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 0.3) == pytest.approx(0.3, abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR - 1.0) == pytest.approx(-1.0, abs=1e-9)


def test_swapping_the_curves_inverts_the_factor() -> None:
    forward = bd_rate(RATE, PSNR, 0.8 * RATE, PSNR)
    backward = bd_rate(0.8 * RATE, PSNR, RATE, PSNR)
    assert (1 + forward / 100) * (1 + backward / 100) == pytest.approx(1.0, abs=1e-12)


def test_only_the_shared_psnr_interval_counts() -> None:
    # the test curve covers only the upper part of the reference's PSNR range; on that
    # part it is the reference's fit shifted by a constant factor
    fit = np.polyfit(PSNR, np.log(RATE), 3)
    psnr = np.linspace(34.0, 38.23, 6)
    rate = 0.7 * np.exp(np.polyval(fit, psnr))
    assert bd_rate(RATE, PSNR, rate, psnr) == pytest.approx(-30.0, abs=1e-9)


def test_disjoint_curves_are_refused() -> None:
    with pytest.raises(ValueError):
        bd_rate(RATE, PSNR, RATE, PSNR + 20)


def test_doctests() -> None:
    failures, tried = doctest.testmod(bjontegaard, verbose=False)
    assert tried >= 2 and failures == 0
