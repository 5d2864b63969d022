"""How much would the residual coder earn from spatial context? A study, not a format.

Format 2 codes each symbol with a frozen table chosen by its plane and by how much
colour its own cell already carries (:func:`invgray_cli.format.entropy.plane_context`). This
script fits tables for richer contexts on the bundled model's symbols of training
photos and measures their ideal code length on CBSD68, so that a new format version is
proposed only for a context that pays for itself:

    python benchmarks/context_study.py [--photos 200] [--data ../shared/data/train] [--val ../shared/data/val/cbsd68]

Every variant is the shipped context times one more factor, fitted the way the shipped
tables are (counts per level, plane and context, backed off towards the plane's own
counts with weight 16). Bits are -log2 p of the coded alphabet (|v| <= 15, larger values
as one escape symbol whose extra bits are the same in every variant), per pixel of the
photo. Gray q90, the model's four rate levels, one encoder pass per photo (effort 1).
The last column says what the variant would cost a decoder: the shipped context needs
one coder call per plane and context; a context from the same plane's neighbours
needs them decoded first. "Adapting row by row" (``--adapt``): each plane's tables also
learn from the photo's own rows already coded (counts mixed with the frozen table at a
prior weight), which a decoder going one cell row at a time can follow.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from invgray_cli.engines.registry import default_model_id, levels, load_model
from invgray_cli.format.entropy import (
    ESCAPE,
    HEAD,
    colour_so_far,
    magnitude_class,
    plane_context,
)
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.training.data import list_images, load_rgb
from invgray_cli.training.tables import symbols_at_steps

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
ALPHABET = ESCAPE + 1
BACKOFF = 16.0


def _shifted(plane: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """plane[y + dy, x + dx] for |dy|, |dx| <= 1, zero outside the photo."""
    rows, cols = plane.shape
    return np.pad(plane, 1)[1 + dy:1 + dy + rows, 1 + dx:1 + dx + cols]


def _neighbour_sum(plane: np.ndarray, offsets: tuple[tuple[int, int], ...]) -> np.ndarray:
    return sum(_shifted(plane, dy, dx) for dy, dx in offsets)


FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))
UP_ROW = ((-1, -1), (-1, 0), (-1, 1))
LEFT_UP = ((-1, 0), (0, -1))


def _four_classes(total: np.ndarray) -> np.ndarray:
    return np.select([total == 0, total == 1, total <= 3], [0, 1, 2], 3)


def _neighbours_lower(magnitudes: np.ndarray, plane: int, per: int) -> np.ndarray:
    total = _neighbour_sum(colour_so_far(magnitudes, plane, per), FOUR)
    return np.select([total == 0, total <= 3], [0, 1], 2)


def _checker(shape: tuple[int, ...]) -> np.ndarray:
    """True on the cells decoded second (their four neighbours are anchors, decoded first)."""
    return (np.add.outer(np.arange(shape[0]), np.arange(shape[1])) % 2).astype(bool)


def _checkerboard(magnitudes: np.ndarray, plane: int, per: int) -> np.ndarray:
    second = _checker(magnitudes.shape[1:])
    anchors = magnitudes[plane] * ~second
    return np.where(second, 1 + _four_classes(_neighbour_sum(anchors, FOUR)), 0)


def _row_above(magnitudes: np.ndarray, plane: int, per: int) -> np.ndarray:
    return _four_classes(_neighbour_sum(magnitudes[plane], UP_ROW))


def _left_and_up(magnitudes: np.ndarray, plane: int, per: int) -> np.ndarray:
    return _four_classes(_neighbour_sum(magnitudes[plane], LEFT_UP))


# name -> (extra factor of a plane's context, from the magnitudes (planes, rows, cols); its number
# of values; what decoding it would take)
Extra = Callable[[np.ndarray, int, int], np.ndarray]
VARIANTS: dict[str, tuple[Extra | None, int, str]] = {
    "plane only (no context)": (None, 1, "one call per plane"),
    "shipped: the cell's own lower planes": (None, 1, "one call per plane and context"),
    "+ 4 neighbours' lower planes": (_neighbours_lower, 3, "as shipped (lower planes are decoded)"),
    "+ same plane, checkerboard (4 anchors)": (_checkerboard, 5, "two passes per plane (anchors, then the rest)"),
    "+ same plane, row above (3 cells)": (_row_above, 4, "one pass per plane and cell row"),
    "+ same plane, left and up (raster)": (_left_and_up, 4, "one symbol at a time"),
}


def contexts(symbols: np.ndarray, per: int, variant: str) -> np.ndarray:
    """(planes, rows, cols) context index of every symbol under ``variant``."""
    extra, values, _ = VARIANTS[variant]
    magnitudes = np.abs(symbols.astype(np.int64))
    out = np.empty(magnitudes.shape, np.int64)
    for plane in range(magnitudes.shape[0]):
        base = plane_context(magnitudes, plane, per)
        if variant.startswith("plane only"):
            base = np.zeros_like(base)
        out[plane] = base * values + (extra(magnitudes, plane, per) if extra else 0)
    return out


def coded(symbols: np.ndarray) -> np.ndarray:
    values = symbols.astype(np.int64)
    return np.where(np.abs(values) <= HEAD, values + HEAD, ESCAPE)


# adapting to the photo row by row takes a decoder that goes one cell row at a time, as the
# row-above context does anyway
ADAPTABLE = ("shipped: the cell's own lower planes", "+ same plane, row above (3 cells)")


def adapted_bits(probabilities: np.ndarray, symbols: np.ndarray, context: np.ndarray, prior_weight: float) -> float:
    """Bits of one photo's symbols when each plane's tables learn from the rows already
    coded: p = (prior_weight x table + counts so far) / (prior_weight + their total), per context."""
    bits = 0.0
    values = coded(symbols)
    for plane in range(symbols.shape[0]):
        counts = np.zeros(probabilities.shape[1:])
        for row in range(symbols.shape[1]):
            k, v = context[plane, row], values[plane, row]
            seen = counts.sum(-1)
            bits -= np.log2((prior_weight * probabilities[plane, k, v] + counts[k, v]) / (prior_weight + seen[k])).sum()
            np.add.at(counts, (k, v), 1)
    return bits


def study(train: list[list[np.ndarray]], val: list[list[np.ndarray]], per: int, pixels: int,
          prior_weights: list[float]) -> dict[str, list[float]]:
    """Bits per pixel on ``val`` of each variant, per level (lists over photos of per-level
    symbols); the ADAPTABLE ones also adapting row by row, at each prior weight."""
    magnitude_classes = int(magnitude_class(np.array([99]))[0]) + 1
    results: dict[str, list[float]] = {}
    for variant, (_, values, _) in VARIANTS.items():
        modes = [None] + (list(prior_weights) if variant in ADAPTABLE else [])
        per_level: dict[float | None, list[float]] = {mode: [] for mode in modes}
        for level in range(len(train[0])):
            planes = train[0][level].shape[0]
            counts = np.zeros((planes, magnitude_classes * values, ALPHABET))
            for photo in train:
                symbols = photo[level]
                index = np.broadcast_to(np.arange(planes)[:, None, None], symbols.shape)
                np.add.at(counts, (index.ravel(), contexts(symbols, per, variant).ravel(), coded(symbols).ravel()), 1)
            plane_p = counts.sum(axis=1, keepdims=True) + 0.02
            plane_p /= plane_p.sum(-1, keepdims=True)
            probabilities = (counts + BACKOFF * plane_p) / (counts.sum(-1, keepdims=True) + BACKOFF)
            bits = dict.fromkeys(modes, 0.0)
            for photo in val:
                symbols = photo[level]
                context = contexts(symbols, per, variant)
                index = np.broadcast_to(np.arange(planes)[:, None, None], symbols.shape)
                bits[None] -= np.log2(probabilities[index.ravel(), context.ravel(), coded(symbols).ravel()]).sum()
                for weight in modes[1:]:
                    bits[weight] += adapted_bits(probabilities, symbols, context, weight)
            for mode in modes:
                per_level[mode].append(bits[mode] / pixels)
        for mode, row in per_level.items():
            name = variant if mode is None else f"{variant}, adapting row by row (prior weight {mode:g})"
            results[name] = row
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED / "train")
    parser.add_argument("--val", type=Path, default=SHARED / "val" / "cbsd68")
    parser.add_argument("--photos", type=int, default=200, help="training photos drawn at random")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--adapt", type=float, nargs="*", default=[64.0],
                        help="prior weights of the tables adapting to the photo row by row (none: static only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_id = default_model_id()
    model = load_model(model_id)
    level_of = levels(model_id)
    steps = np.array(list(level_of.values()))
    per = model.cfg.transform_block ** 2
    files = list_images([args.data])
    chosen = [files[i] for i in np.random.default_rng(0).choice(len(files), min(args.photos, len(files)), False)]

    def symbols_of(paths: list[Path]) -> tuple[list[list[np.ndarray]], int]:
        out, pixels = [], 0
        for path in paths:
            rgb = load_rgb(path)
            out.append(symbols_at_steps(model, rgb, jpeg_round_trip(luma(rgb), 90), steps))
            pixels += rgb.shape[0] * rgb.shape[1]
        return out, pixels

    train, _ = symbols_of(chosen)
    val, val_pixels = symbols_of(list_images([args.val]))
    results = study(train, val, per, val_pixels, args.adapt)
    shipped = results["shipped: the cell's own lower planes"]
    print(f"Model {model_id}; tables fitted on {len(chosen)} photos of {args.data}, measured on {len(val)} of "
          f"{args.val}; gray q90; ideal code length of the coded alphabet, bits per pixel (change against the "
          f"shipped contexts)\n")
    print("| context | " + " | ".join(f"{name} (step {step:.4g})" for name, step in level_of.items()) + " | decoding |")
    print("|---|" + "---|" * len(level_of) + "---|")
    for variant, per_level in results.items():
        cells = " | ".join(f"{bpp:.5f} ({100 * (bpp / base - 1):+.1f} %)" for bpp, base in zip(per_level, shipped))
        base, adapting = variant.split(", adapting")[0], ", adapting" in variant
        decoding = "one pass per plane and cell row" if adapting else VARIANTS[base][2]
        print(f"| {variant} | {cells} | {decoding} |")


if __name__ == "__main__":
    main()
