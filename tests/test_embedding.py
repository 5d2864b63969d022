from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from invgray_cli import decode_array, encode
from invgray_cli.app.cli import app
from invgray_cli.codec import NoResidualError
from invgray_cli.format.embedding import (
    MAX_JPEG_CHUNK,
    EmbeddingError,
    embed,
    extract,
    strip,
)
from invgray_cli.imaging.gray import decode_gray

runner = CliRunner()


@pytest.fixture(scope="module")
def encoded_pair(small_rgb: np.ndarray):  # noqa: ANN201
    return {fmt: encode(small_rgb, gray_format=fmt) for fmt in ("jpg", "png")}


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_embedded_gray_is_an_ordinary_image_with_identical_pixels(encoded_pair, fmt: str) -> None:
    encoded = encoded_pair[fmt]
    single = encoded.embedded()
    with Image.open(io.BytesIO(single)) as image:
        assert image.mode == "L"
        assert np.array_equal(np.asarray(image), decode_gray(encoded.gray))
    assert extract(single) == encoded.residual
    assert strip(single) == encoded.gray
    assert np.array_equal(decode_array(single), decode_array(encoded.gray, encoded.residual))


def test_plain_gray_has_no_residual(encoded_pair) -> None:
    assert extract(encoded_pair["jpg"].gray) is None
    with pytest.raises(NoResidualError, match="stripped"):
        decode_array(encoded_pair["jpg"].gray)


def test_large_residual_spans_several_segments(encoded_pair) -> None:
    blob = bytes(range(256)) * 700  # 179,200 bytes: 3 APP11 segments
    single = embed(encoded_pair["jpg"].gray, blob)
    assert single.count(b"INVGRAY\x00") == -(-len(blob) // MAX_JPEG_CHUNK)
    assert extract(single) == blob
    assert extract(embed(single, b"new")) == b"new"  # re-embedding replaces


def test_missing_segment_is_reported(encoded_pair) -> None:
    blob = bytes(200_000)
    single = embed(encoded_pair["jpg"].gray, blob)
    second = single.index(b"INVGRAY\x00", single.index(b"INVGRAY\x00") + 1) - 4
    length = int.from_bytes(single[second + 2:second + 4], "big")
    damaged = single[:second] + single[second + 2 + length:]
    with pytest.raises(EmbeddingError, match="incomplete"):
        extract(damaged)


def test_not_an_image() -> None:
    with pytest.raises(EmbeddingError):
        embed(b"GIF89a....", b"x")
    assert extract(b"GIF89a....") is None


@pytest.mark.skipif(shutil.which("jpegtran") is None or shutil.which("djpeg") is None,
                    reason="libjpeg-turbo tools not installed")
def test_survives_jpegtran_copy_all_and_djpeg_reads_it(encoded_pair, tmp_path: Path) -> None:
    encoded = encoded_pair["jpg"]
    source = tmp_path / "e.gray.jpg"
    source.write_bytes(encoded.embedded())
    rewritten = subprocess.run(["jpegtran", "-copy", "all", str(source)], capture_output=True, check=True).stdout
    assert extract(rewritten) == encoded.residual
    assert np.array_equal(decode_array(rewritten), decode_array(encoded.gray, encoded.residual))
    stripped = subprocess.run(["jpegtran", "-copy", "none", str(source)], capture_output=True, check=True).stdout
    assert extract(stripped) is None
    pgm = subprocess.run(["djpeg", "-pnm", str(source)], capture_output=True, check=True).stdout
    with Image.open(io.BytesIO(pgm)) as image:
        assert np.array_equal(np.asarray(image), decode_gray(encoded.gray))


def test_cli_embed_extract_and_single_argument_decode(small_png: Path) -> None:
    folder = small_png.parent
    result = runner.invoke(app, ["encode", str(small_png), "--embed"])
    assert result.exit_code == 0, result.output
    assert not (folder / "photo.residual.bin").exists()
    result = runner.invoke(app, ["decode", str(folder / "photo.gray.jpg"), "-o", str(folder / "a.png")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["extract", str(folder / "photo.gray.jpg"), "--gray-out", str(folder / "plain.gray.jpg")])
    assert result.exit_code == 0, result.output
    assert extract((folder / "plain.gray.jpg").read_bytes()) is None
    # the plain gray finds no sidecar named plain.residual.bin: clear message
    result = runner.invoke(app, ["decode", str(folder / "plain.gray.jpg")])
    assert result.exit_code == 1 and "no residual found" in result.output
    # the sidecar beside photo.gray.jpg is used when given explicitly or found by name
    result = runner.invoke(app, ["embed", str(folder / "plain.gray.jpg"), str(folder / "photo.residual.bin")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["decode", str(folder / "plain.embedded.gray.jpg"), "-o", str(folder / "b.png")])
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(folder / "a.png")), np.asarray(Image.open(folder / "b.png")))


@pytest.mark.parametrize("data", [b"\xff\xd8" + b"\xff" * 10, b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00\x10JFIF"])
def test_malformed_jpeg_headers_are_reported(data: bytes) -> None:
    with pytest.raises(EmbeddingError):
        extract(data)
