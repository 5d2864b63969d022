"""invgray-v2's coder on a training checkpoint against invgray-v1.4, at the same steps (issue 25).

    python benchmarks/v2_coding.py runs/v2-long/last.pt --folder ../shared/data/val/cbsd68 --limit 12

For each photo (gray: JPEG ``--quality`` round trip, as a decoder sees it) and each
``--steps`` step, both networks' symbols through the product path's analysis
(``engines.torch_engine.analyse_image``, CPU, float32) and their restored colour; then:

* v2: the real range-coded bytes under the checkpoint's integer prior
  (``model/prior_coding.py``, the checkpoint's ``prior.npz`` beside it), checked to decode
  to the same symbols, beside the ideal code length, with the coder's encode and decode
  times;
* v1.4: format 2's bytes under its bundled tables (``format/entropy.py``), with the same
  two times, and the whole product decode of its pair (``codec.decode_array``: gray,
  container, symbols, network on onnxruntime).

bpp is the symbols' payload alone (no container: it is the same few bytes for both),
averaged over photos; times are per photo, in ms, the median of ``--repeat`` runs (run
it on an idle machine). "v2 decode" estimates a whole v2 decode as v1.4's, less its
symbol decoding, plus v2's (the network and everything else are the same), and gives
its ratio to v1.4's. Not a BD-rate: the levels' steps of a v2 model are chosen when it
is bundled; compare PSNR at bpp.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from bjontegaard import bd_rate
from PIL import Image

from invgray_cli.codec import decode_array, encode
from invgray_cli.engines.registry import default_model_id, entropy_tables, load_model
from invgray_cli.engines.torch_engine import analyse_image, synthesise_image
from invgray_cli.format.entropy import decode_symbols as decode_v1
from invgray_cli.format.entropy import encode_symbols as encode_v1
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.images import PHOTO_SUFFIXES
from invgray_cli.imaging.metrics import psnr
from invgray_cli.model.conditional import conditional_from_weights
from invgray_cli.model.integer_prior import IntegerPrior, ideal_bits, pad_gray
from invgray_cli.model.prior_coding import decode_symbols, encode_symbols

T = TypeVar("T")


def timed(repeat: int, function: Callable[..., T], *args: object) -> tuple[T, float]:
    """The result and the median time in ms of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = function(*args)
        times.append(1000 * (time.perf_counter() - started))
    return result, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="an invgray-v2 training checkpoint (prior.npz beside it)")
    parser.add_argument("--folder", type=Path, default=Path("../shared/data/val/cbsd68"))
    parser.add_argument("--limit", type=int, default=12)
    parser.add_argument("--steps", type=float, nargs="+", default=[3.0, 1.5, 0.75])
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--against", default=None, help="model id (default: the bundled default, invgray-v1.4)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per figure (the median)")
    parser.add_argument("--no-whole", action="store_true",
                        help="skip v1.4's whole product decode (only for the times; the figures are the same)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    blob = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    v2 = conditional_from_weights(blob).net
    prior = IntegerPrior.load(args.checkpoint.with_name("prior.npz"))
    args.against = args.against or default_model_id()
    v1, tables = load_model(args.against), entropy_tables(args.against)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)[:args.limit or None]
    rows: dict[tuple[str, float], list[list[float]]] = {}
    for path in files:
        rgb = np.asarray(Image.open(path).convert("RGB"))
        gray = jpeg_round_trip(luma(rgb), args.quality)
        pixels = rgb.shape[0] * rgb.shape[1]
        for step in args.steps:
            symbols = analyse_image(v2, rgb, gray, step)
            restored = synthesise_image(v2, gray, symbols, step)
            payload, encode_ms = timed(args.repeat, encode_symbols, prior, gray, symbols, step)
            decoded, decode_ms = timed(args.repeat, decode_symbols, prior, gray, payload, symbols.shape, step)
            assert np.array_equal(decoded, symbols), f"{path.name}: v2 symbols do not survive the coder"
            ideal = float(ideal_bits(prior, pad_gray(gray)[None], symbols[None], step)[0])
            rows.setdefault(("v2 " + args.checkpoint.parent.name, step), []).append(
                [psnr(rgb, restored), 8 * len(payload) / pixels, ideal / pixels, encode_ms, decode_ms])
            symbols = analyse_image(v1, rgb, gray, step)
            restored = synthesise_image(v1, gray, symbols, step)
            payload, encode_ms = timed(args.repeat, encode_v1, symbols, step, tables)
            decoded, decode_ms = timed(args.repeat, decode_v1, payload, symbols.shape, step, tables)
            assert np.array_equal(decoded, symbols)
            whole_ms = float("nan")
            if not args.no_whole:
                pair = encode(rgb, step=step, quality=args.quality)
                _, whole_ms = timed(args.repeat, decode_array, pair.gray, pair.residual)
            rows.setdefault((args.against, step), []).append(
                [psnr(rgb, restored), 8 * len(payload) / pixels, float("nan"), encode_ms, decode_ms, whole_ms])
            v2_row = rows[("v2 " + args.checkpoint.parent.name, step)][-1]
            v2_row.append(whole_ms - decode_ms + v2_row[4])
        print(f"{path.name}: done", flush=True)
    print(f"\n{len(files)} photos of {args.folder}, gray q{args.quality}; {args.checkpoint} at step {blob['step']}\n")
    print("| model | step | PSNR dB | bpp (real) | bpp (ideal) | symbols encode ms | symbols decode ms | "
          "whole decode ms |\n|---|---|---|---|---|---|---|---|")
    by_step = sorted(rows.items(), key=lambda item: (-item[0][1], item[0][0]))
    for (name, step), values in by_step:
        mean = np.mean(values, axis=0)
        ideal = "-" if np.isnan(mean[2]) else f"{mean[2]:.5f}"
        whole = "-" if np.isnan(mean[5]) else f"{mean[5]:.0f}"
        if name != args.against and not np.isnan(mean[5]):
            whole = f"about {mean[5]:.0f} ({mean[5] / np.mean(rows[(args.against, step)], axis=0)[5]:.2f}x)"
        print(f"| {name} | {step:g} | {mean[0]:.3f} | {mean[1]:.5f} | {ideal} | {mean[3]:.0f} | {mean[4]:.0f} | "
              f"{whole} |")
    if len(args.steps) >= 4:  # BD-rate needs a cubic through at least four points per curve
        v2_curve = np.array([np.mean(rows[("v2 " + args.checkpoint.parent.name, step)], axis=0)[:2]
                             for step in args.steps])
        v1_curve = np.array([np.mean(rows[(args.against, step)], axis=0)[:2] for step in args.steps])
        print(f"\nBD-rate of v2 against {args.against} over steps {' '.join(f'{s:g}' for s in args.steps)} "
              f"(real bpp, mean PSNR): {bd_rate(v1_curve[:, 1], v1_curve[:, 0], v2_curve[:, 1], v2_curve[:, 0]):+.1f} %")


if __name__ == "__main__":
    main()
