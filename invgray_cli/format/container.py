"""The residual file: a small versioned binary container (specified in docs/FORMAT.md).

All integers are little-endian. Every field is checked before anything is
allocated or decompressed; any defect raises :class:`InvalidResidualError` with a
one-line message.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from invgray_cli.format.signatures import RESIDUAL_MAGIC

MAGIC = RESIDUAL_MAGIC
PACKED = 1  # format 1: the payload is zstd-packed symbols (invgray_cli.format.packing)
RANGE_CODED = 2  # format 2: the payload is range-coded 32-bit words (invgray_cli.format.entropy), not zstd
REFINED = 3  # format 3: format 2 plus a refinement section (invgray_cli.format.refinement)
# format 4: range-coded under a probability model that reads the gray (invgray_cli.model.prior_coding),
# with a refinement section where FLAG_REFINEMENT says so
CONDITIONAL = 4
SUPPORTED_VERSIONS = (PACKED, RANGE_CODED, REFINED, CONDITIONAL)
WORD_CODED = (RANGE_CODED, REFINED, CONDITIONAL)  # payloads of whole 32-bit words, no raw size
MAX_SIDE = 1 << 18
MAX_PIXELS = 1 << 28  # 268 megapixels, above Pillow's own decompression-bomb limit
MAX_PLANES = 1024
CELL_SIZES = (8, 16, 32, 64)
MAX_STEP = 1000.0
FLAG_MONOCHROME = 0x0001  # the photo was gray: no payload, it decodes to its gray
FLAG_ALPHA = 0x0002  # an alpha-plane section follows the payload
FLAG_ICC = 0x0004  # an ICC-profile section follows (after the alpha section, if any)
FLAG_REFINEMENT = 0x0008  # format 4: a refinement section follows the payload (format 3 always has one)
KNOWN_FLAGS = FLAG_MONOCHROME | FLAG_ALPHA | FLAG_ICC | FLAG_REFINEMENT
MAX_ICC_SIZE = 4 << 20
_SECTION_LENGTH = struct.Struct("<I")
_REFINEMENT = struct.Struct("<BBI")  # space, step, payload length

# magic, version, flags, model id, width, height, symbol planes, symbol cell size, step,
# gray fingerprint, gray signature, raw (decompressed) payload size, payload length
_HEADER = struct.Struct("<4sBH8sIIHBf8s16sII")
SIGNATURE_GRID = 4
RECOMPRESSION_TOLERANCE = 4  # gray levels a block mean may move under lossy re-compression
_CHECKSUM = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
OVERHEAD = HEADER_SIZE + _CHECKSUM.size


class InvalidResidualError(ValueError):
    """A residual file that cannot be decoded; the message is one line for users."""


class GrayMismatchError(InvalidResidualError):
    """The residual was made for other gray pixels than the ones supplied."""


@dataclass(frozen=True)
class Residual:
    model_id: str  # 16 hex digits
    width: int
    height: int
    planes: int  # symbol planes
    cell: int  # image pixels per symbol cell, along each axis
    step: float
    gray_fingerprint: bytes  # 8 bytes, exact pixels
    gray_signature: bytes  # 16 bytes, coarse block means (recognises a re-compressed gray)
    raw_size: int
    payload: bytes
    version: int = 1  # format 1: zstd payload (packing.py); 2: range-coded (entropy.py); 4: prior_coding.py
    flags: int = 0  # FLAG_MONOCHROME; FLAG_ALPHA, FLAG_ICC and FLAG_REFINEMENT follow from the fields below
    alpha: bytes = b""  # (height x width) uint8 alpha plane, row-major; empty when opaque
    icc_profile: bytes = b""  # ICC profile of the photo's RGB; empty for untagged (sRGB)
    refinement_space: int = 0  # formats 3 and 4: invgray_cli.format.refinement's SPACE_CHROMA or SPACE_RGB; 0: none
    refinement_step: int = 0  # the corrections' quantisation step (1: exact)
    refinement: bytes = b""  # range-coded 32-bit words

    @property
    def refined(self) -> bool:
        """Whether a refinement layer corrects the network's colour (or replaces it)."""
        return bool(self.refinement_space)

    @property
    def exact_gray_only(self) -> bool:
        """Whether the file decodes only with the very gray pixels it was made for: its
        refinement corrects those integers, or its probability model reads them."""
        return self.refined or (self.version == CONDITIONAL and not self.monochrome)

    @property
    def uses_network(self) -> bool:
        """Whether decoding runs the network (a refinement in the RGB space needs only the gray)."""
        from invgray_cli.format.refinement import SPACE_RGB

        return not self.monochrome and self.refinement_space != SPACE_RGB

    @property
    def monochrome(self) -> bool:
        return bool(self.flags & FLAG_MONOCHROME)

    @property
    def symbol_shape(self) -> tuple[int, int, int]:
        return self.planes, -(-self.height // self.cell), -(-self.width // self.cell)


def gray_fingerprint(gray: np.ndarray) -> bytes:
    """First 8 bytes of SHA-256 over the height, width and row-major uint8 pixels."""
    gray = np.ascontiguousarray(gray, dtype=np.uint8)
    digest = hashlib.sha256(struct.pack("<II", gray.shape[0], gray.shape[1]))
    digest.update(gray.tobytes())
    return digest.digest()[:8]


def gray_signature(gray: np.ndarray) -> bytes:
    """Means of a 4 x 4 grid of near-equal blocks, rounded half up, row-major."""
    gray = np.asarray(gray, dtype=np.uint8)
    rows = np.array_split(np.arange(gray.shape[0]), SIGNATURE_GRID)
    cols = np.array_split(np.arange(gray.shape[1]), SIGNATURE_GRID)
    means = []
    for r in rows:
        for c in cols:
            if not (r.size and c.size):
                means.append(0)
                continue
            block = gray[r[0]:r[-1] + 1, c[0]:c[-1] + 1]
            total = int(block.sum(dtype=np.uint64))
            means.append((2 * total + block.size) // (2 * block.size))  # exact integer round-half-up
    return bytes(means)


def signature_distance(a: bytes, b: bytes) -> int:
    return max(abs(x - y) for x, y in zip(a, b))


def _compress_section(data: bytes) -> bytes:
    import zstandard

    frame = zstandard.ZstdCompressor(level=19, write_content_size=True).compress(data)
    return _SECTION_LENGTH.pack(len(frame)) + frame


def write_residual(residual: Residual) -> bytes:
    if residual.alpha and len(residual.alpha) != residual.width * residual.height:
        raise ValueError("alpha plane size does not match the image")
    flags = residual.flags & FLAG_MONOCHROME
    flags |= FLAG_ALPHA if residual.alpha else 0
    flags |= FLAG_ICC if residual.icc_profile else 0
    if residual.version not in SUPPORTED_VERSIONS:
        raise ValueError(f"unknown residual format version {residual.version}")
    if residual.version in WORD_CODED and (residual.raw_size or len(residual.payload) % 4):
        raise ValueError("a range-coded payload is whole 32-bit words and has no raw size")
    if residual.version == REFINED and not residual.refinement_space:
        raise ValueError("format 3 always has a refinement section")
    if residual.refinement_space and residual.version not in (REFINED, CONDITIONAL):
        raise ValueError("only formats 3 and 4 have a refinement section")
    if residual.version == CONDITIONAL and residual.refinement_space:
        flags |= FLAG_REFINEMENT
    if len(residual.refinement) % 4:
        raise ValueError("a refinement payload is whole 32-bit words")
    header = _HEADER.pack(
        MAGIC, residual.version, flags, bytes.fromhex(residual.model_id), residual.width, residual.height,
        residual.planes, residual.cell, residual.step, residual.gray_fingerprint, residual.gray_signature,
        residual.raw_size, len(residual.payload),
    )
    body = header + residual.payload
    if residual.refinement_space:
        body += _REFINEMENT.pack(residual.refinement_space, residual.refinement_step, len(residual.refinement))
        body += residual.refinement
    if residual.alpha:
        body += _compress_section(residual.alpha)
    if residual.icc_profile:
        body += _compress_section(residual.icc_profile)
    return body + _CHECKSUM.pack(zlib.crc32(body))


def _read_section(data: bytes, pos: int, end: int, exact_size: int | None, max_size: int,
                  what: str) -> tuple[bytes, int]:
    """Decompress one length-prefixed zstd section at ``pos``; bounded before allocation."""
    import zstandard

    if pos + _SECTION_LENGTH.size > end:
        raise InvalidResidualError(f"truncated residual file (no {what} section)")
    (length,) = _SECTION_LENGTH.unpack_from(data, pos)
    start, stop = pos + _SECTION_LENGTH.size, pos + _SECTION_LENGTH.size + length
    if stop > end:
        raise InvalidResidualError(f"truncated residual file ({what} section runs past the end)")
    frame = bytes(data[start:stop])
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError:
        raise InvalidResidualError(f"{what} section is not a zstd frame") from None
    if size < 0 or size > max_size or (exact_size is not None and size != exact_size):
        raise InvalidResidualError(f"{what} section declares an invalid size")
    try:
        raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise InvalidResidualError(f"{what} section does not decompress: {exc}") from None
    if len(raw) != size:
        raise InvalidResidualError(f"{what} section decompressed to an unexpected size")
    return raw, stop


def read_residual(data: bytes, image_size: tuple[int, int] | None = None) -> Residual:
    """Parse and validate a residual file's bytes (the symbol payload stays compressed;
    alpha and ICC sections are decompressed, bounded by the declared image size).

    With ``image_size`` (width, height of the gray it is paired with), a size
    mismatch is refused before any section is decompressed."""
    if not data:
        raise InvalidResidualError("empty residual file")
    if len(data) < 4 or data[:4] != MAGIC:
        raise InvalidResidualError("not an invgray residual file (bad magic bytes)")
    if len(data) < 5:
        raise InvalidResidualError("truncated residual file (no version)")
    version = data[4]
    if version not in SUPPORTED_VERSIONS:
        raise InvalidResidualError(
            f"residual format version {version} is not supported by this invgray "
            f"(supports {', '.join(map(str, SUPPORTED_VERSIONS))}); upgrade invgray")
    if len(data) < OVERHEAD:
        raise InvalidResidualError(f"truncated residual file ({len(data)} bytes, header needs {OVERHEAD})")
    (_, _, flags, model_id, width, height, planes, cell, step, fingerprint, signature, raw_size,
     payload_length) = _HEADER.unpack_from(data)
    if flags & ~KNOWN_FLAGS or (flags & FLAG_REFINEMENT and version != CONDITIONAL):
        raise InvalidResidualError(f"residual uses feature flags {flags:#06x} unknown to this invgray")
    has_refinement = version == REFINED or bool(flags & FLAG_REFINEMENT)
    expected = OVERHEAD + payload_length
    if len(data) < expected:
        raise InvalidResidualError(f"truncated residual file ({len(data)} of {expected} bytes)")
    if len(data) > expected and not flags & (FLAG_ALPHA | FLAG_ICC) and not has_refinement:
        raise InvalidResidualError(f"residual file has {len(data) - expected} unexpected trailing bytes")
    (checksum,) = _CHECKSUM.unpack_from(data, len(data) - _CHECKSUM.size)
    if zlib.crc32(data[:len(data) - _CHECKSUM.size]) != checksum:
        raise InvalidResidualError("residual file is corrupted (checksum mismatch)")
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise InvalidResidualError(f"residual declares an invalid image size {width}x{height}")
    if width * height > MAX_PIXELS:
        raise InvalidResidualError(f"residual declares {width}x{height} pixels, over the {MAX_PIXELS} limit")
    if not 1 <= planes <= MAX_PLANES:
        raise InvalidResidualError(f"residual declares an invalid symbol plane count {planes}")
    if cell not in CELL_SIZES:
        raise InvalidResidualError(f"residual declares an invalid symbol cell size {cell}")
    if not (np.isfinite(step) and 0 < step <= MAX_STEP):
        raise InvalidResidualError(f"residual declares an invalid quantisation step {step}")
    if flags & FLAG_MONOCHROME and (payload_length or raw_size):
        raise InvalidResidualError("monochrome residual must not carry a payload")
    if version in WORD_CODED and (raw_size or payload_length % 4):
        raise InvalidResidualError("range-coded payload must be whole 32-bit words with raw size 0")
    from invgray_cli.format.packing import max_raw_size

    if raw_size > max_raw_size((planes, -(-height // cell), -(-width // cell))):
        raise InvalidResidualError(f"residual declares {raw_size} payload bytes, more than a "
                                   f"{width}x{height} image can need")
    if image_size is not None and image_size != (width, height):
        raise GrayMismatchError(f"residual is for a {width}x{height} image, the gray is "
                                f"{image_size[0]}x{image_size[1]}")
    pos, end = HEADER_SIZE + payload_length, len(data) - _CHECKSUM.size
    space = refinement_step = 0
    refinement = b""
    if has_refinement:
        space, refinement_step, refinement, pos = _read_refinement(data, pos, end, flags)
    alpha = icc = b""
    if flags & FLAG_ALPHA:
        alpha, pos = _read_section(data, pos, end, width * height, width * height, "alpha")
    if flags & FLAG_ICC:
        icc, pos = _read_section(data, pos, end, None, MAX_ICC_SIZE, "ICC profile")
    if pos != end:
        raise InvalidResidualError(f"residual file has {end - pos} unexpected trailing bytes")
    return Residual(model_id.hex(), width, height, planes, cell, float(step), fingerprint, signature, raw_size,
                    bytes(data[HEADER_SIZE:HEADER_SIZE + payload_length]), version, flags & FLAG_MONOCHROME,
                    alpha, icc, space, refinement_step, refinement)


def _read_refinement(data: bytes, pos: int, end: int, flags: int) -> tuple[int, int, bytes, int]:
    """The refinement section at ``pos`` (formats 3 and 4): (space, step, payload, position after it)."""
    from invgray_cli.format.refinement import MAX_STEP as MAX_REFINEMENT_STEP
    from invgray_cli.format.refinement import SPACES

    if flags & FLAG_MONOCHROME:
        raise InvalidResidualError("monochrome residual must not carry a refinement")
    if pos + _REFINEMENT.size > end:
        raise InvalidResidualError("truncated residual file (no refinement section)")
    space, step, length = _REFINEMENT.unpack_from(data, pos)
    if space not in SPACES:
        raise InvalidResidualError(f"residual declares an unknown refinement space {space}")
    if not 1 <= step <= MAX_REFINEMENT_STEP:
        raise InvalidResidualError(f"residual declares an invalid refinement step {step}")
    if length % 4:
        raise InvalidResidualError("refinement payload must be whole 32-bit words")
    start = pos + _REFINEMENT.size
    if start + length > end:
        raise InvalidResidualError("truncated residual file (refinement section runs past the end)")
    return space, step, bytes(data[start:start + length]), start + length
