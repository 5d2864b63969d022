"""Export a bundled model's encoder and decoder to ONNX for the onnxruntime CPU engine:
``python -m invgray_cli.training.export_onnx [--model ID] [--check]``.

Writes ``models/<name>.encoder.onnx`` and ``models/<name>.decoder.onnx`` beside the
model's ``.pt`` and records them, with their SHA-256, in the model's registry entry
(``"onnx"``), together with what the engine needs without torch: symbol planes and
cell size, and the decoder's tile halo. ``--check`` re-exports into memory and fails
unless the bundled files are reproduced byte for byte. Needs the ``onnx`` package
(``pip install 'invgray[export]'``); running the graphs needs only onnxruntime.

The graphs (dynamic height and width, batch of one):

* encoder: ``rgb`` (1, 3, H, W) and ``gray`` (1, 1, H, W), float32 in [0, 1], sides
  multiples of the cell size -> ``latent`` (1, planes, H/cell, W/cell), the block-DCT
  latent before the step, and ``thresholds`` (planes,), the SEP dead zone, copied
  from torch's values so both engines quantise with the same numbers
  (:func:`tiling.quantise`); a model with rate gains adds ``log_gains``
  (anchors, planes), from which :func:`invgray_cli.model.rate_gains.plane_steps` gives each
  plane's step.
* decoder: ``gray``, ``symbols`` (1, planes, H/cell, W/cell) float32 integers and
  ``step`` (scalar) -> ``rgb`` (1, 3, H, W) unclamped (a model with rate gains turns the
  step into per-plane steps inside the graph).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import sys
import warnings
from pathlib import Path

import torch

from invgray_cli.engines.registry import (
    load_model,
    models_dir,
    read_registry,
    write_registry,
)
from invgray_cli.engines.tiling import ENCODER_HALO
from invgray_cli.engines.torch_engine import decoder_halo, gate_thresholds
from invgray_cli.model.network import InvGrayNet

OPSET = 17
PARTS = ("encoder", "decoder")


class EncoderGraph(torch.nn.Module):
    """Photo + gray -> latent before the step, plus the gate's thresholds."""

    def __init__(self, model: InvGrayNet) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("thresholds", torch.from_numpy(gate_thresholds(model).copy()))

    def forward(self, rgb: torch.Tensor, gray: torch.Tensor) -> tuple[torch.Tensor, ...]:
        latent = self.model.transform(self.model.encoder(rgb, gray, self.model.chroma_gain))
        if self.model.rate_gains is None:
            return latent, self.thresholds
        return latent, self.thresholds, self.model.rate_gains.log_gains * 1.0  # an output, not only a weight


class DecoderGraph(torch.nn.Module):
    """Gray + integer symbols + step -> RGB."""

    def __init__(self, model: InvGrayNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, gray: torch.Tensor, symbols: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        return self.model.synthesise(gray, symbols, step)


def graph_bytes(model: InvGrayNet, part: str) -> bytes:
    """One network part as an ONNX file (deterministic: the same weights give the same bytes)."""
    stride, planes = model.cfg.symbol_stride, model.cfg.symbol_planes
    height, width = 2 * stride, 3 * stride  # a probe; height and width stay dynamic
    gray = torch.rand(1, 1, height, width, generator=torch.Generator().manual_seed(0))
    if part == "encoder":
        module, inputs = EncoderGraph(model), (torch.rand(1, 3, height, width), gray)
        names, outputs = ["rgb", "gray"], ["latent", "thresholds"] + (["log_gains"] if model.rate_gains else [])
        axes = {"rgb": {2: "height", 3: "width"}, "gray": {2: "height", 3: "width"},
                "latent": {2: "rows", 3: "columns"}}
    else:
        module = DecoderGraph(model)
        inputs = (gray, torch.zeros(1, planes, 2, 3), torch.tensor(1.0))
        names, outputs = ["gray", "symbols", "step"], ["rgb"]
        axes = {"gray": {2: "height", 3: "width"}, "symbols": {2: "rows", 3: "columns"},
                "rgb": {2: "height", 3: "width"}}
    buffer = io.BytesIO()
    # The TorchScript exporter on purpose: it needs no onnxscript and gives the same
    # bytes for the same weights, so --check can compare files exactly.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(module.eval(), inputs, buffer, input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    return buffer.getvalue()


def export_onnx(model: InvGrayNet, name: str, destination: Path) -> dict:
    """Write both graphs of ``model`` as ``<destination>/<name>.<part>.onnx``; returns
    the registry block that describes them."""
    import onnx

    block: dict = {"opset": OPSET, "exported_with": {"torch": torch.__version__, "onnx": onnx.__version__},
                   "symbol_planes": model.cfg.symbol_planes,
                   "symbol_stride": model.cfg.symbol_stride, "encoder_halo": ENCODER_HALO,
                   "decoder_halo": decoder_halo(model)}
    for part in PARTS:
        data = graph_bytes(model, part)
        filename = f"{name}.{part}.onnx"
        (destination / filename).write_bytes(data)
        block[part] = {"file": filename, "sha256": hashlib.sha256(data).hexdigest()}
    return block


def check_reproduced(model: InvGrayNet, block: dict, folder: Path) -> list[str]:
    """Problems found comparing the bundled graphs with a fresh export (empty: none)."""
    problems = []
    for part in (part for part in PARTS if part in block):  # a retired model keeps its decoder only
        bundled = (folder / block[part]["file"]).read_bytes()
        if hashlib.sha256(bundled).hexdigest() != block[part]["sha256"]:
            problems.append(f"{block[part]['file']}: SHA-256 differs from the registry")
        if graph_bytes(model, part) != bundled:
            problems.append(f"{block[part]['file']}: a fresh export of the .pt gives other bytes")
    return problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.export_onnx", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model id (default: every bundled model)")
    parser.add_argument("--check", action="store_true", help="verify the bundled graphs instead of writing them")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("onnx") is None:  # torch's ONNX exporter needs it
        sys.exit("python -m invgray_cli.training.export_onnx needs the onnx package: pip install 'invgray[export]'")
    folder = models_dir()
    registry = read_registry(folder)
    ids = [args.model] if args.model else sorted(registry["models"])
    failed = False
    for model_id in ids:
        model = load_model(model_id)  # an unknown id fails here, with the known ones listed
        entry = registry["models"][model_id]
        name = Path(entry["file"]).stem
        if args.check:
            problems = ["no ONNX graphs recorded"] if "onnx" not in entry else \
                check_reproduced(model, entry["onnx"], folder)
            failed |= bool(problems)
            print(f"{name} ({model_id}): " + ("; ".join(problems) if problems else "ONNX graphs reproduced exactly"))
            continue
        registry["models"][model_id]["onnx"] = export_onnx(model, name, folder)
        print(f"{name} ({model_id}): {name}.encoder.onnx, {name}.decoder.onnx -> {folder}")
    if not args.check:
        write_registry(registry, folder)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
