"""The bundled models: their registry, ids, export and safe loading.

The weights ship as the ``invgray_models`` package (the repository's ``models/``
folder). ``models/registry.json`` lists every model this release can decode, by
id; a model's id is the first 16 hex digits of SHA-256 over its tensors (names,
dtypes, shapes and bytes, in name order), so it changes whenever a weight does and
is checked on every load.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads lazily: reading the registry (--version, info) must stay fast
    import torch

    from invgray_cli.format.entropy import EntropyTables
    from invgray_cli.model.network import InvGrayNet

REGISTRY_FILE = "registry.json"


class UnknownModelError(LookupError):
    """A residual names a model this installation does not have."""


def weights_id(state_dict: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def models_dir() -> Path:
    """Where the bundled weights, their ONNX graphs and the registry are installed."""
    return Path(str(resources.files("invgray_models")))



def registry() -> dict:
    return json.loads((models_dir() / REGISTRY_FILE).read_text())


def default_model_id() -> str:
    return registry()["default"]


def levels(model_id: str) -> dict[str, float]:
    """The model's named rate levels: quantisation steps chosen on the validation set."""
    return dict(registry()["models"][model_id].get("levels", {"default": 1.0}))


def level_step(model_id: str, level: str) -> float:
    named = levels(model_id)
    if level not in named:
        raise ValueError(f"unknown level {level!r} (model {model_id} has {', '.join(named)})")
    return float(named[level])


def known_model_ids() -> list[str]:
    return sorted(registry()["models"])


def model_entry(model_id: str) -> dict:
    """The registry's record of a bundled model; UnknownModelError when there is none."""
    entries = registry()["models"]
    if model_id not in entries:
        raise UnknownModelError(
            f"residual was made with model {model_id}, which this invgray does not have "
            f"(known: {', '.join(sorted(entries))}); install the invgray release that made it")
    return entries[model_id]


def combined_id(network_id: str, tables: EntropyTables) -> str:
    """A model's id when it codes with entropy tables (format 2): the network's id and
    the tables, hashed together, so a file names the exact tables that coded it."""
    return hashlib.sha256(bytes.fromhex(network_id) + tables.digest()).hexdigest()[:16]


def format_version(model_id: str) -> int:
    """The residual format a bundled model writes: 2 with entropy tables, else 1."""
    return 2 if "entropy" in model_entry(model_id) else 1


@lru_cache(maxsize=4)
def entropy_tables(model_id: str) -> EntropyTables:
    """The frozen tables of a format-2 model, checked against its id."""
    from invgray_cli.format.entropy import EntropyTables

    entry = model_entry(model_id)
    if "entropy" not in entry:
        raise UnknownModelError(f"model {model_id} has no entropy tables (it writes format 1)")
    try:
        tables = EntropyTables.load(models_dir() / entry["entropy"])
    except (OSError, ValueError, KeyError) as exc:
        raise UnknownModelError(f"bundled entropy tables of model {model_id} are damaged ({exc})") from None
    if combined_id(entry["network"], tables) != model_id:
        raise UnknownModelError(f"bundled entropy tables of model {model_id} are damaged (hash mismatch)")
    return tables


@lru_cache(maxsize=4)
def _load_cpu(model_id: str) -> InvGrayNet:
    entry = model_entry(model_id)
    import torch

    from invgray_cli.model.network import InvGrayNet, NetworkConfig

    blob = torch.load(models_dir() / entry["file"], map_location="cpu", weights_only=True)
    model = InvGrayNet(NetworkConfig(**blob["config"]))
    model.load_state_dict(blob["state_dict"])
    actual = weights_id(model.state_dict())
    if actual != entry.get("network", model_id):
        raise UnknownModelError(f"bundled weights for model {model_id} are damaged (hash {actual})")
    if "entropy" in entry:
        entropy_tables(model_id)
    model.model_id = model_id
    return model.eval()


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> InvGrayNet:
    """The bundled model ``model_id`` (default: the current default), in eval mode."""
    import torch

    model = _load_cpu(model_id or default_model_id())
    device = torch.device(device)
    if device.type == "cpu":
        return model
    return _on_device(model_id or default_model_id(), str(device))


@lru_cache(maxsize=4)
def _on_device(model_id: str, device: str) -> InvGrayNet:
    import copy

    return copy.deepcopy(_load_cpu(model_id)).to(device).eval()


def export_weights(model: InvGrayNet, destination: Path) -> str:
    """Write a checkpoint's network as bundle-ready weights; returns the model id."""
    import torch

    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state}, destination)
    return weights_id(state)


def model_id_of(model: InvGrayNet) -> str:
    """The id recorded at load time, else computed from the weights (a network without
    entropy tables: format 1)."""
    return getattr(model, "model_id", None) or weights_id(model.state_dict())
