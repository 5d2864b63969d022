"""invgray: grayscale images that restore to colour from a tiny neural residual.

``from invgray_cli import encode, decode`` gives the codec API; torch is imported
only when one of them is first used, so the CLI starts fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "1.0.0"

if TYPE_CHECKING:
    from invgray_cli.app.cluster import Decoder, Encoder, decode_batch, encode_batch
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
_BATCHES = {"encode_batch", "decode_batch", "Encoder", "Decoder"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import invgray_cli.codec as codec

        return getattr(codec, name)
    if name in _BATCHES:
        from invgray_cli.app import cluster

        return getattr(cluster, name)
    raise AttributeError(f"module 'invgray_cli' has no attribute {name!r}")


__all__ = ["Decoder", "Encoded", "Encoder", "Photo", "__version__", "decode", "decode_array", "decode_batch",
           "decode_photo", "encode", "encode_batch"]
