"""Input-kind matrix: every supported kind round-trips (PSNR stated), the rest are refused.

    python benchmarks/input_matrix.py

Builds each kind from the bundled sample (a 384 x 256 crop) in memory, runs it
through ``read_photo`` -> ``encode`` -> ``decode_photo`` at the default level with
gray q90, and prints RGB PSNR against the input as Pillow shows it, whether alpha
came back exactly, and the residual size; refused kinds print their one-line reason.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invgray_cli.codec import decode_photo, encode  # noqa: E402
from invgray_cli.images import ImageReadError, read_photo  # noqa: E402
from invgray_cli.inference import psnr  # noqa: E402

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
        "TIFF 32-bit float": saved(Image.fromarray(np.zeros((8, 8), np.float32)), "TIFF"),
        "zero bytes": b"",
        "text file": b"hello, not an image\n",
        "truncated PNG": saved(rgb, "PNG")[:2000],
    }


def main() -> None:
    print("| input kind | result | RGB PSNR dB | alpha | residual bytes |")
    print("|---|---|---|---|---|")
    for name, data in kinds().items():
        try:
            photo = read_photo(data)
        except ImageReadError as exc:
            print(f"| {name} | refused: {exc} | - | - | - |")
            continue
        encoded = encode(photo, quality=90)
        restored = decode_photo(encoded.gray, encoded.residual)
        if photo.alpha is None:
            alpha = "none"
        else:
            alpha = "exact" if restored.alpha is not None and np.array_equal(restored.alpha, photo.alpha) else "LOST"
        print(f"| {name} | round trip | {psnr(restored.rgb, photo.rgb):.2f} | {alpha} | {len(encoded.residual)} |")


if __name__ == "__main__":
    main()
