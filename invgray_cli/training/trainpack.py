"""Training packs: a folder of photos cut into one small file of crops, for training
where the photos are not (a lent GPU machine gets the working tree and a few tens
of megabytes, not ../shared).

    python -m invgray_cli.training.trainpack --data ../shared/data/train --out packs/train.npz --crops 1200

Each crop is ``--size`` px square, cut at a random place from a random photo (at full
scale, or area-downscaled by 2 where the photo allows, as training does), stored as
a 4:4:4 JPEG at ``--quality`` (default 95: chroma error far below what the codec
restores). ``python -m invgray_cli.training.train --data packs/train.npz ...`` trains from it.
The file is a plain ``.npz`` (no pickles): ``jpeg`` (all JPEG bytes, uint8) and
``offsets`` (int64, crop i is ``jpeg[offsets[i]:offsets[i + 1]]``); training reads it with
:func:`invgray_cli.training.data.read_pack`.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

from invgray_cli.training.data import PACK_SUFFIX, list_images, load_rgb


def write_pack(crops: list[np.ndarray], destination: Path, quality: int = 95) -> int:
    """Write (H, W, 3) uint8 crops as a pack; returns its size in bytes."""
    blobs = []
    for crop in crops:
        buffer = io.BytesIO()
        Image.fromarray(crop).save(buffer, "JPEG", quality=quality, subsampling="4:4:4", optimize=True)
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(destination.name + ".part")
    with temporary.open("wb") as handle:
        np.savez(handle, jpeg=np.concatenate(blobs) if blobs else np.zeros(0, np.uint8), offsets=offsets)
    temporary.replace(destination)
    return destination.stat().st_size


def cut_crops(images: list[np.ndarray], count: int, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``count`` random ``size``-px crops, spread evenly over the images (full scale, or
    area-downscaled by 2 for half of the crops where the image is large enough)."""
    usable = [img for img in images if min(img.shape[:2]) >= size]
    if not usable:
        raise SystemExit(f"no image is at least {size} px on its short side")
    crops = []
    for index in range(count):
        image = usable[index % len(usable)]
        h, w = image.shape[:2]
        if min(h, w) >= 2 * size and rng.random() < 0.5:
            half = Image.fromarray(image).resize((w // 2, h // 2), Image.Resampling.BOX)
            image = np.asarray(half)
            h, w = image.shape[:2]
        y, x = rng.integers(h - size + 1), rng.integers(w - size + 1)
        crops.append(np.ascontiguousarray(image[y:y + size, x:x + size]))
    return crops


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.trainpack",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="photo folders")
    parser.add_argument("--out", type=Path, required=True, help=f"the pack file ({PACK_SUFFIX})")
    parser.add_argument("--crops", type=int, default=1200, help="1,200 crops of 256 px: about 46 MiB, which "
                        "leaves room for the working tree within a 64 MiB transfer")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--quality", type=int, default=95)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.suffix != PACK_SUFFIX:
        raise SystemExit(f"--out must end in {PACK_SUFFIX}")
    rng = np.random.default_rng(args.seed)
    files = list_images(args.data)
    order = rng.permutation(len(files))
    images = [load_rgb(files[i]) for i in order]
    crops = cut_crops(images, args.crops, args.size, rng)
    size = write_pack(crops, args.out, args.quality)
    print(f"{args.out}: {len(crops)} crops of {args.size} px from {len(images)} photos, {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
