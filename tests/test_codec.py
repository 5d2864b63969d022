from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from invgray_cli import decode, decode_array, encode
from invgray_cli.codec import GrayMismatchError
from invgray_cli.engines.registry import default_model_id
from invgray_cli.format.container import OVERHEAD, InvalidResidualError, read_residual
from invgray_cli.imaging import gray as gray_module
from invgray_cli.imaging.gray import decode_gray
from invgray_cli.imaging.metrics import psnr


def test_sample_round_trip_restores_colour(sample_rgb: np.ndarray) -> None:
    encoded = encode(sample_rgb, quality=90)
    restored = decode_array(encoded.gray, encoded.residual)
    pixels = sample_rgb.shape[0] * sample_rgb.shape[1]
    assert restored.shape == sample_rgb.shape
    assert psnr(restored, sample_rgb) > 35.0
    assert len(encoded.residual) * 8 / pixels < 0.1
    header = read_residual(encoded.residual)
    assert (header.width, header.height) == (768, 512)
    assert header.model_id == default_model_id()


def test_gray_is_exactly_pillow_luma_when_lossless(small_rgb: np.ndarray) -> None:
    encoded = encode(small_rgb, gray_format="png")
    with Image.open(io.BytesIO(encoded.gray)) as image:
        assert image.format == "PNG" and image.mode == "L"
        expected = np.asarray(Image.fromarray(small_rgb).convert("L"))
        assert np.array_equal(np.asarray(image), expected)


@pytest.mark.parametrize("with_oxipng", [True, False])
def test_png_gray_keeps_pixels_type_and_metadata_with_or_without_oxipng(
        small_rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch, with_oxipng: bool) -> None:
    monkeypatch.setattr(gray_module, "oxipng_available", lambda: with_oxipng)
    luma = np.asarray(Image.fromarray(small_rgb).convert("L"))
    exif, xmp = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x00", b"<x:xmpmeta>invgray</x:xmpmeta>"
    data = gray_module.encode_gray(luma, "png", exif=exif, xmp=xmp)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == "L" and np.array_equal(np.asarray(image), luma)
    assert gray_module.gray_metadata(data) == (exif, xmp)
    if with_oxipng:  # the recompressed file is the smaller one
        monkeypatch.setattr(gray_module, "oxipng_available", lambda: False)
        assert len(data) < len(gray_module.encode_gray(luma, "png", exif=exif, xmp=xmp))


def test_gray_is_a_baseline_grayscale_jpeg(small_rgb: np.ndarray) -> None:
    encoded = encode(small_rgb, quality=75)
    with Image.open(io.BytesIO(encoded.gray)) as image:
        assert image.format == "JPEG" and image.mode == "L"
        assert not image.info.get("progressive")


def test_pil_in_pil_out(small_rgb: np.ndarray) -> None:
    encoded = encode(Image.fromarray(small_rgb))
    restored = decode(encoded.gray, encoded.residual)
    assert isinstance(restored, Image.Image) and restored.mode == "RGB"
    assert restored.size == (small_rgb.shape[1], small_rgb.shape[0])
    assert psnr(np.asarray(restored), small_rgb) > 30.0


def test_decode_accepts_gray_pixels(small_rgb: np.ndarray) -> None:
    encoded = encode(small_rgb)
    from_bytes = decode_array(encoded.gray, encoded.residual)
    from_pixels = decode_array(decode_gray(encoded.gray), encoded.residual)
    assert np.array_equal(from_bytes, from_pixels)


def test_encode_is_deterministic(small_rgb: np.ndarray) -> None:
    first, second = encode(small_rgb), encode(small_rgb)
    assert first.gray == second.gray and first.residual == second.residual


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 5, 3), (9, 64, 3), (64, 9, 3)])
def test_tiny_and_odd_sizes(shape: tuple[int, int, int]) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    encoded = encode(rgb)
    assert decode_array(encoded.gray, encoded.residual).shape == shape


def test_gray_input_decodes_to_gray(small_rgb: np.ndarray) -> None:
    gray_rgb = np.repeat(np.asarray(Image.fromarray(small_rgb).convert("L"))[:, :, None], 3, axis=2)
    encoded = encode(gray_rgb, gray_format="png")
    assert read_residual(encoded.residual).monochrome
    assert len(encoded.residual) == OVERHEAD
    assert np.array_equal(decode_array(encoded.gray, encoded.residual), gray_rgb)


def test_wrong_pair_is_refused(small_rgb: np.ndarray) -> None:
    one = encode(small_rgb)
    other = encode(small_rgb[:, ::-1].copy())
    with pytest.raises(GrayMismatchError, match="does not belong"):
        decode_array(other.gray, one.residual)


def test_size_mismatch_is_refused(small_rgb: np.ndarray) -> None:
    one = encode(small_rgb)
    other = encode(small_rgb[:-8])
    with pytest.raises(GrayMismatchError, match="image"):
        decode_array(other.gray, one.residual)


def test_unknown_model_is_refused(small_rgb: np.ndarray) -> None:
    import dataclasses

    from invgray_cli.engines.registry import UnknownModelError
    from invgray_cli.format.container import write_residual

    encoded = encode(small_rgb)
    foreign = dataclasses.replace(read_residual(encoded.residual), model_id="ffffffffffffffff")
    with pytest.raises(UnknownModelError, match="ffffffffffffffff"):
        decode_array(encoded.gray, write_residual(foreign))


def test_damaged_residual_is_refused(small_rgb: np.ndarray) -> None:
    encoded = encode(small_rgb)
    with pytest.raises(InvalidResidualError):
        decode_array(encoded.gray, encoded.residual[:-3])


def test_images_beyond_the_format_are_refused_before_encoding() -> None:
    from invgray_cli.imaging.gray import MAX_JPEG_SIDE

    wide = np.zeros((1, MAX_JPEG_SIDE + 8, 3), np.uint8)
    wide[0, 0] = (255, 0, 0)
    with pytest.raises(ValueError, match="--gray-format png"):
        encode(wide)


def test_levels_order_size_and_fidelity_and_are_recorded(sample_rgb: np.ndarray) -> None:
    from invgray_cli.engines.registry import levels

    named = levels(default_model_id())
    assert list(named) == ["low", "default", "high", "max"]
    crop = np.ascontiguousarray(sample_rgb[:256, :384])
    sizes, fidelity = [], []
    for name, step in named.items():
        encoded = encode(crop, level=name)
        assert read_residual(encoded.residual).step == pytest.approx(step, rel=1e-6)
        sizes.append(len(encoded.residual))
        fidelity.append(psnr(decode_array(encoded.gray, encoded.residual), crop))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    assert fidelity == sorted(fidelity)
