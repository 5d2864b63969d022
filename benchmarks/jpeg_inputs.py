"""JPEG inputs: the lossless luma path against re-encoding the gray.

    python benchmarks/jpeg_inputs.py --threads 1 [--kodak DIR] [--camera DIR] [--camera-count 4]

Kodak24 (the test set) is saved as colour JPEG at q75, q85 and q95, 4:2:0 and 4:4:4,
baseline and progressive; a few photos of ``--camera`` (default the shared training
photos, decoded and saved again in memory, never written to the repository) are
saved the way cameras and phones do (q92 4:2:0 with restart markers and an EXIF
block saying orientation 6; q95 4:2:0 progressive). Every file then goes through
``read_photo`` -> ``encode`` -> ``decode_array`` four ways, at the default level unless said:

* ``lossless``: the default, the gray carries the input's own luma coefficients;
* ``q90``: today's re-encoded gray (``-q 90``);
* ``qS``: the gray re-encoded at the source's own quality (``-q S``), for a
  re-encoded pair of about the lossless pair's size;
* ``lossless high``: the lossless gray with the ``high`` residual level, spending
  part of the bytes the lossless gray saves.

Per setting, means per image: original bytes; gray + residual bytes; gray luma PSNR
against the luma of the decoded original (Pillow ``convert("L")``); restored RGB PSNR
and CIEDE2000 (scikit-image, on ``rgb2lab``) against the decoded original; encode time
from the file's bytes to both outputs' bytes (median), and the time of making the gray
JPEG alone: ``luma_jpeg`` against Pillow's luma + q90 encode (median). Needs the bench
extra.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from invgray_cli.codec import decode_array, encode
from invgray_cli.engines.registry import load_model
from invgray_cli.imaging.gray import decode_gray, encode_gray, luma
from invgray_cli.imaging.images import read_photo
from invgray_cli.imaging.jpeg_transcode import LosslessUnavailable, luma_jpeg
from invgray_cli.imaging.metrics import psnr

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
PATHS = ("lossless", "q90", "qS", "lossless high")


@dataclass
class Tally:
    original: list[int] = field(default_factory=list)
    total: dict[str, list[int]] = field(default_factory=lambda: {p: [] for p in PATHS})
    gray_psnr: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    rgb_psnr: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    ciede: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    seconds: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PATHS})
    gray_seconds: dict[str, list[float]] = field(default_factory=lambda: {"lossless": [], "q90": []})
    lossless_count: int = 0


def saved(rgb: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def camera_exif() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Example"  # Make
    exif[0x0110] = "Camera"  # Model
    exif[0x0112] = 6  # stored landscape, shown portrait
    return exif.tobytes()


def settings(kodak: list[np.ndarray], camera: list[np.ndarray]) -> list[tuple[str, int, list[bytes]]]:
    """(name, source quality, JPEG files)."""
    out = []
    for quality in (75, 85, 95):
        for subsampling, sub_name in ((2, "4:2:0"), (0, "4:4:4")):
            for progressive in (False, True):
                name = f"Kodak q{quality} {sub_name} {'progressive' if progressive else 'baseline'}"
                files = [saved(rgb, quality=quality, subsampling=subsampling, progressive=progressive, optimize=True)
                         for rgb in kodak]
                out.append((name, quality, files))
    if camera:
        out.append(("camera q92 4:2:0, restarts, EXIF orientation 6", 92,
                    [saved(rgb, quality=92, subsampling=2, restart_marker_rows=1, exif=camera_exif())
                     for rgb in camera]))
        out.append(("phone q95 4:2:0 progressive", 95,
                    [saved(rgb, quality=95, subsampling=2, progressive=True, optimize=True) for rgb in camera]))
    return out


def measure(data: bytes, source_quality: int, model: torch.nn.Module, tally: Tally) -> None:
    from skimage.color import deltaE_ciede2000, rgb2lab

    photo = read_photo(data)
    reference = photo.rgb  # the decoded original, upright
    started = time.perf_counter()
    try:
        luma_jpeg(data, photo.orientation, photo.exif, photo.xmp)
    except LosslessUnavailable:
        pass
    tally.gray_seconds["lossless"].append(time.perf_counter() - started)
    started = time.perf_counter()
    encode_gray(luma(reference), "jpg", 90, photo.exif, photo.xmp)
    tally.gray_seconds["q90"].append(time.perf_counter() - started)
    reference_luma = luma(reference)
    reference_lab = rgb2lab(reference)
    tally.original.append(len(data))
    for path, quality, level in zip(PATHS, (None, 90, source_quality, None), ("default",) * 3 + ("high",)):
        started = time.perf_counter()
        # as the CLI reads a photo it will encode: a JPEG's lossless luma starts while it decodes
        encoded = encode(read_photo(data, lossless_luma=quality is None), quality=quality, level=level, model=model)
        tally.seconds[path].append(time.perf_counter() - started)
        if path == "lossless":
            tally.lossless_count += encoded.gray_path == "lossless luma"
        restored = decode_array(encoded.gray, encoded.residual, model=model)
        tally.total[path].append(len(encoded.gray) + len(encoded.residual))
        tally.gray_psnr[path].append(psnr(decode_gray(encoded.gray), reference_luma))
        tally.rgb_psnr[path].append(psnr(restored, reference))
        tally.ciede[path].append(float(np.mean(deltaE_ciede2000(reference_lab, rgb2lab(restored)))))


def load_rgbs(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kodak", type=Path, default=SHARED / "test" / "kodak24")
    parser.add_argument("--camera", type=Path, default=SHARED / "train" / "sun_hays80",
                        help="folder of photos for the camera-like settings (none: skip them)")
    parser.add_argument("--camera-count", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        import skimage  # noqa: F401
    except ImportError:
        sys.exit("jpeg_inputs.py needs scikit-image: pip install -e '.[bench]'")
    torch.set_num_threads(args.threads)
    model = load_model()
    kodak = load_rgbs(sorted(args.kodak.glob("*.png")))
    camera = load_rgbs(sorted(args.camera.glob("*.jpg"))[:args.camera_count]) if args.camera.is_dir() else []
    print(f"{len(kodak)} Kodak images, {len(camera)} camera-like photos from {args.camera}; "
          f"torch threads {args.threads}")
    print()
    ways = " / ".join(PATHS)
    print(f"| setting | lossless luma | original bytes | gray + residual bytes: {ways} | lossless vs original | "
          f"gray luma PSNR dB: {ways} | restored RGB PSNR dB: {ways} | CIEDE2000: {ways} | encode s: {ways} | "
          f"gray alone ms: lossless / q90 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, source_quality, files in settings(kodak, camera):
        tally = Tally()
        for data in files:
            measure(data, source_quality, model, tally)

        def means(values: dict[str, list[float]], digits: int) -> str:
            return " / ".join(f"{statistics.fmean(values[p]):,.{digits}f}" for p in PATHS)

        saving = 1 - statistics.fmean(tally.total["lossless"]) / statistics.fmean(tally.original)
        medians = " / ".join(f"{statistics.median(tally.seconds[p]):.3f}" for p in PATHS)
        print(f"| {name} (qS = q{source_quality}) | {tally.lossless_count}/{len(files)} | "
              f"{statistics.fmean(tally.original):,.0f} | {means(tally.total, 0)} | {-saving:+.1%} | "
              f"{means(tally.gray_psnr, 2)} | {means(tally.rgb_psnr, 2)} | {means(tally.ciede, 3)} | {medians} | "
              f"{statistics.median(tally.gray_seconds['lossless']) * 1e3:.1f} / "
              f"{statistics.median(tally.gray_seconds['q90']) * 1e3:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
