"""Training data: the photos (folders and training packs), random crops of them with
their decoded grays, and the seeded batches of a run.

Batch number i is drawn from its own generator seeded by (seed, i), so the batches are
the same whatever ``--workers`` prepares them and a resumed run continues exactly where
it stopped.
"""

from __future__ import annotations

import argparse
import io
import math
import signal
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.images import PHOTO_SUFFIXES

PACK_SUFFIX = ".npz"  # a training pack (see invgray_cli.training.trainpack)


def list_images(folders: list[Path]) -> list[Path]:
    """Every photo under ``folders``, in sorted order (exits when there is none)."""
    files = [p for folder in folders for p in sorted(folder.rglob("*")) if p.suffix.lower() in PHOTO_SUFFIXES]
    if not files:
        raise SystemExit(f"no images found under {', '.join(map(str, folders))}")
    return files


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def is_pack(path: Path) -> bool:
    return path.is_file() and path.suffix == PACK_SUFFIX


def read_pack(path: Path) -> list[np.ndarray]:
    """The crops of a training pack, decoded to (H, W, 3) uint8 arrays."""
    with np.load(path, allow_pickle=False) as pack:
        data, offsets = pack["jpeg"], pack["offsets"]
    crops = []
    for start, stop in zip(offsets[:-1], offsets[1:]):
        with Image.open(io.BytesIO(data[start:stop].tobytes())) as image:
            crops.append(np.asarray(image.convert("RGB")))
    return crops


class CropSampler:
    """Random crops of the training photos, at full scale and at half scale (the half
    scale versions have cleaner chroma than the web JPEG originals)."""

    def __init__(self, files: list[Path], crop: int, packed: list[np.ndarray] | None = None) -> None:
        self.crop = crop
        # crops from training packs are used as they are (they were cut at both scales)
        self.images: list[np.ndarray] = [img for img in packed or [] if min(img.shape[:2]) >= crop]
        for path in files:
            rgb = load_rgb(path)
            h, w = rgb.shape[:2]
            if min(h, w) >= crop:
                self.images.append(rgb)
            if min(h, w) >= 2 * crop:
                half = Image.fromarray(rgb).resize((w // 2, h // 2), Image.Resampling.BOX)
                self.images.append(np.asarray(half))
        if not self.images:
            raise SystemExit(f"no training image is at least {crop} px on its short side")

    @classmethod
    def from_sources(cls, sources: list[Path], crop: int) -> CropSampler:
        """Crops of ``--data``: photo folders and training packs, in any mix."""
        folders = [p for p in sources if not is_pack(p)]
        packed = [image for p in sources if is_pack(p) for image in read_pack(p)]
        return cls(list_images(folders) if folders else [], crop, packed)

    def batch(self, size: int, rng: np.random.Generator, quality_range: tuple[int, int],
              lossless_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        rgbs, grays = [], []
        for _ in range(size):
            img = self.images[rng.integers(len(self.images))]
            h, w = img.shape[:2]
            y0, x0 = rng.integers(h - self.crop + 1), rng.integers(w - self.crop + 1)
            crop = img[y0:y0 + self.crop, x0:x0 + self.crop]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = np.ascontiguousarray(crop)
            gray = luma(crop)
            if rng.random() >= lossless_fraction:
                gray = jpeg_round_trip(gray, int(rng.integers(quality_range[0], quality_range[1] + 1)))
            rgbs.append(crop)
            grays.append(gray)
        rgb = torch.from_numpy(np.stack(rgbs)).permute(0, 3, 1, 2).float() / 255.0
        gray_t = torch.from_numpy(np.stack(grays))[:, None].float() / 255.0
        return rgb, gray_t


class TrainingBatches(torch.utils.data.Dataset):
    """Batch ``i`` (crops, their decoded grays and a quantisation step) for steps
    ``first`` to ``last - 1``, each from a generator seeded by (seed, step), so that
    any number of loader workers yields the same batches in the same order."""

    def __init__(self, sampler: CropSampler, first: int, last: int, args: argparse.Namespace) -> None:
        self.sampler, self.first, self.last = sampler, first, last
        self.size, self.seed = args.batch, args.seed
        self.quality = (int(args.quality[0]), int(args.quality[1]))
        self.lossless_fraction = args.lossless_fraction
        self.log_steps = (math.log(args.step_range[0]), math.log(args.step_range[1]))

    def __len__(self) -> int:
        return max(0, self.last - self.first)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        rng = np.random.default_rng([self.seed, self.first + index])
        rgb, gray = self.sampler.batch(self.size, rng, self.quality, self.lossless_fraction)
        return rgb, gray, math.exp(rng.uniform(*self.log_steps))


def batch_loader(sampler: CropSampler, first: int, args: argparse.Namespace,
                 device: torch.device) -> torch.utils.data.DataLoader:
    """Batches for the steps still to run; ``--workers`` processes cut crops and run the
    gray JPEGs while the network trains (the data side limits a GPU, not the network)."""
    return torch.utils.data.DataLoader(
        TrainingBatches(sampler, first, args.steps, args), batch_size=None, shuffle=False,
        num_workers=args.workers, prefetch_factor=4 if args.workers else None,
        pin_memory=device.type == "cuda", persistent_workers=False,
        worker_init_fn=_ignore_interrupts if args.workers else None)


def _ignore_interrupts(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the training loop, which saves before it stops (a
    worker killed by the terminal's SIGINT would break the batch it owes first)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
