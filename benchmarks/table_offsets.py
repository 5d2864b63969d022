"""Would per-photo table choices pay? Ideal code length of a model's symbols when each
photo (or latent channel, or symbol plane) may be coded with the tables of a nearby rate
class, the choice signalled in 3 bits, against the file's own class.

    python benchmarks/table_offsets.py [--val ../shared/data/val/cbsd68] [--steps 3.904 1.518]

Prints mean bytes per photo and the change in % for: the file's class (as format 2
codes it), the best offset per photo, per latent channel and per plane (side bits
included). Gray q90, the bundled default model and its tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from invgray_cli.engines.registry import (
    default_model_id,
    entropy_tables,
    load_model,
    model_spec,
)
from invgray_cli.format.entropy import ESCAPE, HEAD, plane_context
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.training.data import list_images, load_rgb
from invgray_cli.training.tables import symbols_at_steps

OFFSETS = np.arange(-3, 4)  # 7 choices: 3 bits
SIDE_BITS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", type=Path, default=Path("../shared/data/val/cbsd68"))
    parser.add_argument("--steps", type=float, nargs="+")
    args = parser.parse_args()
    model_id = default_model_id()
    model, tables = load_model(model_id), entropy_tables(model_id)
    steps = args.steps or [model_spec(model_id).level_step(level) for level in ("default", "high")]
    code_length = -np.log2(tables.frequencies / float(1 << 16))  # (classes, planes, contexts, alphabet)
    channel_planes = tables.planes_per_channel
    files = list_images([args.val])
    totals = {step: dict.fromkeys(("file's class", "per photo", "per channel", "per plane"), 0.0) for step in steps}
    for path in files:
        rgb = load_rgb(path)
        gray = jpeg_round_trip(luma(rgb), 90)
        for step, symbols in zip(steps, symbols_at_steps(model, rgb, gray, np.array(steps))):
            own = tables.rate_class(step)
            values = symbols.astype(np.int64)
            magnitudes = np.abs(values)
            bits = np.zeros((len(OFFSETS), values.shape[0]))  # escapes cost the same either way: left out
            for plane in range(values.shape[0]):
                context = plane_context(magnitudes, plane, channel_planes).ravel()
                flat = values[plane].ravel()
                coded = np.where(np.abs(flat) <= HEAD, flat + HEAD, ESCAPE)
                for row, offset in enumerate(OFFSETS):
                    rate = int(np.clip(own + offset, 0, code_length.shape[0] - 1))
                    bits[row, plane] = code_length[rate, plane, context, coded].sum()
            channels = values.shape[0] // channel_planes
            found = totals[step]
            found["file's class"] += bits[OFFSETS.tolist().index(0)].sum()
            found["per photo"] += bits.sum(1).min() + SIDE_BITS
            found["per channel"] += sum(bits[:, c * channel_planes:(c + 1) * channel_planes].sum(1).min() + SIDE_BITS
                                        for c in range(channels))
            found["per plane"] += bits.min(0).sum() + SIDE_BITS * values.shape[0]
    print(f"{args.val}: {len(files)} photos, model {model_id}, gray q90; mean ideal bytes per photo")
    print("| step | file's class | per photo | per channel | per plane |")
    print("|---|---|---|---|---|")
    for step, found in totals.items():
        base = found["file's class"]
        cells = [f"{value / 8 / len(files):.0f} B ({100 * (value / base - 1):+.2f} %)" for value in found.values()]
        print(f"| {step:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
