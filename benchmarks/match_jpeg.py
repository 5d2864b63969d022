"""Match a colour JPEG's quality, photo by photo (issue 24): for each photo, the PSNR of
its colour JPEG at ``--quality`` becomes invgray's ``--target-psnr`` on a gray of
``--gray-quality``; is the pair (gray + residual) smaller than that JPEG?

The JPEG is Pillow's (libjpeg-turbo, 4:2:0) with ``optimize=True``, the smaller of its
two forms. The pair is what ``invgray encode --target-psnr`` writes, PSNR measured on its
real decode.

    python benchmarks/match_jpeg.py ../shared/data/test/kodak24 --quality 95 --gray-quality 95
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.codec import decode_array
from invgray_cli.codec.rate_control import encode_to_target
from invgray_cli.imaging.images import PHOTO_SUFFIXES
from invgray_cli.imaging.metrics import psnr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--gray-quality", type=int, default=95)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    files = files[:args.limit] if args.limit else files
    print(f"| photo | JPEG q{args.quality} dB | JPEG bpp | pair bpp (gray q{args.gray_quality} + residual) | "
          "pair dB | smaller | layer | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    wins, totals = 0, np.zeros(2)
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        pixels = rgb.shape[0] * rgb.shape[1]
        out = io.BytesIO()
        Image.fromarray(rgb).save(out, "JPEG", quality=args.quality, optimize=True)
        target = psnr(np.asarray(Image.open(out).convert("RGB")), rgb)
        started = time.perf_counter()
        result = encode_to_target(rgb, target_psnr=target, quality=args.gray_quality)
        seconds = time.perf_counter() - started
        pair = result.encoded
        reached = psnr(decode_array(pair.gray, pair.residual), rgb)
        jpeg_bpp = len(out.getvalue()) * 8 / pixels
        pair_bpp = (len(pair.gray) + len(pair.residual)) * 8 / pixels
        smaller = pair_bpp < jpeg_bpp and reached >= target
        wins += smaller
        totals += (jpeg_bpp, pair_bpp)
        layer = "-" if pair.refinement is None else ("chroma" if pair.refinement[0] == 1 else "rgb") + \
            f" step {pair.refinement[1]}"
        print(f"| {path.stem} | {target:.2f} | {jpeg_bpp:.3f} | {pair_bpp:.3f} | {reached:.2f} | "
              f"{'yes' if smaller else 'NO'} | {layer} | {seconds:.1f} |", flush=True)
    print(f"\n{wins} of {len(files)} pairs smaller than the JPEG at its PSNR; mean bpp JPEG "
          f"{totals[0] / len(files):.3f}, pair {totals[1] / len(files):.3f}")


if __name__ == "__main__":
    main()
