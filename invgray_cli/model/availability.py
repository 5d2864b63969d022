"""Whether torch is installed. The CPU product path runs on onnxruntime and never needs
it; CUDA, encoder refinement (effort 2 and 3), training and export come with the
``torch`` extra and ask here first, so that a missing extra is one clear line."""

from __future__ import annotations

from types import ModuleType

TORCH_EXTRA = "pip install 'invgray[torch]'"


class TorchMissingError(ImportError):
    """A feature that needs torch was asked for where torch is not installed."""


def require_torch(feature: str) -> ModuleType:
    """The torch module, or TorchMissingError naming ``feature`` and the extra to install."""
    try:
        import torch
    except ImportError:
        raise TorchMissingError(f"{feature} needs torch, which is not installed: {TORCH_EXTRA}") from None
    return torch
