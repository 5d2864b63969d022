"""The product path on an accelerator (``-m cuda``): end-to-end CLI, files crossing
between the accelerator and the CPU, batched and tiled decoding, half precision.

Skipped without CUDA. ``benchmarks/gpu_session.py`` runs them on a lent GPU; its CPU
rehearsal sets ``INVGRAY_TEST_DEVICE=cpu`` so that the same tests run (trivially, CPU
against CPU) in the ordinary suite and cannot rot between GPU sessions.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import invgray_cli.engines.tiling as tiling
import invgray_cli.engines.torch_engine as inference
from invgray_cli.app.cli import app
from invgray_cli.codec import decode_array, encode, read_symbols
from invgray_cli.engines.batcher import NetworkBatcher
from invgray_cli.engines.registry import load_model
from invgray_cli.format.container import read_residual
from invgray_cli.imaging.gray import jpeg_round_trip, luma
from invgray_cli.imaging.metrics import psnr

DEVICE = os.environ.get("INVGRAY_TEST_DEVICE", "cuda")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="no CUDA device"),
]


def _symbols(residual: bytes) -> np.ndarray:
    return read_symbols(read_residual(residual))


def _assert_equal_up_to_float_order(have: np.ndarray, want: np.ndarray, share: float = 1e-3) -> None:
    difference = np.abs(have.astype(np.int16) - want.astype(np.int16))
    assert difference.max() <= 1, f"pixels differ by up to {difference.max()} levels"
    assert np.count_nonzero(difference) <= share * difference.size


def test_cli_encode_and_decode_on_device(tmp_path: Path, sample_rgb: np.ndarray) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for index, (y, x) in enumerate([(0, 0), (200, 300), (100, 500)]):
        Image.fromarray(np.ascontiguousarray(sample_rgb[y:y + 240, x:x + 256])).save(folder / f"p{index}.png")
    runner = CliRunner()
    result = runner.invoke(app, ["encode", str(folder), "--out-dir", str(tmp_path / "pairs"), "--device", DEVICE])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["decode", str(tmp_path / "pairs"), "--out-dir", str(tmp_path / "colour"),
                                 "--device", DEVICE, "--batch", "3"])
    assert result.exit_code == 0, result.output
    for index in range(3):
        with Image.open(folder / f"p{index}.png") as original, Image.open(tmp_path / "colour" / f"p{index}.color.png") as restored:
            assert psnr(np.asarray(restored.convert("RGB")), np.asarray(original.convert("RGB"))) > 30
    one = runner.invoke(app, ["decode", str(tmp_path / "pairs" / "p0.gray.jpg"), "-o", str(tmp_path / "one.png"),
                              "--device", DEVICE, "--compare", str(folder / "p0.png")])
    assert one.exit_code == 0, one.output
    assert float(re.search(r"RGB PSNR ([0-9.]+) dB", one.output).group(1)) > 30


def test_files_cross_between_device_and_cpu(sample_rgb: np.ndarray) -> None:
    on_device = encode(sample_rgb, device=DEVICE)
    on_cpu = encode(sample_rgb, device="cpu")
    assert on_device.gray == on_cpu.gray  # the gray never touches the network
    device_symbols, cpu_symbols = _symbols(on_device.residual), _symbols(on_cpu.residual)
    # v1 promises the same symbols for any CPU thread count, not across devices: a latent on a
    # rounding boundary may land one bin apart. It must stay rare and decode on either side.
    differing = np.count_nonzero(device_symbols != cpu_symbols) / device_symbols.size
    assert differing <= 1e-3, f"{differing:.2%} of symbols differ between {DEVICE} and cpu"
    for residual in (on_device.residual, on_cpu.residual):
        here = decode_array(on_device.gray, residual, device=DEVICE)
        there = decode_array(on_device.gray, residual, device="cpu")
        _assert_equal_up_to_float_order(here, there)
        assert abs(psnr(here, sample_rgb) - psnr(there, sample_rgb)) < 0.01


def test_batched_decode_equals_unbatched_on_device(sample_rgb: np.ndarray) -> None:
    model = load_model(device=DEVICE)
    cases = []
    for y, x, step in [(0, 0, 2.0), (100, 200, 5.3), (300, 400, 1.2), (250, 40, 3.0)]:
        crop = np.ascontiguousarray(sample_rgb[y:y + 128, x:x + 192])
        gray = jpeg_round_trip(luma(crop), 90)
        cases.append((gray, inference.analyse_image(model, crop, gray, step, DEVICE), step))
    expected = [inference.synthesise_image(model, *case, device=DEVICE) for case in cases]
    with NetworkBatcher(model, torch.device(DEVICE), max_batch=4, wait_seconds=0.05) as batcher:
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            got = list(pool.map(lambda case: batcher.synthesise(*case), cases))
        assert batcher.batches_run < len(cases), "requests were never batched"
    for have, want in zip(got, expected):
        _assert_equal_up_to_float_order(have, want)


def test_tiled_equals_whole_image_on_device(monkeypatch: pytest.MonkeyPatch, sample_rgb: np.ndarray) -> None:
    monkeypatch.setattr(tiling, "TILE_CORE", 128)
    model = load_model(device=DEVICE)
    rgb = np.ascontiguousarray(sample_rgb[:300, :420])
    gray = jpeg_round_trip(luma(rgb), 90)
    whole = inference.analyse_image(model, rgb, gray, 2.0, DEVICE, tile=False)
    tiled = inference.analyse_image(model, rgb, gray, 2.0, DEVICE, tile=True)
    assert np.count_nonzero(whole != tiled) <= 1e-3 * whole.size
    _assert_equal_up_to_float_order(inference.synthesise_image(model, gray, whole, 2.0, DEVICE, tile=True),
                                    inference.synthesise_image(model, gray, whole, 2.0, DEVICE, tile=False), 1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_decoder_stays_close_to_float32(sample_rgb: np.ndarray, dtype: torch.dtype) -> None:
    model = load_model(device=DEVICE)
    rgb = np.ascontiguousarray(sample_rgb[:256, :384])
    gray = jpeg_round_trip(luma(rgb), 90)
    symbols = inference.analyse_image(model, rgb, gray, 2.0, DEVICE)
    full = inference.synthesise_image(model, gray, symbols, 2.0, DEVICE)
    half = inference.synthesise_batch(copy.deepcopy(model).to(dtype), [gray], [symbols], [2.0], DEVICE)[0]
    # adoption needs < 0.05 dB against the originals (benchmarks/speed.py --precision); here: no breakage
    assert psnr(half, full) > 40
    assert abs(psnr(half, rgb) - psnr(full, rgb)) < 0.5


def test_training_steps_and_validation_run_on_device(tiny_training: Callable[..., dict], tmp_path: Path) -> None:
    """The GPU session's training stage, in miniature: learned tables, validation, a checkpoint."""
    checkpoint = tiny_training("--device", DEVICE, "--rate", "tables", "--init", "models/invgray-v1.4.pt",
                               "--tables", "models/invgray-v1.4.entropy.npz", "--latent-channels", "6")
    assert checkpoint["step"] == 2 and (tmp_path / "run" / "tables.entropy.npz").is_file()
    # a second lent session resumes (the checkpoint's CPU generator state comes back mapped to the
    # device), with the long run's bfloat16 convolutions and a float32 validation
    resumed = tiny_training("--device", DEVICE, "--rate", "tables", "--tables", "models/invgray-v1.4.entropy.npz",
                            "--latent-channels", "6", "--resume", "--bf16", steps=4)
    assert resumed["step"] == 4


def test_multiply_adds_probe_follows_the_network_device() -> None:
    on_device = load_model(device=DEVICE)  # the cached model on the device; .to() on the CPU one would move it
    assert on_device.multiply_adds_per_pixel() == load_model().multiply_adds_per_pixel() > 0


def test_effort_refines_on_the_device_and_the_file_decodes_on_the_cpu(small_rgb: np.ndarray,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from invgray_cli.codec import effort

    monkeypatch.setitem(effort.EFFORT_ITERATIONS, 2, 8)
    plain, refined = encode(small_rgb, device=DEVICE), encode(small_rgb, device=DEVICE, effort=2)
    assert refined.model_id == plain.model_id and refined.gray == plain.gray
    assert not np.array_equal(read_symbols(read_residual(refined.residual)), read_symbols(read_residual(plain.residual)))
    assert psnr(decode_array(refined.gray, refined.residual, device="cpu"), small_rgb) > 30
