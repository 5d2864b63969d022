"""Quality benchmark: restored-colour PSNR and file sizes, beside the classical split.

    python benchmarks/quality.py [FOLDER] [--qualities 75 90] [--levels default] [--device cpu]

For each gray JPEG quality and rate level it runs the product path
(``invgray_cli.encode`` then ``decode``) on every image of FOLDER (default
../shared/data/test/kodak24) and prints mean whole-image RGB PSNR (8-bit, per image
then averaged), mean gray bpp and mean residual bpp (file bytes x 8 / pixels). Beside it, the classical split:
the same gray JPEG plus Cb and Cr area-downsampled x4 or x8, each stored as a
grayscale JPEG, bilinearly upsampled and recombined.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invgray_cli.codec import decode_array, encode, resolve_device  # noqa: E402
from invgray_cli.gray import decode_gray, encode_gray, luma  # noqa: E402
from invgray_cli.inference import psnr  # noqa: E402
from invgray_cli.zoo import load_model  # noqa: E402

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def load_folder(folder: Path) -> list[tuple[str, np.ndarray]]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise SystemExit(f"{folder}: no images")
    return [(p.name, np.asarray(Image.open(p).convert("RGB"))) for p in files]


def classical_split(rgb: np.ndarray, gray_bytes: bytes, factor: int, chroma_quality: int) -> tuple[np.ndarray, int]:
    """Restored RGB and side-file bytes for gray + JPEG'd Cb/Cr downsampled by ``factor``."""
    h, w = rgb.shape[:2]
    _, cb, cr = Image.fromarray(rgb).convert("YCbCr").split()
    small = (max(1, round(w / factor)), max(1, round(h / factor)))
    planes, side_bytes = [], 0
    for plane in (cb, cr):
        buffer = io.BytesIO()
        plane.resize(small, Image.Resampling.BOX).save(buffer, "JPEG", quality=chroma_quality, optimize=True)
        side_bytes += buffer.tell()
        decoded = Image.open(io.BytesIO(buffer.getvalue())).convert("L")
        planes.append(decoded.resize((w, h), Image.Resampling.BILINEAR))
    y = Image.fromarray(decode_gray(gray_bytes), "L")
    restored = Image.merge("YCbCr", (y, *planes)).convert("RGB")
    return np.asarray(restored), side_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--qualities", type=int, nargs="+", default=[75, 90])
    parser.add_argument("--levels", nargs="+", default=["default"], help="rate levels to run (low default high)")
    parser.add_argument("--chroma-qualities", type=int, nargs="+", default=[50, 90])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = resolve_device(args.device)
    model = load_model(device=device)
    images = load_folder(args.folder)
    print(f"{args.folder}: {len(images)} images; model {model.model_id}; device {device}\n")
    header = "| gray | method | RGB PSNR dB | gray bpp | side bpp | total bpp |"
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for quality in args.qualities:
        rows: dict[str, list[tuple[float, float, float]]] = {}
        started = time.perf_counter()
        for _, rgb in images:
            pixels = rgb.shape[0] * rgb.shape[1]
            for level in args.levels:
                encoded = encode(rgb, quality=quality, level=level, device=device, model=model)
                restored = decode_array(encoded.gray, encoded.residual, device=device, model=model)
                gray_bpp = len(encoded.gray) * 8 / pixels
                rows.setdefault(f"invgray level {level}", []).append(
                    (psnr(restored, rgb), gray_bpp, len(encoded.residual) * 8 / pixels))
            for factor in (8, 4):
                for cq in args.chroma_qualities:
                    split, side = classical_split(rgb, encoded.gray, factor, cq)
                    rows.setdefault(f"classical Cb/Cr x{factor} JPEG q{cq}", []).append(
                        (psnr(split, rgb), gray_bpp, side * 8 / pixels))
            exact = Image.merge("YCbCr", (Image.fromarray(decode_gray(encoded.gray)),
                                          *Image.fromarray(rgb).convert("YCbCr").split()[1:])).convert("RGB")
            rows.setdefault("bound: exact chroma", []).append((psnr(np.asarray(exact), rgb), gray_bpp, float("nan")))
        for method, values in rows.items():
            p, g, s = (float(np.mean(c)) for c in zip(*values))
            side = "-" if np.isnan(s) else f"{s:.4f}"
            total = "-" if np.isnan(s) else f"{g + s:.3f}"
            print(f"| q{quality} | {method} | {p:.2f} | {g:.3f} | {side} | {total} |")
        print(f"<!-- q{quality}: {time.perf_counter() - started:.0f}s -->", file=sys.stderr)


if __name__ == "__main__":
    main()
