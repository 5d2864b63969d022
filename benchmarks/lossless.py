"""The refinement layer's exact end (issue 24): --lossless and --max-error K against the
lossless and near-lossless colour codecs, on a folder of photos.

For each photo: the gray + residual pair that invgray writes (through ``encode``, the
CLI's path), decoded and checked (bit-exact, or every channel within K), with its encode
and decode time; beside it colour PNG, WebP lossless (method 6), JPEG XL lossless
(effort 7) and JPEG-LS at NEAR 0/1/2/4 (CharLS; the last two through imagecodecs, in the
``bench`` extra). bpp = bytes x 8 / pixels, averaged over photos.

    python benchmarks/lossless.py ../shared/data/test/kodak24 --bounds 0 1 2 4
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.codec import decode_array, encode
from invgray_cli.imaging.images import PHOTO_SUFFIXES


def colour_codecs(rgb: np.ndarray, bounds: list[int]) -> dict[str, int]:
    sizes = {}
    image = Image.fromarray(rgb)
    for name, options in (("colour PNG", {"format": "PNG", "optimize": True}),
                          ("WebP lossless", {"format": "WEBP", "lossless": True, "method": 6})):
        out = io.BytesIO()
        image.save(out, **options)
        sizes[name] = len(out.getvalue())
    try:
        import imagecodecs
    except ImportError:
        return sizes
    sizes["JPEG XL lossless e7"] = len(imagecodecs.jpegxl_encode(rgb, lossless=True, effort=7))
    for near in bounds:
        coded = imagecodecs.jpegls_encode(rgb, level=near)
        decoded = imagecodecs.jpegls_decode(coded)
        assert np.abs(decoded.astype(int) - rgb).max() <= near
        sizes[f"JPEG-LS NEAR={near}"] = len(coded)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bounds", type=int, nargs="+", default=[0, 1, 2, 4])
    parser.add_argument("--grays", nargs="+", default=["auto"],
                        help="auto (the encoder's choice for each bound), png, and/or JPEG qualities, e.g. png 95")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    files = files[:args.limit] if args.limit else files
    totals: dict[str, list[float]] = {}
    timing: dict[str, list[float]] = {}
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        pixels = rgb.shape[0] * rgb.shape[1]
        for gray in args.grays:
            fmt, quality = {"auto": (None, None), "png": ("png", None)}.get(gray) or ("jpg", int(gray))
            for bound in args.bounds:
                started = time.perf_counter()
                encoded = encode(rgb, gray_format=fmt, quality=quality, max_error=bound)
                encode_s = time.perf_counter() - started
                started = time.perf_counter()
                restored = decode_array(encoded.gray, encoded.residual)
                decode_s = time.perf_counter() - started
                worst = int(np.abs(restored.astype(int) - rgb).max())
                if worst > bound:
                    raise SystemExit(f"{path.name}: --max-error {bound} broken: {worst}")
                name = f"invgray {'lossless' if bound == 0 else f'max-error {bound}'}, gray {gray}"
                totals.setdefault(name, []).append((len(encoded.gray) + len(encoded.residual)) * 8 / pixels)
                totals.setdefault(name + " (residual)", []).append(len(encoded.residual) * 8 / pixels)
                timing.setdefault(name, []).extend([encode_s, decode_s])
        for name, size in colour_codecs(rgb, args.bounds).items():
            totals.setdefault(name, []).append(size * 8 / pixels)
        print(f"{path.name}: done", flush=True)
    print(f"\n{len(files)} photos of {args.folder}\n")
    print("| setting | bpp | encode s | decode s |\n|---|---|---|---|")
    for name, values in totals.items():
        times = timing.get(name)
        spent = (f"{np.mean(times[0::2]):.2f} | {np.mean(times[1::2]):.2f}" if times else "- | -")
        print(f"| {name} | {np.mean(values):.3f} | {spent} |")


if __name__ == "__main__":
    main()
