"""Lossless luma for JPEG inputs: the gray JPEG carries the input's own luminance DCT
coefficients and quantisation table, re-packed with optimised Huffman tables.
Nothing is decoded and re-quantised, so the gray adds no second generation of loss.

The entropy coding runs through ``jpeglib`` (libjpeg behind a small C layer); this
module only reads the headers to decide whether the path applies, moves coefficient
blocks for EXIF orientation, and writes the metadata segments.

A file reaches jpeglib only after Pillow decoded it completely and its headers passed
:func:`lossless_obstacle` here, so libjpeg sees only files it can read; its errors
become LosslessUnavailable (the gray is then re-encoded), its warnings about damaged
entropy data go to stderr as libjpeg prints them.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from invgray_cli.format.signatures import is_jpeg

LOSSLESS = "lossless luma"
PROVENANCE = b"invgray: lossless luma, the input JPEG's own Y coefficients"
XMP_SIGNATURE = b"http://ns.adobe.com/xap/1.0/\x00"
MAX_SEGMENT = 65_533  # payload bytes in one marker segment (the length field counts itself)

# jpeglib keeps marker-reading state in C globals: one call at a time.
_JPEGLIB_LOCK = threading.Lock()
# Which of jpeglib's bundled libraries: libjpeg-turbo's SIMD Huffman coding is faster than the
# default IJG 6b, with the same bytes out.
LIBJPEG = "turbo210"

_SOF_KINDS = {
    0xC0: None, 0xC1: None, 0xC2: None,  # baseline, extended sequential, progressive; Huffman
    0xC3: "lossless JPEG",
    0xC5: "hierarchical JPEG", 0xC6: "hierarchical JPEG", 0xC7: "hierarchical JPEG",
    0xC9: "arithmetic-coded JPEG", 0xCA: "arithmetic-coded JPEG", 0xCB: "arithmetic-coded JPEG",
    0xCD: "hierarchical JPEG", 0xCE: "hierarchical JPEG", 0xCF: "hierarchical JPEG",
}
# Pixel transforms of Pillow's exif_transpose for each EXIF orientation, as block moves.
_ORIENTATION_STEPS = {
    1: (), 2: ("flip_h",), 3: ("flip_h", "flip_v"), 4: ("flip_v",), 5: ("transpose",),
    6: ("transpose", "flip_h"), 7: ("transpose", "flip_h", "flip_v"), 8: ("transpose", "flip_v"),
}
_ODD = (-1) ** np.arange(8)  # mirroring a block negates its odd frequencies


class LosslessUnavailable(Exception):
    """The lossless path does not apply; the message (one line) says why."""


@dataclass(frozen=True)
class Component:
    ident: int
    h: int
    v: int


@dataclass(frozen=True)
class JpegLayout:
    """What the frame and file headers say, up to the first scan."""

    sof: int  # the SOFn marker's second byte
    precision: int
    width: int
    height: int
    components: tuple[Component, ...]
    adobe_transform: int | None  # APP14 "Adobe" colour transform flag, None without one


def read_layout(data: bytes) -> JpegLayout:
    """Walk the marker segments from SOI to the first SOS; LosslessUnavailable when
    the headers are not those of a readable JPEG."""
    if not is_jpeg(data):
        raise LosslessUnavailable("not a JPEG file")
    pos, adobe, frame = 2, None, None
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise LosslessUnavailable("malformed JPEG headers")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        body = data[pos + 4:pos + 2 + length]
        if length < 2 or len(body) != length - 2:
            raise LosslessUnavailable("truncated JPEG headers")
        if marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
            adobe = body[11]
        elif marker in _SOF_KINDS and frame is None:
            if len(body) < 6 or len(body) < 6 + 3 * body[5]:
                raise LosslessUnavailable("truncated JPEG frame header")
            precision, height, width, count = struct.unpack(">BHHB", body[:6])
            components = tuple(Component(body[6 + 3 * i], body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15)
                               for i in range(count))
            frame = (marker, precision, width, height, components)
        elif marker == 0xDA:
            break
        pos += 2 + length
    if frame is None:
        raise LosslessUnavailable("no JPEG frame header")
    return JpegLayout(*frame, adobe_transform=adobe)


def lossless_obstacle(layout: JpegLayout) -> str | None:
    """Why the input's luma cannot be carried over losslessly, or None when it can:
    8-bit Huffman-coded (baseline, extended or progressive) gray or YCbCr, with the
    luma sampled at the full rate."""
    kind = _SOF_KINDS[layout.sof]
    if kind:
        return kind
    if layout.precision != 8:
        return f"{layout.precision}-bit JPEG"
    count = len(layout.components)
    if count == 4:
        return "YCCK JPEG" if layout.adobe_transform == 2 else "CMYK JPEG"
    if count not in (1, 3):
        return f"JPEG with {count} components"
    if count == 3:
        ids = bytes(c.ident for c in layout.components)
        if layout.adobe_transform == 0 or (layout.adobe_transform is None and ids == b"RGB"):
            return "RGB-coded JPEG (no luma plane)"
        luma = layout.components[0]
        if (luma.h, luma.v) != (max(c.h for c in layout.components), max(c.v for c in layout.components)):
            return f"unusual sampling (luma {luma.h}x{luma.v} below the frame's highest rate)"
    if layout.width == 0 or layout.height == 0:
        return "JPEG with its height in a DNL marker"
    return None


def _orientation_steps(orientation: int, width: int, height: int) -> tuple[str, ...]:
    """The block moves that give Pillow's exif_transpose, or LosslessUnavailable when
    one is a mirror across a side that is not whole 8-pixel blocks (the partial edge
    block would land on the far side; trimming it as ``jpegtran -trim`` does would
    lose up to 7 rows or columns, so the pixels are kept and the gray re-encoded)."""
    steps = _ORIENTATION_STEPS.get(orientation, ())
    for step in steps:
        if step == "transpose":
            width, height = height, width
        elif (width if step == "flip_h" else height) % 8:
            side = ("width", width) if step == "flip_h" else ("height", height)
            raise LosslessUnavailable(f"EXIF orientation {orientation} needs a mirror across a {side[0]} of "
                                      f"{side[1]} px, not a multiple of 8")
    return steps


def _orient(blocks: np.ndarray, table: np.ndarray, steps: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Coefficient blocks (rows, cols, 8, 8) and quantisation table after ``steps``."""
    for step in steps:
        if step == "transpose":
            blocks, table = blocks.transpose(1, 0, 3, 2), table.T
        elif step == "flip_h":
            blocks = blocks[:, ::-1] * _ODD[None, None, None, :]
        else:
            blocks = blocks[::-1] * _ODD[None, None, :, None]
    return np.ascontiguousarray(blocks, dtype=np.int16), np.ascontiguousarray(table)


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _with_segments(jpeg: bytes, segments: list[bytes]) -> bytes:
    """Insert segments after SOI and a leading JFIF APP0, where Pillow puts EXIF and XMP."""
    pos = 2
    if jpeg[2:4] == b"\xff\xe0":
        pos = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:pos] + b"".join(segments) + jpeg[pos:]


def luma_jpeg(data: bytes, orientation: int = 1, exif: bytes | None = None, xmp: bytes | None = None,
              started: LumaTranscode | None = None) -> bytes:
    """A grayscale JPEG holding ``data``'s own luma coefficients and quantisation table
    (upright for ``orientation``), Huffman-optimised, with EXIF and XMP. Raises
    LosslessUnavailable (one-line reason) where that cannot be done exactly.
    ``started``: the same transcode begun earlier by :func:`start_luma_transcode`."""
    segments = []
    if exif:
        segments.append((0xE1, exif if exif.startswith(b"Exif\x00\x00") else b"Exif\x00\x00" + exif))
    if xmp:
        segments.append((0xE1, XMP_SIGNATURE + xmp))
    segments.append((0xFE, PROVENANCE))
    for marker, payload in segments:
        if len(payload) > MAX_SEGMENT:
            raise LosslessUnavailable(f"{'XMP' if payload.startswith(XMP_SIGNATURE) else 'EXIF'} block of "
                                      f"{len(payload)} bytes does not fit one JPEG segment")
    if started is not None and started.serves(data, orientation):
        written = started.result()
    else:
        written = transcode_luma(data, orientation)
    return _with_segments(written, [_segment(marker, payload) for marker, payload in segments])


def transcode_luma(data: bytes, orientation: int = 1) -> bytes:
    """The bare grayscale JPEG of ``data``'s luma coefficients (no metadata segments)."""
    layout = read_layout(data)
    obstacle = lossless_obstacle(layout)
    if obstacle:
        raise LosslessUnavailable(obstacle)
    steps = _orientation_steps(orientation, layout.width, layout.height)
    width, height = (layout.height, layout.width) if "transpose" in steps else (layout.width, layout.height)
    try:
        import jpeglib
    except ImportError:
        raise LosslessUnavailable("jpeglib is not installed") from None
    with _JPEGLIB_LOCK:
        if jpeglib.version.get() != LIBJPEG:  # switching reloads the library: only when someone else switched
            jpeglib.version.set(LIBJPEG)
        target = _scratch_file(".gray.jpg")
        try:
            try:
                original = _coefficient_reader(data, layout)
                blocks, tables, table_of = original.Y, original.qt, original.quant_tbl_no
            except OSError:  # libjpeg's own one-line message went to stderr
                raise LosslessUnavailable("libjpeg could not read the coefficients") from None
            table = tables[int(table_of[0])]
            expected = (-(-layout.height // 8), -(-layout.width // 8))
            if blocks.shape[:2] != expected:
                raise LosslessUnavailable(f"luma holds {blocks.shape[1]}x{blocks.shape[0]} blocks, expected "
                                          f"{expected[1]}x{expected[0]}")
            blocks, table = _orient(blocks, table, steps)
            gray = jpeglib.from_dct(blocks, qt=table[None].astype(np.uint16))
            gray.height, gray.width = height, width
            try:
                gray.write_dct(target, flags=["+OPTIMIZE_CODING"])
            except OSError:  # e.g. "DCT coefficient out of range" in a damaged file
                raise LosslessUnavailable("libjpeg could not write these coefficients") from None
            with open(target, "rb") as handle:
                return handle.read()
        finally:
            os.unlink(target)


def block_dims(layout: JpegLayout) -> np.ndarray:
    """(rows, cols) of 8x8 blocks per component, as libjpeg sizes them
    (jdiv_round_up(image side x sampling factor, highest factor x 8))."""
    h_max, v_max = max(c.h for c in layout.components), max(c.v for c in layout.components)
    return np.array([[-(-layout.height * c.v // (v_max * 8)), -(-layout.width * c.h // (h_max * 8))]
                     for c in layout.components], np.int32)


def _coefficient_reader(data: bytes, layout: JpegLayout):  # noqa: ANN202 - a jpeglib.DCTJPEG
    """jpeglib's coefficient reader for ``data``, sized from the headers already parsed.
    ``jpeglib.read_dct`` would first run an info pass that, for a progressive file,
    entropy-decodes every scan only to count them (up to 4.4 ms of a 768 x 512 photo's
    transcode, then decoded again for the coefficients); the buffers it sizes are
    the same ``block_dims`` (a test holds the two readers equal on every JPEG kind)."""
    import jpeglib

    return jpeglib.DCTJPEG(
        path="<memory>", content=data, height=layout.height, width=layout.width, block_dims=block_dims(layout),
        samp_factor=np.array([[c.v, c.h] for c in layout.components], np.int32), markers=[], huffmans=[],
        jpeg_color_space=jpeglib.JCS_YCbCr if len(layout.components) == 3 else jpeglib.JCS_GRAYSCALE,
        progressive_mode=layout.sof == 0xC2, num_scans=0, Y=None, Cb=None, Cr=None, K=None, qt=None, quant_tbl_no=None)


def _scratch_file(suffix: str) -> str:
    """A new empty file for jpeglib, which reads and writes files only: in memory-backed
    /dev/shm where the system has one; the caller unlinks it."""
    shm = "/dev/shm"
    handle, path = tempfile.mkstemp(prefix="invgray-", suffix=suffix, dir=shm if os.access(shm, os.W_OK) else None)
    os.close(handle)
    return path


class LumaTranscode:
    """:func:`transcode_luma` running in a background thread: the libjpeg calls release the
    GIL, so it overlaps the photo's pixel decode and costs little wall time."""

    def __init__(self, data: bytes, orientation: int) -> None:
        self.data, self.orientation = data, orientation
        transcoder = _transcoder()
        # The Y plane the network starts on comes first, so that it decodes while the caller's
        # thread decodes the colours. Only an upright file has one: a transposed block goes
        # through the IDCT the other way round and may differ from the moved pixels by a level.
        self._plane = transcoder.submit(own_y_plane, data) if orientation == 1 else None
        self._future = transcoder.submit(_transcoded_and_decoded, data, orientation)

    def serves(self, data: bytes, orientation: int) -> bool:
        """Whether this is the transcode of exactly these bytes at this orientation."""
        return self.data is data and self.orientation == orientation

    def result(self) -> bytes:
        return self._future.result()[0]

    def pixels(self) -> np.ndarray:
        """The transcoded gray as a decoder shows it, decoded in the same thread."""
        return self._future.result()[1]

    def early_plane(self) -> np.ndarray | None:
        """:func:`own_y_plane` of the input, decoded in the transcode's thread (None for a
        rotated file)."""
        return self._plane.result() if self._plane is not None else None


def own_y_plane(data: bytes) -> np.ndarray | None:
    """The Y plane of JPEG bytes as libjpeg decodes it (Pillow's grayscale draft: no chroma
    decoded), which is exactly the decoded lossless gray: the same coefficients through the
    same IDCT. None where the lossless path does not apply or the file does not decode (the
    colour decode reports that; this only gives up early)."""
    from PIL import Image

    try:
        if lossless_obstacle(read_layout(data)) is not None:
            return None
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", image.size)
            return np.asarray(image) if image.mode == "L" else None
    except Exception:  # noqa: BLE001 - a damaged file, a decompression bomb: the colour decode says which
        return None


def _transcoded_and_decoded(data: bytes, orientation: int) -> tuple[bytes, np.ndarray]:
    from PIL import Image

    gray = transcode_luma(data, orientation)
    with Image.open(io.BytesIO(gray)) as image:  # metadata segments added later change no pixel
        return gray, np.asarray(image)


def start_luma_transcode(data: bytes) -> LumaTranscode | None:
    """Begin the lossless luma of JPEG bytes before their pixels are decoded, with the
    orientation :func:`invgray_cli.imaging.images.read_photo` will apply; None for other files."""
    if not is_jpeg(data):
        return None
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:  # headers only: nothing decoded yet
            orientation = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - whatever fails here fails again, and is reported, when read
        return None
    return LumaTranscode(data, orientation if orientation in range(2, 9) else 1)


_TRANSCODERS: dict[int, ThreadPoolExecutor] = {}


def _transcoder() -> ThreadPoolExecutor:
    """One thread per process (jpeglib runs one call at a time anyway); a forked worker
    process gets its own, as its parent's thread did not survive the fork."""
    pid = os.getpid()
    if pid not in _TRANSCODERS:
        _TRANSCODERS[pid] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invgray-luma")
    return _TRANSCODERS[pid]


def gray_provenance(data: bytes) -> str | None:
    """How a gray JPEG was made, as far as the file itself tells: ``lossless luma``
    when it carries invgray's provenance comment, ``re-encoded qN (...)`` when its
    table is the standard one libjpeg scales for quality N (an inference: the comment
    may also have been stripped from a lossless gray), else None."""
    if not is_jpeg(data):
        return None
    if _segment(0xFE, PROVENANCE) in data[:data.find(b"\xff\xda") if b"\xff\xda" in data else len(data)]:
        return LOSSLESS
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            tables = getattr(image, "quantization", None) or {}
    except Exception:  # noqa: BLE001 - an unreadable gray simply has no provenance
        return None
    if len(tables) != 1 or 0 not in tables:
        return None
    for quality in range(100, 0, -1):
        if _standard_luma_table(quality) == list(tables[0]):
            return f"re-encoded q{quality} (judged from its standard quantisation table)"
    return None


_STANDARD_TABLES: dict[int, list[int]] = {}


def _standard_luma_table(quality: int) -> list[int]:
    if quality not in _STANDARD_TABLES:
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("L", (8, 8)).save(buffer, "JPEG", quality=quality)
        with Image.open(buffer) as image:
            _STANDARD_TABLES[quality] = list(image.quantization[0])
    return _STANDARD_TABLES[quality]
