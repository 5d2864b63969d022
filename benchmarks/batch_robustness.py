"""Batch robustness check: 200 photos, 5 of them broken, through the real CLI.

    python benchmarks/batch_robustness.py [--count 200] [--keep DIR]

Makes COUNT photos (crops of the bundled sample), encodes the folder with
``invgray encode``, then breaks five pairs in five ways (gray truncated, gray
replaced by text, zero-byte residual, residual of another photo, residual of an
unknown model) and decodes the folder with ``invgray decode``. Prints the exit
codes and counts, then reruns the decode with ``--skip-existing``.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


def invgray(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invgray_cli", *args], capture_output=True, text=True,
                          env={"INVGRAY_PLAIN": "1", "PATH": "/usr/bin:/bin"})


def make_photos(folder: Path, count: int) -> None:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = int(rng.integers(96, 200)), int(rng.integers(96, 260))
        y, x = int(rng.integers(0, rgb.shape[0] - h)), int(rng.integers(0, rgb.shape[1] - w))
        Image.fromarray(np.ascontiguousarray(rgb[y:y + h, x:x + w])).save(folder / f"photo{i:03d}.png")


def break_five(folder: Path) -> list[str]:
    (folder / "photo010.gray.jpg").write_bytes((folder / "photo010.gray.jpg").read_bytes()[:200])
    (folder / "photo020.gray.jpg").write_text("this is not an image\n")
    (folder / "photo030.residual.bin").write_bytes(b"")
    (folder / "photo040.residual.bin").write_bytes((folder / "photo041.residual.bin").read_bytes())
    data = bytearray((folder / "photo050.residual.bin").read_bytes())
    data[7:15] = bytes.fromhex("00112233445566ff")  # another model's id; checksum recomputed
    body = bytes(data[:-4])
    (folder / "photo050.residual.bin").write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    return ["photo010 (truncated gray)", "photo020 (gray is not an image)", "photo030 (zero-byte residual)",
            "photo040 (residual of another photo)", "photo050 (residual of an unknown model)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--keep", type=Path, help="work in this folder instead of a temporary one")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="invgray-batch-"))
    photos, restored = root / "photos", root / "restored"
    photos.mkdir(parents=True, exist_ok=True)
    make_photos(photos, args.count)

    started = time.perf_counter()
    result = invgray("encode", str(photos))
    print(f"encode {args.count} photos: exit {result.returncode}, {time.perf_counter() - started:.1f}s; "
          f"{result.stderr.strip().splitlines()[-1]}")
    broken = break_five(photos)
    print("broken: " + ", ".join(broken))

    started = time.perf_counter()
    result = invgray("decode", str(photos), "--out-dir", str(restored))
    print(f"decode: exit {result.returncode}, {time.perf_counter() - started:.1f}s, "
          f"{len(list(restored.glob('*.color.png')))} restored files")
    for line in result.stderr.strip().splitlines():
        print(f"  {line}")
    partial = [p.name for p in restored.iterdir() if not p.name.endswith(".color.png")]
    print(f"stray or partial files in the output folder: {partial or 'none'}")

    result = invgray("decode", str(photos), "--out-dir", str(restored), "--skip-existing")
    summary = next(line for line in result.stderr.splitlines() if " done, " in line)
    print(f"rerun with --skip-existing: exit {result.returncode}; {summary.strip()}; "
          f"{len(list(restored.glob('*.color.png')))} restored files")


if __name__ == "__main__":
    main()
