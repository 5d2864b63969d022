"""The Sparsity Enforcing Prior, measured in the format-2 design: two checkpoints trained
with the same budget on the tables' code length (``train.py --rate tables``), one with the
learned dead zone and one without (``--no-sep``: plain rounding), each coded with the
tables it learned. Prints their points through the product path (real gray JPEG, real
range-coded bytes) and the Bjontegaard deltas of the one without SEP against the one with.

    python benchmarks/sep_ablation.py runs/abl-sep runs/abl-nosep [--val ../shared/data/val/cbsd68]

Each run folder holds ``last.pt`` and ``tables.entropy.npz`` as training left them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.compare_runs import DEFAULT_STEPS, DEFAULT_VAL, compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("with_sep", type=Path, help="run folder trained with the SEP layer")
    parser.add_argument("without_sep", type=Path, help="run folder trained with --no-sep")
    parser.add_argument("--val", type=Path, default=DEFAULT_VAL)
    parser.add_argument("--steps", type=float, nargs="+", default=DEFAULT_STEPS)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compare(args.with_sep, args.without_sep, ("with SEP", "without SEP"), args.val, args.steps, args.quality)


if __name__ == "__main__":
    main()
