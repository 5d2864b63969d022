"""invgray on Ray: the driver of ``--engine ray`` (:mod:`.driver`) and, exported here, the
functions and classes for ``Dataset.map_batches`` pipelines of your own (:mod:`.datasets`).
"""

from __future__ import annotations

from invgray_cli.app.cluster.datasets import (
    BatchDecoder,
    BatchEncoder,
    decode_batch,
    encode_batch,
)

# Deprecated names of BatchEncoder and BatchDecoder, kept for code written against them.
Encoder = BatchEncoder
Decoder = BatchDecoder

__all__ = ["BatchDecoder", "BatchEncoder", "Decoder", "Encoder", "decode_batch", "encode_batch"]
