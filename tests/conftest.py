from __future__ import annotations

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
