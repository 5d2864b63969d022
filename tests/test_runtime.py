"""The onnxruntime engine against the torch network it was exported from.

Symbols and pixels are compared exactly where they agree on this machine; the bounds
allow what float summation order may change on another CPU's vector units (one
quantisation bin or one pixel level, on a tiny share), as tests/test_golden.py does.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import invgray_cli.engines.tiling as tiling
from invgray_cli.codec import decode_photo, encode, read_symbols
from invgray_cli.engines.engine import analyse, engine_for
from invgray_cli.engines.onnx_engine import OnnxEngine
from invgray_cli.engines.registry import (
    UnknownModelError,
    known_model_ids,
    levels,
    load_model,
    model_spec,
    models_dir,
)
from invgray_cli.engines.torch_engine import TorchEngine
from invgray_cli.format.container import read_residual
from invgray_cli.imaging.gray import decode_gray, jpeg_round_trip, luma

ROOT = Path(__file__).resolve().parent.parent


def _synthetic(seed: int, height: int, width: int) -> np.ndarray:
    """Smooth colour gradients with edges and noise: unlike a photo, nothing to overfit."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    planes = [np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * np.cos(5 * y * rng.uniform(0.5, 2))
              for _ in range(3)]
    image = (np.stack(planes, axis=2) * 0.5 + 0.5) * 255
    image[height // 3:height // 2, width // 4:width // 2] = rng.uniform(0, 255, 3)  # a flat coloured block
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _images(sample_rgb: np.ndarray) -> dict[str, np.ndarray]:
    return {"kodim23": sample_rgb, "synthetic-a": _synthetic(1, 203, 157), "synthetic-b": _synthetic(2, 480, 320)}


def _assert_close_symbols(a: np.ndarray, b: np.ndarray) -> None:
    difference = np.abs(a.astype(np.int64) - b)
    assert difference.max() <= 1 and np.count_nonzero(difference) <= max(1, difference.size // 10_000)


def _assert_close_pixels(a: np.ndarray, b: np.ndarray) -> None:
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert difference.max() <= 1 and np.count_nonzero(difference) <= max(1, difference.size // 1_000)


ENCODING = [model_id for model_id in known_model_ids() if model_spec(model_id).encodes]
GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden_pair(model_id: str) -> tuple[bytes, bytes]:
    """A golden gray and residual of the model: real symbols, for models that no longer encode."""
    manifest = json.loads((GOLDEN / model_id / "manifest.json").read_text())
    case = next(case for case in manifest["cases"].values() if case["residual"])
    return (GOLDEN / model_id / case["gray"]).read_bytes(), (GOLDEN / model_id / case["residual"]).read_bytes()


@pytest.mark.parametrize("model_id", ENCODING)
def test_onnx_encoder_gives_torch_symbols_at_every_level(sample_rgb: np.ndarray, model_id: str) -> None:
    onnx, torch_engine = OnnxEngine(model_spec(model_id)), TorchEngine(load_model(model_id))
    assert np.array_equal(onnx.thresholds(), torch_engine.thresholds())  # copied, not recomputed
    for name, rgb in _images(sample_rgb).items():
        gray = jpeg_round_trip(luma(rgb), 90)
        onnx_latent, torch_latent = onnx.latent(rgb, gray), torch_engine.latent(rgb, gray)
        assert np.allclose(onnx_latent, torch_latent, rtol=1e-4, atol=1e-3), name
        for step in levels(model_id).values():
            _assert_close_symbols(analyse(onnx, rgb, gray, step), analyse(torch_engine, rgb, gray, step))


@pytest.mark.parametrize("model_id", known_model_ids())
def test_onnx_decoder_gives_torch_pixels(sample_rgb: np.ndarray, model_id: str) -> None:
    onnx, torch_engine = OnnxEngine(model_spec(model_id)), TorchEngine(load_model(model_id))
    if not model_spec(model_id).encodes:
        gray_file, residual = _golden_pair(model_id)
        header, gray = read_residual(residual), decode_gray(gray_file)
        symbols = read_symbols(header)
        _assert_close_pixels(onnx.synthesise(gray, symbols, header.step),
                             torch_engine.synthesise(gray, symbols, header.step))
        return
    for rgb in _images(sample_rgb).values():
        gray = jpeg_round_trip(luma(rgb), 90)
        step = levels(model_id)["default"]
        symbols = analyse(torch_engine, rgb, gray, step)
        _assert_close_pixels(onnx.synthesise(gray, symbols, step), torch_engine.synthesise(gray, symbols, step))


@pytest.mark.parametrize("model_id", sorted(set(known_model_ids()) - set(ENCODING)))
def test_a_retired_model_refuses_to_encode(small_rgb: np.ndarray, model_id: str) -> None:
    gray = jpeg_round_trip(luma(small_rgb), 90)
    for engine in (OnnxEngine(model_spec(model_id)), TorchEngine(load_model(model_id))):
        with pytest.raises(UnknownModelError, match="kept to decode the files it wrote"):
            engine.latent(small_rgb, gray)


def test_files_from_either_engine_decode_with_either(small_rgb: np.ndarray) -> None:
    """The decoder only reads symbols: a file is valid whichever engine wrote it."""
    model = load_model()
    by_onnx, by_torch = encode(small_rgb, device="cpu"), encode(small_rgb, model=model)
    for pair in (by_onnx, by_torch):
        _assert_close_pixels(decode_photo(pair.gray, pair.residual).rgb,
                             decode_photo(pair.gray, pair.residual, model=model).rgb)


def test_onnx_tiles_equal_whole_image(monkeypatch: pytest.MonkeyPatch, sample_rgb: np.ndarray) -> None:
    monkeypatch.setattr(tiling, "TILE_CORE", 128)
    engine = OnnxEngine(model_spec())
    rgb = np.ascontiguousarray(sample_rgb[:300, :420])  # ragged: not a multiple of the tile or cell size
    gray = jpeg_round_trip(luma(rgb), 90)
    whole = tiling.quantise(engine.latent(rgb, gray, tile=False), 5.0, engine.thresholds())
    assert np.array_equal(whole, tiling.quantise(engine.latent(rgb, gray, tile=True), 5.0, engine.thresholds()))
    _assert_close_pixels(engine.synthesise(gray, whole, 5.0, tile=False), engine.synthesise(gray, whole, 5.0, tile=True))


@pytest.mark.parametrize("model_id", known_model_ids())
def test_bundled_onnx_files_are_the_registered_export_of_the_pt(model_id: str) -> None:
    block = model_spec(model_id).onnx
    for part in ("encoder", "decoder")[0 if model_spec(model_id).encodes else 1:]:
        data = (models_dir() / block[part]["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == block[part]["sha256"]
    import torch

    if torch.__version__ != block["exported_with"]["torch"]:
        pytest.skip(f"exported with torch {block['exported_with']['torch']}: other versions may write other "
                    "bytes (numerical agreement is checked above)")
    pytest.importorskip("onnx")
    from invgray_cli.training.export_onnx import check_reproduced

    assert check_reproduced(load_model(model_id), block, models_dir()) == []


def test_damaged_onnx_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for item in models_dir().iterdir():
        if item.suffix in {".onnx", ".json"}:
            (tmp_path / item.name).write_bytes(item.read_bytes())
    registry = json.loads((tmp_path / "registry.json").read_text())
    model_id = registry["default"]
    damaged = tmp_path / registry["models"][model_id]["onnx"]["decoder"]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-1] + b"\0")
    monkeypatch.setattr("invgray_cli.engines.registry.models_dir", lambda: tmp_path)
    with pytest.raises(UnknownModelError, match="damaged"):
        OnnxEngine(model_spec(model_id)).synthesise(np.zeros((32, 32), np.uint8), np.zeros((64, 1, 1), np.int32), 1.0)


def test_cpu_uses_onnxruntime_and_a_torch_model_uses_torch() -> None:
    assert isinstance(engine_for(device="cpu"), OnnxEngine)
    assert isinstance(engine_for(device="cpu", model=load_model()), TorchEngine)


def test_cpu_commands_never_import_torch(tmp_path: Path) -> None:
    """encode, decode and info on the CPU, each in a fresh interpreter: torch stays unloaded."""
    script = ("import sys\nfrom invgray_cli.app.cli import main\nsys.argv = ['invgray'] + sys.argv[1:]\n"
              "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
              "print('torch loaded:', 'torch' in sys.modules, file=sys.stderr)\n")
    sample = ROOT / "samples" / "kodim23.png"
    for arguments in (["encode", sample, "-o", tmp_path / "a.gray.jpg", "--device", "cpu"],
                      ["decode", tmp_path / "a.gray.jpg", "-o", tmp_path / "a.png", "--device", "cpu"],
                      ["info", tmp_path / "a.residual.bin", "--json"]):
        result = subprocess.run([sys.executable, "-c", script, *map(str, arguments)], capture_output=True,
                                text=True, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        assert result.stderr.strip().splitlines()[-1] == "torch loaded: False", result.stderr


def test_onnx_latent_does_not_depend_on_the_thread_count(small_rgb: np.ndarray) -> None:
    """Residual bytes must not depend on --threads or --jobs."""
    gray = jpeg_round_trip(luma(small_rgb), 90)
    assert np.array_equal(OnnxEngine(model_spec(), threads=1).latent(small_rgb, gray),
                          OnnxEngine(model_spec(), threads=2).latent(small_rgb, gray))
