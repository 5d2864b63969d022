from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


@pytest.fixture(scope="session")
def sample_rgb() -> np.ndarray:
    """The bundled Kodak sample (768 x 512)."""
    return np.asarray(Image.open(SAMPLE).convert("RGB"))


@pytest.fixture(scope="session")
def small_rgb(sample_rgb: np.ndarray) -> np.ndarray:
    """A 203 x 157 crop with sides that are not multiples of 8."""
    return np.ascontiguousarray(sample_rgb[100:257, 300:503])


@pytest.fixture()
def small_png(tmp_path: Path, small_rgb: np.ndarray) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(small_rgb).save(path)
    return path


@pytest.fixture()
def tiny_training(tmp_path: Path) -> Callable[..., dict]:
    """Runs ``invgray_cli.train`` for a few steps of 2 random 64 px crops (validation on
    the same 2 photos) with the given extra arguments; returns the last checkpoint."""
    import torch

    from invgray_cli.train import main

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"p{index}.png")

    def run(*extra: str, steps: int = 2) -> dict:
        threads = torch.get_num_threads()  # --threads sets it process-wide; later tests need it back
        try:
            main(["--data", str(folder), "--val", str(folder), "--out", str(tmp_path / "run"), "--crop", "64",
                  "--batch", "2", "--steps", str(steps), "--val-every", str(steps), "--val-steps", "2", *extra])
        finally:
            torch.set_num_threads(threads)
        return torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)

    return run
