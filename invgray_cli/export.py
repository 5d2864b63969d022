"""Bundle a training checkpoint as a shipped model:
``python -m invgray_cli.export runs/v4/best.pt --name invgray-v1 --default --levels-val ../shared/data/val/cbsd68``.

Writes ``models/<name>.pt`` (config + state dict, loadable with
``torch.load(weights_only=True)``) and its ONNX graphs for the CPU engine
(``models/<name>.encoder.onnx`` / ``.decoder.onnx``, see :mod:`invgray_cli.export_onnx`;
needs ``pip install 'invgray[export]'``), and records them in ``models/registry.json`` under
its id, with its rate levels: for each level, the quantisation step whose mean
residual size on the validation folder (gray JPEG q90) is closest to, without
exceeding, the level's target bits per pixel. Existing entries stay, so residuals
made with older models keep decoding.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

from .export_onnx import export_onnx
from .network import InvGrayNet
from .train import list_images, load_rgb, read_checkpoint
from .validation import validate
from .zoo import REGISTRY_FILE, export_weights

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True, help="file stem, e.g. invgray-v1")
    parser.add_argument("--default", action="store_true", help="make it the model new residuals use")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--levels-val", type=Path, help="validation folder that sets the rate levels")
    parser.add_argument("--level-bpp", nargs="+", default=["low=0.01", "default=0.03", "high=0.08", "max=0.15"],
                        metavar="NAME=BPP", help="residual bits per pixel each level aims at on validation")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("onnx") is None:  # torch's ONNX exporter needs it
        sys.exit("python -m invgray_cli.export needs the onnx package: pip install 'invgray[export]'")

    model, ckpt = read_checkpoint(args.checkpoint)
    filename = f"{args.name}.pt"
    model_id = export_weights(model, args.models_dir / filename)
    registry_path = args.models_dir / REGISTRY_FILE
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {"default": None, "models": {}}
    entry = {"file": filename, "name": args.name, "checkpoint_step": ckpt["step"]}
    entry["onnx"] = export_onnx(model, args.name, args.models_dir)
    if args.levels_val:
        targets = {name: float(bpp) for name, bpp in (item.split("=") for item in args.level_bpp)}
        entry["levels"], entry["validation"] = choose_levels(model, args.levels_val, targets)
    registry["models"][model_id] = entry
    if args.default or registry["default"] is None:
        registry["default"] = model_id
    registry_path.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"{args.name}: model id {model_id} -> {args.models_dir / filename}")


def choose_levels(model: InvGrayNet, folder: Path, targets: dict[str, float]) -> tuple[dict, dict]:
    """Per level, the smallest step (best quality) whose validation bpp meets the
    target, by bisection on log(step); plus the validation figures at each."""
    images = [load_rgb(p) for p in list_images([folder])]
    cache: dict[float, dict[str, float]] = {}

    def measure(step: float) -> dict[str, float]:
        step = float(f"{step:.4g}")
        if step not in cache:
            cache[step] = validate(model, images, quality=90, step=step)
            print(f"  step {step:g}: {cache[step]['val_psnr']:.3f} dB, {cache[step]['val_bpp']:.4f} bpp", flush=True)
        return cache[step]

    levels, figures = {}, {}
    for name, target in targets.items():
        low, high = math.log(0.05), math.log(50.0)  # bpp falls as the step grows
        for _ in range(9):
            middle = (low + high) / 2
            if measure(math.exp(middle))["val_bpp"] <= target:
                high = middle
            else:
                low = middle
        step = float(f"{math.exp(high):.4g}")
        levels[name] = step
        figures[name] = {"step": step, "val_psnr": round(measure(step)["val_psnr"], 3),
                         "val_bpp": round(measure(step)["val_bpp"], 5), "target_bpp": target,
                         "folder": folder.name}
        print(f"{name}: step {step:g}", flush=True)
    return levels, figures


if __name__ == "__main__":
    main()
