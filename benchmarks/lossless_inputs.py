"""--lossless on every 8-bit RGB and RGBA image of a folder (Pillow's own test images,
``Tests/images`` of its repository): is each restored bit for bit?

Each file is read as invgray reads it (``read_photo``: EXIF orientation applied) and
encoded with ``max_error=0`` (a PNG gray), and the decode is compared with the photo's
RGB and alpha, and with the file's own pixels as Pillow reads them when it has no
orientation to apply. Files Pillow cannot open, and other modes, are counted, not tried.

    python benchmarks/lossless_inputs.py /path/to/Pillow/Tests/images
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.codec import decode_photo, encode
from invgray_cli.imaging.images import read_photo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    tried = exact = skipped = unreadable = 0
    failures = []
    for path in sorted(args.folder.iterdir()):
        try:
            with Image.open(path) as image:
                mode, orientation = image.mode, image.getexif().get(0x0112, 1)
                image.load()
                own = np.asarray(image) if mode in ("RGB", "RGBA") else None
        except Exception:  # noqa: BLE001 - any file Pillow cannot read is only counted
            unreadable += 1
            continue
        if own is None:
            skipped += 1
            continue
        try:
            photo = read_photo(path.read_bytes())
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{path.name}: not read by invgray ({exc})")
            continue
        tried += 1
        try:
            encoded = encode(photo, max_error=0)
            restored = decode_photo(encoded.gray, encoded.residual)
        except Exception as exc:  # noqa: BLE001
            failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
            continue
        same = np.array_equal(restored.rgb, photo.rgb)
        same &= (restored.alpha is None) == (photo.alpha is None)
        if photo.alpha is not None and restored.alpha is not None:
            same &= np.array_equal(restored.alpha, photo.alpha)
        if orientation == 1:
            rgb = own[..., :3]
            same &= np.array_equal(restored.rgb, rgb)
        if same:
            exact += 1
        else:
            failures.append(f"{path.name}: restored pixels differ")
    print(f"{exact} of {tried} 8-bit RGB/RGBA images restored bit for bit "
          f"({skipped} other modes and {unreadable} files Pillow cannot open not tried)")
    for line in failures:
        print("  " + line)


if __name__ == "__main__":
    main()
