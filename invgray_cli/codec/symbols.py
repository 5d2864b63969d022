"""The integer symbols of a residual and its payload bytes, in whichever format the
model writes: range-coded against the model's entropy tables (format 2), or packed
with zstd (format 1, and any network this installation does not ship)."""

from __future__ import annotations

import numpy as np

from invgray_cli.engines.registry import ModelSpec, bundled_spec
from invgray_cli.format.container import (
    PACKED,
    RANGE_CODED,
    REFINED,
    InvalidResidualError,
    Residual,
)
from invgray_cli.format.entropy import (
    EntropyCodingError,
    decode_symbols,
    encode_symbols,
)
from invgray_cli.format.packing import (
    PackingError,
    pack_symbols,
    raw_size_of,
    unpack_symbols,
)


def symbol_payload(spec: ModelSpec | None, symbols: np.ndarray | None, step: float) -> tuple[int, bytes, int]:
    """(format version, payload, raw size) of the symbols as the model writes them
    (``spec`` None: a network that is not bundled, format 1). ``symbols=None``: a gray
    photo, no payload."""
    version = spec.format_version if spec is not None else PACKED
    if symbols is None:
        return version, b"", 0
    if version == RANGE_CODED:
        return version, encode_symbols(symbols, step, spec.tables()), 0
    payload = pack_symbols(symbols)
    return version, payload, raw_size_of(payload)


def read_symbols(header: Residual, spec: ModelSpec | None = None) -> np.ndarray:
    """The integer symbols of a residual, whichever format coded them. ``spec``: the
    header's model, where the caller has resolved it already."""
    spec = spec or bundled_spec(header.model_id)
    if header.version in (RANGE_CODED, REFINED):  # format 3 codes its symbols as format 2 does
        if spec is None:
            raise InvalidResidualError(f"model {header.model_id} is not bundled: no entropy tables to decode with")
        try:
            return decode_symbols(header.payload, header.symbol_shape, header.step, spec.tables())
        except EntropyCodingError as exc:
            raise InvalidResidualError(str(exc)) from None
    if spec is not None and spec.format_version == RANGE_CODED:
        raise InvalidResidualError(f"model {header.model_id} writes format 2, but this file says format 1")
    try:
        return unpack_symbols(header.payload, header.symbol_shape, header.raw_size)
    except PackingError as exc:
        raise InvalidResidualError(str(exc)) from None


__all__ = ["read_symbols", "symbol_payload"]
