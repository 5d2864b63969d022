"""Carrying a residual file inside its gray image (specified in docs/FORMAT.md).

JPEG: APP11 marker segments right after the JFIF header, each holding
``INVGRAY\\0``, a u16 big-endian sequence number, a u16 big-endian segment count and
up to 65 521 bytes of the residual file. PNG: one private, ancillary, safe-to-copy
``igRs`` chunk before IEND holding the residual file. Viewers skip both; the pixels
are those of the plain gray image, byte for byte the same entropy-coded data.
"""

from __future__ import annotations

import struct
import zlib

from invgray_cli.format.signatures import JPEG_SOI, PNG_SIGNATURE, is_jpeg, is_png

JPEG_SIGNATURE = b"INVGRAY\x00"
APP11 = 0xEB
_JPEG_SEGMENT_HEADER = struct.Struct(">8sHH")
MAX_JPEG_CHUNK = 0xFFFF - 2 - _JPEG_SEGMENT_HEADER.size
PNG_CHUNK = b"igRs"
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}


class EmbeddingError(ValueError):
    """The gray image's container structure is broken or its embedded residual is incomplete."""


def embed(gray: bytes, residual: bytes) -> bytes:
    """The gray image file with ``residual`` embedded (replacing any earlier one)."""
    if is_png(gray):
        return _embed_png(gray, residual)
    if is_jpeg(gray):
        return _embed_jpeg(gray, residual)
    raise EmbeddingError("gray image is neither JPEG nor PNG")


def extract(gray: bytes) -> bytes | None:
    """The embedded residual file, or None when the image carries none."""
    if is_png(gray):
        chunks = [data for kind, data, _, _ in _png_chunks(gray) if kind == PNG_CHUNK]
        if len(chunks) > 1:
            raise EmbeddingError("gray image holds more than one embedded residual")
        return chunks[0] if chunks else None
    if is_jpeg(gray):
        return _extract_jpeg(gray)
    return None


def strip(gray: bytes) -> bytes:
    """The gray image file without its embedded residual."""
    if is_png(gray):
        return PNG_SIGNATURE + b"".join(gray[start:end] for kind, _, start, end in _png_chunks(gray)
                                        if kind != PNG_CHUNK)
    if is_jpeg(gray):
        return _rebuild_jpeg(gray, [])
    raise EmbeddingError("gray image is neither JPEG nor PNG")


# --- JPEG -------------------------------------------------------------------------

def _jpeg_header_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int]:
    """(marker, start, end) of every segment between SOI and SOS, and SOS's offset."""
    segments, pos = [], 2
    while True:
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise EmbeddingError("gray JPEG is malformed (no scan found)")
        while pos + 2 < len(data) and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if pos + 2 > len(data):
            raise EmbeddingError("gray JPEG is malformed (no scan found)")
        marker = data[pos + 1]
        if marker == 0xDA:
            return segments, pos
        if marker in _STANDALONE_MARKERS:
            segments.append((marker, pos, pos + 2))
            pos += 2
            continue
        if pos + 4 > len(data):
            raise EmbeddingError("gray JPEG is truncated inside a header segment")
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise EmbeddingError("gray JPEG has a segment running past its end")
        segments.append((marker, pos, end))
        pos = end


def _is_ours(data: bytes, marker: int, start: int, end: int) -> bool:
    return marker == APP11 and data[start + 4:start + 4 + len(JPEG_SIGNATURE)] == JPEG_SIGNATURE


def _rebuild_jpeg(data: bytes, new_segments: list[bytes]) -> bytes:
    segments, sos = _jpeg_header_segments(data)
    kept = [(m, s, e) for m, s, e in segments if not _is_ours(data, m, s, e)]
    # After JFIF/EXIF (APP0/APP1) so that readers expecting them first still find them.
    insert_at = 0
    while insert_at < len(kept) and kept[insert_at][0] in (0xE0, 0xE1):
        insert_at += 1
    parts = [data[s:e] for _, s, e in kept]
    parts[insert_at:insert_at] = new_segments
    return JPEG_SOI + b"".join(parts) + data[sos:]


def _embed_jpeg(gray: bytes, residual: bytes) -> bytes:
    chunks = [residual[i:i + MAX_JPEG_CHUNK] for i in range(0, len(residual), MAX_JPEG_CHUNK)] or [b""]
    if len(chunks) > 0xFFFF:
        raise EmbeddingError("residual too large to embed in JPEG")
    segments = []
    for sequence, chunk in enumerate(chunks):
        body = _JPEG_SEGMENT_HEADER.pack(JPEG_SIGNATURE, sequence, len(chunks)) + chunk
        segments.append(struct.pack(">BBH", 0xFF, APP11, len(body) + 2) + body)
    return _rebuild_jpeg(gray, segments)


def _extract_jpeg(data: bytes) -> bytes | None:
    segments, _ = _jpeg_header_segments(data)
    pieces: dict[int, bytes] = {}
    counts = set()
    for marker, start, end in segments:
        if not _is_ours(data, marker, start, end):
            continue
        if end - start < 4 + _JPEG_SEGMENT_HEADER.size:
            raise EmbeddingError("embedded residual segment is too short")
        _, sequence, count = _JPEG_SEGMENT_HEADER.unpack_from(data, start + 4)
        if sequence in pieces:
            raise EmbeddingError(f"embedded residual segment {sequence} appears twice")
        pieces[sequence] = data[start + 4 + _JPEG_SEGMENT_HEADER.size:end]
        counts.add(count)
    if not pieces:
        return None
    if len(counts) != 1:
        raise EmbeddingError("embedded residual segments disagree on their count")
    count = counts.pop()
    if sorted(pieces) != list(range(count)):
        raise EmbeddingError(f"embedded residual is incomplete ({len(pieces)} of {count} segments)")
    return b"".join(pieces[i] for i in range(count))


# --- PNG --------------------------------------------------------------------------

def _png_chunks(data: bytes) -> list[tuple[bytes, bytes, int, int]]:
    """(type, data, start, end) of every chunk; CRCs checked."""
    chunks, pos = [], len(PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise EmbeddingError("gray PNG is truncated")
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise EmbeddingError("gray PNG has a chunk running past its end")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(kind + body) != crc:
            raise EmbeddingError(f"gray PNG chunk {kind.decode('latin-1')!r} is corrupted")
        chunks.append((kind, body, pos, end))
        pos = end
        if kind == b"IEND":
            break
    if not chunks or chunks[-1][0] != b"IEND":
        raise EmbeddingError("gray PNG has no IEND chunk")
    return chunks


def _embed_png(gray: bytes, residual: bytes) -> bytes:
    chunks = [c for c in _png_chunks(gray) if c[0] != PNG_CHUNK]
    ours = struct.pack(">I", len(residual)) + PNG_CHUNK + residual + struct.pack(">I", zlib.crc32(PNG_CHUNK + residual))
    body = b"".join(gray[start:end] for _, _, start, end in chunks[:-1])
    _, _, iend_start, iend_end = chunks[-1]
    return PNG_SIGNATURE + body + ours + gray[iend_start:iend_end]
