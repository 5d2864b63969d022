"""Tuning the encoder effort on the validation set: the mean change of the real objective
(RGB MSE of the restored 8-bit photo + 2e-3 x range-coded bits per pixel) that
refinement gives over the encoder's single pass, for one setting.

    python benchmarks/effort_tuning.py --iterations 30 --lr 0.3 [--schedule cosine] [--photos 8]

CBSD68 (never Kodak24), gray q90, the bundled default model, steps 1.5 and 3.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from invgray_cli.codec import effort
from invgray_cli.engines.registry import default_model_id, entropy_tables, load_model
from invgray_cli.engines.torch_engine import analyse_image
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.training.data import list_images, load_rgb

STEPS = (1.5, 3.0)


def _cosine_adam(iterations: int) -> type:
    """Adam whose learning rate falls along a cosine over the refinement's steps."""

    class CosineAdam(torch.optim.Adam):
        def __init__(self, params, lr: float) -> None:  # noqa: ANN001
            super().__init__(params, lr=lr)
            self.base, self.done = lr, 0

        def step(self, closure=None):  # noqa: ANN001, ANN201
            for group in self.param_groups:
                group["lr"] = self.base * 0.5 * (1 + math.cos(math.pi * self.done / iterations))
            self.done += 1
            return super().step(closure)

    return CosineAdam


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=Path("../shared/data/val/cbsd68"))
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--lr", type=float, default=effort.LEARNING_RATE)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    effort.EFFORT_ITERATIONS[2] = args.iterations
    effort.LEARNING_RATE = args.lr
    if args.schedule == "cosine":
        torch.optim.Adam = _cosine_adam(args.iterations)  # refine builds its optimiser by this name
    model, tables = load_model(), entropy_tables(default_model_id())
    changes: dict[float, list[float]] = {step: [] for step in STEPS}
    started = time.perf_counter()
    for path in list_images([args.val])[:args.photos]:
        rgb = load_rgb(path)
        gray = jpeg_round_trip(luma(rgb), 90)
        for step in STEPS:
            single = analyse_image(model, rgb, gray, step)
            refined = effort.refine_symbols(model, tables, rgb, gray, step, single, 2)
            changes[step].append(effort.refinement_cost(model, tables, rgb, gray, step, refined, "cpu")
                                 / effort.refinement_cost(model, tables, rgb, gray, step, single, "cpu") - 1)
    cells = " | ".join(f"{100 * np.mean(changes[step]):+.2f} %" for step in STEPS)
    print(f"| {args.iterations} | {args.lr:g} | {args.schedule} | {cells} | {time.perf_counter() - started:.0f} s |")


if __name__ == "__main__":
    main()
