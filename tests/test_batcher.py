"""Batched folder decodes: the same pixels as one-at-a-time decoding, whatever shares a
batch, up to float summation order (a convolution over a batch may add in another
order, which moves a rare pixel by one level)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from invgray_cli.app.cli import app
from invgray_cli.codec import encode
from invgray_cli.engines.batcher import NetworkBatcher
from invgray_cli.engines.registry import load_model
from invgray_cli.engines.torch_engine import analyse_image, synthesise_image

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "kodim23.png"


def _crops() -> list[tuple[np.ndarray, np.ndarray, float]]:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    model = load_model()
    cases = []
    # two sizes (so batches must be grouped), several steps (per-image steps inside one batch)
    for index, (y, x, h, w, step) in enumerate([(0, 0, 96, 160, 2.0), (40, 64, 96, 160, 5.3), (100, 200, 96, 160, 9.0),
                                                (10, 300, 70, 130, 5.3), (200, 20, 70, 130, 2.0),
                                                (300, 300, 96, 160, 1.2)]):
        crop = np.ascontiguousarray(rgb[y:y + h, x:x + w])
        gray = np.asarray(Image.fromarray(crop).convert("L"))
        cases.append((gray, analyse_image(model, crop, gray, step), step))
    return cases


def test_batched_pixels_equal_unbatched() -> None:
    model = load_model()
    cases = _crops()
    expected = [synthesise_image(model, gray, symbols, step) for gray, symbols, step in cases]
    with NetworkBatcher(model, model.encoder.stem.weight.device, max_batch=4, wait_seconds=0.05) as batcher:
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            got = list(pool.map(lambda case: batcher.synthesise(*case), cases))
        assert batcher.images_run == len(cases)
        assert batcher.batches_run < len(cases), "requests were never batched"
    for want, have in zip(expected, got):
        assert have.shape == want.shape
        _assert_same_up_to_rounding(have, want)


def _assert_same_up_to_rounding(have: np.ndarray, want: np.ndarray) -> None:
    difference = np.abs(have.astype(np.int16) - want.astype(np.int16))
    assert difference.max() <= 1
    assert np.count_nonzero(difference) <= 0.001 * difference.size


def test_a_failing_batch_reaches_every_caller() -> None:
    model = load_model()
    gray, symbols, step = _crops()[0]
    wrong = symbols[:3]  # too few planes: the network must fail, and both callers must hear it
    with NetworkBatcher(model, model.encoder.stem.weight.device, max_batch=2, wait_seconds=0.05) as batcher:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(batcher.synthesise, gray, wrong, step) for _ in range(2)]
            for future in futures:
                with pytest.raises(RuntimeError):
                    future.result()


def test_cli_batched_folder_decode_matches_single(tmp_path: Path) -> None:
    rgb = np.asarray(Image.open(SAMPLE).convert("RGB"))
    folder = tmp_path / "in"
    folder.mkdir()
    for index, (y, x) in enumerate([(0, 0), (64, 96), (128, 192), (200, 40)]):
        encoded = encode(rgb[y:y + 128, x:x + 192])
        (folder / f"p{index}.gray.jpg").write_bytes(encoded.gray)
        (folder / f"p{index}.residual.bin").write_bytes(encoded.residual)
    runner = CliRunner()
    for size in (1, 4):
        result = runner.invoke(app, ["decode", str(folder), "--out-dir", str(tmp_path / f"b{size}"),
                                     "--batch", str(size), "--device", "cpu"])
        assert result.exit_code == 0, result.output
    for index in range(4):
        single = np.asarray(Image.open(tmp_path / "b1" / f"p{index}.color.png"))
        batched = np.asarray(Image.open(tmp_path / "b4" / f"p{index}.color.png"))
        _assert_same_up_to_rounding(batched, single)
