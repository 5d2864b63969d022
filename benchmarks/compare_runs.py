"""Two training runs on the same validation curve: each checkpoint through the product
path (real gray JPEG, real range-coded bytes with the tables of its own run folder) at
the same quantisation steps, and the Bjontegaard deltas of the second against the first.

    python benchmarks/compare_runs.py runs/ctl-ft runs/gains-ft --labels "no gains" "rate gains" \\
        [--val ../shared/data/val/cbsd68] [--steps 0.7 1 1.5 2 3 4]

Each run folder holds ``last.pt`` and ``tables.entropy.npz`` (as training left them, or
counted afresh with ``python -m invgray_cli.training.tables``). ``benchmarks/sep_ablation.py`` is
this comparison for the SEP ablation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bjontegaard import (  # a sibling script: benchmarks/ is on sys.path when run
    bd_psnr,
    bd_rate,
)

from invgray_cli.format.entropy import EntropyTables
from invgray_cli.training.checkpoints import read_checkpoint
from invgray_cli.training.data import list_images, load_rgb
from invgray_cli.training.validation import table_coder, validate

DEFAULT_VAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "val" / "cbsd68"
# inside the training step range [0.5, 4] and its well-visited rate classes: a class the
# training rarely or never drew keeps tables near their start (docs/RESULTS.md)
DEFAULT_STEPS = [0.7, 1.0, 1.5, 2.0, 3.0]


def curve(run: Path, images: list, steps: list[float], quality: int) -> list[dict[str, float]]:
    model, blob = read_checkpoint(run / "last.pt")
    payload_bytes = table_coder(EntropyTables.load(run / "tables.entropy.npz"))
    points = []
    for step in steps:
        figures = validate(model, images, quality, step, payload_bytes)
        points.append(figures | {"step": step, "training_step": blob["step"]})
    return points


def compare(reference: Path, candidate: Path, labels: tuple[str, str], val: Path, steps: list[float],
            quality: int) -> tuple[float, float]:
    """Print both curves and the deltas; returns (BD-rate %, BD-PSNR dB) of candidate against reference."""
    images = [load_rgb(p) for p in list_images([val])]
    curves = {name: curve(run, images, steps, quality) for name, run in zip(labels, (reference, candidate))}
    print(f"{val}: {len(images)} images, gray q{quality}, residual bytes range-coded with each run's own tables\n")
    print("| model | training steps | step | RGB PSNR dB | residual payload bpp |")
    print("|---|---|---|---|---|")
    for name, points in curves.items():
        for point in points:
            print(f"| {name} | {point['training_step']} | {point['step']:g} | {point['val_psnr']:.3f} | "
                  f"{point['val_bpp']:.4f} |")
    first, second = curves[labels[0]], curves[labels[1]]
    args = ([p["val_bpp"] for p in first], [p["val_psnr"] for p in first],
            [p["val_bpp"] for p in second], [p["val_psnr"] for p in second])
    rate, psnr = bd_rate(*args), bd_psnr(*args)
    print(f"\n{labels[1]} against {labels[0]}: BD-rate {rate:+.2f} % (negative: fewer bytes for {labels[1]}), "
          f"BD-PSNR {psnr:+.3f} dB")
    return rate, psnr


def parse_arguments(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The validation options both comparisons share, added to ``parser``, parsed."""
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL)
    parser.add_argument("--steps", type=float, nargs="+", default=DEFAULT_STEPS)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reference", type=Path, help="run folder compared against")
    parser.add_argument("candidate", type=Path, help="run folder whose deltas are printed")
    parser.add_argument("--labels", nargs=2, default=None, metavar=("REFERENCE", "CANDIDATE"))
    args = parse_arguments(parser)
    labels = tuple(args.labels) if args.labels else (args.reference.name, args.candidate.name)
    compare(args.reference, args.candidate, labels, args.val, args.steps, args.quality)


if __name__ == "__main__":
    main()
