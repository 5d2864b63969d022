"""Decoding: a gray image and its residual back to the colour photo. No files, no CLI.

The residual names its model; the model is resolved once (:func:`model_spec`), and the
symbols, the engine and the checks all come from that one spec. A gray that another
program re-saved since encoding decodes best effort, with a warning, where the format
allows it; a residual made for another gray, or one whose refinement layer or
probabilities need the exact gray (a refinement layer, format 4), is refused.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from invgray_cli.codec.refinement import decode_layer
from invgray_cli.codec.symbols import read_symbols
from invgray_cli.engines.engine import Engine, engine_for
from invgray_cli.engines.registry import bundled_spec, model_id_of, model_spec
from invgray_cli.format import embedding
from invgray_cli.format.entropy import EntropyCodingError
from invgray_cli.format.container import (
    RECOMPRESSION_TOLERANCE,
    GrayMismatchError,
    InvalidResidualError,
    Residual,
    gray_fingerprint,
    gray_signature,
    read_residual,
    signature_distance,
)
from invgray_cli.imaging.gray import decode_gray, gray_metadata
from invgray_cli.imaging.images import Photo, photo_to_pil

if TYPE_CHECKING:
    import torch

    from invgray_cli.engines.batcher import NetworkBatcher
    from invgray_cli.model.network import InvGrayNet

    Model = InvGrayNet | Engine


class GrayRecompressedWarning(UserWarning):
    """The gray's pixels changed slightly since encoding (lossy re-compression): the
    decode goes ahead, best effort."""


class NoResidualError(InvalidResidualError):
    """Decoding a gray image alone, but it carries no embedded residual."""


def _as_gray(gray: bytes | Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(gray, (bytes, bytearray, memoryview)):
        return decode_gray(bytes(gray))
    if isinstance(gray, Image.Image):
        if gray.mode != "L":
            raise ValueError(f"gray image has mode {gray.mode}, expected L (8-bit grayscale)")
        return np.asarray(gray)
    array = np.asarray(gray)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8 gray array, got {array.dtype} {array.shape}")
    return array


def decode_photo(gray: bytes | Image.Image | np.ndarray, residual: bytes | None = None, *,
                 device: str | torch.device = "cpu", model: Model | None = None,
                 batcher: NetworkBatcher | None = None) -> Photo:
    """The restored :class:`Photo` (colour, alpha, EXIF/XMP from the gray file, ICC from
    the residual). With ``residual=None`` the residual embedded in the gray file is used.
    A ``batcher`` (folder runs) runs the network for residuals made with its model."""
    if residual is None:
        residual = embedded_residual(gray)
    pixels = _as_gray(gray)
    height, width = pixels.shape
    header = read_residual(residual, image_size=(width, height))
    notes: list[str] = []
    if header.gray_fingerprint != gray_fingerprint(pixels):
        distance = signature_distance(header.gray_signature, gray_signature(pixels))
        if header.refined:  # its corrections are integers of these very pixels
            raise GrayMismatchError("residual has a refinement layer for other gray pixels (the gray was "
                                    "changed or re-saved since encoding; a refinement needs the exact gray)")
        if distance > RECOMPRESSION_TOLERANCE:
            raise GrayMismatchError("residual does not belong to this gray image (gray pixels differ "
                                    "from the ones it was encoded with)")
        if header.exact_gray_only:  # its probabilities are computed from these very pixels
            raise GrayMismatchError("gray was re-saved or changed since encoding, and this residual "
                                    f"(format {header.version}) was coded given the exact gray pixels: "
                                    "decode with the gray file invgray wrote")
        notes.append("gray pixels differ slightly from the encoded ones (re-compressed?): "
                     "best-effort decode, colour may be less accurate")
        warnings.warn(notes[-1], GrayRecompressedWarning, stacklevel=2)
    exif, xmp = gray_metadata(bytes(gray)) if isinstance(gray, (bytes, bytearray, memoryview)) else (None, None)
    alpha = np.frombuffer(header.alpha, np.uint8).reshape(height, width) if header.alpha else None
    colour = _restore_colour(header, pixels, device, model, batcher)
    return Photo(colour, alpha, exif, header.icc_profile or None, xmp, notes)


def _restore_colour(header: Residual, pixels: np.ndarray, device: str | torch.device,
                    model: Model | None, batcher: NetworkBatcher | None = None) -> np.ndarray:
    if header.monochrome:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if not header.uses_network:
        return _refined(header, pixels, None)
    if batcher is not None and model is None and model_id_of(batcher.model) == header.model_id:
        model = batcher.model
    else:
        batcher = None
    spec = model_spec(header.model_id) if model is None else bundled_spec(header.model_id)
    engine = engine_for(spec, device, model)
    if engine.model_id != header.model_id:
        raise InvalidResidualError(f"residual needs model {header.model_id}, not {engine.model_id}")
    if (header.planes, header.cell) != (engine.symbol_planes, engine.symbol_stride):
        raise InvalidResidualError(f"residual declares {header.planes} symbol planes of {header.cell} px cells, "
                                   f"model {header.model_id} uses {engine.symbol_planes} of "
                                   f"{engine.symbol_stride} px")
    symbols = read_symbols(header, spec, pixels)
    if batcher is not None:
        prediction = batcher.synthesise(pixels, symbols, header.step)
    else:
        prediction = engine.synthesise(pixels, symbols, header.step)
    return _refined(header, pixels, prediction) if header.refined else prediction


def _refined(header: Residual, pixels: np.ndarray, prediction: np.ndarray | None) -> np.ndarray:
    try:
        return decode_layer(header.refinement_space, header.refinement_step, header.refinement, pixels, prediction)
    except EntropyCodingError as exc:
        raise InvalidResidualError(str(exc)) from None


def decode_array(gray: bytes | Image.Image | np.ndarray, residual: bytes | None = None, *,
                 device: str | torch.device = "cpu", model: Model | None = None) -> np.ndarray:
    """(H, W, 3) uint8 colour restored from a gray image and its residual file."""
    return decode_photo(gray, residual, device=device, model=model).rgb


def embedded_residual(gray: bytes | Image.Image | np.ndarray) -> bytes:
    """The residual embedded in a gray image file; NoResidualError when there is none."""
    found = embedding.extract(bytes(gray)) if isinstance(gray, (bytes, bytearray, memoryview)) else None
    if found is None:
        raise NoResidualError("no residual embedded in this gray image (a tool may have stripped it)")
    return found


def decode(gray: bytes | Image.Image | np.ndarray, residual: bytes | None = None, *,
           device: str | torch.device = "cpu", model: Model | None = None) -> Image.Image:
    """The restored photo as a PIL image: RGB, or RGBA when the original had alpha;
    EXIF, XMP and ICC profile in ``info``."""
    return photo_to_pil(decode_photo(gray, residual, device=device, model=model))


__all__ = ["GrayMismatchError", "GrayRecompressedWarning", "NoResidualError", "decode", "decode_array",
           "decode_photo", "embedded_residual"]
