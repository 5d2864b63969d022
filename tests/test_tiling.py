from __future__ import annotations

import numpy as np
import pytest

import invgray_cli.engines.tiling as tiling
import invgray_cli.engines.torch_engine as inference
from invgray_cli.engines.registry import known_model_ids, load_model
from invgray_cli.imaging.gray import jpeg_round_trip, luma


@pytest.fixture()
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "TILE_CORE", 128)


@pytest.mark.parametrize("model_id", known_model_ids())
def test_tiled_equals_whole_image(small_tiles: None, sample_rgb: np.ndarray, model_id: str) -> None:
    model = load_model(model_id)
    rgb = np.ascontiguousarray(sample_rgb[:300, :420])  # ragged: not a multiple of the tile or cell size
    gray = jpeg_round_trip(luma(rgb), 90)
    whole = inference.analyse_image(model, rgb, gray, tile=False)
    tiled = inference.analyse_image(model, rgb, gray, tile=True)
    assert np.array_equal(whole, tiled)
    colour_whole = inference.synthesise_image(model, gray, whole, tile=False)
    colour_tiled = inference.synthesise_image(model, gray, whole, tile=True)
    # the halo covers the decoder's receptive field: equal up to float summation order
    difference = np.abs(colour_whole.astype(np.int16) - colour_tiled.astype(np.int16))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= 1e-4 * difference.size
