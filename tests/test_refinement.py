"""The refinement layer (format 3): --lossless is bit-exact, --max-error K holds on every
pixel, the chroma layer decodes to what its encoder saw, and damaged files fail cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invgray_cli.codec import decode_array, encode
from invgray_cli.codec.refinement import half_level_chroma, rgb_from_chroma
from invgray_cli.format import context_tables
from invgray_cli.format.container import REFINED, InvalidResidualError, read_residual
from invgray_cli.imaging.gray import luma
from invgray_cli.imaging.metrics import psnr


def _noisy(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(shape[::-1],
                                                                                             Image.BILINEAR))
    return np.clip(smooth + rng.integers(-6, 7, smooth.shape), 0, 255).astype(np.uint8)


def test_the_tables_are_integers_summing_to_two_to_the_sixteen() -> None:
    tables = context_tables.geometric_tables()
    assert tables.shape == (context_tables.TABLES, context_tables.ALPHABET) and tables.min() >= 1
    assert set(tables.sum(axis=1).tolist()) == {1 << context_tables.FREQUENCY_BITS}
    centred_half = tables[len(context_tables.GEOMETRIC_RATIOS)]  # the most peaked table centred on +1/2
    direct = context_tables.DIRECT
    assert abs(int(centred_half[direct]) - int(centred_half[direct + 1])) <= 2
    explicit = context_tables.explicit_frequencies(np.r_[np.zeros(60, int), [3, 40, 12], np.zeros(65, int)])
    assert explicit.min() >= 1 and int(explicit.sum()) == 1 << context_tables.FREQUENCY_BITS


@pytest.mark.parametrize("shape", [(1, 1), (5, 17), (33, 70), (96, 64), (20, 1100)])
def test_lossless_is_bit_exact_at_any_size(shape: tuple[int, int]) -> None:
    rgb = _noisy(shape, sum(shape))
    encoded = encode(rgb, gray_format="png", max_error=0)
    assert read_residual(encoded.residual).version == REFINED
    assert np.array_equal(decode_array(encoded.gray, encoded.residual), rgb)


def test_lossless_on_a_photo_and_with_a_jpeg_gray(small_rgb: np.ndarray) -> None:
    for gray_format in ("png", "jpg"):
        encoded = encode(small_rgb, gray_format=gray_format, max_error=0)
        assert np.array_equal(decode_array(encoded.gray, encoded.residual), small_rgb), gray_format


def test_saturated_and_extreme_colours_round_trip() -> None:
    corners = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                        [0, 255, 255], [255, 0, 255]], np.uint8)
    rgb = np.tile(corners, (9, 7, 1))[:, :50].reshape(9, 50, 3)
    encoded = encode(rgb, gray_format="png", max_error=0)
    assert np.array_equal(decode_array(encoded.gray, encoded.residual), rgb)


@pytest.mark.parametrize("bound", [1, 2, 4, 9])
def test_max_error_holds_on_every_pixel(small_rgb: np.ndarray, bound: int) -> None:
    for gray_format in ("png", "jpg"):
        encoded = encode(small_rgb, gray_format=gray_format, max_error=bound)
        restored = decode_array(encoded.gray, encoded.residual)
        assert np.abs(restored.astype(int) - small_rgb).max() <= bound, gray_format


def test_a_looser_bound_is_smaller(small_rgb: np.ndarray) -> None:
    sizes = [len(encode(small_rgb, gray_format="png", max_error=k).residual) for k in (0, 1, 2, 4)]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < sizes[0] / 2


def test_the_chroma_layer_decodes_to_what_the_encoder_saw(small_rgb: np.ndarray) -> None:
    plain = encode(small_rgb, level="max")
    before = psnr(decode_array(plain.gray, plain.residual), small_rgb)
    previous = before
    for step in (16, 4, 1):
        encoded = encode(small_rgb, level="max", refine=step)
        restored = decode_array(encoded.gray, encoded.residual)
        quality = psnr(restored, small_rgb)
        assert quality > previous - 0.05, step
        previous = quality
    bound = psnr(rgb_from_chroma(np.asarray(Image.open(__import__("io").BytesIO(encoded.gray))),
                                 *half_level_chroma(small_rgb)), small_rgb)
    assert bound - 0.2 < previous <= bound  # step 1: the original's chroma to within a fraction of a level
    assert previous > before + 0.5


def test_half_level_chroma_round_trips_on_the_exact_luma() -> None:
    rgb = _noisy((40, 40), 3)
    back = rgb_from_chroma(luma(rgb), *half_level_chroma(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 2


def test_a_refined_file_refuses_another_gray(small_rgb: np.ndarray) -> None:
    encoded = encode(small_rgb, gray_format="png", max_error=0)
    other = encode(np.ascontiguousarray(small_rgb[:, ::-1]), gray_format="png", max_error=0)
    with pytest.raises(InvalidResidualError, match="gray"):
        decode_array(other.gray, encoded.residual)


@pytest.mark.parametrize("options", [{"gray_format": "png", "max_error": 1}, {"level": "high", "refine": 4}],
                         ids=["rgb", "chroma"])
def test_damaged_refinement_payloads_fail_with_one_line(small_rgb: np.ndarray, options: dict) -> None:
    import zlib

    encoded = encode(small_rgb[:48, :64], **options)
    data = bytearray(encoded.residual)
    rng = np.random.default_rng(0)
    header = read_residual(bytes(data))
    start = len(data) - 4 - len(header.refinement)
    failures = 0
    for trial in range(40):
        damaged = bytearray(data)
        for _ in range(1 + trial % 3):
            damaged[int(rng.integers(start, len(data) - 4))] ^= 1 << int(rng.integers(8))
        damaged[-4:] = zlib.crc32(bytes(damaged[:-4])).to_bytes(4, "little")  # past the checksum
        try:
            restored = decode_array(encoded.gray, bytes(damaged))
        except InvalidResidualError as exc:
            assert "\n" not in str(exc)
            failures += 1
        else:
            assert restored.shape == (48, 64, 3)
    truncated = bytes(data[:start + 7])
    with pytest.raises(InvalidResidualError):
        decode_array(encoded.gray, truncated + zlib.crc32(truncated).to_bytes(4, "little"))


def test_cli_lossless_writes_a_png_gray_and_round_trips(tmp_path: Path, small_png: Path) -> None:
    run = [sys.executable, "-m", "invgray_cli"]
    done = subprocess.run(run + ["encode", str(small_png), "--lossless", "--out-dir", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    gray = tmp_path / "o" / f"{small_png.stem}.gray.png"
    out = tmp_path / "back.png"
    done = subprocess.run(run + ["decode", str(gray), str(gray.with_name(f"{small_png.stem}.residual.bin")),
                                 "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(small_png).convert("RGB")))


@pytest.mark.parametrize("extra", [["--level", "high"], ["--step", "2"], ["--target-psnr", "40"],
                                   ["--max-error", "2"]])
def test_cli_refuses_a_rate_setting_beside_lossless(tmp_path: Path, small_png: Path, extra: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", "invgray_cli", "encode", str(small_png), "--lossless",
                           "--out-dir", str(tmp_path), *extra], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("*.bin"))


def test_a_psnr_target_past_the_network_is_reached_through_the_layers(small_rgb: np.ndarray) -> None:
    from invgray_cli.codec.rate_control import encode_to_target

    finest = encode(small_rgb, step=0.5)
    ceiling = psnr(decode_array(finest.gray, finest.residual), small_rgb)
    for target in (ceiling + 1.0, ceiling + 8.0):
        result = encode_to_target(small_rgb, target_psnr=target)
        assert result.met and result.encoded.refinement is not None
        assert psnr(decode_array(result.encoded.gray, result.encoded.residual), small_rgb) >= target


def test_a_large_byte_budget_buys_a_refinement_within_it(small_rgb: np.ndarray) -> None:
    from invgray_cli.codec.rate_control import encode_to_target

    finest = encode(small_rgb, step=0.5)
    budget = 4 * len(finest.residual)
    result = encode_to_target(small_rgb, max_bytes=budget)
    assert result.met and result.residual_bytes <= budget and result.encoded.refinement is not None
    assert result.psnr > psnr(decode_array(finest.gray, finest.residual), small_rgb)
