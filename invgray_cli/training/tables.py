"""Fitting a network's entropy tables (residual format 2) by counting its own symbols
on training photos:

    python -m invgray_cli.training.tables models/invgray-v1.pt --data ../shared/data/train --out TABLES.entropy.npz

Each photo is coded once with a gray at a random JPEG quality (as in training), at the
centre step of every rate class; a context with few samples backs off to its plane's
own counts. The tables are stored beside the network (``models/*.entropy.npz``) by
``python -m invgray_cli.training.export --entropy``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from invgray_cli.engines.tiling import quantise
from invgray_cli.engines.torch_engine import gate_thresholds, latent_image
from invgray_cli.format.entropy import (
    ALPHABET,
    CONTEXTS,
    ESCAPE,
    HEAD,
    MAX_PREFIX,
    EntropyTables,
    class_bounds,
    class_centres,
    plane_context,
    quantise_frequencies,
)
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.model.network import InvGrayNet
from invgray_cli.training.checkpoints import read_checkpoint
from invgray_cli.training.data import list_images, load_rgb


class TableFitter:
    """Counts of the symbols coded in each (class, plane, context), turned into tables
    with back-off to the plane's own counts where a context has few samples."""

    def __init__(self, planes: int, planes_per_channel: int) -> None:
        classes = len(class_centres())
        self.planes_per_channel = planes_per_channel
        self.counts = np.zeros((classes, planes, CONTEXTS, ALPHABET), np.float64)
        self.prefix_counts = np.zeros((classes, MAX_PREFIX), np.float64)

    def add(self, rate: int, symbols: np.ndarray) -> None:
        values = symbols.astype(np.int64)
        magnitudes = np.abs(values)
        for plane in range(values.shape[0]):
            context = plane_context(magnitudes, plane, self.planes_per_channel).ravel()
            flat = values[plane].ravel()
            coded = np.where(np.abs(flat) <= HEAD, flat + HEAD, ESCAPE)
            np.add.at(self.counts[rate, plane], (context, coded), 1)
            escaped = np.abs(flat[coded == ESCAPE]) - HEAD - 1
            lengths = np.minimum(np.floor(np.log2(escaped + 1)).astype(np.int64), MAX_PREFIX - 1)
            np.add.at(self.prefix_counts[rate], lengths, 1)

    def tables(self, backoff: float = 16.0, floor: float = 0.02) -> EntropyTables:
        plane_totals = self.counts.sum(axis=2, keepdims=True)
        plane_p = (plane_totals + floor) / (plane_totals + floor).sum(-1, keepdims=True)
        n = self.counts.sum(-1, keepdims=True)
        probabilities = (self.counts + backoff * plane_p) / (n + backoff)
        prefix = (self.prefix_counts + 0.5) / (self.prefix_counts + 0.5).sum(-1, keepdims=True)
        return EntropyTables(quantise_frequencies(probabilities), quantise_frequencies(prefix), class_bounds(),
                             self.planes_per_channel)


def symbols_at_steps(model: InvGrayNet, rgb: np.ndarray, gray: np.ndarray, steps: np.ndarray) -> list[np.ndarray]:
    """The symbols the product path gives at each step, from one encoder pass (the step
    only divides the transformed latent before the gate)."""
    latent, thresholds = latent_image(model, rgb, gray), gate_thresholds(model)
    return [quantise(latent, float(step), thresholds) for step in steps]


def main(argv: list[str] | None = None) -> None:
    """Fit the tables of a bundled network on training photos."""
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.tables",
                                     description="Fit a network's entropy tables on training photos.")
    parser.add_argument("weights", type=Path, help="bundled models/*.pt or a training checkpoint")
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="training photo folders")
    parser.add_argument("--out", type=Path, required=True, help="the tables file (.entropy.npz)")
    parser.add_argument("--images", type=int, default=300, help="photos drawn at random from --data")
    parser.add_argument("--quality", type=int, nargs=2, default=(50, 100), metavar=("MIN", "MAX"),
                        help="gray JPEG quality per photo, uniform (and 15 %% lossless), as in training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = read_checkpoint(args.weights)
    rng = np.random.default_rng(args.seed)
    files = list_images(args.data)
    chosen = [files[i] for i in rng.choice(len(files), min(args.images, len(files)), replace=False)]
    cfg = model.cfg
    fitter = TableFitter(cfg.symbol_planes, cfg.transform_block ** 2)
    centres = class_centres()
    for index, path in enumerate(chosen):
        rgb = load_rgb(path)
        gray = luma(rgb)
        if rng.random() >= 0.15:
            gray = jpeg_round_trip(gray, int(rng.integers(args.quality[0], args.quality[1] + 1)))
        for rate, symbols in enumerate(symbols_at_steps(model, rgb, gray, centres)):
            fitter.add(rate, symbols)
        if (index + 1) % 25 == 0:
            print(f"{index + 1}/{len(chosen)} photos", flush=True)
    tables = fitter.tables()
    tables.save(args.out)
    print(f"{args.out}: {len(centres)} rate classes x {cfg.symbol_planes} planes x {CONTEXTS} contexts, "
          f"{args.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
