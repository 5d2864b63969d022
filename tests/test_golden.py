"""Golden residual files of every shipped model must keep decoding to the same pixels.

Pixels are compared exactly; a difference of one level on at most 0.01 % of the
values is tolerated, because float summation order may differ between CPUs' vector
units (it never changed a value on the machines these fixtures were made on).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from invgray_cli.codec import decode_photo
from invgray_cli.engines.registry import known_model_ids, load_model

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFESTS = sorted(GOLDEN.glob("*/manifest.json"))


def _cases() -> list[tuple[Path, str, dict]]:
    return [(m.parent, name, case) for m in MANIFESTS for name, case in json.loads(m.read_text())["cases"].items()]


def test_every_shipped_model_has_golden_files() -> None:
    covered = {json.loads(m.read_text())["model_id"] for m in MANIFESTS}
    assert set(known_model_ids()) <= covered


def _decoded(folder: Path, case: dict, model: object = None) -> np.ndarray:
    gray = (folder / case["gray"]).read_bytes()
    residual = (folder / case["residual"]).read_bytes() if case["residual"] else None
    photo = decode_photo(gray, residual, model=model)
    return np.dstack([photo.rgb, photo.alpha]) if photo.alpha is not None else photo.rgb


def _assert_as_expected(pixels: np.ndarray, folder: Path, name: str, case: dict) -> None:
    expected = np.asarray(Image.open(folder / case["expected"]))
    assert pixels.shape == expected.shape
    if hashlib.sha256(pixels.tobytes()).hexdigest() == case["sha256"]:
        return
    difference = np.abs(pixels.astype(int) - expected.astype(int))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= max(1, difference.size // 10_000), name


@pytest.mark.parametrize("folder,name,case", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_golden_file_decodes_identically(folder: Path, name: str, case: dict) -> None:
    _assert_as_expected(_decoded(folder, case), folder, name, case)


@pytest.mark.parametrize("folder,name,case", _cases(), ids=lambda v: v if isinstance(v, str) else "")
def test_golden_file_decodes_identically_on_the_torch_engine(folder: Path, name: str, case: dict) -> None:
    """The engine CUDA runs (here on the CPU; ``pytest -m cuda`` runs the codec on the
    device), with a retired model's decoder read from its graph."""
    model_id = json.loads((folder / "manifest.json").read_text())["model_id"]
    _assert_as_expected(_decoded(folder, case, load_model(model_id)), folder, name, case)
