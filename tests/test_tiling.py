from __future__ import annotations

import numpy as np
import pytest

import invgray_cli.engines.tiling as tiling
import invgray_cli.engines.torch_engine as inference
from invgray_cli.engines.registry import known_model_ids, load_model, model_spec
from invgray_cli.imaging.gray import jpeg_round_trip, luma


def _sparse_symbols(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.integers(-4, 5, shape) * (rng.random(shape) < 0.1)).astype(np.int32)


@pytest.fixture()
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "TILE_CORE", 128)


@pytest.mark.parametrize("model_id", known_model_ids())
def test_tiled_equals_whole_image(small_tiles: None, sample_rgb: np.ndarray, model_id: str) -> None:
    model = load_model(model_id)
    rgb = np.ascontiguousarray(sample_rgb[:300, :420])  # ragged: not a multiple of the tile or cell size
    gray = jpeg_round_trip(luma(rgb), 90)
    if model_spec(model_id).encodes:
        whole = inference.analyse_image(model, rgb, gray, tile=False)
        assert np.array_equal(whole, inference.analyse_image(model, rgb, gray, tile=True))
    else:  # a retired model only decodes: any symbols do
        whole = _sparse_symbols(inference.symbol_shape(model, *gray.shape))
    colour_whole = inference.synthesise_image(model, gray, whole, tile=False)
    colour_tiled = inference.synthesise_image(model, gray, whole, tile=True)
    # the halo covers the decoder's receptive field: equal up to float summation order
    difference = np.abs(colour_whole.astype(np.int16) - colour_tiled.astype(np.int16))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= 1e-4 * difference.size
