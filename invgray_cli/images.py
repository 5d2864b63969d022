"""Image file I/O: reading photos, writing restored colour images, atomic writes.

Processing happens on 8-bit gamma-encoded RGB as the file stores it (sRGB for
untagged files); EXIF orientation is applied on input so the gray and the restored
image are upright.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

COLOUR_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".bmp": "BMP"}


class ImageReadError(ValueError):
    """An input that is not a readable image; the message is one line for users."""


def open_image(data: bytes) -> Image.Image:
    """Open and fully decode image bytes, turning every failure into ImageReadError."""
    if not data:
        raise ImageReadError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(f"image too large ({exc})") from None
    except UnidentifiedImageError:
        raise ImageReadError("not a recognised image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageReadError(f"unreadable image ({exc})") from None
    return image


def photo_to_rgb(image: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB of any Pillow image, upright per its EXIF orientation."""
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not make the photo unreadable
        pass
    if image.mode == "I;16" or image.mode.startswith("I;16"):
        wide = np.asarray(image).astype(np.uint32)
        image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
    elif image.mode in ("I", "F"):
        image = image.convert("L")
    return np.asarray(image.convert("RGB"))


def read_photo(data: bytes) -> np.ndarray:
    return photo_to_rgb(open_image(data))


def save_colour(rgb: np.ndarray, fmt: str) -> bytes:
    """Bytes of an RGB image in Pillow format ``fmt`` (PNG, JPEG q95 4:4:4, WEBP lossless, ...)."""
    buffer = io.BytesIO()
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options = {"quality": 95, "subsampling": 0}
    elif fmt == "WEBP":
        options = {"lossless": True}
    Image.fromarray(rgb, "RGB").save(buffer, fmt, **options)
    return buffer.getvalue()


def colour_format_for(path: Path) -> str:
    try:
        return COLOUR_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"{path}: unknown output extension {path.suffix!r} "
                         f"(use one of {', '.join(sorted(COLOUR_FORMATS))})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, data: bytes, overwrite: bool = False) -> None:
    """Write to a temporary file beside ``path``, then rename it into place, so a
    killed process never leaves a partial file. Refuses to replace an existing
    file unless ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (use --force to overwrite)")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would surprise users
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the path appeared meanwhile: never clobber
            except FileExistsError:
                raise FileExistsError(f"{path}: already exists (use --force to overwrite)") from None
            except OSError:  # file system without hard links
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
