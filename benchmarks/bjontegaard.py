"""Bjontegaard deltas (VCEG-M33) between two rate-distortion curves; numpy only, so the
tests run without the bench extra. Used by ``benchmarks/quality.py``."""

from __future__ import annotations

import numpy as np


def _bd_fit_integral(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Integral over [low, high] of the cubic least-squares fit of y as a function of x."""
    antiderivative = np.polyint(np.polyfit(x, y, 3))
    return float(np.polyval(antiderivative, high) - np.polyval(antiderivative, low))


def bd_rate(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjontegaard delta rate in %: the test curve's mean rate difference against the
    reference at equal PSNR (negative: the test needs fewer bits).

    Standard Bjontegaard (VCEG-M33): log(rate) is fitted as a cubic polynomial of
    PSNR for each curve, both fits are integrated over the PSNR interval the two
    curves share, and the mean difference d gives exp(d) - 1. Each curve needs at
    least four points; rates may be in any unit, the same for both.

    >>> psnr = [30.0, 32.0, 34.0, 36.0, 38.0]
    >>> round(bd_rate([0.01, 0.02, 0.04, 0.08, 0.16], psnr, [0.008, 0.016, 0.032, 0.064, 0.128], psnr), 6)
    -20.0
    """
    log_ref, log_test = np.log(np.asarray(rate_ref, float)), np.log(np.asarray(rate_test, float))
    psnr_ref, psnr_test = np.asarray(psnr_ref, float), np.asarray(psnr_test, float)
    low, high = max(psnr_ref.min(), psnr_test.min()), min(psnr_ref.max(), psnr_test.max())
    if not high > low:
        raise ValueError("the two curves share no PSNR interval")
    mean_difference = (_bd_fit_integral(psnr_test, log_test, low, high)
                       - _bd_fit_integral(psnr_ref, log_ref, low, high)) / (high - low)
    return float(100.0 * (np.exp(mean_difference) - 1.0))


def bd_psnr(rate_ref, psnr_ref, rate_test, psnr_test) -> float:
    """Bjontegaard delta PSNR in dB: the test curve's mean PSNR difference against the
    reference at equal rate (positive: the test is better), from cubic fits of PSNR as
    a function of log(rate) integrated over the shared log-rate interval.

    >>> rate = [0.01, 0.02, 0.04, 0.08, 0.16]
    >>> round(bd_psnr(rate, [30.0, 32.5, 34.0, 36.0, 37.0], rate, [30.5, 33.0, 34.5, 36.5, 37.5]), 6)
    0.5
    """
    log_ref, log_test = np.log(np.asarray(rate_ref, float)), np.log(np.asarray(rate_test, float))
    psnr_ref, psnr_test = np.asarray(psnr_ref, float), np.asarray(psnr_test, float)
    low, high = max(log_ref.min(), log_test.min()), min(log_ref.max(), log_test.max())
    if not high > low:
        raise ValueError("the two curves share no rate interval")
    return float((_bd_fit_integral(log_test, psnr_test, low, high)
                  - _bd_fit_integral(log_ref, psnr_ref, low, high)) / (high - low))
