"""The integer symbols of a residual and its payload bytes, in whichever format the
model writes: range-coded under a probability model that reads the decoded gray
(format 4), range-coded against the model's entropy tables (formats 2 and 3), or packed
with zstd (format 1, and any network this installation does not ship)."""

from __future__ import annotations

import numpy as np

from invgray_cli.engines.registry import ModelSpec, bundled_spec
from invgray_cli.format.container import (
    CONDITIONAL,
    PACKED,
    RANGE_CODED,
    REFINED,
    InvalidResidualError,
    Residual,
    gray_fingerprint,
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
from invgray_cli.model import prior_coding


def symbol_payload(spec: ModelSpec | None, symbols: np.ndarray | None, step: float,
                   gray: np.ndarray | None = None) -> tuple[int, bytes, int]:
    """(format version, payload, raw size) of the symbols as the model writes them
    (``spec`` None: a network that is not bundled, format 1). ``symbols=None``: a gray
    photo, no payload. ``gray``: the decoded gray, which a format-4 model's probabilities read."""
    version = spec.format_version if spec is not None else PACKED
    if symbols is None:
        return version, b"", 0
    if version == CONDITIONAL:
        if gray is None:
            raise ValueError(f"model {spec.model_id} codes its symbols given the decoded gray: pass it")
        return version, prior_coding.encode_symbols(spec.prior(), gray, symbols, step), 0
    if version == RANGE_CODED:
        return version, encode_symbols(symbols, step, spec.tables()), 0
    payload = pack_symbols(symbols)
    return version, payload, raw_size_of(payload)


def read_symbols(header: Residual, spec: ModelSpec | None = None, gray: np.ndarray | None = None) -> np.ndarray:
    """The integer symbols of a residual, whichever format coded them. ``spec``: the
    header's model, where the caller has resolved it already; ``gray``: the decoded gray
    the residual was made for (format 4 needs it; its fingerprint is checked here)."""
    spec = spec or bundled_spec(header.model_id)
    if header.version in (RANGE_CODED, REFINED, CONDITIONAL) and spec is None:
        raise InvalidResidualError(f"model {header.model_id} is not bundled: no probability model to decode with")
    if header.version != PACKED and spec.format_version != (CONDITIONAL if header.version == CONDITIONAL
                                                            else RANGE_CODED):
        raise InvalidResidualError(f"model {header.model_id} writes format {spec.format_version}, "
                                   f"but this file says format {header.version}")
    try:
        if header.version == CONDITIONAL:
            if gray is None:
                raise InvalidResidualError("a format-4 residual decodes only with its gray")
            if gray_fingerprint(gray) != header.gray_fingerprint:
                raise InvalidResidualError("the gray's pixels are not the ones this residual was coded with")
            return prior_coding.decode_symbols(spec.prior(), gray, header.payload, header.symbol_shape, header.step)
        if header.version in (RANGE_CODED, REFINED):  # format 3 codes its symbols as format 2 does
            return decode_symbols(header.payload, header.symbol_shape, header.step, spec.tables())
    except EntropyCodingError as exc:
        raise InvalidResidualError(str(exc)) from None
    if spec is not None and spec.format_version != PACKED:
        raise InvalidResidualError(f"model {header.model_id} writes format {spec.format_version}, "
                                   "but this file says format 1")
    try:
        return unpack_symbols(header.payload, header.symbol_shape, header.raw_size)
    except PackingError as exc:
        raise InvalidResidualError(str(exc)) from None


__all__ = ["read_symbols", "symbol_payload"]
