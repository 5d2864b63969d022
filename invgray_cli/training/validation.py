"""Checkpoint validation: the product path (real gray JPEG, real quantisation, real
packed bytes) on a validation folder, and the rate-distortion score that selects
checkpoints. Training calls it every ``--val-every`` steps; as a command it scores
checkpoints trained elsewhere (a lent GPU carries no validation set):

    python -m invgray_cli.training.validation runs/gpu/last.pt models/invgray-v1.pt --val ../shared/data/val/cbsd68
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from invgray_cli.engines.torch_engine import analyse_image, synthesise_image
from invgray_cli.format.entropy import EntropyTables
from invgray_cli.format.packing import pack_symbols
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.metrics import psnr
from invgray_cli.model.code_length import estimated_bits
from invgray_cli.model.integer_prior import IntegerPrior
from invgray_cli.model.network import InvGrayNet
from invgray_cli.training.checkpoints import read_checkpoint
from invgray_cli.training.data import list_images, load_rgb

# The selection setting of invgray-v1 (models/MODEL_CARD.md): scores are comparable only at equal values.
DEFAULT_VAL_STEPS = (1.5, 3.0)
DEFAULT_LMBDA = 2e-3
DEFAULT_QUALITY = 90

PayloadBytes = Callable[[np.ndarray, float, np.ndarray], int]  # (symbols, step, decoded gray) -> bytes


def table_coder(tables: EntropyTables) -> PayloadBytes:
    """Format 2's payload size with these tables (they do not read the gray)."""
    return lambda symbols, step, _gray: tables.coded_size(symbols, step)


def prior_coder(prior: IntegerPrior) -> PayloadBytes:
    """Format 4's payload size: the symbols range-coded under the integer prior, given the gray."""
    from invgray_cli.model.prior_coding import encode_symbols

    return lambda symbols, step, gray: len(encode_symbols(prior, gray, symbols, step))


def validate(model: InvGrayNet, images: list[np.ndarray], quality: int, step: float,
             payload_bytes: PayloadBytes | None = None) -> dict[str, float]:
    """Mean RGB PSNR, real bits per pixel of the coded symbols and the rate proxy's
    estimate. ``payload_bytes(symbols, step, gray)``: the coder's size (default: format 1's
    zstd packing; a model with entropy tables or an integer prior passes its range coder).
    Scored in float32, as the network ships, whatever precision training runs it in."""
    payload_bytes = payload_bytes or (lambda symbols, _step, _gray: len(pack_symbols(symbols)))
    was_training = model.training
    model.eval()
    training_precision = model.mixed_precision(None)
    device = next(model.parameters()).device
    psnrs, bits, proxy_bits, pixels = [], 0.0, 0.0, 0
    for rgb in images:
        gray = jpeg_round_trip(luma(rgb), quality)
        symbols = analyse_image(model, rgb, gray, step, device)
        restored = synthesise_image(model, gray, symbols, step, device)
        psnrs.append(psnr(restored, rgb))
        bits += 8 * payload_bytes(symbols, step, gray)
        sym = torch.from_numpy(symbols).float()[None]
        proxy_bits += float(estimated_bits(sym, (sym != 0).float())[0])
        pixels += rgb.shape[0] * rgb.shape[1]
    model.train(was_training)
    model.mixed_precision(training_precision)
    return {"val_psnr": float(np.mean(psnrs)), "val_bpp": bits / pixels, "val_proxy_bpp": proxy_bits / pixels}


def rd_score(metrics: dict[str, float], lmbda: float) -> float:
    """Validation objective in the training loss's units (lower is better)."""
    mse = 10 ** (-metrics["val_psnr"] / 10)
    return mse + lmbda * metrics["val_bpp"]


def score_model(model: InvGrayNet, images: list[np.ndarray], steps: tuple[float, ...] = DEFAULT_VAL_STEPS,
                lmbda: float = DEFAULT_LMBDA, quality: int = DEFAULT_QUALITY,
                payload_bytes: PayloadBytes | None = None,
                ) -> tuple[float, list[dict[str, float]]]:
    """The checkpoint-selection score (mean over ``steps``) and the figures at each step."""
    figures = [validate(model, images, quality, step, payload_bytes) | {"q_step": step} for step in steps]
    return float(np.mean([rd_score(f, lmbda) for f in figures])), figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.validation",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="training checkpoints or bundled models/*.pt")
    parser.add_argument("--val", type=Path, required=True, help="validation image folder")
    parser.add_argument("--val-steps", type=float, nargs="+", default=DEFAULT_VAL_STEPS)
    parser.add_argument("--lmbda", type=float, default=DEFAULT_LMBDA)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--tables", type=Path, nargs="+", metavar="TABLES",
                        help="format 2: count the range-coded bytes with these .entropy.npz tables, one per "
                             "checkpoint (or one for all); without it, format 1's zstd bytes")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = [load_rgb(p) for p in list_images([args.val])]
    print(f"{args.val}: {len(images)} images, gray q{args.quality}, steps {' '.join(map(str, args.val_steps))}, "
          f"lambda {args.lmbda:g} (lower score is better)\n")
    print("| checkpoint | training step | " + " | ".join(f"step {s:g}: PSNR dB / bpp" for s in args.val_steps)
          + " | score |")
    print("|---|---|" + "---|" * len(args.val_steps) + "---|")
    tables = list(args.tables or [])
    if tables and len(tables) not in (1, len(args.checkpoints)):
        parser.error("--tables takes one file, or one per checkpoint")
    for index, path in enumerate(args.checkpoints):
        model, blob = read_checkpoint(path)
        coder = table_coder(EntropyTables.load(tables[min(index, len(tables) - 1)])) if tables else None
        score, figures = score_model(model, images, tuple(args.val_steps), args.lmbda, args.quality, coder)
        cells = " | ".join(f"{f['val_psnr']:.3f} / {f['val_bpp']:.4f}" for f in figures)
        print(f"| {path} | {blob.get('step', blob.get('checkpoint_step', '-'))} | {cells} | {score:.4e} |", flush=True)


if __name__ == "__main__":
    main()
