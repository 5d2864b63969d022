"""Engines that run a bundled network on numpy arrays.

* :class:`OnnxEngine`, the CPU product path: the model's encoder and decoder as ONNX
  graphs (``models/<name>.encoder.onnx`` / ``.decoder.onnx``, made from the ``.pt`` by
  :mod:`invgray_cli.training.export_onnx`) run by onnxruntime. A fresh process imports
  onnxruntime in about 0.1 s, where ``import torch`` alone takes over a second, so
  scripts that call invgray once per file do not pay for torch.
* :class:`TorchEngine`: the same network in torch, for CUDA (and for any model that
  ships without ONNX graphs). torch also stays the training and export engine.

Both give integer symbols through the same numpy quantiser (:func:`tiling.quantise`)
and tile large images the same way, so they agree up to float noise: tests check the
symbols and the restored pixels against each other. Nothing here imports torch
unless a torch engine is asked for.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from invgray_cli.engines import tiling
from invgray_cli.engines.registry import (
    UnknownModelError,
    default_model_id,
    model_entry,
    models_dir,
)
from invgray_cli.model import rate_gains

if TYPE_CHECKING:
    import torch

    from invgray_cli.model.network import InvGrayNet

_threads = 0  # network CPU threads for engines made from now on; 0: the library's default


class Engine(Protocol):
    model_id: str
    symbol_planes: int
    symbol_stride: int
    name: str  # "onnxruntime" or "torch" (reports)

    def latent(self, rgb: np.ndarray, gray: np.ndarray, tile: bool | None = None) -> np.ndarray:
        """(planes, h, w) float32 transformed latent before the quantisation step."""

    def thresholds(self) -> np.ndarray:
        """(planes,) float32 SEP dead zone, in steps."""

    def plane_steps(self, step: float) -> float | np.ndarray:
        """The quantisation step of each symbol plane at rate level ``step``
        (:mod:`invgray_cli.model.rate_gains`); the step itself for a model without rate gains."""

    def synthesise(self, gray: np.ndarray, symbols: np.ndarray, step: float, tile: bool | None = None) -> np.ndarray:
        """(H, W, 3) uint8 colour from the decoded gray and the integer symbols."""


def analyse(engine: Engine, rgb: np.ndarray, gray: np.ndarray, step: float, tile: bool | None = None) -> np.ndarray:
    """Integer symbols of a photo at one quantisation step."""
    latent = engine.latent(rgb, gray, tile)
    return tiling.quantise(latent, engine.plane_steps(step), engine.thresholds())


class OnnxEngine:
    """A bundled model's ONNX graphs in onnxruntime (CPU). Each graph is read, checked
    against the SHA-256 in the registry and compiled on first use, so an encode never
    loads the decoder and a decode never loads the encoder. Thread-safe."""

    name = "onnxruntime"

    def __init__(self, model_id: str, threads: int = 0) -> None:
        block = model_entry(model_id).get("onnx")
        if block is None:
            raise UnknownModelError(f"model {model_id} ships without ONNX graphs")
        self.model_id, self.threads, self._block = model_id, threads, block
        self.symbol_planes, self.symbol_stride = int(block["symbol_planes"]), int(block["symbol_stride"])
        self.decoder_halo = int(block["decoder_halo"])
        self._sessions: dict[str, Any] = {}
        self._thresholds: np.ndarray | None = None
        self._log_gains: np.ndarray | None = None
        self._lock = threading.Lock()

    def _session(self, part: str) -> Any:  # noqa: ANN401 - onnxruntime.InferenceSession, imported lazily
        with self._lock:
            if part not in self._sessions:
                import onnxruntime

                record = self._block[part]
                data = (models_dir() / record["file"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != record["sha256"]:
                    raise UnknownModelError(f"bundled ONNX graph {record['file']} is damaged (SHA-256 differs)")
                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3  # warnings would reach the user's terminal
                if self.threads:
                    options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                # Idle threads sleep instead of spinning: scripts run several invgray processes
                # at once (pipes, xargs -P), and spinning threads steal their CPU (measured on
                # this shared 2-core machine, a session plus 5 decodes of 768 x 512: 0.38 s of
                # CPU against 0.54 s with spinning, wall time no worse).
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[part] = onnxruntime.InferenceSession(data, options,
                                                                    providers=["CPUExecutionProvider"])
            return self._sessions[part]

    def latent(self, rgb: np.ndarray, gray: np.ndarray, tile: bool | None = None) -> np.ndarray:
        session, stride = self._session("encoder"), self.symbol_stride

        def encoder(rgb_crop: np.ndarray, gray_crop: np.ndarray) -> np.ndarray:
            latent, thresholds, *log_gains = session.run(None, {"rgb": tiling.padded_unit_float(rgb_crop, stride),
                                                                "gray": tiling.padded_unit_float(gray_crop, stride)})
            self._thresholds = thresholds
            self._log_gains = log_gains[0] if log_gains else None  # graphs of models with rate gains
            return latent[0]

        return tiling.run_encoder(encoder, rgb, gray, stride, self.symbol_planes, tile)

    def thresholds(self) -> np.ndarray:
        if self._thresholds is None:  # a graph output: run the encoder once on one cell
            cell = np.zeros((self.symbol_stride, self.symbol_stride), np.uint8)
            self.latent(np.dstack([cell] * 3), cell)
        return self._thresholds

    def plane_steps(self, step: float) -> float | np.ndarray:
        self.thresholds()  # the encoder graph's outputs, gains included, are known from here on
        return step if self._log_gains is None else rate_gains.plane_steps(self._log_gains, step)

    def synthesise(self, gray: np.ndarray, symbols: np.ndarray, step: float, tile: bool | None = None) -> np.ndarray:
        session, stride = self._session("decoder"), self.symbol_stride
        step_input = np.array(step, np.float32)

        def decoder(gray_crop: np.ndarray, symbol_crop: np.ndarray) -> np.ndarray:
            rgb = session.run(None, {"gray": tiling.padded_unit_float(gray_crop, stride),
                                     "symbols": symbol_crop[None].astype(np.float32), "step": step_input})[0]
            return tiling.to_pixels(rgb[0], *gray_crop.shape)

        return tiling.run_decoder(decoder, gray, symbols, stride, self.decoder_halo, tile)


class TorchEngine:
    """An :class:`~invgray_cli.model.network.InvGrayNet` on a torch device."""

    name = "torch"

    def __init__(self, model: InvGrayNet, device: torch.device | str = "cpu") -> None:
        import torch

        from invgray_cli.engines.registry import model_id_of

        self.model, self.device = model, torch.device(device)
        self.model_id = model_id_of(model)
        self.symbol_planes, self.symbol_stride = model.cfg.symbol_planes, model.cfg.symbol_stride

    def latent(self, rgb: np.ndarray, gray: np.ndarray, tile: bool | None = None) -> np.ndarray:
        from invgray_cli.engines.torch_engine import latent_image

        return latent_image(self.model, rgb, gray, self.device, tile)

    def thresholds(self) -> np.ndarray:
        from invgray_cli.engines.torch_engine import gate_thresholds

        return gate_thresholds(self.model)

    def plane_steps(self, step: float) -> float | np.ndarray:
        from invgray_cli.engines.torch_engine import plane_steps

        return plane_steps(self.model, step)

    def synthesise(self, gray: np.ndarray, symbols: np.ndarray, step: float, tile: bool | None = None) -> np.ndarray:
        from invgray_cli.engines.torch_engine import synthesise_image

        return synthesise_image(self.model, gray, symbols, step, self.device, tile)


def set_threads(threads: int) -> None:
    """CPU threads for the network from now on (0: onnxruntime's or torch's default)."""
    global _threads
    _threads = threads
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def cuda_available() -> bool:
    """Whether torch can use CUDA. Without an NVIDIA driver the answer is no, and
    torch is not imported to find that out."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    import torch

    return torch.cuda.is_available()


def device_name(device: str | torch.device = "auto") -> str:
    """``auto`` picks CUDA when present; ``cuda`` without it is an error, never a fallback."""
    name = str(device)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda"):
        if not cuda_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        return name
    if name != "cpu":
        raise ValueError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return name


def is_engine(obj: object) -> bool:
    return isinstance(obj, (OnnxEngine, TorchEngine))


def engine_for(model_id: str | None = None, device: str | torch.device = "auto",
               model: InvGrayNet | Engine | None = None) -> Engine:
    """The engine for a bundled model on a device: onnxruntime on the CPU when the
    model ships ONNX graphs, torch otherwise. An explicit ``model`` (a torch network
    or an engine) is used as given."""
    if model is not None:
        return model if is_engine(model) else TorchEngine(model, device_name(device))
    model_id = model_id or default_model_id()
    name = device_name(device)
    if name == "cpu" and "onnx" in model_entry(model_id):
        return _onnx_engine(model_id, _threads)
    return _torch_engine(model_id, name, _threads)


@lru_cache(maxsize=8)
def _onnx_engine(model_id: str, threads: int) -> OnnxEngine:
    return OnnxEngine(model_id, threads)


@lru_cache(maxsize=8)
def _torch_engine(model_id: str, device: str, threads: int) -> TorchEngine:
    from invgray_cli.engines.registry import load_model

    engine = TorchEngine(load_model(model_id, device), device)
    set_threads(threads)  # torch is imported by now
    return engine
