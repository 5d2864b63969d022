"""The base grayscale image: BT.601 luma exactly as Pillow computes it, stored as a
baseline grayscale JPEG or a lossless PNG."""

from __future__ import annotations

import importlib.util
import io
import struct
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

GrayFormat = Literal["jpg", "png"]
GRAY_FORMATS: tuple[str, ...] = ("jpg", "png")
DEFAULT_QUALITY = 90
MAX_GRAY_PIXELS = 1 << 28  # the residual format's own limit
MAX_JPEG_SIDE = 65_500


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 luma of an (H, W, 3) uint8 RGB array: ``Image.convert("L")``."""
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))


def encode_gray(gray: np.ndarray, fmt: GrayFormat = "jpg", quality: int = DEFAULT_QUALITY,
                exif: bytes | None = None, xmp: bytes | None = None) -> bytes:
    """Bytes of the gray image as a baseline JPEG or PNG, carrying the photo's EXIF and
    XMP when given (the RGB ICC profile stays in the residual: it does not describe gray)."""
    buffer = io.BytesIO()
    image = Image.fromarray(gray, "L")
    options: dict[str, object] = {}
    if exif:
        options["exif"] = exif
    if fmt == "jpg":
        if not 1 <= quality <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {quality}")
        if xmp:
            options["xmp"] = xmp
        image.save(buffer, "JPEG", quality=quality, optimize=True, **options)
    elif fmt == "png":
        if xmp:
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
            options["pnginfo"] = info
        if not oxipng_available():  # a platform without its wheel: zlib's best, about 1 % larger
            image.save(buffer, "PNG", compress_level=9, **options)
            return buffer.getvalue()
        image.save(buffer, "PNG", compress_level=0, **options)  # oxipng deflates it again
        return _recompressed(buffer.getvalue())
    else:
        raise ValueError(f"unknown gray format {fmt!r}")
    return buffer.getvalue()


@cache
def oxipng_available() -> bool:
    return importlib.util.find_spec("oxipng") is not None


def _recompressed(png: bytes) -> bytes:
    """The same PNG (pixels, 8-bit gray type, every chunk) with oxipng's filter and deflate
    search: about 1 % smaller than zlib level 9 on held-out photos, for a few hundredths of a
    second per megapixel (docs/RESULTS.md)."""
    import oxipng

    return oxipng.optimize_from_memory(png, level=2, bit_depth_reduction=False, color_type_reduction=False,
                                       palette_reduction=False, grayscale_reduction=False)


def gray_metadata(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(EXIF, XMP) carried by a gray image file, for the restored photo."""
    with Image.open(io.BytesIO(data)) as image:
        exif = image.info.get("exif") or None
        xmp = image.info.get("xmp") or image.info.get("XML:com.adobe.xmp") or None
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8")
    return exif, xmp


def decode_gray(data: bytes) -> np.ndarray:
    """(H, W) uint8 pixels of a gray image file's bytes, as any decoder shows them.
    Raises ValueError with a one-line reason for anything else."""
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.size[0] * image.size[1] > MAX_GRAY_PIXELS:
                raise ValueError(f"gray image is {image.size[0]}x{image.size[1]}, over the "
                                 f"{MAX_GRAY_PIXELS} pixel limit")
            image.load()
            if image.mode != "L":
                raise ValueError(f"gray image has mode {image.mode}, expected L (8-bit grayscale)")
            return np.asarray(image).copy()
    except UnidentifiedImageError:
        raise ValueError("not a recognised image file") from None
    except (OSError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError, MemoryError,
            ZeroDivisionError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None


def jpeg_round_trip(gray: np.ndarray, quality: int) -> np.ndarray:
    """What a decoder sees after the gray is stored as JPEG at ``quality``.

    Huffman optimisation changes bytes, never pixels, so it is skipped here for speed.
    """
    buffer = io.BytesIO()
    Image.fromarray(gray, "L").save(buffer, "JPEG", quality=quality)
    return decode_gray(buffer.getvalue())
