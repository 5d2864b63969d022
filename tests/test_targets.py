from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.codec import decode_photo, encode
from invgray_cli.codec.rate_control import STEP_RANGE, encode_to_target
from invgray_cli.imaging.metrics import psnr

runner = CliRunner()


def test_target_psnr_is_reached_on_the_real_decode(small_rgb: np.ndarray) -> None:
    for target in (31.0, 35.0):
        result = encode_to_target(small_rgb, target_psnr=target)
        restored = decode_photo(result.encoded.gray, result.encoded.residual).rgb
        assert result.met and result.psnr == psnr(restored, small_rgb)
        assert target <= result.psnr <= target + 0.3  # benchmarks/targets.py measures the overshoot exactly
    low, high = encode_to_target(small_rgb, target_psnr=31.0), encode_to_target(small_rgb, target_psnr=35.0)
    assert low.residual_bytes < high.residual_bytes


def test_chosen_step_is_an_ordinary_encode_at_that_step(small_rgb: np.ndarray) -> None:
    result = encode_to_target(small_rgb, target_psnr=33.0)
    assert encode(small_rgb, step=result.step).residual == result.encoded.residual


def test_max_bytes_is_never_exceeded(small_rgb: np.ndarray) -> None:
    previous = None
    for limit in (250, 400, 800):
        result = encode_to_target(small_rgb, max_bytes=limit)
        assert result.met and result.residual_bytes == len(result.encoded.residual) <= limit
        assert result.residual_bytes >= 0.9 * limit or result.step <= STEP_RANGE[0] * 1.01
        if previous is not None:
            assert result.psnr >= previous.psnr
        previous = result


def test_unreachable_targets_give_the_closest_result_with_a_note(small_rgb: np.ndarray) -> None:
    best = encode_to_target(small_rgb, target_psnr=80.0)  # past the network: the layers, up to lossless
    assert best.met and best.encoded.refinement is not None and best.psnr >= 80.0
    smallest = encode_to_target(small_rgb, max_bytes=20)
    assert not smallest.met and str(smallest.residual_bytes) in smallest.notes[0]
    assert smallest.step == np.float32(STEP_RANGE[1])


def test_gray_photo_needs_no_search(small_rgb: np.ndarray) -> None:
    gray = np.repeat(small_rgb[:, :, :1], 3, axis=2)
    result = encode_to_target(gray, target_psnr=30.0)
    assert result.met and result.tries == 1


def test_cli_reports_what_was_reached(small_png: Path) -> None:
    result = runner.invoke(app, ["encode", str(small_png), "--target-psnr", "34", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target_met"] is True and report["psnr"] >= 34 and report["target_psnr"] == 34
    restored = np.asarray(Image.open(small_png))
    colour = decode_photo(small_png.with_name("photo.gray.jpg").read_bytes(),
                          small_png.with_name("photo.residual.bin").read_bytes()).rgb
    assert abs(psnr(colour, restored) - report["psnr"]) < 1e-3

    result = runner.invoke(app, ["encode", str(small_png), "--max-bytes", "300", "--force"])
    assert result.exit_code == 0 and "RGB PSNR" in result.stdout
    assert small_png.with_name("photo.residual.bin").stat().st_size <= 300


def test_cli_unreachable_target_warns_and_succeeds(small_png: Path) -> None:
    result = runner.invoke(app, ["encode", str(small_png), "--max-bytes", "10", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["target_met"] is False
    assert "invgray: warning:" in result.stderr and "not reachable" in result.stderr


def test_cli_targets_exclude_other_rate_options(small_png: Path) -> None:
    for extra in (["--step", "2"], ["--level", "high"], ["--max-bytes", "500"]):
        result = runner.invoke(app, ["encode", str(small_png), "--target-psnr", "35", *extra])
        assert result.exit_code == 2 and "not several" in result.output
    assert not small_png.with_name("photo.gray.jpg").exists()
