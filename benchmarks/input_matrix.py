"""Input-kind matrix: every supported kind round-trips (PSNR stated), the rest are refused.

    python benchmarks/input_matrix.py

Builds each kind from the bundled sample (a 384 x 256 crop) in memory, runs it
through ``read_photo`` -> ``encode`` -> ``decode_photo`` at the default level (JPEG
inputs keep their own luma where they can, everything else gets a q90 gray), and
prints how the gray was made, RGB PSNR against the input as Pillow shows it, whether
alpha came back exactly, and the residual size; refused kinds print their one-line
reason.

    python benchmarks/input_matrix.py --pillow-tests /tmp/pillow-13.0.0/Tests/images

also runs every file of Pillow's own test images (from its source distribution) of
the kinds invgray reads and counts how many encode and decode, with each refusal.
"""

from __future__ import annotations

import argparse
import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

from invgray_cli.codec import decode_photo, encode
from invgray_cli.imaging.images import ImageReadError, read_photo
from invgray_cli.imaging.metrics import psnr

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def kinds() -> dict[str, bytes]:
    rgb = Image.open(SAMPLE).convert("RGB").crop((200, 100, 584, 356))
    alpha = Image.linear_gradient("L").resize(rgb.size)
    rgba = rgb.copy()
    rgba.putalpha(alpha)
    wide = (np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 6
    frames = [rgb.convert("P"), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT).convert("P")]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return {
        "PNG RGB": saved(rgb, "PNG"),
        "PNG RGBA": saved(rgba, "PNG"),
        "PNG palette": saved(rgb.convert("P"), "PNG"),
        "PNG palette + transparency": saved(rgb.convert("P"), "PNG", transparency=0),
        "PNG L": saved(rgb.convert("L"), "PNG"),
        "PNG LA": saved(Image.merge("LA", (rgb.convert("L"), alpha)), "PNG"),
        "PNG 16-bit gray": saved(Image.fromarray(wide), "PNG"),
        "JPEG RGB q95": saved(rgb, "JPEG", quality=95),
        "JPEG RGB, EXIF orientation 6": saved(rgb, "JPEG", quality=95, exif=exif.tobytes()),
        "JPEG CMYK (Adobe, inverted)": saved(rgb.convert("CMYK"), "JPEG", quality=95),
        "JPEG gray": saved(rgb.convert("L"), "JPEG", quality=95),
        "WebP lossless RGBA": saved(rgba, "WEBP", lossless=True),
        "TIFF RGB": saved(rgb, "TIFF"),
        "TIFF CMYK": saved(rgb.convert("CMYK"), "TIFF"),
        "BMP RGB": saved(rgb, "BMP"),
        "GIF, 2 frames (first used)": gif.getvalue(),
        "JPEG RGB q85 4:2:0 progressive": saved(rgb, "JPEG", quality=85, progressive=True),
        "JPEG RGB q85 4:4:4, restart markers": saved(rgb, "JPEG", quality=85, subsampling=0,
                                                     restart_marker_blocks=4),
        "JPEG RGB-coded (Adobe transform 0)": saved(rgb, "JPEG", quality=95, keep_rgb=True),
        "TIFF 32-bit float, 0..1": saved(Image.fromarray(np.asarray(rgb.convert("L"), np.float32) / 255, "F"),
                                         "TIFF"),
        "TIFF CIELAB": saved(ImageCms.applyTransform(rgb, ImageCms.buildTransform(
            ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")), "TIFF"),
        "zero bytes": b"",
        "text file": b"hello, not an image\n",
        "truncated PNG": saved(rgb, "PNG")[:2000],
    }


def matrix() -> None:
    print("| input kind | result | gray | RGB PSNR dB | alpha | residual bytes |")
    print("|---|---|---|---|---|---|")
    for name, data in kinds().items():
        try:
            photo = read_photo(data)
        except ImageReadError as exc:
            print(f"| {name} | refused: {exc} | - | - | - | - |")
            continue
        encoded = encode(photo)
        restored = decode_photo(encoded.gray, encoded.residual)
        if photo.alpha is None:
            alpha = "none"
        else:
            alpha = "exact" if restored.alpha is not None and np.array_equal(restored.alpha, photo.alpha) else "LOST"
        gray = encoded.gray_path + (f" ({encoded.gray_note})" if encoded.gray_note else "")
        print(f"| {name} | round trip | {gray} | {psnr(restored.rgb, photo.rgb):.2f} | {alpha} | "
              f"{len(encoded.residual)} |")


READ_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def pillow_tests(folder: Path) -> None:
    """Encode and decode every file of the kinds invgray reads; count and list refusals."""
    warnings.simplefilter("ignore")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in READ_SUFFIXES)
    outcome: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    refusals = []
    for path in files:
        try:
            photo = read_photo(path.read_bytes())
        except ImageReadError as exc:
            outcome["refused"] += 1
            refusals.append((path.name, str(exc)))
            continue
        try:
            encoded = encode(photo)
        except ValueError as exc:  # sizes the formats cannot hold
            outcome["refused at encode"] += 1
            refusals.append((path.name, str(exc)))
            continue
        outcome["encoded"] += 1
        paths[encoded.gray_path + (f" ({encoded.gray_note})" if encoded.gray_note else "")] += 1
        try:
            decode_photo(encoded.gray, encoded.residual)
            outcome["decoded"] += 1
        except Exception as exc:  # noqa: BLE001 - a bug here is what this sweep is for
            refusals.append((path.name, f"DECODE FAILED: {type(exc).__name__}: {exc}"))
    print(f"{len(files)} files of the kinds invgray reads in {folder}")
    for key in ("encoded", "decoded", "refused", "refused at encode"):
        print(f"  {key}: {outcome[key]}")
    print("gray made by:")
    for path, count in paths.most_common():
        print(f"  {count:4d}  {path}")
    print("refused (reason: count):")
    for reason, count in Counter(reason for _, reason in refusals).most_common():
        print(f"  {count:4d}  {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pillow-tests", type=Path, help="Pillow's Tests/images folder: sweep it instead")
    args = parser.parse_args()
    if args.pillow_tests:
        pillow_tests(args.pillow_tests)
    else:
        matrix()


if __name__ == "__main__":
    main()
