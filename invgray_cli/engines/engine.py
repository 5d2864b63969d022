"""Engines that run a bundled network on numpy arrays, and the choice between them.

* :class:`~invgray_cli.engines.onnx_engine.OnnxEngine`, the CPU product path (onnxruntime);
* :class:`~invgray_cli.engines.torch_engine.TorchEngine`, the same network in torch, for
  CUDA and for any model that ships without ONNX graphs.

Both give integer symbols through the same numpy quantiser (:func:`tiling.quantise`)
and tile large images the same way, so they agree up to float noise (tests check the
symbols and the restored pixels against each other). Nothing here imports torch unless
a torch engine is asked for: the torch engine's module is imported only then.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

import numpy as np

from invgray_cli.engines import tiling
from invgray_cli.engines.onnx_engine import OnnxEngine
from invgray_cli.engines.registry import ModelSpec, model_spec
from invgray_cli.model.availability import require_torch

if TYPE_CHECKING:
    import torch

    from invgray_cli.engines.torch_engine import TorchEngine
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


def set_threads(threads: int) -> None:
    """CPU threads for the network from now on (0: onnxruntime's or torch's default)."""
    global _threads
    _threads = threads
    if threads and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def cuda_available() -> bool:
    """Whether torch is installed and can use CUDA. Without an NVIDIA driver the answer
    is no, and torch is not imported to find that out."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux") and not os.path.exists("/proc/driver/nvidia/version"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def device_name(device: str | torch.device = "auto") -> str:
    """``auto`` picks CUDA when present; ``cuda`` without it is an error, never a fallback."""
    name = str(device)
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name.startswith("cuda"):
        require_torch("--device cuda")
        if not cuda_available():
            raise RuntimeError("--device cuda requested but CUDA is not available")
        return name
    if name != "cpu":
        raise ValueError(f"unknown device {name!r} (use auto, cpu or cuda)")
    return name


def is_engine(obj: object) -> bool:
    torch_engine = sys.modules.get("invgray_cli.engines.torch_engine")  # no TorchEngine exists before it loads
    return isinstance(obj, OnnxEngine) or (torch_engine is not None and isinstance(obj, torch_engine.TorchEngine))


def engine_for(model_id: ModelSpec | str | None = None, device: str | torch.device = "auto",
               model: InvGrayNet | Engine | None = None) -> Engine:
    """The engine for a bundled model (its spec or id; None: the default model) on a
    device: onnxruntime on the CPU when the model ships ONNX graphs, torch otherwise. An
    explicit ``model`` (a torch network or an engine) is used as given."""
    if model is not None:
        if is_engine(model):
            return model
        from invgray_cli.engines.torch_engine import TorchEngine

        return TorchEngine(model, device_name(device))
    spec = model_id if isinstance(model_id, ModelSpec) else model_spec(model_id)
    name = device_name(device)
    if name == "cpu" and spec.onnx is not None:
        return _onnx_engine(spec, _threads)
    return _torch_engine(spec, name, _threads)


@lru_cache(maxsize=8)
def _onnx_engine(spec: ModelSpec, threads: int) -> OnnxEngine:
    return OnnxEngine(spec, threads)


@lru_cache(maxsize=8)
def _torch_engine(spec: ModelSpec, device: str, threads: int) -> TorchEngine:
    require_torch(f"model {spec.model_id}, which ships without ONNX graphs," if device == "cpu" else "--device cuda")
    from invgray_cli.engines.torch_engine import TorchEngine

    engine = TorchEngine(spec.network(device), device)
    set_threads(threads)  # torch is imported by now
    return engine
