from __future__ import annotations

import numpy as np
import pytest

import invgray_cli.inference as inference
from invgray_cli.gray import jpeg_round_trip, luma
from invgray_cli.zoo import load_model


@pytest.fixture()
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inference, "TILE_CORE", 128)


def test_tiled_equals_whole_image(small_tiles: None, sample_rgb: np.ndarray) -> None:
    model = load_model()
    rgb = np.ascontiguousarray(sample_rgb[:300, :420])  # ragged: not a multiple of the tile or cell size
    gray = jpeg_round_trip(luma(rgb), 90)
    whole = inference.analyse_image(model, rgb, gray, tile=False)
    tiled = inference.analyse_image(model, rgb, gray, tile=True)
    assert np.array_equal(whole, tiled)
    colour_whole = inference.synthesise_image(model, gray, whole, tile=False)
    colour_tiled = inference.synthesise_image(model, gray, whole, tile=True)
    assert inference.psnr(colour_whole, colour_tiled) >= 50.0
