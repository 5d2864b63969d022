"""invgray: grayscale images that restore to colour from a tiny neural residual.

This package is the library as well as the ``invgray`` command line. Its layers, each
importing only those listed before it (``pyproject.toml`` states the contract that
``lint-imports`` checks):

1. :mod:`~invgray_cli.format`: the residual container, its payloads, embedding, the entropy coder;
2. :mod:`~invgray_cli.imaging`: the gray image, image files, the JPEG luma transcode, metrics;
3. :mod:`~invgray_cli.model`: the network and its code-length model (torch);
4. :mod:`~invgray_cli.engines`: the model registry, onnxruntime and torch engines, tiling;
5. :mod:`~invgray_cli.codec`: encode and decode, arrays and bytes in and out;
6. :mod:`~invgray_cli.app`: the CLI, batches, reports, object storage, the Ray cluster;

and :mod:`~invgray_cli.training`, which nothing here imports.

``from invgray_cli import encode, decode`` gives the codec API; it is imported on first
use, so the CLI starts fast, and the CPU path never imports torch.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from invgray_cli.app.cluster import BatchDecoder, BatchEncoder, Decoder, Encoder, decode_batch, encode_batch
    from invgray_cli.codec import (
        Encoded,
        Photo,
        decode,
        decode_array,
        decode_photo,
        encode,
    )

_LAZY = {"encode", "decode", "decode_array", "decode_photo", "Encoded", "Photo"}
# For Ray Data pipelines (ds.map_batches): invgray_cli.app.cluster, which imports no Ray itself.
_BATCHES = {"encode_batch", "decode_batch", "BatchEncoder", "BatchDecoder", "Encoder", "Decoder"}


@cache
def _installed_version() -> str:
    # importlib.metadata costs about 20 ms of a command's start: read only when asked for
    from importlib import metadata

    try:
        return metadata.version("invgray")
    except metadata.PackageNotFoundError:  # a source tree used without installing it
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _installed_version()
    if name in _LAZY:
        import invgray_cli.codec as codec

        return getattr(codec, name)
    if name in _BATCHES:
        from invgray_cli.app import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'invgray_cli' has no attribute {name!r}")


__all__ = ["BatchDecoder", "BatchEncoder", "Decoder", "Encoded", "Encoder", "Photo", "__version__", "decode",
           "decode_array", "decode_batch", "decode_photo", "encode", "encode_batch"]
