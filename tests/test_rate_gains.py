"""Rate gains: a learned step per symbol plane and rate level (invgray_cli/model/rate_gains.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from invgray_cli.engines import tiling
from invgray_cli.engines import torch_engine as inference
from invgray_cli.model.network import InvGrayNet, NetworkConfig
from invgray_cli.model.rate_gains import ANCHORS, plane_steps
from invgray_cli.training.checkpoints import grow_from, read_checkpoint

STEPS = [0.1, 0.25, 0.7428, 1.0, 1.5, 2.0, 3.904, 11.03, 64.0, 200.0]


def _gained_model(seed: int = 0) -> InvGrayNet:
    torch.manual_seed(seed)
    model = InvGrayNet(NetworkConfig(rate_gains=True)).eval()
    with torch.no_grad():
        model.rate_gains.log_gains.normal_(0, 0.5)
        model.decoder.head.weight.normal_(0, 0.01)  # a decoder that uses the symbols
    return model


def test_zero_gains_give_every_plane_the_step() -> None:
    zero = np.zeros((len(ANCHORS), 64), np.float32)
    for step in STEPS:
        np.testing.assert_array_equal(plane_steps(zero, step), np.full(64, step, np.float32))


def test_gains_interpolate_between_anchors_and_hold_beyond_them() -> None:
    gains = np.zeros((len(ANCHORS), 2), np.float32)
    gains[:, 0] = np.arange(len(ANCHORS))  # log gain k at anchor k
    # halfway between 2^0 and 2^1 in log2: gain 2.5 (anchors start at 2^-2)
    assert plane_steps(gains, 2 ** 0.5)[0] == np.float32(2 ** 0.5 * np.exp(-2.5))
    assert plane_steps(gains, 1e-3)[0] == np.float32(1e-3 * np.exp(-0.0))
    assert plane_steps(gains, 1e4)[0] == np.float32(1e4 * np.exp(-(len(ANCHORS) - 1.0)))


def test_torch_and_numpy_give_identical_plane_steps() -> None:
    model = _gained_model()
    log_gains = model.rate_gains.log_gains.detach().numpy()
    steps = torch.tensor(STEPS, dtype=torch.float32).view(-1, 1, 1, 1)
    in_torch = model.plane_steps(steps).detach().numpy()[:, :, 0, 0]
    for row, step in zip(in_torch, steps.flatten().tolist()):
        np.testing.assert_array_equal(row, plane_steps(log_gains, step))


def test_quantisers_agree_and_gains_change_the_symbols(small_rgb: np.ndarray) -> None:
    model = _gained_model()
    gray = np.asarray(small_rgb.mean(axis=2), np.uint8)
    h, w = (s // 32 * 32 for s in gray.shape)
    rgb, gray = np.ascontiguousarray(small_rgb[:h, :w]), np.ascontiguousarray(gray[:h, :w])
    to_tensor = lambda a: torch.from_numpy(a).float().div(255).permute(2, 0, 1)[None]  # noqa: E731
    for step in (0.8, 3.0):
        numpy_symbols = inference.analyse_image(model, rgb, gray, step)
        with torch.no_grad():
            torch_symbols = model.quantise(to_tensor(rgb), to_tensor(gray[:, :, None]), step)[0].numpy()
        np.testing.assert_array_equal(numpy_symbols, torch_symbols.astype(np.int32))
        latent = inference.latent_image(model, rgb, gray)
        plain = tiling.quantise(latent, step, inference.gate_thresholds(model))
        assert not np.array_equal(numpy_symbols, plain)


def test_onnx_graphs_carry_the_gains(small_rgb: np.ndarray) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from invgray_cli.training.export_onnx import graph_bytes

    model = _gained_model()
    stride = model.cfg.symbol_stride
    rgb = np.ascontiguousarray(small_rgb[:2 * stride, :3 * stride])
    gray = np.asarray(rgb.mean(axis=2), np.uint8)
    encoder = onnxruntime.InferenceSession(graph_bytes(model, "encoder"), providers=["CPUExecutionProvider"])
    _, thresholds, log_gains = encoder.run(None, {"rgb": tiling.padded_unit_float(rgb, stride),
                                                  "gray": tiling.padded_unit_float(gray, stride)})
    np.testing.assert_array_equal(log_gains, model.rate_gains.log_gains.detach().numpy())
    symbols = inference.analyse_image(model, rgb, gray, 1.5)
    decoder = onnxruntime.InferenceSession(graph_bytes(model, "decoder"), providers=["CPUExecutionProvider"])
    restored = decoder.run(None, {"gray": tiling.padded_unit_float(gray, stride),
                                  "symbols": symbols[None].astype(np.float32), "step": np.array(1.5, np.float32)})[0]
    expected = inference.synthesise_image(model, gray, symbols, 1.5)
    assert np.abs(tiling.to_pixels(restored[0], *gray.shape).astype(int) - expected).max() <= 1


def test_a_network_without_gains_grows_into_one_unchanged(tmp_path: Path, small_rgb: np.ndarray) -> None:
    plain = InvGrayNet(NetworkConfig()).eval()
    torch.save({"state_dict": plain.state_dict(), "config": plain.cfg.to_dict()}, tmp_path / "plain.pt")
    grown = InvGrayNet(NetworkConfig(rate_gains=True)).eval()
    grow_from(grown, tmp_path / "plain.pt")
    rgb = np.ascontiguousarray(small_rgb[:64, :96])
    gray = np.asarray(rgb.mean(axis=2), np.uint8)
    for step in (0.7, 2.0, 9.0):
        np.testing.assert_array_equal(inference.analyse_image(grown, rgb, gray, step),
                                      inference.analyse_image(plain, rgb, gray, step))


def test_training_with_rate_gains_and_a_rate_weight_per_step(tiny_training: Callable[..., dict],
                                                             tmp_path: Path) -> None:
    tiny_training("--device", "cpu", "--threads", "1", "--rate-gains", "--lmbda-power", "2", "--lr", "1e-2",
                  "--warmup", "1", steps=3)
    model, blob = read_checkpoint(tmp_path / "run" / "last.pt")
    assert blob["config"]["rate_gains"] and blob["step"] == 3
    assert model.rate_gains.log_gains.abs().sum() > 0  # the gains learned
