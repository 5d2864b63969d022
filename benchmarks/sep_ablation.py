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
from pathlib import Path

from compare_runs import (  # a sibling script: benchmarks/ is on sys.path when run
    compare,
    parse_arguments,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("with_sep", type=Path, help="run folder trained with the SEP layer")
    parser.add_argument("without_sep", type=Path, help="run folder trained with --no-sep")
    args = parse_arguments(parser)
    compare(args.with_sep, args.without_sep, ("with SEP", "without SEP"), args.val, args.steps, args.quality)


if __name__ == "__main__":
    main()
