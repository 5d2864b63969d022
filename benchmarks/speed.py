"""Speed benchmark: encode and decode time per image, split by stage, and peak memory.

    python benchmarks/speed.py [FOLDER] [--device cpu] [--threads 2] [--repeat 3]

For every image of FOLDER (default ../shared/data/test/kodak24) it times, with the
bundled model: the whole product path (``codec.encode`` from a decoded photo, and
``codec.decode_photo`` from the two files' bytes) and, separately, its stages:
image I/O (reading the PNG, writing the restored PNG), gray JPEG (encode + decode),
network (analysis, synthesis) and packing (zstd + container, both ways). Prints
medians per image, megapixels per second, Pillow's own colour JPEG q90 encode +
decode time on the same images as a reference, the network's multiply-adds per
pixel, and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from invgray_cli.codec import decode_photo, encode, resolve_device  # noqa: E402
from invgray_cli.container import read_residual  # noqa: E402
from invgray_cli.gray import decode_gray, encode_gray, luma  # noqa: E402
from invgray_cli.images import read_photo, save_colour  # noqa: E402
from invgray_cli.inference import analyse_image, synthesise_image  # noqa: E402
from invgray_cli.packing import pack_symbols, unpack_symbols  # noqa: E402
from invgray_cli.zoo import level_step, load_model  # noqa: E402

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201 - any callable
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per image; the median counts")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model(device=device)
    step = level_step(model.model_id, "default")
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})

    stages: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        stages.setdefault(name, []).append(seconds)

    warm = read_photo(files[0].read_bytes())
    encode(warm, device=device, model=model)  # first call pays for lazy initialisation
    megapixels = []
    for path in files:
        data = path.read_bytes()
        for _ in range(args.repeat):
            photo, t = timed(read_photo, data)
            record("encode: read photo", t)
            encoded, t = timed(encode, photo, quality=args.quality, device=device, model=model)
            record("encode: total (from decoded photo)", t)
            gray_bytes, t_gray_enc = timed(encode_gray, luma(photo.rgb), "jpg", args.quality)
            decoded_gray, t_gray_dec = timed(decode_gray, gray_bytes)
            record("encode: gray JPEG encode + decode", t_gray_enc + t_gray_dec)
            symbols, t = timed(analyse_image, model, photo.rgb, decoded_gray, step, device)
            record("encode: network", t)
            _, t = timed(pack_symbols, symbols)
            record("encode: packing (zstd)", t)

            restored, t = timed(decode_photo, encoded.gray, encoded.residual, device=device, model=model)
            record("decode: total (from file bytes)", t)
            pixels, t = timed(decode_gray, encoded.gray)
            record("decode: gray JPEG decode", t)
            header, t_header = timed(read_residual, encoded.residual)
            sym, t_unpack = timed(unpack_symbols, header.payload, header.symbol_shape, header.raw_size)
            record("decode: unpacking (container + zstd)", t_header + t_unpack)
            _, t = timed(synthesise_image, model, pixels, sym, header.step, device)
            record("decode: network", t)
            _, t = timed(save_colour, restored, "PNG")
            record("decode: write PNG", t)

            buffer = io.BytesIO()
            image = Image.fromarray(photo.rgb)
            started = time.perf_counter()
            image.save(buffer, "JPEG", quality=90)
            Image.open(io.BytesIO(buffer.getvalue())).load()
            record("reference: Pillow colour JPEG q90 encode + decode", time.perf_counter() - started)
        megapixels.append(photo.rgb.shape[0] * photo.rgb.shape[1] / 1e6)

    mp = statistics.median(megapixels)
    print(f"{args.folder}: {len(files)} images, median {mp:.3f} MP; device {device}; "
          f"torch threads {torch.get_num_threads()}; model {model.model_id}; "
          f"{model.multiply_adds_per_pixel():,.0f} multiply-adds per pixel\n")
    print("| stage | median s/image | MP/s |")
    print("|---|---|---|")
    for name, values in stages.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.4f} | {mp / median:.1f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")


if __name__ == "__main__":
    main()
