"""onnxruntime (the CPU product engine) against torch on a folder: agreement and speed.

    python benchmarks/engines.py [FOLDER] [--threads 1] [--quality 90] [--repeat 3]

For every photo of FOLDER (default ../shared/data/test/kodak24), gray JPEG q90:

* encoder: how many symbols differ between the two engines at each named level (and
  by how much), from the latent each engine computes;
* decoder: the restored pixels of both engines from the same symbols (largest
  difference, share of values that differ, PSNR between them);
* network time per image, each engine, median of ``--repeat`` runs.

A file encoded by either engine is a valid file for either decoder: the decoder only
reads symbols. This measures how often the two engines would write different files.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from invgray_cli.engines.engine import set_threads
from invgray_cli.engines.onnx_engine import OnnxEngine
from invgray_cli.engines.registry import (
    default_model_id,
    levels,
    load_model,
    model_spec,
)
from invgray_cli.engines.tiling import quantise
from invgray_cli.engines.torch_engine import TorchEngine
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.images import read_photo
from invgray_cli.imaging.metrics import psnr

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


def median_seconds(fn, repeat: int) -> float:  # noqa: ANN001 - any callable
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime
    import torch

    set_threads(args.threads)
    torch.set_num_threads(args.threads)
    model_id = default_model_id()
    onnx, reference = OnnxEngine(model_spec(model_id), args.threads), TorchEngine(load_model(model_id))
    named = levels(model_id)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})

    differing = {name: 0 for name in named}
    largest = {name: 0 for name in named}
    total_symbols = 0
    images_with_difference = {name: 0 for name in named}
    pixel_max, pixel_values, pixel_total, between = 0, 0, 0, []
    times: dict[str, list[float]] = {k: [] for k in ("encoder torch", "encoder onnxruntime", "decoder torch",
                                                      "decoder onnxruntime")}
    for path in files:
        rgb = read_photo(path.read_bytes()).rgb
        gray = jpeg_round_trip(luma(rgb), args.quality)
        onnx_latent, torch_latent = onnx.latent(rgb, gray), reference.latent(rgb, gray)
        for name, step in named.items():
            a = quantise(onnx_latent, step, onnx.thresholds())
            b = quantise(torch_latent, step, reference.thresholds())
            count = int(np.count_nonzero(a != b))
            differing[name] += count
            images_with_difference[name] += count > 0
            largest[name] = max(largest[name], int(np.abs(a - b).max()))
        total_symbols += onnx_latent.size
        symbols = quantise(torch_latent, named["default"], reference.thresholds())
        restored_onnx = onnx.synthesise(gray, symbols, named["default"])
        restored_torch = reference.synthesise(gray, symbols, named["default"])
        difference = np.abs(restored_onnx.astype(np.int16) - restored_torch)
        pixel_max = max(pixel_max, int(difference.max()))
        pixel_values += int(np.count_nonzero(difference))
        pixel_total += difference.size
        between.append(psnr(restored_onnx, restored_torch))
        times["encoder torch"].append(median_seconds(lambda: reference.latent(rgb, gray), args.repeat))
        times["encoder onnxruntime"].append(median_seconds(lambda: onnx.latent(rgb, gray), args.repeat))
        times["decoder torch"].append(median_seconds(
            lambda: reference.synthesise(gray, symbols, named["default"]), args.repeat))
        times["decoder onnxruntime"].append(median_seconds(
            lambda: onnx.synthesise(gray, symbols, named["default"]), args.repeat))

    print(f"{args.folder}: {len(files)} images; gray JPEG q{args.quality}; {args.threads} threads; "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}\n")
    print("| level | step | symbols differing (onnxruntime vs torch) | images with any | largest difference |")
    print("|---|---|---|---|---|")
    for name, step in named.items():
        print(f"| {name} | {step:g} | {differing[name]} of {total_symbols} | {images_with_difference[name]} of "
              f"{len(files)} | {largest[name]} |")
    finite = [b for b in between if np.isfinite(b)]
    print(f"\ndecoder, same symbols (level default): largest pixel difference {pixel_max}, {pixel_values} of "
          f"{pixel_total} values differ ({100 * pixel_values / pixel_total:.4f} %); "
          f"{len(between) - len(finite)} images identical; lowest PSNR between the engines' images "
          f"{min(finite) if finite else float('inf'):.1f} dB\n")
    print("| network | median s/image |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.4f} |")


if __name__ == "__main__":
    main()
