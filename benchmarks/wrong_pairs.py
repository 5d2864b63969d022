"""What the decoder does with wrong pairs and altered grays, with numbers.

    python benchmarks/wrong_pairs.py [FOLDER]

On every image of FOLDER (default ../shared/data/test/kodak24), encodes with gray
q90 and then decodes: the right pair; the gray re-saved losslessly (PNG); the gray
re-compressed lossily (JPEG q90, q85, q75); the residual of another image. Prints
for each case how many decodes were accepted, warned or refused, and the mean RGB
PSNR of what was decoded.
"""

from __future__ import annotations

import argparse
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.codec import GrayMismatchError, decode_photo, encode
from invgray_cli.imaging.metrics import psnr

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


def resave(gray_bytes: bytes, fmt: str, quality: int | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.open(io.BytesIO(gray_bytes))
    image.save(buffer, fmt, **({"quality": quality} if quality else {}))
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg"})
    photos = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    encoded = [encode(rgb, quality=90) for rgb in photos]
    cases = {
        "right pair": lambda i: encoded[i].gray,
        "gray re-saved losslessly (PNG)": lambda i: resave(encoded[i].gray, "PNG"),
        "gray re-compressed JPEG q90": lambda i: resave(encoded[i].gray, "JPEG", 90),
        "gray re-compressed JPEG q85": lambda i: resave(encoded[i].gray, "JPEG", 85),
        "gray re-compressed JPEG q75": lambda i: resave(encoded[i].gray, "JPEG", 75),
        "residual of another image": lambda i: encoded[(i + 1) % len(encoded)].gray,
    }
    print(f"{args.folder}: {len(files)} images, gray q90, default level\n")
    print("| case | decoded | of which warned | refused | mean RGB PSNR of decoded |")
    print("|---|---|---|---|---|")
    for name, gray_for in cases.items():
        decoded, warned, refused, scores = 0, 0, 0, []
        for i, rgb in enumerate(photos):
            try:
                photo = decode_photo(gray_for(i), encoded[i].residual)
            except GrayMismatchError:
                refused += 1
                continue
            decoded += 1
            warned += bool(photo.notes)
            scores.append(psnr(photo.rgb, rgb))
        mean = f"{np.mean(scores):.2f}" if scores else "-"
        print(f"| {name} | {decoded} | {warned} | {refused} | {mean} |")


if __name__ == "__main__":
    main()
