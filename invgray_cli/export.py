"""Bundle a training checkpoint as a shipped model:
``python -m invgray_cli.export runs/v1/best.pt --name invgray-v1 [--default]``.

Writes ``models/<name>.pt`` (config + state dict, loadable with
``torch.load(weights_only=True)``) and records it in ``models/registry.json`` under
its id. Existing entries stay, so residuals made with older models keep decoding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .network import InvGrayNet, NetworkConfig
from .zoo import REGISTRY_FILE, export_weights

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--name", required=True, help="file stem, e.g. invgray-v1")
    parser.add_argument("--default", action="store_true", help="make it the model new residuals use")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    args = parser.parse_args(argv)

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    model = InvGrayNet(NetworkConfig(**ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    filename = f"{args.name}.pt"
    model_id = export_weights(model, args.models_dir / filename)
    registry_path = args.models_dir / REGISTRY_FILE
    registry = json.loads(registry_path.read_text()) if registry_path.exists() else {"default": None, "models": {}}
    registry["models"][model_id] = {"file": filename, "name": args.name, "checkpoint_step": ckpt["step"]}
    if args.default or registry["default"] is None:
        registry["default"] = model_id
    registry_path.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"{args.name}: model id {model_id} -> {args.models_dir / filename}")


if __name__ == "__main__":
    main()
