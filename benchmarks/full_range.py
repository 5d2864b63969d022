"""One curve from the lowest level to lossless (issue 24): gray + residual against colour
codecs, per gray setting, with a plot.

For each photo and gray (JPEG qualities and/or png): the network's levels, its finest
step, the chroma layer on it (steps in half levels), then the RGB layer (every channel
within K, K = 0 lossless). Each point is the real pair through ``encode`` and its real
decode. Beside them: colour JPEG (Pillow, 4:2:0, optimised) at q50..q98, WebP lossless,
JPEG XL lossless (effort 7) and JPEG-LS NEAR 1/2/4 (imagecodecs, ``bench`` extra).
Prints a table of mean total bpp and mean RGB PSNR (lossless as "exact") and, with
``--plot FILE``, draws them (matplotlib, ``bench`` extra).

    python benchmarks/full_range.py ../shared/data/test/kodak24 --grays 90 95 png --plot docs/full_range_kodak24.png
"""

from __future__ import annotations

import argparse
import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.codec import decode_array, encode
from invgray_cli.imaging.images import PHOTO_SUFFIXES
from invgray_cli.imaging.metrics import psnr

LEVELS = ("low", "default", "high", "max")
CHROMA_STEPS = (32, 16, 8, 4, 2, 1)
MAX_ERRORS = (8, 4, 2, 1, 0)
JPEG_QUALITIES = (50, 60, 70, 80, 85, 90, 95, 98)


def invgray_points(rgb: np.ndarray, gray: str) -> dict[str, tuple[int, float]]:
    fmt, quality = ("png", None) if gray == "png" else ("jpg", int(gray))
    settings = [(f"level {name}", {"level": name}) for name in LEVELS] + [("step 0.5", {"step": 0.5})]
    settings += [(f"chroma step {d}", {"step": 0.5, "refine": d}) for d in CHROMA_STEPS]
    settings += [(f"max-error {k}", {"max_error": k}) for k in MAX_ERRORS]
    points = {}
    for name, options in settings:
        encoded = encode(rgb, gray_format=fmt, quality=quality, **options)
        restored = decode_array(encoded.gray, encoded.residual)
        if "max_error" in options:
            assert np.abs(restored.astype(int) - rgb).max() <= options["max_error"]
        points[name] = (len(encoded.gray) + len(encoded.residual), psnr(restored, rgb))
    return points


def colour_points(rgb: np.ndarray) -> dict[str, tuple[int, float]]:
    image = Image.fromarray(rgb)
    points = {}
    for q in JPEG_QUALITIES:
        out = io.BytesIO()
        image.save(out, "JPEG", quality=q, optimize=True)
        points[f"colour JPEG q{q}"] = (len(out.getvalue()), psnr(np.asarray(Image.open(out).convert("RGB")), rgb))
    out = io.BytesIO()
    image.save(out, "WEBP", lossless=True, method=6)
    points["WebP lossless"] = (len(out.getvalue()), math.inf)
    try:
        import imagecodecs
    except ImportError:
        return points
    points["JPEG XL lossless e7"] = (len(imagecodecs.jpegxl_encode(rgb, lossless=True, effort=7)), math.inf)
    for near in (1, 2, 4):
        coded = imagecodecs.jpegls_encode(rgb, level=near)
        points[f"JPEG-LS NEAR={near}"] = (len(coded), psnr(imagecodecs.jpegls_decode(coded), rgb))
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--grays", nargs="+", default=["90", "95", "png"])
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--from-table", type=Path, help="draw the plot from a table this script printed, no encoding")
    args = parser.parse_args()
    if args.from_table:
        summary, title = read_table(args.from_table)
        plot(summary, args.plot, title)
        return
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    files = files[:args.limit] if args.limit else files
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        pixels = rgb.shape[0] * rgb.shape[1]
        sets = {f"invgray, gray {g}": invgray_points(rgb, g) for g in args.grays}
        sets["colour codecs"] = colour_points(rgb)
        for curve, points in sets.items():
            for name, (size, quality) in points.items():
                curves.setdefault(curve, {}).setdefault(name, []).append((size * 8 / pixels, quality))
        print(f"{path.name}: done", flush=True)
    print(f"\n{len(files)} photos of {args.folder}; bpp = gray + residual (colour codecs: the file)\n")
    print("| curve | point | bpp | RGB PSNR dB |\n|---|---|---|---|")
    summary: dict[str, list[tuple[str, float, float]]] = {}
    for curve, points in curves.items():
        for name, values in points.items():
            bpp = float(np.mean([v[0] for v in values]))
            finite = [v[1] for v in values if math.isfinite(v[1])]
            quality = float(np.mean(finite)) if len(finite) == len(values) else math.inf
            summary.setdefault(curve, []).append((name, bpp, quality))
            shown = "exact" if not math.isfinite(quality) else f"{quality:.2f}"
            print(f"| {curve} | {name} | {bpp:.3f} | {shown} |")
    if args.plot:
        plot(summary, args.plot, f"{len(files)} photos of {args.folder.name}")


def read_table(path: Path) -> tuple[dict[str, list[tuple[str, float, float]]], str]:
    """The summary and title back from this script's printed output."""
    summary: dict[str, list[tuple[str, float, float]]] = {}
    title = ""
    for line in path.read_text().splitlines():
        if " photos of " in line and not title:
            title = line.split(";")[0]
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[2].replace(".", "", 1).isdigit():
            quality = math.inf if cells[3] == "exact" else float(cells[3])
            summary.setdefault(cells[0], []).append((cells[1], float(cells[2]), quality))
    return summary, title


def plot(summary: dict[str, list[tuple[str, float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact_at = 60.0  # lossless points are drawn on this line
    figure, axes = plt.subplots(figsize=(9, 6))
    for curve, points in summary.items():
        if curve == "colour codecs":
            jpeg = [(b, q) for n, b, q in points if n.startswith("colour JPEG")]
            axes.plot(*zip(*jpeg), "k--", marker=".", label="colour JPEG q50-q98")
            for name, bpp, quality in points:
                if not name.startswith("colour JPEG"):
                    axes.plot(bpp, min(quality, exact_at), marker="s", linestyle="none", label=name)
            continue
        network = [(b, min(q, exact_at)) for n, b, q in points if not n.startswith("max-error")]
        bounded = [(b, min(q, exact_at)) for n, b, q in points if n.startswith("max-error")]
        line, = axes.plot(*zip(*network), marker="o", label=f"{curve}: levels, then chroma layer")
        if bounded:
            axes.plot(*zip(*bounded), marker="^", linestyle=":", color=line.get_color(),
                      label=f"{curve}: --max-error 8, 4, 2, 1, lossless")
    axes.axhline(exact_at, color="gray", linewidth=0.5)
    axes.set_xscale("log")
    axes.set_xlabel("bits per pixel (gray + residual, or the colour file)")
    axes.set_ylabel(f"RGB PSNR dB (lossless drawn at {exact_at:g})")
    axes.set_title(title)
    axes.grid(True, which="both", linewidth=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
