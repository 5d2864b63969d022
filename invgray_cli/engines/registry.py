"""The bundled models: the registry that lists them, one cached :class:`ModelSpec` per
model, content-addressed ids, and safe loading of their weights.

The weights ship as the ``invgray_models`` package (the repository's ``models/``
folder). ``models/registry.json`` lists every model this release can decode, by id; a
network's id is the first 16 hex digits of SHA-256 over its tensors (names, dtypes,
shapes and bytes, in name order), and a model that codes with entropy tables (format 2)
or with a probability model that reads the gray (format 4) hashes those in too, so an id changes whenever a weight or a table does and is
checked on every load. The registry is read once per process and each model resolved
once: a decode asks for its model's spec and finds everything there.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy and torch load lazily: --version and --help read the registry, and a CPU decode
    import torch  # never needs torch

    from invgray_cli.format.entropy import EntropyTables
    from invgray_cli.model.integer_prior import IntegerPrior
    from invgray_cli.model.network import InvGrayNet

REGISTRY_FILE = "registry.json"
ONNX_PREFIX = "model."  # the exported graphs name the network's tensors model.<state dict name>


class UnknownModelError(LookupError):
    """A residual names a model this installation does not have, or its files are damaged."""


def decode_only(model_id: str) -> UnknownModelError:
    """The error for encoding with a model that ships only what decoding its files needs."""
    return UnknownModelError(f"model {model_id} is kept to decode the files it wrote, not to encode "
                             "(its encoder no longer ships); encode with the default model")


def models_dir() -> Path:
    """Where the bundled weights, their ONNX graphs and the registry are installed."""
    return Path(str(resources.files("invgray_models")))


def read_registry(folder: Path | None = None) -> dict[str, Any]:
    """A fresh copy of a registry file (default: the installed one); an empty registry
    where a models folder has none yet."""
    path = (folder or models_dir()) / REGISTRY_FILE
    if not path.exists() and folder is not None:
        return {"default": None, "models": {}}
    return json.loads(path.read_text())


def write_registry(data: Mapping[str, Any], folder: Path | None = None) -> None:
    """Write a registry file (the export tools); this process reads it afresh from now on."""
    ((folder or models_dir()) / REGISTRY_FILE).write_text(json.dumps(data, indent=2) + "\n")
    _installed.cache_clear()
    _spec.cache_clear()


@lru_cache(maxsize=1)
def _installed() -> dict[str, Any]:
    return read_registry()


def default_model_id() -> str:
    return _installed()["default"]


def known_model_ids() -> list[str]:
    return sorted(_installed()["models"])


@dataclass(frozen=True, eq=False)  # one instance per model (model_spec caches it): hashed by identity
class ModelSpec:
    """Everything the codec and the engines need to know about one bundled model."""

    model_id: str
    name: str
    network_id: str  # the id of the network alone (equal to model_id for format 1)
    levels: Mapping[str, float]  # named rate levels -> quantisation steps
    weights_file: str | None  # the whole network's torch weights (.pt): encodes, refines, exports
    onnx: Mapping[str, Any] | None  # the ONNX graphs and their geometry, for the onnxruntime engine
    tables_file: str | None  # the frozen entropy tables of a format-2 model
    config: Mapping[str, Any] | None = None  # the network's configuration, for a model kept for decoding only
    prior_file: str | None = None  # the integer probability model of a format-4 model

    @property
    def format_version(self) -> int:
        """The residual format its files are written in: range-coded under a prior that reads
        the gray, range-coded with tables, else packed."""
        from invgray_cli.format.container import CONDITIONAL, PACKED, RANGE_CODED

        if self.prior_file is not None:
            return CONDITIONAL
        return RANGE_CODED if self.tables_file is not None else PACKED

    @property
    def encodes(self) -> bool:
        """False for a model kept only to decode the files it once wrote (no encoder ships)."""
        return self.weights_file is not None

    def level_step(self, level: str) -> float:
        if level not in self.levels:
            raise ValueError(f"unknown level {level!r} (model {self.model_id} has {', '.join(self.levels)})")
        return float(self.levels[level])

    def level_of(self, step: float) -> str | None:
        """The named level whose step this is, if any."""
        return next((name for name, value in self.levels.items() if abs(value - step) <= 1e-6 * value), None)

    def graph(self, part: str) -> bytes:
        """The bytes of the model's ``encoder`` or ``decoder`` ONNX graph, checked by SHA-256."""
        record = self.onnx[part]
        data = (models_dir() / record["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != record["sha256"]:
            raise UnknownModelError(f"bundled ONNX graph {record['file']} is damaged (SHA-256 differs)")
        return data

    def tables(self) -> EntropyTables:
        """The frozen tables of a format-2 model, checked against its id."""
        return _tables(self)

    def prior(self) -> IntegerPrior:
        """The integer probability model of a format-4 model, checked against its id."""
        return _prior(self)

    def network(self, device: torch.device | str = "cpu") -> InvGrayNet:
        """The torch network, in eval mode (one copy per device, checked against its id)."""
        import torch

        device = torch.device(device)
        return _network(self) if device.type == "cpu" else _network_on(self, str(device))


def model_spec(model_id: str | None = None) -> ModelSpec:
    """The bundled model ``model_id`` (default: the current default); UnknownModelError
    when this installation has none."""
    return _spec(model_id or default_model_id())


@lru_cache(maxsize=16)
def _spec(model_id: str) -> ModelSpec:
    entries = _installed()["models"]
    if model_id not in entries:
        raise UnknownModelError(
            f"residual was made with model {model_id}, which this invgray does not have "
            f"(known: {', '.join(sorted(entries))}); install the invgray release that made it")
    entry = entries[model_id]
    return ModelSpec(model_id, entry.get("name", model_id), entry.get("network", model_id),
                     dict(entry.get("levels", {"default": 1.0})), entry.get("file"), entry.get("onnx"),
                     entry.get("entropy"), entry.get("config"), entry.get("prior"))


def bundled_spec(model_id: str) -> ModelSpec | None:
    """The spec of a bundled model; None for a network this installation does not ship
    (a model under training writes format 1)."""
    return model_spec(model_id) if model_id in _installed()["models"] else None


def levels(model_id: str) -> dict[str, float]:
    """The model's named rate levels: quantisation steps chosen on the validation set."""
    return dict(model_spec(model_id).levels)


def entropy_tables(model_id: str) -> EntropyTables:
    return model_spec(model_id).tables()


def load_model(model_id: str | None = None, device: torch.device | str = "cpu") -> InvGrayNet:
    """The bundled model ``model_id`` (default: the current default), in eval mode."""
    return model_spec(model_id).network(device)


def combined_id(network_id: str, coder: EntropyTables | IntegerPrior) -> str:
    """A model's id when it codes with entropy tables (format 2) or an integer prior
    (format 4): the network's id and the coder's digest, hashed together, so a file names
    the exact probabilities that coded it."""
    return hashlib.sha256(bytes.fromhex(network_id) + coder.digest()).hexdigest()[:16]


def weights_id(state_dict: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def _verified(spec: ModelSpec, file: str, load: Callable[[Path], Any], what: str,
              errors: tuple[type[Exception], ...]) -> Any:
    """A bundled file of ``spec`` (its tables or its prior) loaded and checked against the
    model id, which covers it; ``what`` names it in the one-line error."""
    damaged = f"bundled {what} of model {spec.model_id} {'are' if what.endswith('s') else 'is'} damaged"
    try:
        part = load(models_dir() / file)
    except errors as exc:
        raise UnknownModelError(f"{damaged} ({exc})") from None
    if combined_id(spec.network_id, part) != spec.model_id:
        raise UnknownModelError(f"{damaged} (hash mismatch)")
    return part


@lru_cache(maxsize=4)
def _tables(spec: ModelSpec) -> EntropyTables:
    from invgray_cli.format.entropy import EntropyTables

    if spec.tables_file is None:
        raise UnknownModelError(f"model {spec.model_id} has no entropy tables (it writes format 1)")
    return _verified(spec, spec.tables_file, EntropyTables.load, "entropy tables", (OSError, ValueError, KeyError))


@lru_cache(maxsize=4)
def _prior(spec: ModelSpec) -> IntegerPrior:
    from invgray_cli.model.integer_prior import IntegerPrior

    if spec.prior_file is None:
        raise UnknownModelError(f"model {spec.model_id} has no integer prior (it writes format {spec.format_version})")
    return _verified(spec, spec.prior_file, IntegerPrior.load, "prior", (OSError, ValueError, KeyError, SyntaxError))


@lru_cache(maxsize=4)
def _network(spec: ModelSpec) -> InvGrayNet:
    if spec.weights_file is not None:
        model = _whole_network(spec)
    elif spec.config is not None and spec.onnx is not None:
        model = _decoder_only_network(spec)
    else:
        raise UnknownModelError(f"model {spec.model_id} ships without torch weights")
    if spec.tables_file is not None:
        spec.tables()
    if spec.prior_file is not None:
        spec.prior()
    model.model_id = spec.model_id
    return model


def _whole_network(spec: ModelSpec) -> InvGrayNet:
    import torch

    from invgray_cli.model.network import network_from_weights

    model = network_from_weights(torch.load(models_dir() / spec.weights_file, map_location="cpu",
                                            weights_only=True))
    actual = weights_id(model.state_dict())
    if actual != spec.network_id:
        raise UnknownModelError(f"bundled weights for model {spec.model_id} are damaged (hash {actual})")
    return model


def _decoder_only_network(spec: ModelSpec) -> InvGrayNet:
    """The network of a model kept for decoding only, with its decoder's tensors read from
    its decoder graph (checked by its SHA-256): the very tensors its .pt held, bit for bit."""
    try:
        from onnx import load_model_from_string, numpy_helper
    except ImportError:
        raise UnknownModelError(f"decoding model {spec.model_id} with torch needs the onnx package: "
                                "pip install 'invgray[torch]'") from None
    import torch

    from invgray_cli.model.network import network_from_weights

    graph = load_model_from_string(spec.graph("decoder")).graph
    state = {tensor.name.removeprefix(ONNX_PREFIX): torch.from_numpy(numpy_helper.to_array(tensor).copy())
             for tensor in graph.initializer if tensor.name.startswith(ONNX_PREFIX)}
    model = network_from_weights({"config": dict(spec.config), "state_dict": state}, strict=False)
    model.decode_only = True
    return model


@lru_cache(maxsize=4)
def _network_on(spec: ModelSpec, device: str) -> InvGrayNet:
    return copy.deepcopy(_network(spec)).to(device).eval()


def export_weights(model: InvGrayNet, destination: Path) -> str:
    """Write a checkpoint's network as bundle-ready weights; returns the network's id."""
    import torch

    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state}, destination)
    return weights_id(state)


def model_id_of(model: InvGrayNet) -> str:
    """The id recorded at load time, else computed from the weights (a network without
    entropy tables: format 1)."""
    return getattr(model, "model_id", None) or weights_id(model.state_dict())
