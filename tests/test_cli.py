from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from invgray_cli import __version__
from invgray_cli.app.cli import app

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def test_version() -> None:
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_encode_then_decode_names_files(small_png: Path) -> None:
    result = invoke("encode", small_png)
    assert result.exit_code == 0, result.output
    gray, residual = small_png.with_name("photo.gray.jpg"), small_png.with_name("photo.residual.bin")
    assert gray.is_file() and residual.is_file()
    result = invoke("decode", gray, residual, "--compare", small_png)
    assert result.exit_code == 0, result.output
    assert "RGB PSNR" in result.output
    restored = small_png.with_name("photo.color.png")
    with Image.open(restored) as image:
        assert image.mode == "RGB" and image.size == (203, 157)


def test_png_gray_and_out_dir(small_png: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert invoke("encode", small_png, "--gray-format", "png", "--out-dir", out).exit_code == 0
    assert (out / "photo.gray.png").is_file() and (out / "photo.residual.bin").is_file()
    assert invoke("decode", out / "photo.gray.png", out / "photo.residual.bin", "--out-dir", out).exit_code == 0
    assert (out / "photo.color.png").is_file()


def test_explicit_output_names(small_png: Path, tmp_path: Path) -> None:
    result = invoke("encode", small_png, "-o", tmp_path / "x.gray.png", "-q", "80")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "x.gray.png").is_file() and (tmp_path / "x.residual.bin").is_file()
    result = invoke("decode", tmp_path / "x.gray.png", tmp_path / "x.residual.bin", "-o", tmp_path / "back.webp")
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "back.webp") as image:
        assert image.format == "WEBP"


def test_no_silent_overwrite(small_png: Path) -> None:
    assert invoke("encode", small_png).exit_code == 0
    gray = small_png.with_name("photo.gray.jpg")
    before = gray.read_bytes()
    result = invoke("encode", small_png, "-q", "50")
    assert result.exit_code == 1
    assert "already exists" in result.output and "--force" in result.output
    assert gray.read_bytes() == before
    assert invoke("encode", small_png, "-q", "50", "--force").exit_code == 0
    assert gray.read_bytes() != before


def test_output_may_not_replace_input(small_png: Path) -> None:
    before = small_png.read_bytes()
    result = invoke("encode", small_png, "-o", small_png, "--force")
    assert result.exit_code == 1
    assert small_png.read_bytes() == before


def test_bad_inputs_fail_alone_with_one_line(small_png: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(small_png.read_bytes()[:500])
    result = invoke("encode", junk, small_png, empty, tmp_path / "missing.png", truncated)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("invgray: error:")]
    assert len(errors) == 4
    for name in ("junk.png", "empty.jpg", "missing.png", "cut.png"):
        assert any(name in line for line in errors)
    assert "Traceback" not in result.output
    assert small_png.with_name("photo.residual.bin").is_file()
    assert not (tmp_path / "junk.gray.jpg").exists() and not (tmp_path / "junk.residual.bin").exists()
    assert not list(tmp_path.glob("*.part"))


def test_decode_errors(small_png: Path, tmp_path: Path) -> None:
    assert invoke("encode", small_png).exit_code == 0
    gray, residual = small_png.with_name("photo.gray.jpg"), small_png.with_name("photo.residual.bin")
    cut = tmp_path / "cut.residual.bin"
    cut.write_bytes(residual.read_bytes()[:-5])
    result = invoke("decode", gray, cut)
    assert result.exit_code == 1 and "truncated" in result.output and "cut.residual.bin" in result.output
    other = tmp_path / "other.png"
    Image.fromarray(np.asarray(Image.open(small_png))[::-1].copy()).save(other)
    assert invoke("encode", other).exit_code == 0
    result = invoke("decode", tmp_path / "other.gray.jpg", residual)
    assert result.exit_code == 1 and "does not belong" in result.output
    assert not (tmp_path / "other.color.png").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a residual")
    result = invoke("decode", gray, notes)
    assert result.exit_code == 1 and "magic" in result.output
    result = invoke("decode", residual)
    assert result.exit_code == 1 and "must follow its gray image" in result.output


def test_usage_errors_exit_2(small_png: Path, tmp_path: Path) -> None:
    assert invoke("encode").exit_code == 2
    assert invoke("encode", small_png, small_png, "-o", tmp_path / "a.jpg").exit_code == 2
    assert invoke("encode", small_png, "-o", tmp_path / "a.gif").exit_code == 2
    assert invoke("encode", small_png, "-q", "101").exit_code == 2
    assert invoke("encode", small_png, "--gray-format", "png", "-o", tmp_path / "a.jpg").exit_code == 2
    assert invoke("decode", small_png, small_png, "-o", tmp_path / "x.xyz").exit_code == 2


def test_cuda_without_cuda_is_an_error(small_png: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    result = invoke("encode", small_png, "--device", "cuda")
    assert result.exit_code == 2 and "CUDA is not available" in result.output
    assert not small_png.with_name("photo.gray.jpg").exists()


def test_info(small_png: Path) -> None:
    assert invoke("encode", small_png).exit_code == 0
    result = invoke("info", small_png.with_name("photo.residual.bin"))
    assert result.exit_code == 0
    assert "203 x 157" in result.output and "bundled" in result.output
    bad = invoke("info", small_png)  # an image, but without an embedded residual
    assert bad.exit_code == 1 and "no residual embedded" in bad.output
    notes = small_png.with_name("notes.txt")
    notes.write_text("not a residual")
    bad = invoke("info", notes)
    assert bad.exit_code == 1 and "magic" in bad.output


def _photo_folder(root: Path, small_rgb: np.ndarray) -> None:
    (root / "sub").mkdir(parents=True)
    Image.fromarray(small_rgb).save(root / "a.png")
    Image.fromarray(small_rgb[::-1].copy()).save(root / "b.jpg", quality=95)
    Image.fromarray(small_rgb[:, ::-1].copy()).save(root / "sub" / "c.webp", lossless=True)
    (root / "notes.txt").write_text("not a photo")


def test_folder_batch_mirrors_tree_and_resumes(tmp_path: Path, small_rgb: np.ndarray) -> None:
    photos, out = tmp_path / "photos", tmp_path / "out"
    _photo_folder(photos, small_rgb)
    result = invoke("encode", photos, "-r", "--out-dir", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.gray.jpg", "a.residual.bin", "b.gray.jpg", "b.residual.bin", "sub/c.gray.jpg", "sub/c.residual.bin"]
    assert "3 done, 0 skipped, 0 failed" in result.output

    again = invoke("encode", photos, "-r", "--out-dir", out, "--skip-existing")
    assert again.exit_code == 0 and "0 done, 3 skipped, 0 failed" in again.output

    colour = tmp_path / "colour"
    result = invoke("decode", out, "-r", "--out-dir", colour)
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(colour).as_posix() for p in colour.rglob("*.png")) == [
        "a.color.png", "b.color.png", "sub/c.color.png"]


def test_folder_without_recursion_skips_subfolders(tmp_path: Path, small_rgb: np.ndarray) -> None:
    _photo_folder(tmp_path / "p", small_rgb)
    assert invoke("encode", tmp_path / "p").exit_code == 0
    assert not (tmp_path / "p" / "sub" / "c.gray.jpg").exists()
    assert (tmp_path / "p" / "a.gray.jpg").exists()
    # a second run finds only its own outputs and the originals: it never encodes a .gray.jpg
    result = invoke("encode", tmp_path / "p", "--skip-existing")
    assert result.exit_code == 0 and "2 skipped" in result.output


def test_name_clash_in_one_batch_fails_only_the_later_file(tmp_path: Path, small_rgb: np.ndarray) -> None:
    Image.fromarray(small_rgb).save(tmp_path / "x.png")
    Image.fromarray(small_rgb).save(tmp_path / "x.bmp")
    result = invoke("encode", tmp_path / "x.bmp", tmp_path / "x.png")
    assert result.exit_code == 1
    assert "would also be written" in result.output and "1 done" in result.output


def test_decode_folder_reports_broken_pairs_and_finishes_the_rest(tmp_path: Path, small_rgb: np.ndarray) -> None:
    for i in range(3):
        Image.fromarray(np.roll(small_rgb, i * 10, axis=1)).save(tmp_path / f"p{i}.png")
    assert invoke("encode", tmp_path).exit_code == 0
    (tmp_path / "p1.residual.bin").write_bytes((tmp_path / "p1.residual.bin").read_bytes()[:30])
    (tmp_path / "p2.residual.bin").unlink()
    result = invoke("decode", tmp_path)
    assert result.exit_code == 1
    assert (tmp_path / "p0.color.png").exists()
    assert not (tmp_path / "p1.color.png").exists() and not (tmp_path / "p2.color.png").exists()
    assert "1 done, 0 skipped, 2 failed" in result.output
    assert "truncated" in result.output and "no residual found" in result.output


def test_photo_named_color_is_still_a_photo(tmp_path: Path, small_rgb: np.ndarray) -> None:
    Image.fromarray(small_rgb).save(tmp_path / "team.color.jpg")
    Image.fromarray(small_rgb).save(tmp_path / "x.color.png")  # what decode writes: not an input
    result = invoke("encode", tmp_path)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "team.color.gray.jpg").exists() and not (tmp_path / "x.color.gray.jpg").exists()
