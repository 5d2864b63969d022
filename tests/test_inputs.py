"""Every input kind either round-trips (colour, alpha, metadata) or is refused in one line."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from typer.testing import CliRunner

from invgray_cli import decode, encode
from invgray_cli.app.cli import app
from invgray_cli.imaging.images import ImageReadError, read_photo
from invgray_cli.imaging.metrics import psnr

runner = CliRunner()


def _bytes(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _round_trip(data: bytes, gray_format: str = "jpg") -> tuple[Image.Image, Image.Image]:
    photo = read_photo(data)
    encoded = encode(photo, gray_format=gray_format)
    return Image.open(io.BytesIO(data)), decode(encoded.gray, encoded.residual)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "BMP"])
def test_rgb_formats(small_rgb: np.ndarray, fmt: str) -> None:
    data = _bytes(Image.fromarray(small_rgb), fmt)
    source = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    _, restored = _round_trip(data)
    assert restored.mode == "RGB"
    assert psnr(np.asarray(restored), source) > 30


def test_gif_first_frame_and_palette(small_rgb: np.ndarray) -> None:
    frames = [Image.fromarray(small_rgb).convert("P"), Image.fromarray(255 - small_rgb).convert("P")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    photo = read_photo(buffer.getvalue())
    assert np.array_equal(photo.rgb, np.asarray(frames[0].convert("RGB")))


def test_rgba_alpha_is_lossless(small_rgb: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, small_rgb.shape[1]).astype(np.uint8), (small_rgb.shape[0], 1))
    rgba = np.dstack([small_rgb, alpha])
    _, restored = _round_trip(_bytes(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert restored.mode == "RGBA"
    assert np.array_equal(np.asarray(restored)[:, :, 3], alpha)
    assert psnr(np.asarray(restored)[:, :, :3], small_rgb) > 30


def test_palette_with_transparency(small_rgb: np.ndarray) -> None:
    image = Image.fromarray(small_rgb).convert("P")
    image.info["transparency"] = 0
    photo = read_photo(_bytes(image, "PNG", transparency=0))
    assert photo.alpha is not None and (photo.alpha == 0).any()


def test_gray_and_gray_alpha_decode_to_themselves(small_rgb: np.ndarray) -> None:
    gray = np.asarray(Image.fromarray(small_rgb).convert("L"))
    alpha = (gray > 100).astype(np.uint8) * 255
    _, restored = _round_trip(_bytes(Image.fromarray(np.dstack([gray, alpha]), "LA"), "PNG"), gray_format="png")
    out = np.asarray(restored)
    assert restored.mode == "RGBA"
    assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)
    assert np.array_equal(out[:, :, 3], alpha)


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    photo = read_photo(_bytes(Image.fromarray(ramp), "PNG"))
    assert photo.rgb[0, 0, 0] == 0 and photo.rgb[0, -1, 0] == 255
    assert len(np.unique(photo.rgb[..., 0])) > 60


def test_cmyk_and_adobe_inverted_cmyk_jpeg(small_rgb: np.ndarray) -> None:
    cmyk = Image.fromarray(small_rgb).convert("CMYK")
    expected = np.asarray(cmyk.convert("RGB")).astype(float)
    for data in (_bytes(cmyk, "TIFF"), _bytes(cmyk, "JPEG", quality=95)):
        photo = read_photo(data)
        assert np.abs(photo.rgb.astype(float) - expected).mean() < 4
    # Pillow writes CMYK JPEGs with Adobe's APP14 and inverted values and undoes it on read
    assert b"Adobe" in _bytes(cmyk, "JPEG")


def test_exif_orientation_icc_exif_and_xmp_survive(small_rgb: np.ndarray, tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    exif[0x010F] = "TestCam"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    source = tmp_path / "tagged.jpg"
    Image.fromarray(small_rgb).save(source, "JPEG", quality=95, exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    shown_upright = np.asarray(Image.open(source).transpose(Image.Transpose.ROTATE_270).convert("RGB"))

    assert runner.invoke(app, ["encode", str(source)]).exit_code == 0
    with Image.open(tmp_path / "tagged.gray.jpg") as gray:
        assert gray.size == (small_rgb.shape[0], small_rgb.shape[1])  # stored upright
        assert gray.getexif()[0x010F] == "TestCam" and gray.getexif().get(0x0112, 1) == 1
    assert runner.invoke(app, ["decode", str(tmp_path / "tagged.gray.jpg")]).exit_code == 0
    with Image.open(tmp_path / "tagged.color.png") as restored:
        assert restored.size == (small_rgb.shape[0], small_rgb.shape[1])
        assert psnr(np.asarray(restored.convert("RGB")), shown_upright) > 28
        assert restored.getexif()[0x010F] == "TestCam"
        assert restored.getexif().get(0x0112, 1) == 1
        assert restored.info.get("icc_profile") == icc
        assert "xmpmeta" in restored.info.get("XML:com.adobe.xmp", "")

    assert runner.invoke(app, ["encode", str(source), "--strip", "-o", str(tmp_path / "s.gray.jpg")]).exit_code == 0
    assert runner.invoke(app, ["decode", str(tmp_path / "s.gray.jpg")]).exit_code == 0
    with Image.open(tmp_path / "s.color.png") as stripped:
        assert not stripped.getexif() and "icc_profile" not in stripped.info


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(30), "unreadable|not a recognised"),
    (b"hello world", "not a recognised image"),
])
def test_unreadable_inputs_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ImageReadError, match=reason):
        read_photo(data)


@pytest.mark.parametrize("values,expected", [
    (np.array([[0.0, 0.5], [1.0, 0.25]], np.float32), [[0, 128], [255, 64]]),  # 0..1: times 255
    (np.array([[0.0, 17.4], [255.0, 1.5]], np.float32), [[0, 17], [255, 2]]),  # 0..255: kept
    (np.array([[-3.0, 0.0], [3.0, np.nan]], np.float32), [[0, 128], [255, 0]]),  # other: stretched
])
def test_float_gray_is_mapped_by_its_range(values: np.ndarray, expected: list[list[int]]) -> None:
    photo = read_photo(_bytes(Image.fromarray(values, "F"), "TIFF"))
    assert photo.is_gray
    np.testing.assert_array_equal(photo.rgb[..., 0], np.array(expected, np.uint8))


def test_cielab_tiff_becomes_srgb(small_rgb: np.ndarray) -> None:
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.fromarray(small_rgb), to_lab)
    data = _bytes(lab, "TIFF")
    assert Image.open(io.BytesIO(data)).mode == "LAB"
    photo = read_photo(data)
    assert photo.icc_profile is None and psnr(photo.rgb, small_rgb) > 40  # 8-bit Lab quantisation only
    encoded = encode(photo)
    assert psnr(np.asarray(decode(encoded.gray, encoded.residual)), photo.rgb) > 30


def test_pixel_limit(small_png: Path) -> None:
    with pytest.raises(ImageReadError, match="--max-pixels"):
        read_photo(small_png.read_bytes(), max_pixels=1000)
    result = runner.invoke(app, ["encode", str(small_png), "--max-pixels", "1000"])
    assert result.exit_code == 1 and "--max-pixels" in result.output
    assert runner.invoke(app, ["encode", str(small_png), "--max-pixels", "0"]).exit_code == 0
