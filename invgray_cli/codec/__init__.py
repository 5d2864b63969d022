"""The codec: photos to (gray image bytes, residual bytes) and back, as arrays and bytes.
No files and no CLI: :mod:`~invgray_cli.codec.encoding` and
:mod:`~invgray_cli.codec.decoding` are the two directions, :mod:`~invgray_cli.codec.symbols`
the payload in either residual format, :mod:`~invgray_cli.codec.effort` the encoder's
extra effort and :mod:`~invgray_cli.codec.rate_control` quality and size targets."""

from invgray_cli.codec.decoding import (
    GrayMismatchError,
    GrayRecompressedWarning,
    NoResidualError,
    decode,
    decode_array,
    decode_photo,
    embedded_residual,
)
from invgray_cli.codec.encoding import (
    DEFAULT_LEVEL,
    Encoded,
    Prepared,
    check_effort,
    check_refinable,
    check_step,
    encode,
    own_y_plane,
    prepare,
    resolve_device,
)
from invgray_cli.codec.symbols import read_symbols, symbol_payload
from invgray_cli.imaging.images import Photo

__all__ = ["DEFAULT_LEVEL", "Encoded", "GrayMismatchError", "GrayRecompressedWarning", "NoResidualError", "Photo",
           "Prepared", "check_effort", "check_refinable", "check_step", "decode", "decode_array", "decode_photo",
           "embedded_residual", "encode", "own_y_plane", "prepare", "read_symbols", "resolve_device", "symbol_payload"]
