"""Seconds per training step of ``python -m invgray_cli.training.train`` in each numeric mode, as a
table: the same network, loss (RGB MSE + lambda x the tables' code length) and Adam step
as the training loop, on random crops, so only the arithmetic differs.

    python benchmarks/train_speed.py [--modes float32 bf16 channels-last compile]
                                     [--batch 64] [--crop 128] [--latent-channels 6]
                                     [--steps 12] [--threads 2] [--device cpu]

Modes: ``float32`` (the default training), ``bf16`` (``train --bf16``: bfloat16
autocast of the convolution stacks), ``channels-last`` (the network and batch in
channels-last memory) and ``compile`` (``torch.compile`` of the loss; its compile time
is shown apart). The first two steps of each mode warm up and are not timed. Run it
with nothing else busy: on a 2-core machine a second process halves every figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from invgray_cli.format.entropy import EntropyTables
from invgray_cli.model.code_length import LearnedTables
from invgray_cli.model.network import InvGrayNet, NetworkConfig

MODES = ("float32", "bf16", "channels-last", "compile")
TABLES = Path(__file__).resolve().parent.parent / "models" / "invgray-v1.2.entropy.npz"
WARM_STEPS = 2


def time_mode(mode: str, args: argparse.Namespace) -> tuple[float, float]:
    """(seconds of the warm-up steps, median seconds per timed step) for one mode."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = InvGrayNet(NetworkConfig(latent_channels=args.latent_channels)).to(device).train()
    planes = model.cfg.symbol_planes
    tables = LearnedTables(EntropyTables.load(TABLES).widened(planes), planes,
                           model.cfg.transform_block ** 2).to(device)
    optimiser = torch.optim.Adam(list(model.parameters()) + list(tables.parameters()), lr=1e-4)
    rgb = torch.rand(args.batch, 3, args.crop, args.crop, device=device)
    gray = (0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]).contiguous()
    if mode == "bf16":
        model.mixed_precision(torch.bfloat16)
    if mode == "channels-last":
        model = model.to(memory_format=torch.channels_last)
        rgb, gray = rgb.contiguous(memory_format=torch.channels_last), gray.contiguous(memory_format=torch.channels_last)

    def loss_of(rgb: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
        out = model(rgb, gray, 2.0)
        bits = tables.code_length(out["gated"], 2.0, out["gate"], out["latent"])
        return torch.mean((out["rgb"] - rgb) ** 2) + 2e-3 * bits.mean() / (args.crop * args.crop)

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = (
        torch.compile(loss_of, dynamic=False) if mode == "compile" else loss_of)
    times = []
    for _ in range(WARM_STEPS + args.steps):
        start = time.perf_counter()
        loss = loss_fn(rgb, gray)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    timed = sorted(times[WARM_STEPS:])
    return sum(times[:WARM_STEPS]), timed[len(timed) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=["float32", "bf16"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--latent-channels", type=int, default=6)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per mode (the median counts)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"training step: batch {args.batch} x {args.crop} px, {args.latent_channels} latent channels, "
          f"--rate tables, device {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| mode | warm-up s (2 steps) | s/step (median) | crops/s | against float32 |")
    print("|---|---|---|---|---|")
    reference = None
    for mode in args.modes:
        warm, per_step = time_mode(mode, args)
        reference = reference or (per_step if mode == "float32" else None)
        ratio = f"{reference / per_step:.2f}x" if reference else "-"
        print(f"| {mode} | {warm:.1f} | {per_step:.3f} | {args.batch / per_step:.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
