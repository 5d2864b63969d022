"""Large-image check: peak memory and time per megapixel of the CLI on a ~50 MP photo.

    python benchmarks/large_image.py [--megapixels 50] [--workdir /tmp/invgray-large]
    python benchmarks/large_image.py --encode-args="--lossless" --cli-only

Upscales the bundled sample (Lanczos) to about MEGAPIXELS and saves it as a JPEG
q95, then runs ``invgray encode`` and ``invgray decode`` on it under
``/usr/bin/time -v`` (peak resident memory, wall time), and the same on the
768 x 512 sample for the time-per-megapixel comparison. Also checks that the tiled
decode of the large image matches a whole-image decode of a crop small enough for
both (PSNR between the two).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


def timed_cli(*args: str) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of ``invgray ARGS`` under /usr/bin/time -v."""
    result = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "invgray_cli", *args],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"invgray {' '.join(args)} failed:\n{result.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", result.stderr)
    hours, minutes, seconds = wall.groups()
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds), peak / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megapixels", type=float, default=50.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/invgray-large"))
    parser.add_argument("--encode-args", default="", help="more encode options, e.g. --lossless")
    parser.add_argument("--cli-only", action="store_true", help="only the CLI's time and memory")
    args = parser.parse_args()
    extra = args.encode_args.split()
    args.workdir.mkdir(parents=True, exist_ok=True)
    sample = Image.open(SAMPLE).convert("RGB")
    scale = (args.megapixels * 1e6 / (sample.width * sample.height)) ** 0.5
    big = sample.resize((round(sample.width * scale / 32) * 32, round(sample.height * scale / 32) * 32),
                        Image.Resampling.LANCZOS)
    big_path, small_path = args.workdir / "large.jpg", args.workdir / "small.png"
    big.save(big_path, quality=95)
    sample.save(small_path)
    del big

    rows = []
    for path in (small_path, big_path):
        with Image.open(path) as image:
            mp = image.width * image.height / 1e6
        stem = path.with_suffix("").name
        for old in path.parent.glob(f"{stem}.gray.*"):
            old.unlink()
        enc = timed_cli("encode", str(path), "--force", *extra)
        (gray,) = path.parent.glob(f"{stem}.gray.*")
        dec = timed_cli("decode", str(gray), "--force")
        rows.append((path.name, mp, enc, dec))
    print("| image | MP | encode s | encode s/MP | encode peak MB | decode s | decode s/MP | decode peak MB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, mp, (enc_s, enc_mb), (dec_s, dec_mb) in rows:
        print(f"| {name} | {mp:.1f} | {enc_s:.1f} | {enc_s / mp:.2f} | {enc_mb:.0f} | {dec_s:.1f} | "
              f"{dec_s / mp:.2f} | {dec_mb:.0f} |")
    print("(wall times include starting Python and loading the network)")
    if args.cli_only:
        return

    import time

    from invgray_cli.codec import decode_array, decode_photo, encode
    from invgray_cli.imaging.images import read_photo
    from invgray_cli.imaging.metrics import psnr

    print("\nin-process (no start-up), seconds per megapixel:")
    print("| image | encode s/MP | decode s/MP |")
    print("|---|---|---|")
    encode(read_photo(small_path.read_bytes()))  # warm-up
    for path in (small_path, big_path):
        photo = read_photo(path.read_bytes())
        mp = photo.rgb.shape[0] * photo.rgb.shape[1] / 1e6
        started = time.perf_counter()
        pair = encode(photo)
        encode_s = time.perf_counter() - started
        started = time.perf_counter()
        decode_photo(pair.gray, pair.residual)
        decode_s = time.perf_counter() - started
        print(f"| {path.name} | {encode_s / mp:.3f} | {decode_s / mp:.3f} |")
        del photo, pair

    crop = np.ascontiguousarray(np.asarray(Image.open(big_path).convert("RGB"))[:2304, :3072])
    encoded = encode(crop)
    import invgray_cli.engines.tiling as tiling

    whole = decode_array(encoded.gray, encoded.residual)  # 7 MP > the whole-image limit: tiled
    saved = tiling.WHOLE_IMAGE_PIXELS
    tiling.WHOLE_IMAGE_PIXELS = 1 << 40
    untiled = decode_array(encoded.gray, encoded.residual)
    tiling.WHOLE_IMAGE_PIXELS = saved
    print(f"\ntiled vs whole-image decode of a {crop.shape[1]}x{crop.shape[0]} crop: "
          f"PSNR {psnr(whole, untiled):.2f} dB, identical pixels {np.mean(whole == untiled) * 100:.4f} %")


if __name__ == "__main__":
    main()
