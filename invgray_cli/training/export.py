"""Bundle a training checkpoint as a shipped model:
``python -m invgray_cli.training.export runs/v4/best.pt --name invgray-v1 --default --levels-val ../shared/data/val/cbsd68``.

Writes ``models/<name>.pt`` (config + state dict, loadable with
``torch.load(weights_only=True)``) and its ONNX graphs for the CPU engine
(``models/<name>.encoder.onnx`` / ``.decoder.onnx``, see :mod:`invgray_cli.training.export_onnx`;
needs ``pip install 'invgray[export]'``), and records them in ``models/registry.json`` under
its id, with its rate levels: for each level, the quantisation step whose mean
residual size on the validation folder (gray JPEG q90) is closest to, without
exceeding, the level's target bits per pixel. Existing entries stay, so residuals
made with older models keep decoding.

An invgray-v2 checkpoint (``train_v2``) brings its integer prior along:
``models/<name>.prior.npz``, and the model writes format 4 (its id covers the network
and the prior).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import shutil
import sys
from pathlib import Path

import torch

from invgray_cli.engines.registry import (
    combined_id,
    export_weights,
    read_registry,
    weights_id,
    write_registry,
)
from invgray_cli.format.entropy import EntropyTables
from invgray_cli.model.conditional import FAMILY as CONDITIONAL_FAMILY
from invgray_cli.model.conditional import conditional_from_weights
from invgray_cli.model.integer_prior import IntegerPrior
from invgray_cli.model.network import InvGrayNet
from invgray_cli.training.checkpoints import read_checkpoint
from invgray_cli.training.data import list_images, load_rgb
from invgray_cli.training.export_onnx import export_onnx
from invgray_cli.training.validation import PayloadBytes, prior_coder, table_coder, validate

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"  # the repository's models/ (invgray_models)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True, help="file stem, e.g. invgray-v1")
    parser.add_argument("--default", action="store_true", help="make it the model new residuals use")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--levels-val", type=Path, help="validation folder that sets the rate levels")
    parser.add_argument("--entropy", type=Path, help="entropy tables (python -m invgray_cli.training.tables): the "
                        "model then writes format 2, and its id covers the network and the tables")
    parser.add_argument("--level-bpp", nargs="+", default=["low=0.01", "default=0.03", "high=0.08", "max=0.15"],
                        metavar="NAME=BPP", help="residual bits per pixel each level aims at on validation")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("onnx") is None:  # torch's ONNX exporter needs it
        sys.exit("python -m invgray_cli.training.export needs the onnx package: pip install 'invgray[export]'")

    model, ckpt, prior = read_any_checkpoint(args.checkpoint)
    if prior is not None and args.entropy:
        parser.error("an invgray-v2 checkpoint codes with its own prior: --entropy does not apply")
    registry = read_registry(args.models_dir)
    network_id = weights_id({k: v.detach() for k, v in model.state_dict().items()})
    bundled = [e for i, e in registry["models"].items()
               if e.get("network", i) == network_id and "onnx" in e and "file" in e]  # not a retired one
    if bundled:  # the same network with other tables: share its weights and graphs
        entry = {"file": bundled[0]["file"], "name": args.name, "onnx": bundled[0]["onnx"]}
        print(f"network {network_id} is already bundled as {bundled[0]['file']}: reused")
    else:
        filename = f"{args.name}.pt"
        export_weights(model, args.models_dir / filename)
        entry = {"file": filename, "name": args.name, "onnx": export_onnx(model, args.name, args.models_dir)}
    entry["checkpoint_step"] = ckpt.get("step") or (bundled[0].get("checkpoint_step") if bundled else None)
    model_id, payload_bytes = network_id, None
    if args.entropy:
        tables = EntropyTables.load(args.entropy)
        tables_file = f"{args.name}.entropy.npz"
        if args.entropy.resolve() != (args.models_dir / tables_file).resolve():
            shutil.copyfile(args.entropy, args.models_dir / tables_file)
        model_id = combined_id(network_id, tables)
        entry |= {"network": network_id, "entropy": tables_file}
        payload_bytes = table_coder(tables)
    if prior is not None:
        prior_file = f"{args.name}.prior.npz"
        prior.save(args.models_dir / prior_file)
        model_id = combined_id(network_id, prior)
        entry |= {"network": network_id, "prior": prior_file}
        payload_bytes = prior_coder(prior)
    if args.levels_val:
        targets = {name: float(bpp) for name, bpp in (item.split("=") for item in args.level_bpp)}
        entry["levels"], entry["validation"] = choose_levels(model, args.levels_val, targets, payload_bytes)
    registry["models"][model_id] = entry
    if args.default or registry["default"] is None:
        registry["default"] = model_id
    write_registry(registry, args.models_dir)
    print(f"{args.name}: model id {model_id} -> {args.models_dir / entry['file']}"
          + (f" + {entry['entropy']}" if args.entropy else "") + (f" + {entry['prior']}" if prior else ""))


def read_any_checkpoint(path: Path) -> tuple[InvGrayNet, dict, IntegerPrior | None]:
    """The network of a training checkpoint (invgray-v1's, or invgray-v2's with its integer
    prior) or of bundled weights, in eval mode; the file's contents; the prior, if any."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    config = blob.get("config") or {}
    if config.get("family") == CONDITIONAL_FAMILY:
        conditional = conditional_from_weights(blob)
        return conditional.net.eval(), blob, conditional.prior.export()
    model, blob = read_checkpoint(path)
    return model, blob, None


def choose_levels(model: InvGrayNet, folder: Path, targets: dict[str, float],
                  payload_bytes: PayloadBytes | None = None) -> tuple[dict, dict]:
    """Per level, the smallest step (best quality) whose validation bpp meets the
    target, by bisection on log(step); plus the validation figures at each."""
    images = [load_rgb(p) for p in list_images([folder])]
    cache: dict[float, dict[str, float]] = {}

    def measure(step: float) -> dict[str, float]:
        step = float(f"{step:.4g}")
        if step not in cache:
            cache[step] = validate(model, images, quality=90, step=step, payload_bytes=payload_bytes)
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
