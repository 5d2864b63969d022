"""The first bytes that name a file's kind: the gray images invgray writes and its own
residual files. Every module that sniffs a file asks here; plain bytes, no imports, so
the CLI can sniff before it loads numpy."""

from __future__ import annotations

RESIDUAL_MAGIC = b"IGRS"  # a residual file's first four bytes (docs/FORMAT.md)
JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SNIFF_BYTES = len(PNG_SIGNATURE)  # enough of a file's head to tell all three apart


def is_jpeg(head: bytes) -> bool:
    return head.startswith(JPEG_SOI)


def is_png(head: bytes) -> bool:
    return head.startswith(PNG_SIGNATURE)


def is_gray_image(head: bytes) -> bool:
    """A JPEG or PNG, the two kinds of gray file (not necessarily one of invgray's)."""
    return is_jpeg(head) or is_png(head)


def is_residual(head: bytes) -> bool:
    return head.startswith(RESIDUAL_MAGIC)


__all__ = ["JPEG_SOI", "PNG_SIGNATURE", "RESIDUAL_MAGIC", "SNIFF_BYTES", "is_gray_image", "is_jpeg", "is_png",
           "is_residual"]
