"""Fuzz the decoder with mutated residual files and the encoder with mutated images.

    python benchmarks/fuzz.py --residuals 100000 --images 1000 [--seed 0]

Residual mutations start from real files made by the bundled model: bit flips,
truncation, extension, header fields overwritten with edge values (checksum
recomputed, so that the deeper checks run), payload bytes changed or replaced by
hostile zstd frames (bombs, wrong layouts) with the checksum recomputed. Image
mutations start from real PNG/JPEG/GIF/BMP/TIFF/WebP files. Every case must end in
a decoded image or the codec's own error types; anything else is a crash. A case
taking over 5 s is a hang. Prints counts, the slowest case and peak memory.
"""

from __future__ import annotations

import argparse
import io
import resource
import struct
import sys
import time
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import zstandard
from PIL import Image

from invgray_cli.codec import GrayRecompressedWarning, decode_array, encode
from invgray_cli.engines.registry import UnknownModelError
from invgray_cli.format.container import HEADER_SIZE, InvalidResidualError
from invgray_cli.imaging.images import ImageReadError, read_photo

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"
HANG_SECONDS = 5.0
# (offset, struct format) of every header field after the magic, see docs/FORMAT.md
HEADER_FIELDS = [(4, "<B"), (5, "<H"), (7, "<Q"), (15, "<I"), (19, "<I"), (23, "<H"), (25, "<B"), (26, "<f"),
                 (30, "<Q"), (38, "<16s"), (54, "<I"), (58, "<I")]
EDGE_VALUES = [0, 1, 2, 7, 8, 32, 64, 255, 256, 1023, 1024, 65535, 65536, 262144, 262145, 2**31 - 1, 2**32 - 1]
FLOAT_EDGES = [0.0, -1.0, 1e-30, 0.5, 1.0, 1000.0, 1001.0, float("inf"), float("nan"), 3.4e38]


def seed_inputs() -> list[tuple[bytes, bytes]]:
    """(gray, residual) pairs of small real images: gray JPEG and PNG, several sizes."""
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    crops = [rgb[:64, :96], rgb[200:233, 300:341], rgb[100:101, 100:140], rgb[:40, :40]]
    pairs = []
    for i, crop in enumerate(crops):
        encoded = encode(np.ascontiguousarray(crop), gray_format="png" if i % 2 else "jpg")
        pairs.append((encoded.gray, encoded.residual))
    return pairs


def _reseal(body: bytes) -> bytes:
    """Recompute the trailing CRC-32 so that mutations reach the checks behind it."""
    return body + struct.pack("<I", zlib.crc32(body))


def _with_payload(data: bytes, payload: bytes, raw_size: int | None = None) -> bytes:
    header = bytearray(data[:HEADER_SIZE])
    struct.pack_into("<I", header, 58, len(payload))
    if raw_size is not None:
        struct.pack_into("<I", header, 54, raw_size)
    return _reseal(bytes(header) + payload)


def mutate_residual(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    kind = rng.integers(8)
    if kind == 0:  # bit flips, checksum left stale
        out = bytearray(data)
        for _ in range(rng.integers(1, 9)):
            pos = rng.integers(len(out))
            out[pos] ^= 1 << rng.integers(8)
        return "bitflip", bytes(out)
    if kind == 1:
        return "truncate", data[:rng.integers(len(data))]
    if kind == 2:
        return "extend", data + rng.bytes(int(rng.integers(1, 64)))
    if kind == 3:  # one header field set to an edge value, checksum recomputed
        offset, fmt = HEADER_FIELDS[rng.integers(len(HEADER_FIELDS))]
        header = bytearray(data[:-4])
        if fmt == "<f":
            value = FLOAT_EDGES[rng.integers(len(FLOAT_EDGES))]
        elif fmt == "<16s":
            value = rng.bytes(16)
        else:
            limit = 2 ** (8 * struct.calcsize(fmt)) - 1
            value = min(EDGE_VALUES[rng.integers(len(EDGE_VALUES))], limit)
        struct.pack_into(fmt, header, offset, value)
        return "field", _reseal(bytes(header))
    if kind == 4:  # payload bytes flipped, checksum recomputed
        body = bytearray(data[:-4])
        if len(body) > HEADER_SIZE:
            for _ in range(rng.integers(1, 5)):
                pos = rng.integers(HEADER_SIZE, len(body))
                body[pos] = rng.integers(256)
        return "payload", _reseal(bytes(body))
    if kind == 5:  # a zstd bomb or oversized frame declaring its true size
        size = int(rng.choice([10**3, 10**6, 10**8]))
        frame = zstandard.ZstdCompressor(level=1).compress(b"\x00" * min(size, 10**6))
        return "bomb", _with_payload(data, frame, raw_size=min(size, 2**32 - 1))
    if kind == 6:  # a well-formed frame with random content (wrong layout, sizes, escapes)
        raw = bytes([rng.integers(3)]) + rng.bytes(int(rng.integers(0, 4000)))
        frame = zstandard.ZstdCompressor().compress(raw)
        return "frame", _with_payload(data, frame, raw_size=len(raw))
    # header spliced from another length, checksum recomputed
    cut = rng.integers(HEADER_SIZE, len(data) + 1)
    return "splice", _reseal(data[:cut] + rng.bytes(int(rng.integers(0, 32))))


def mutate_image(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    choice = rng.integers(4)
    if choice == 0:
        for _ in range(rng.integers(1, 20)):
            pos = rng.integers(len(out))
            out[pos] = rng.integers(256)
        return bytes(out)
    if choice == 1:
        return bytes(out[:rng.integers(len(out))])
    if choice == 2:
        pos = rng.integers(len(out))
        return bytes(out[:pos] + rng.bytes(int(rng.integers(1, 200))) + out[pos:])
    return rng.bytes(int(rng.integers(0, 300)))


def seed_images() -> list[bytes]:
    rgb = Image.open(SAMPLE).convert("RGB").crop((300, 100, 364, 148))
    files = []
    for fmt, image in [("PNG", rgb), ("JPEG", rgb), ("GIF", rgb.convert("P")), ("BMP", rgb), ("TIFF", rgb),
                       ("WEBP", rgb), ("PNG", rgb.convert("LA")), ("PNG", rgb.convert("RGBA"))]:
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        files.append(buffer.getvalue())
    return files


def run_residuals(count: int, rng: np.random.Generator) -> dict:
    pairs = seed_inputs()
    outcomes: Counter[str] = Counter()
    slowest = (0.0, "")
    for _ in range(count):
        gray, residual = pairs[rng.integers(len(pairs))]
        kind, mutated = mutate_residual(residual, rng)
        started = time.perf_counter()
        try:
            decode_array(gray, mutated)
            outcomes["decoded"] += 1
        except (InvalidResidualError, UnknownModelError):
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - the point is to count these
            outcomes[f"CRASH {type(exc).__name__}: {exc}"[:200]] += 1
        elapsed = time.perf_counter() - started
        if elapsed > HANG_SECONDS:
            outcomes["HANG"] += 1
        slowest = max(slowest, (elapsed, kind))
    return {"outcomes": outcomes, "slowest": slowest}


def run_images(count: int, rng: np.random.Generator) -> dict:
    seeds = seed_images()
    outcomes: Counter[str] = Counter()
    slowest = 0.0
    for _ in range(count):
        data = mutate_image(seeds[rng.integers(len(seeds))], rng)
        started = time.perf_counter()
        try:
            photo = read_photo(data)
            encoded = encode(photo)
            decode_array(encoded.gray, encoded.residual)
            outcomes["encoded"] += 1
        except ImageReadError:
            outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001
            outcomes[f"CRASH {type(exc).__name__}: {exc}"[:200]] += 1
        elapsed = time.perf_counter() - started
        if elapsed > HANG_SECONDS:
            outcomes["HANG"] += 1
        slowest = max(slowest, elapsed)
    return {"outcomes": outcomes, "slowest": (slowest, "image")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--residuals", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore", GrayRecompressedWarning)  # mutated fingerprints: an expected outcome
    failed = False
    for name, count, runner in [("residual files", args.residuals, run_residuals),
                                ("images", args.images, run_images)]:
        started = time.perf_counter()
        result = runner(count, rng)
        print(f"{name}: {count} cases in {time.perf_counter() - started:.0f}s; "
              f"slowest {result['slowest'][0] * 1000:.0f} ms ({result['slowest'][1]})")
        for outcome, n in sorted(result["outcomes"].items()):
            print(f"  {outcome}: {n}")
            failed |= outcome.startswith(("CRASH", "HANG"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak resident memory: {peak:.0f} MB")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
