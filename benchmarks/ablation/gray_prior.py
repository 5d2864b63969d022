"""Ablation for a gray-conditioned probability model (issue "colour per byte"): how many
bits would the coder save on the default model's own symbols if their probabilities
came from the decoded gray, from the planes already decoded in the cell, and from a
checkerboard's anchor cells, instead of format 2's frozen context tables?

The encoder is frozen (the bundled default model through onnxruntime): this measures
the entropy model alone, a lower bound on what a latent trained with it would gain.
Each variant is a small network trained on the same crops for the same steps; every
variant predicts a categorical distribution per symbol over format 2's alphabet (-15..15
and an escape; ``--family laplace``: a discretised Laplace's mean and scale). The
table reports, on a validation folder at the model's levels, the ideal code length
of each variant against the real range-coded bytes of the frozen tables.

    python benchmarks/ablation/gray_prior.py --train ../shared/data/train \\
        --val ../shared/data/val/cbsd68 --crops 3000 --steps 2500 --threads 1
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from invgray_cli.engines.engine import engine_for
from invgray_cli.engines.registry import model_spec
from invgray_cli.engines.tiling import quantise
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.images import PHOTO_SUFFIXES

VARIANTS = {
    "planes": {"gray": False, "planes_context": True, "checkerboard": False},  # a learned twin of format 2's contexts
    "gray": {"gray": True, "planes_context": False, "checkerboard": False},
    "gray+planes": {"gray": True, "planes_context": True, "checkerboard": False},
    "gray+planes+checkerboard": {"gray": True, "planes_context": True, "checkerboard": True},
}
HIDDEN = 8  # features per plane in the context path
HEAD = 15  # |symbol| <= HEAD has its own class, as in format 2; larger ones share the escape
CLASSES = 2 * HEAD + 2


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def training_crops(files: list[Path], count: int, size: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(grays (N, size, size) uint8 as decoded, latents (N, planes, cells, cells) float32)."""
    engine = engine_for(device="cpu")
    grays, latents = [], []
    while len(grays) < count:
        rgb = load_rgb(files[int(rng.integers(len(files)))])
        if min(rgb.shape[:2]) < size:
            continue
        top, left = (int(rng.integers(0, rgb.shape[i] - size + 1)) for i in (0, 1))
        crop = np.ascontiguousarray(rgb[top:top + size, left:left + size])
        gray = luma(crop)
        if rng.random() >= 0.15:  # as in training: a lossless gray now and then
            gray = jpeg_round_trip(gray, int(rng.integers(50, 101)))
        grays.append(gray)
        latents.append(engine.latent(crop, gray))
    return np.stack(grays), np.stack(latents)


class PlaneMask(nn.Conv2d):
    """1x1 convolution from (planes x k_in) to (planes x k_out) channels in which output
    group p sees input groups q < p only (strictly: the planes decoded before p)."""

    def __init__(self, planes: int, k_in: int, k_out: int) -> None:
        super().__init__(planes * k_in, planes * k_out, 1)
        mask = torch.zeros(planes * k_out, planes * k_in, 1, 1)
        for p in range(planes):
            mask[p * k_out:(p + 1) * k_out, :p * k_in] = 1
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight * self.mask, self.bias)


class SymbolPrior(nn.Module):
    """Mean and scale of every symbol from the gray, the step and the chosen contexts."""

    def __init__(self, planes: int, gray: bool, planes_context: bool, checkerboard: bool,
                 family: str = "categorical") -> None:
        super().__init__()
        self.family = family
        outputs = CLASSES if family == "categorical" else 2
        self.planes, self.use_gray, self.use_planes, self.use_checkerboard = planes, gray, planes_context, checkerboard
        width = 64
        if gray:
            layers, channels = [], 1
            for out in (24, 32, 48, 64, width):
                layers += [nn.Conv2d(channels, out, 5, stride=2, padding=2), nn.ReLU()]
                channels = out
            self.gray_net = nn.Sequential(*layers[:-1])
        self.side = nn.Conv2d((width if gray else 0) + 1, planes * HIDDEN, 1)
        if planes_context:
            self.plane_context = PlaneMask(planes, 2, HIDDEN)
        if checkerboard:
            self.spatial = nn.Conv2d(2 * planes, planes * HIDDEN, 3, padding=1)
        self.out = nn.Conv2d(planes * HIDDEN, planes * outputs, 1, groups=planes)

    def forward(self, gray: torch.Tensor, symbols: torch.Tensor, log_step: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n, _, h, w = symbols.shape
        side = [log_step.view(n, 1, 1, 1).expand(n, 1, h, w)]
        if self.use_gray:
            side.insert(0, self.gray_net(gray))
        hidden = self.side(torch.cat(side, 1))
        signed = torch.stack([symbols, symbols.abs()], 2).flatten(1, 2)  # (N, planes*2): per plane (s, |s|)
        if self.use_planes:
            hidden = hidden + self.plane_context(signed)
        if self.use_checkerboard:
            anchors = ((torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)) % 2 == 0).to(symbols)
            hidden = hidden + self.spatial(signed * anchors) * (1 - anchors)
        out = self.out(torch.relu(hidden)).view(n, self.planes, -1, h, w)
        if self.family == "categorical":
            return (out,)
        mean, log_scale = out.unbind(2)
        return mean, log_scale.clamp(-6, 8)

    def bits(self, symbols: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        if self.family == "laplace":
            return laplace_bits(symbols, *params)
        index = torch.where(symbols.abs() <= HEAD, symbols + HEAD, torch.full_like(symbols, CLASSES - 1)).long()
        log_p = torch.log_softmax(params[0], dim=2)
        return -log_p.gather(2, index.unsqueeze(2)).squeeze(2) / math.log(2)


def laplace_bits(symbols: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log2 P(symbol) under a Laplace(mean, scale) discretised to integers."""
    scale = log_scale.exp()

    def cdf(x: torch.Tensor) -> torch.Tensor:
        z = (x - mean) / scale
        return torch.where(z < 0, 0.5 * torch.exp(z.clamp(max=0)), 1 - 0.5 * torch.exp(-z.clamp(min=0)))

    probability = (cdf(symbols + 0.5) - cdf(symbols - 0.5)).clamp(min=2 ** -20)
    return -torch.log2(probability)


def batch(grays: np.ndarray, latents: np.ndarray, thresholds: np.ndarray, index: np.ndarray,
          steps: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    symbols = np.stack([quantise(latents[i], float(s), thresholds) for i, s in zip(index, steps)])
    gray = torch.from_numpy(grays[index].astype(np.float32) / 255.0 - 0.5)[:, None]
    return gray, torch.from_numpy(symbols.astype(np.float32)), torch.from_numpy(np.log(steps).astype(np.float32))


def train_variant(name: str, grays: np.ndarray, latents: np.ndarray, thresholds: np.ndarray, steps: int,
                  batch_size: int, seed: int, family: str) -> SymbolPrior:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = SymbolPrior(latents.shape[1], **VARIANTS[name], family=family)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 2e-3, total_steps=steps, pct_start=0.05)
    started, pixels = time.time(), grays.shape[1] * grays.shape[2]
    for step in range(steps):
        index = rng.integers(0, len(grays), batch_size)
        step_sizes = np.exp(rng.uniform(np.log(0.7), np.log(16), batch_size))
        gray, symbols, log_step = batch(grays, latents, thresholds, index, step_sizes)
        bits = model.bits(symbols, *model(gray, symbols, log_step)).sum() / (batch_size * pixels)
        optimiser.zero_grad()
        bits.backward()
        optimiser.step()
        schedule.step()
        if (step + 1) % 500 == 0:
            print(f"  {name}: step {step + 1}, {bits.item():.4f} bpp (train), {time.time() - started:.0f} s", flush=True)
    return model.eval()


@torch.no_grad()
def evaluate(models: dict[str, SymbolPrior], folder: Path, level_steps: dict[str, float]) -> dict:
    """Per level: the tables' real payload bytes and each variant's ideal bytes, summed."""
    engine, spec = engine_for(device="cpu"), model_spec()
    tables, thresholds = spec.tables(), engine.thresholds()
    totals = {level: {"tables": 0.0, **{name: 0.0 for name in models}} for level in level_steps}
    pixels = 0
    for path in photos(folder):
        rgb = load_rgb(path)
        gray = jpeg_round_trip(luma(rgb), 90)
        latent = engine.latent(rgb, gray)
        height, width = gray.shape
        pixels += height * width
        padded = np.pad(gray, ((0, -height % 32), (0, -width % 32)), mode="edge")
        gray_tensor = torch.from_numpy(padded.astype(np.float32) / 255.0 - 0.5)[None, None]
        for level, step in level_steps.items():
            symbols = quantise(latent, step, thresholds)
            totals[level]["tables"] += tables.coded_size(symbols, step)
            tensor = torch.from_numpy(symbols.astype(np.float32))[None]
            for name, model in models.items():
                bits = model.bits(tensor, *model(gray_tensor, tensor, torch.tensor([math.log(step)])))
                totals[level][name] += float(bits.sum()) / 8
    return {level: {name: value * 8 / pixels for name, value in row.items()} for level, row in totals.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--val", type=Path, required=True)
    parser.add_argument("--crops", type=int, default=3000)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--family", choices=("categorical", "laplace"), default="categorical")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    started = time.time()
    grays, latents = training_crops(photos(args.train), args.crops, args.crop, np.random.default_rng(args.seed))
    thresholds = engine_for(device="cpu").thresholds()
    print(f"{len(grays)} crops of {args.crop} px in {time.time() - started:.0f} s", flush=True)
    models = {name: train_variant(name, grays, latents, thresholds, args.steps, args.batch, args.seed, args.family)
              for name in args.variants}
    spec = model_spec()
    results = evaluate(models, args.val, {level: spec.level_step(level) for level in ("low", "default", "high")})
    print(f"\n{args.val.name}, gray q90, {spec.name}'s symbols; bits per pixel (tables: real bytes; "
          f"variants: ideal code length, {args.family})\n")
    print("| level | tables | " + " | ".join(args.variants) + " |")
    print("|---|---|" + "---|" * len(args.variants))
    for level, row in results.items():
        cells = [f"{row[name]:.5f} ({100 * (row[name] / row['tables'] - 1):+.1f} %)" for name in args.variants]
        print(f"| {level} | {row['tables']:.5f} | " + " | ".join(cells) + " |")
    print(f"\n{time.time() - started:.0f} s in all")


if __name__ == "__main__":
    main()
