"""JPEG inputs: the gray carries the input's own luma coefficients (every YCbCr kind a
camera makes), and every other kind falls back to a re-encoded gray with a note."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from invgray_cli import decode, encode
from invgray_cli.app.cli import app
from invgray_cli.imaging.gray import decode_gray, luma
from invgray_cli.imaging.images import read_photo
from invgray_cli.imaging.jpeg_transcode import (
    LosslessUnavailable,
    lossless_obstacle,
    luma_jpeg,
    read_layout,
)
from invgray_cli.imaging.metrics import psnr

jpeglib = pytest.importorskip("jpeglib")
runner = CliRunner()

YCBCR_KINDS = {
    "4:2:0": {"subsampling": 2},
    "4:2:2": {"subsampling": 1},
    "4:4:4": {"subsampling": 0},
    "restart every MCU": {"subsampling": 2, "restart_marker_blocks": 1},
    "restart every 2 rows": {"subsampling": 1, "restart_marker_rows": 2},
    "progressive 4:2:0": {"subsampling": 2, "progressive": True},
    "progressive 4:4:4": {"subsampling": 0, "progressive": True},
}


T = Image.Transpose
PILLOW_TRANSPOSE = {2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE, 6: T.ROTATE_270,
                    7: T.TRANSVERSE, 8: T.ROTATE_90}  # what ImageOps.exif_transpose applies


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=options.pop("quality", 80), **options)
    return buffer.getvalue()


def _luma_blocks(data: bytes, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(Y coefficient blocks, Y quantisation table) as jpeglib reads them."""
    path = tmp_path / "read.jpg"
    path.write_bytes(data)
    read = jpeglib.read_dct(str(path))
    return read.Y.copy(), read.qt[read.quant_tbl_no[0]].copy()


def _y_plane(data: bytes, tmp_path: Path) -> np.ndarray:
    """The Y plane a libjpeg decode of ``data`` gives, without any colour conversion."""
    path = tmp_path / "plane.jpg"
    path.write_bytes(data)
    return jpeglib.read_spatial(str(path), out_color_space=jpeglib.Colorspace["JCS_YCbCr"]).spatial[..., 0]


def _djpeg(data: bytes, *options: str) -> np.ndarray:
    done = subprocess.run(["djpeg", *options, "-pnm"], input=data, capture_output=True, check=True)
    return np.asarray(Image.open(io.BytesIO(done.stdout)))


@pytest.mark.parametrize("kind", [*YCBCR_KINDS, "gray", "gray progressive", "odd size"])
def test_coefficient_reader_sized_from_our_headers_equals_jpeglibs(small_rgb: np.ndarray, tmp_path: Path,
                                                                   kind: str) -> None:
    """The transcode sizes jpeglib's buffers from its own header walk (skipping jpeglib's
    info pass): a size off by a block would let libjpeg write past them."""
    from invgray_cli.imaging.jpeg_transcode import _coefficient_reader, block_dims

    image = Image.fromarray(small_rgb)
    if kind.startswith("gray"):
        data = _jpeg(image.convert("L"), progressive=kind.endswith("progressive"))
    elif kind == "odd size":
        data = _jpeg(image.crop((0, 0, 61, 45)), subsampling=1)
    else:
        data = _jpeg(image, **YCBCR_KINDS[kind])
    path = tmp_path / "in.jpg"
    path.write_bytes(data)
    reference = jpeglib.read_dct(str(path))
    layout = read_layout(data)
    ours = _coefficient_reader(data, layout)
    assert np.array_equal(block_dims(layout), reference.block_dims[:len(layout.components)])
    for name in ("Y", "Cb", "Cr", "qt", "quant_tbl_no"):
        assert np.array_equal(getattr(ours, name), getattr(reference, name)), name


@pytest.mark.parametrize("kind", YCBCR_KINDS)
def test_gray_is_the_inputs_own_luma(small_rgb: np.ndarray, tmp_path: Path, kind: str) -> None:
    original = _jpeg(Image.fromarray(small_rgb), **YCBCR_KINDS[kind])
    encoded = encode(original)
    assert encoded.gray_path == "lossless luma" and not encoded.gray_note
    gray_blocks, gray_table = _luma_blocks(encoded.gray, tmp_path)
    blocks, table = _luma_blocks(original, tmp_path)
    np.testing.assert_array_equal(gray_blocks, blocks)
    np.testing.assert_array_equal(gray_table, table)
    y_plane = _y_plane(original, tmp_path)
    np.testing.assert_array_equal(decode_gray(encoded.gray), y_plane)
    if shutil.which("djpeg"):  # an independent decoder: the gray is the original's Y plane
        np.testing.assert_array_equal(_djpeg(encoded.gray), _djpeg(original, "-grayscale"))
    decoded_photo = np.asarray(Image.open(io.BytesIO(original)).convert("RGB"))
    assert psnr(decode_gray(encoded.gray), luma(decoded_photo)) > 45  # rounding and clipping only
    restored = np.asarray(decode(encoded.gray, encoded.residual))
    assert psnr(restored, decoded_photo) > 30


def test_gray_jpeg_input_keeps_its_coefficients(small_rgb: np.ndarray, tmp_path: Path) -> None:
    original = _jpeg(Image.fromarray(small_rgb).convert("L"), quality=70)
    encoded = encode(original)
    assert encoded.gray_path == "lossless luma"
    np.testing.assert_array_equal(_luma_blocks(encoded.gray, tmp_path)[0], _luma_blocks(original, tmp_path)[0])
    np.testing.assert_array_equal(np.asarray(decode(encoded.gray, encoded.residual))[..., 0],
                                  np.asarray(Image.open(io.BytesIO(original))))


JPEGTRAN_TRANSFORM = {2: ["-flip", "horizontal"], 3: ["-rotate", "180"], 4: ["-flip", "vertical"],
                      5: ["-transpose"], 6: ["-rotate", "90"], 7: ["-transverse"], 8: ["-rotate", "270"]}


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_orientation_rotates_the_blocks(sample_rgb: np.ndarray, tmp_path: Path, orientation: int) -> None:
    stored = Image.fromarray(np.ascontiguousarray(sample_rgb[96:256, 304:512]))  # 208 x 160: whole MCUs
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "invgray test camera"
    original = _jpeg(stored, subsampling=2, exif=exif.tobytes())
    encoded = encode(read_photo(original))
    assert encoded.gray_path == "lossless luma"
    upright = np.asarray(Image.fromarray(_y_plane(original, tmp_path)).transpose(PILLOW_TRANSPOSE[orientation]))
    gray = decode_gray(encoded.gray)
    if orientation in (2, 3, 4):  # mirrors negate odd frequencies: the IDCT gives the mirrored pixels exactly
        np.testing.assert_array_equal(gray, upright)
    else:  # a transposed block goes through the IDCT's rows and columns the other way round
        assert gray.shape == upright.shape and np.abs(gray.astype(int) - upright).max() <= 1
    if shutil.which("jpegtran"):  # libjpeg's own lossless transform gives the same coefficients
        done = subprocess.run(["jpegtran", "-grayscale", "-perfect", *JPEGTRAN_TRANSFORM[orientation]],
                              input=original, capture_output=True, check=True)
        np.testing.assert_array_equal(_luma_blocks(encoded.gray, tmp_path)[0], _luma_blocks(done.stdout, tmp_path)[0])
        np.testing.assert_array_equal(_luma_blocks(encoded.gray, tmp_path)[1], _luma_blocks(done.stdout, tmp_path)[1])
    with Image.open(io.BytesIO(encoded.gray)) as gray_image:
        assert gray_image.getexif()[0x0112] == 1 and gray_image.getexif()[0x010F] == "invgray test camera"
    assert decode(encoded.gray, encoded.residual).size == (gray.shape[1], gray.shape[0])


def test_orientation_that_would_cut_blocks_keeps_the_pixels(small_rgb: np.ndarray) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # a mirror across the 157 px side after the transpose
    original = _jpeg(Image.fromarray(small_rgb), exif=exif.tobytes())
    encoded = encode(read_photo(original))
    assert encoded.gray_path == "re-encoded q90"
    assert "EXIF orientation 6" in encoded.gray_note and "not a multiple of 8" in encoded.gray_note
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(original))).convert("L"))
    assert decode_gray(encoded.gray).shape == upright.shape == (203, 157)
    assert psnr(decode_gray(encoded.gray), upright) > 40


def test_metadata_travels(small_rgb: np.ndarray) -> None:
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x0110] = "model X"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'
    original = _jpeg(Image.fromarray(small_rgb), exif=exif.tobytes(), icc_profile=icc, xmp=xmp)
    encoded = encode(read_photo(original))
    assert encoded.gray_path == "lossless luma"
    with Image.open(io.BytesIO(encoded.gray)) as gray:
        assert gray.getexif()[0x0110] == "model X" and gray.info.get("xmp") == xmp
        assert "icc_profile" not in gray.info  # an RGB profile would be wrong on a gray JPEG
    restored = decode(encoded.gray, encoded.residual)
    assert restored.info["icc_profile"] == icc and restored.info["xmp"] == xmp
    assert restored.getexif()[0x0110] == "model X"
    stripped = encode(read_photo(original), keep_metadata=False)
    with Image.open(io.BytesIO(stripped.gray)) as gray:
        assert not gray.getexif() and "xmp" not in gray.info


def test_explicit_quality_and_png_always_re_encode(small_rgb: np.ndarray) -> None:
    original = _jpeg(Image.fromarray(small_rgb))
    assert encode(original, quality=75).gray_path == "re-encoded q75"
    png = encode(original, gray_format="png")
    assert png.gray_path == "PNG" and png.gray.startswith(b"\x89PNG")


def _fallback_kinds(rgb: np.ndarray) -> dict[str, tuple[bytes, str]]:
    """Input bytes and the note each kind must give; kinds needing cjpeg only when present."""
    image = Image.fromarray(rgb)
    kinds = {
        "cmyk": (_jpeg(image.convert("CMYK")), "CMYK JPEG"),
        "rgb-coded": (_jpeg(image, keep_rgb=True), "RGB-coded JPEG"),
    }
    if shutil.which("cjpeg"):
        ppm = io.BytesIO()
        image.save(ppm, "PPM")
        for name, options, note in (("arithmetic", ["-arithmetic"], "arithmetic-coded JPEG"),
                                    ("odd-sampling", ["-sample", "1x1,2x2,1x1"], "unusual sampling")):
            made = subprocess.run(["cjpeg", *options], input=ppm.getvalue(), capture_output=True, check=True)
            kinds[name] = (made.stdout, note)
    return kinds


def test_fallback_kinds_give_a_correct_gray_and_a_note(small_rgb: np.ndarray) -> None:
    kinds = _fallback_kinds(small_rgb)
    for name, (data, note) in kinds.items():
        photo = read_photo(data)
        encoded = encode(photo)
        assert encoded.gray_path == "re-encoded q90", name
        assert note in encoded.gray_note, (name, encoded.gray_note)
        assert psnr(decode_gray(encoded.gray), luma(photo.rgb)) > 40, name
        assert psnr(np.asarray(decode(encoded.gray, encoded.residual)), photo.rgb) > 28, name


@pytest.mark.parametrize("patch,note", [
    ((0xC3, None), "lossless JPEG"),
    ((0xC9, None), "arithmetic-coded JPEG"),
    ((0xC1, 12), "12-bit JPEG"),
    ((0xC5, None), "hierarchical JPEG"),
])
def test_kinds_detected_from_the_frame_header(small_rgb: np.ndarray, patch: tuple[int, int | None],
                                              note: str) -> None:
    """Lossless, 12-bit and hierarchical JPEGs cannot be made with Pillow or cjpeg 2.1,
    so their detection is checked on a frame header carrying their SOF marker/precision."""
    data = bytearray(_jpeg(Image.fromarray(small_rgb)))
    sof = data.index(b"\xff\xc0")
    data[sof + 1] = patch[0]
    if patch[1] is not None:
        data[sof + 4] = patch[1]
    assert lossless_obstacle(read_layout(bytes(data))) == note
    with pytest.raises(LosslessUnavailable, match=note):
        luma_jpeg(bytes(data))


def test_broken_headers_never_reach_jpeglib(small_rgb: np.ndarray) -> None:
    data = _jpeg(Image.fromarray(small_rgb))
    with pytest.raises(LosslessUnavailable):
        luma_jpeg(data[:300])
    with pytest.raises(LosslessUnavailable, match="not a JPEG"):
        luma_jpeg(b"\x89PNG\r\n")


def test_without_jpeglib_the_luma_is_re_encoded(small_rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jpeglib", None)
    encoded = encode(_jpeg(Image.fromarray(small_rgb)))
    assert encoded.gray_path == "re-encoded q90" and encoded.gray_note == "jpeglib is not installed"


def test_mixed_folder_finishes_and_reports_each_path(small_rgb: np.ndarray, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for kind, options in YCBCR_KINDS.items():
        (folder / f"{kind.replace(' ', '-').replace(':', '')}.jpg").write_bytes(
            _jpeg(Image.fromarray(small_rgb), **options))
    for name, (data, _) in _fallback_kinds(small_rgb).items():
        (folder / f"{name}.jpg").write_bytes(data)
    Image.fromarray(small_rgb).save(folder / "png-photo.png")
    result = runner.invoke(app, ["encode", str(folder), "--out-dir", str(tmp_path / "out"), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if ".gray.jpg (" in line]
    assert len(lines) == len(list(folder.iterdir()))
    assert sum("(lossless luma," in line for line in lines) == len(YCBCR_KINDS)
    assert sum("re-encoded q90 (no lossless luma: " in line for line in lines) == len(lines) - len(YCBCR_KINDS) - 1
    info = runner.invoke(app, ["info", str(tmp_path / "out" / "progressive-420.gray.jpg")])
    assert info.exit_code == 0 and "lossless luma" in info.output and "embedded residual  none" in info.output
    info = runner.invoke(app, ["info", str(tmp_path / "out" / "cmyk.gray.jpg")])
    assert "re-encoded q90" in info.output
    forced = runner.invoke(app, ["encode", str(folder / "444.jpg"), "-q", "80", "-o", str(tmp_path / "q.gray.jpg")])
    assert forced.exit_code == 0 and "(re-encoded q80," in forced.output


def test_info_reads_an_embedded_lossless_gray(small_rgb: np.ndarray, tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(_jpeg(Image.fromarray(small_rgb), progressive=True))
    assert runner.invoke(app, ["encode", str(source), "--embed"]).exit_code == 0
    info = runner.invoke(app, ["info", str(tmp_path / "photo.gray.jpg")])
    assert info.exit_code == 0
    assert "lossless luma" in info.output and "203 x 157" in info.output and "format version" in info.output


@pytest.mark.parametrize("orientation", [1, 6])
def test_transcode_begun_while_reading_gives_the_same_files(sample_rgb: np.ndarray, orientation: int,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import invgray_cli.imaging.jpeg_transcode as transcode

    exif = Image.Exif()
    exif[0x0112] = orientation
    original = _jpeg(Image.fromarray(np.ascontiguousarray(sample_rgb[96:256, 304:512])), exif=exif.tobytes())
    reference = encode(read_photo(original))
    calls = []
    real = transcode.transcode_luma
    monkeypatch.setattr(transcode, "transcode_luma", lambda *args: calls.append(args) or real(*args))
    photo = read_photo(original, lossless_luma=True)
    assert photo.luma_transcode is not None and photo.luma_transcode.orientation == orientation
    encoded = encode(photo)
    assert len(calls) == 1  # the early transcode was the one used
    assert (encoded.gray, encoded.residual, encoded.gray_path) == (reference.gray, reference.residual, "lossless luma")
    assert encode(photo, quality=90).gray_path == "re-encoded q90"  # begun, then not wanted: ignored


def test_transcode_begins_only_for_jpeg_bytes(small_rgb: np.ndarray) -> None:
    from invgray_cli.imaging.jpeg_transcode import start_luma_transcode

    png = io.BytesIO()
    Image.fromarray(small_rgb).save(png, "PNG")
    assert start_luma_transcode(png.getvalue()) is None and start_luma_transcode(b"\xff\xd8 broken") is None
    assert read_photo(_jpeg(Image.fromarray(small_rgb))).luma_transcode is None  # not asked for


def _transcode_in_child(data: bytes) -> bytes:
    from invgray_cli.imaging.jpeg_transcode import start_luma_transcode

    return start_luma_transcode(data).result()


def test_transcode_thread_works_in_a_forked_worker(small_rgb: np.ndarray) -> None:
    import multiprocessing

    from invgray_cli.imaging.jpeg_transcode import start_luma_transcode

    data = _jpeg(Image.fromarray(small_rgb))
    in_parent = start_luma_transcode(data).result()  # the parent's thread exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_transcode_in_child, (data,)).get(timeout=60) == in_parent


def test_network_starts_on_the_inputs_y_plane_and_recovers_when_it_is_not_the_gray(
        sample_rgb: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    import invgray_cli.codec.encoding as codec

    original = _jpeg(Image.fromarray(np.ascontiguousarray(sample_rgb[96:256, 304:512])), subsampling=2)
    reference = encode(read_photo(original))
    early = []
    real = codec.own_y_plane
    monkeypatch.setattr(codec, "own_y_plane", lambda photo: early.append(real(photo)) or early[-1])
    assert encode(read_photo(original, lossless_luma=True)) == reference
    assert early and early[0] is not None  # the early path ran, and gave the same files

    def off_by_one(photo: object) -> np.ndarray:  # an early plane that is not what the gray decodes to
        plane = real(photo).copy()
        plane[0, 0] ^= 1
        return plane

    monkeypatch.setattr(codec, "own_y_plane", off_by_one)
    assert encode(read_photo(original, lossless_luma=True)) == reference  # symbols computed again


def test_transcode_failing_late_falls_back_to_the_re_encode(small_rgb: np.ndarray,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import invgray_cli.imaging.jpeg_transcode as transcode

    def fails(*args: object) -> bytes:
        raise LosslessUnavailable("libjpeg could not write these coefficients")

    monkeypatch.setattr(transcode, "transcode_luma", fails)
    original = _jpeg(Image.fromarray(small_rgb))
    encoded = encode(read_photo(original, lossless_luma=True))
    assert (encoded.gray_path, encoded.gray_note) == ("re-encoded q90", "libjpeg could not write these coefficients")
    re_encoded = encode(read_photo(original), quality=90)
    assert (encoded.gray, encoded.residual) == (re_encoded.gray, re_encoded.residual)
    assert decode(encoded.gray, encoded.residual).size == (small_rgb.shape[1], small_rgb.shape[0])


def test_a_transcode_begun_for_another_orientation_is_not_used(small_rgb: np.ndarray) -> None:
    from invgray_cli.imaging.jpeg_transcode import LumaTranscode

    original = _jpeg(Image.fromarray(small_rgb[:128, :192]))
    reference = encode(read_photo(original))
    photo = read_photo(original)
    photo.luma_transcode = LumaTranscode(original, 6)  # as if the EXIF had said otherwise
    assert encode(photo) == reference
