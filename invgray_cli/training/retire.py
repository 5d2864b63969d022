"""Retire bundled models: keep only what decoding the files they wrote needs.

    python -m invgray_cli.training.retire MODEL_ID [MODEL_ID ...]

A model that is no longer the default never encodes again, but its files must decode
forever, on the CPU and on CUDA. Decoding needs the decoder's ONNX graph (onnxruntime
on the CPU; on CUDA the torch engine reads the decoder's tensors from the same graph,
bit for bit the .pt's) and, for format 2, the entropy tables. So a retired model keeps
``<name>.decoder.onnx``, its tables and its network configuration (in the registry),
and drops its ``.pt`` and ``.encoder.onnx``. The full weights stay in git history:
``git show <commit>:models/<name>.pt`` gives them back to a benchmark that needs them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from invgray_cli.engines.registry import models_dir, read_registry, write_registry


def retire(registry: dict, model_id: str, folder: Path) -> list[str]:
    """Rewrite ``registry``'s entry for ``model_id`` to decode only; returns the files
    the entry no longer names."""
    entry = registry["models"][model_id]
    if model_id == registry["default"]:
        raise SystemExit(f"{model_id} is the default model: it still encodes")
    if "file" not in entry:
        return []
    if "onnx" not in entry:
        raise SystemExit(f"{model_id} has no ONNX graphs to decode with (run export_onnx first)")
    entry["config"] = torch.load(folder / entry["file"], map_location="cpu", weights_only=True)["config"]
    return [entry.pop("file"), entry["onnx"].pop("encoder")["file"]]


def named_files(registry: dict) -> set[str]:
    """Every file some registry entry names."""
    names = set()
    for entry in registry["models"].values():
        names.update(name for name in (entry.get("file"), entry.get("entropy")) if name)
        names.update(part["file"] for part in (entry.get("onnx") or {}).values()
                     if isinstance(part, dict) and "file" in part)
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invgray_cli.training.retire",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("model_ids", nargs="+", metavar="MODEL_ID")
    parser.add_argument("--models-dir", type=Path, default=None, help="default: the installed models folder")
    args = parser.parse_args(argv)
    folder = args.models_dir or models_dir()
    registry = read_registry(folder)
    dropped: set[str] = set()
    for model_id in args.model_ids:
        if model_id not in registry["models"]:
            raise SystemExit(f"unknown model {model_id}")
        dropped.update(retire(registry, model_id, folder))
    write_registry(registry, folder)
    for name in sorted(dropped - named_files(registry)):
        (folder / name).unlink()
        print(f"removed {name}")


if __name__ == "__main__":
    main()
