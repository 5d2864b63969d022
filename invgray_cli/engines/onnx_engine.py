"""The CPU product path: a bundled model's encoder and decoder as ONNX graphs
(``models/<name>.encoder.onnx`` / ``.decoder.onnx``, made from the ``.pt`` by
:mod:`invgray_cli.training.export_onnx`) run by onnxruntime. A fresh process imports
onnxruntime far faster than torch, so scripts that call invgray once per file do not
pay for torch; onnxruntime itself is imported when a graph is first needed."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from invgray_cli.engines import tiling
from invgray_cli.engines.registry import (
    ModelSpec,
    UnknownModelError,
    decode_only,
)
from invgray_cli.model import rate_gains


class OnnxEngine:
    """A bundled model's ONNX graphs in onnxruntime (CPU). Each graph is read, checked
    against the SHA-256 in the registry and compiled on first use, so an encode never
    loads the decoder and a decode never loads the encoder. Thread-safe."""

    name = "onnxruntime"

    def __init__(self, spec: ModelSpec, threads: int = 0) -> None:
        block = spec.onnx
        if block is None:
            raise UnknownModelError(f"model {spec.model_id} ships without ONNX graphs")
        self.model_id, self.threads, self._spec, self._block = spec.model_id, threads, spec, block
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

                data = self._spec.graph(part)
                options = onnxruntime.SessionOptions()
                options.log_severity_level = 3  # warnings would reach the user's terminal
                if self.threads:
                    options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                # Idle threads sleep instead of spinning: scripts run several invgray processes
                # at once (pipes, xargs -P), and spinning threads would steal their CPU.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[part] = onnxruntime.InferenceSession(data, options,
                                                                    providers=["CPUExecutionProvider"])
            return self._sessions[part]

    def latent(self, rgb: np.ndarray, gray: np.ndarray, tile: bool | None = None) -> np.ndarray:
        if "encoder" not in self._block:
            raise decode_only(self.model_id)
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
