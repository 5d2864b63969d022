"""Encoding: a photo to its gray image file and residual file, as bytes. No files, no CLI.

``encode`` runs the real gray encode *and decode* before the network sees the gray, so
the residual is computed against exactly the pixels a decoder will have. The network
runs on an engine (:mod:`invgray_cli.engines`): onnxruntime on the CPU, torch on CUDA
or when a torch ``model`` is passed; torch is imported only then, or for refinement.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from invgray_cli.codec.effort import DEFAULT_EFFORT, EFFORTS, refine_symbols
from invgray_cli.codec.refinement import (
    SPACE_CHROMA,
    SPACE_RGB,
    encode_chroma,
    encode_exact,
    exact_gray_format,
    exact_gray_quality,
)
from invgray_cli.format.refinement import MAX_STEP as MAX_REFINE_STEP
from invgray_cli.codec.symbols import symbol_payload
from invgray_cli.engines.engine import Engine, analyse, device_name, engine_for
from invgray_cli.engines.registry import bundled_spec, model_spec
from invgray_cli.format import embedding
from invgray_cli.format.container import (
    CONDITIONAL,
    FLAG_MONOCHROME,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_STEP,
    RANGE_CODED,
    REFINED,
    Residual,
    gray_fingerprint,
    gray_signature,
    write_residual,
)
from invgray_cli.imaging.gray import DEFAULT_QUALITY, MAX_JPEG_SIDE, GrayFormat, decode_gray, encode_gray, luma
from invgray_cli.imaging.images import Photo, photo_from_image, read_photo
from invgray_cli.imaging.jpeg_transcode import LOSSLESS, LosslessUnavailable, luma_jpeg
from invgray_cli.model.availability import require_torch

if TYPE_CHECKING:
    import torch

    from invgray_cli.model.network import InvGrayNet

    Model = InvGrayNet | Engine

DEFAULT_LEVEL = "default"


@dataclass(frozen=True)
class Encoded:
    gray: bytes  # a complete grayscale JPEG or PNG file
    residual: bytes  # a complete residual file
    gray_format: GrayFormat
    gray_path: str = ""  # how the gray was made: "lossless luma", "re-encoded q90" or "PNG"
    gray_note: str = ""  # why a JPEG input's luma was re-encoded rather than kept, when it was
    step: float = 0.0  # the quantisation step recorded in the residual
    model_id: str = ""
    refinement: tuple[int, int] | None = None  # (space, step) of a refinement layer

    def embedded(self) -> bytes:
        """The single-file form: the gray image with the residual inside it."""
        return embedding.embed(self.gray, self.residual)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is an error."""
    torch = require_torch(f"device {name}")
    return torch.device(device_name(name))


def _as_photo(image: Photo | Image.Image | np.ndarray | bytes, lossless_luma: bool = False) -> Photo:
    if isinstance(image, Photo):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_photo(bytes(image), lossless_luma=lossless_luma)
    if isinstance(image, Image.Image):
        return photo_from_image(image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        return Photo(np.repeat(array[:, :, None], 3, axis=2))
    if array.ndim == 3 and array.shape[2] == 3:
        return Photo(np.ascontiguousarray(array))
    if array.ndim == 3 and array.shape[2] == 4:
        alpha = np.ascontiguousarray(array[:, :, 3])
        return Photo(np.ascontiguousarray(array[:, :, :3]), None if (alpha == 255).all() else alpha)
    raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {array.shape}")


@dataclass(frozen=True)
class Prepared:
    """A photo with its gray file made and decoded: everything of an encode except the
    quantisation step, so that rate control can try several steps cheaply.

    A JPEG input's lossless luma may still be in the making (``pending``): its decoded
    pixels are already known, as the input's own Y plane, so the network can start
    while the transcode finishes; :meth:`settled` then takes the file and checks it."""

    photo: Photo
    gray_bytes: bytes
    decoded_gray: np.ndarray  # the gray exactly as a decoder will see it
    gray_format: GrayFormat
    keep_metadata: bool
    gray_path: str = ""  # "lossless luma", "re-encoded q90" or "PNG"
    gray_note: str = ""  # why a JPEG input's luma was re-encoded rather than kept, when it was
    pending: Callable[[], tuple[bytes, np.ndarray]] | None = field(default=None, repr=False, compare=False)

    def settled(self) -> tuple[Prepared, bool]:
        """This with its gray file made, and whether ``decoded_gray`` stayed the same
        (where it did not, symbols computed from the old one must be computed again):
        the lossless gray is checked to decode to the Y plane it was announced as, and a
        transcode that failed late falls back to the re-encode, with its note."""
        if self.pending is None:
            return self, True
        try:
            gray_bytes, decoded = self.pending()
            done = replace(self, gray_bytes=gray_bytes, decoded_gray=decoded, pending=None)
        except LosslessUnavailable as exc:
            done = _re_encoded(self.photo, self.gray_format, DEFAULT_QUALITY, self.keep_metadata, str(exc))
        return done, bool(np.array_equal(done.decoded_gray, self.decoded_gray))

    def encoded(self, engine: Engine, step: float, symbols: np.ndarray | None,
                refinement: Refinement | None = None) -> Encoded:
        """The gray and residual files for these symbols (None: a gray photo, or a refinement
        in the RGB space alone), with a ``refinement`` layer when one is given (format 3, or
        format 4's refinement section for a model that writes format 4)."""
        if self.pending is not None:
            raise RuntimeError("Prepared.encoded before settled(): the gray file is still being made")
        height, width = self.decoded_gray.shape
        stored_step = float(np.float32(step))
        version, payload, raw_size = symbol_payload(bundled_spec(engine.model_id), symbols, stored_step,
                                                    self.decoded_gray)
        refined = refinement is not None and not self.photo.is_gray
        if refined:
            if symbols is not None and version not in (RANGE_CODED, CONDITIONAL):
                raise ValueError(f"a refinement layer builds on range-coded symbols (format {RANGE_CODED} or "
                                 f"{CONDITIONAL}); model {engine.model_id} writes format {version}")
            if symbols is None or version == RANGE_CODED:  # format 4 carries its layer under a flag
                version = REFINED
        residual = Residual(
            engine.model_id, width, height, engine.symbol_planes, engine.symbol_stride, stored_step,
            gray_fingerprint(self.decoded_gray), gray_signature(self.decoded_gray),
            raw_size, payload, version=version,
            flags=FLAG_MONOCHROME if self.photo.is_gray else 0,
            alpha=self.photo.alpha.tobytes() if self.photo.alpha is not None else b"",
            icc_profile=(self.photo.icc_profile or b"") if self.keep_metadata else b"",
            refinement_space=refinement.space if refined else 0, refinement_step=refinement.step if refined else 0,
            refinement=refinement.payload if refined else b"")
        return Encoded(self.gray_bytes, write_residual(residual), self.gray_format, self.gray_path, self.gray_note,
                       stored_step, engine.model_id, (refinement.space, refinement.step) if refined else None)


@dataclass(frozen=True)
class Refinement:
    """A refinement layer, coded (:mod:`invgray_cli.codec.refinement`)."""

    space: int
    step: int
    payload: bytes
    restored: np.ndarray = field(repr=False, compare=False)  # the RGB a decoder will restore


def prepare(image: Photo | Image.Image | np.ndarray | bytes, *, quality: int | None = None,
            gray_format: GrayFormat = "jpg", keep_metadata: bool = True) -> Prepared:
    """Make and decode the gray file of a photo (the first half of :func:`encode`).

    With ``quality=None`` a JPEG input (file bytes, or a Photo from ``read_photo``)
    keeps its own luma losslessly where it can (see :mod:`invgray_cli.imaging.jpeg_transcode`);
    everything else, and any explicit ``quality``, gets the luma re-encoded (default
    quality 90)."""
    return _prepare(image, quality=quality, gray_format=gray_format, keep_metadata=keep_metadata).settled()[0]


def _prepare(image: Photo | Image.Image | np.ndarray | bytes, *, quality: int | None, gray_format: GrayFormat,
             keep_metadata: bool, fallback_quality: int = DEFAULT_QUALITY) -> Prepared:
    """:func:`prepare`, possibly with the lossless gray still pending (see :class:`Prepared`)."""
    photo = _as_photo(image, lossless_luma=gray_format == "jpg" and quality is None)
    rgb = photo.rgb
    _check_encodable(rgb.shape[1], rgb.shape[0], gray_format)
    exif, xmp = (photo.exif, photo.xmp) if keep_metadata else (None, None)
    if gray_format == "jpg" and quality is None and photo.jpeg is not None:
        started = photo.luma_transcode
        usable = started is not None and started.serves(photo.jpeg, photo.orientation)
        early = own_y_plane(photo) if usable else None
        if early is not None:
            def lossless_gray() -> tuple[bytes, np.ndarray]:
                return luma_jpeg(photo.jpeg, photo.orientation, exif, xmp, started=started), started.pixels()

            return Prepared(photo, b"", early, gray_format, keep_metadata, LOSSLESS, pending=lossless_gray)
        try:
            gray_bytes = luma_jpeg(photo.jpeg, photo.orientation, exif, xmp, started=started)
            # the transcode's thread has decoded its gray already (a rotated photo waits for it)
            decoded = started.pixels() if usable else decode_gray(gray_bytes)
            return Prepared(photo, gray_bytes, _agreeing_gray(decoded, rgb), gray_format, keep_metadata, LOSSLESS)
        except LosslessUnavailable as exc:
            note = str(exc)
    else:
        note = ""
    return _re_encoded(photo, gray_format, fallback_quality if quality is None else quality, keep_metadata, note)


def _re_encoded(photo: Photo, gray_format: GrayFormat, quality: int, keep_metadata: bool, note: str) -> Prepared:
    """The photo with its luma encoded as a new gray file (JPEG at ``quality``, or PNG)."""
    exif, xmp = (photo.exif, photo.xmp) if keep_metadata else (None, None)
    gray_bytes = encode_gray(luma(photo.rgb), gray_format, quality, exif=exif, xmp=xmp)
    path = f"re-encoded q{quality}" if gray_format == "jpg" else "PNG"
    return Prepared(photo, gray_bytes, decode_gray(gray_bytes), gray_format, keep_metadata, path, note)


def check_step(step: float) -> None:
    if not (0 < step <= MAX_STEP):
        raise ValueError(f"quantisation step must be in (0, {MAX_STEP:g}], got {step}")


def encode(image: Photo | Image.Image | np.ndarray | bytes, *, quality: int | None = None,
           gray_format: GrayFormat | None = None, level: str = DEFAULT_LEVEL, step: float | None = None,
           device: str | torch.device = "cpu", model: Model | None = None,
           keep_metadata: bool = True, effort: int = DEFAULT_EFFORT, max_error: int | None = None,
           refine: int | None = None) -> Encoded:
    """Encode a photo (:class:`Photo`, image file bytes, PIL image or uint8 array) into
    gray image bytes + residual bytes.

    With ``quality=None`` a JPEG input keeps its own luma losslessly where it can (see
    :func:`prepare`); any explicit ``quality`` re-encodes it. ``level`` names one of the
    model's rate levels (``low``, ``default``, ``high``, ``max``); ``step`` sets the
    quantisation step directly instead (larger: smaller residual). Alpha always travels
    (losslessly, in the residual); EXIF and XMP go into the gray image and the ICC
    profile into the residual unless ``keep_metadata`` is False. ``model``: a torch
    network or an engine; default the bundled model on ``device`` (onnxruntime on the CPU).
    ``effort`` 2 and 3 refine the symbols for this photo (:mod:`invgray_cli.codec.effort`):
    smaller and truer files, seconds per photo, torch needed.

    ``max_error`` K adds a refinement layer that brings every channel of every pixel
    within K of the input's 8-bit RGB (0: the exact original; the network does not run).
    ``gray_format=None`` takes the gray that makes the smallest pair: ``jpg`` for the
    network's levels; for a bound, PNG up to 2 and a JPEG beyond, of a quality that
    falls with the bound (a JPEG input keeps its own luma). ``refine`` adds a
    layer of chroma corrections on the network's colour in steps of ``refine`` half
    levels (1: the original's chroma, to half a level, on this gray).
    """
    check_effort(effort)
    if max_error is not None and refine is not None:
        raise ValueError("max_error and refine are two kinds of refinement: choose one")
    if gray_format is None:
        gray_format = exact_gray_format(max_error) if max_error is not None else "jpg"
    fallback = exact_gray_quality(max_error) if max_error is not None else DEFAULT_QUALITY
    prepared = _prepare(image, quality=quality, gray_format=gray_format, keep_metadata=keep_metadata,
                        fallback_quality=fallback)
    engine = engine_for(device=device, model=model)
    if step is None:
        step = model_spec(engine.model_id).level_step(level)
    check_step(step)
    if effort != DEFAULT_EFFORT:
        check_refinable(engine.model_id)
    if prepared.photo.is_gray:
        return prepared.settled()[0].encoded(engine, step, None)
    if max_error is not None:
        prepared = prepared.settled()[0]
        return prepared.encoded(engine, EXACT_LAYER_STEP, None, exact_refinement(prepared, max_error))
    symbols = analyse(engine, prepared.photo.rgb, prepared.decoded_gray, step)  # while a lossless gray is made
    prepared, unchanged = prepared.settled()
    if not unchanged:
        symbols = analyse(engine, prepared.photo.rgb, prepared.decoded_gray, step)
    if effort != DEFAULT_EFFORT:
        symbols = refined_symbols(engine, prepared, step, symbols, effort, device)
    if refine is not None:
        return prepared.encoded(engine, step, symbols, chroma_refinement(engine, prepared, step, symbols, refine))
    return prepared.encoded(engine, step, symbols)


EXACT_LAYER_STEP = 1.0  # the header's step of a file whose network does not run (any valid value would do)


def exact_refinement(prepared: Prepared, max_error: int) -> Refinement:
    """The RGB-space layer: every channel within ``max_error`` of the photo's."""
    payload, step, restored = encode_exact(prepared.photo.rgb, prepared.decoded_gray, max_error)
    return Refinement(SPACE_RGB, step, payload, restored)


def chroma_refinement(engine: Engine, prepared: Prepared, step: float, symbols: np.ndarray,
                      refine: int) -> Refinement:
    """The chroma-space layer over what the network restores from these symbols."""
    check_refine_step(refine)
    prediction = engine.synthesise(prepared.decoded_gray, symbols, float(np.float32(step)))
    payload, restored = encode_chroma(prepared.photo.rgb, prepared.decoded_gray, prediction, refine)
    return Refinement(SPACE_CHROMA, refine, payload, restored)


def check_refine_step(refine: int) -> None:
    if not 1 <= refine <= MAX_REFINE_STEP:
        raise ValueError(f"refinement step must be 1 to {MAX_REFINE_STEP} half levels, got {refine}")


def check_effort(effort: int) -> None:
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(map(str, EFFORTS))}, got {effort}")


def check_refinable(model_id: str) -> None:
    """Refinement measures the rate with the model's entropy tables: a format-1 model has none."""
    spec = bundled_spec(model_id)
    if spec is None or spec.format_version != RANGE_CODED:
        raise ValueError(f"effort above {DEFAULT_EFFORT} needs a bundled model with entropy tables "
                         f"(residual format {RANGE_CODED}); model {model_id} writes format "
                         f"{spec.format_version if spec else 1}")


def refined_symbols(engine: Engine, prepared: Prepared, step: float, symbols: np.ndarray, effort: int,
                    device: str | torch.device) -> np.ndarray:
    require_torch(f"--effort {effort}")
    spec = model_spec(engine.model_id)
    network = getattr(engine, "model", None)  # the onnxruntime engine has none: the same weights, in torch
    if network is None:
        network = spec.network(resolve_device(str(device)))
    on = next(network.parameters()).device
    return refine_symbols(network, spec.tables(), prepared.photo.rgb, prepared.decoded_gray,
                          float(np.float32(step)), symbols, effort, on)


def own_y_plane(photo: Photo) -> np.ndarray | None:
    """The input's own Y plane, which is exactly the decoded lossless gray
    (:func:`invgray_cli.imaging.jpeg_transcode.own_y_plane`, decoded in the transcode's thread while
    this one decoded the colours), provided it shows the decoded colour photo. A rotated
    file has none (see :class:`invgray_cli.imaging.jpeg_transcode.LumaTranscode`); then None, and
    the gray is waited for."""
    plane = photo.luma_transcode.early_plane() if photo.luma_transcode is not None else None
    try:
        return _agreeing_gray(plane, photo.rgb) if plane is not None else None
    except LosslessUnavailable:
        return None


LOSSLESS_AGREEMENT_DB = 30.0  # measured 50 to 66 dB on Kodak24 JPEGs; far below that, something is wrong


def _agreeing_gray(decoded: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """A lossless gray's pixels (the transcoded file's, or the input's own Y plane),
    provided they show the same picture as the decoded colour photo (same size, luma
    within rounding); else LosslessUnavailable."""
    if decoded.shape != rgb.shape[:2]:
        raise LosslessUnavailable(f"luma is {decoded.shape[1]}x{decoded.shape[0]}, the decoded photo "
                                  f"{rgb.shape[1]}x{rgb.shape[0]}")
    sample = (slice(None, None, 4), slice(None, None, 4))  # a 1/16 sample decides this as well, 16x sooner
    error = np.mean((decoded[sample].astype(np.float32) - luma(np.ascontiguousarray(rgb[sample]))) ** 2)
    agreement = 10 * np.log10(255.0 ** 2 / max(float(error), 1e-10))
    if agreement < LOSSLESS_AGREEMENT_DB:
        raise LosslessUnavailable(f"the file's luma is {agreement:.1f} dB from the decoded colours' luma")
    return decoded


def _check_encodable(width: int, height: int, gray_format: GrayFormat) -> None:
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise ValueError(f"image is {width}x{height}: the residual format holds at most {MAX_SIDE} px a side "
                         f"and {MAX_PIXELS} pixels")
    if gray_format == "jpg" and max(width, height) > MAX_JPEG_SIDE:
        raise ValueError(f"image is {width}x{height}: JPEG holds at most {MAX_JPEG_SIDE} px a side "
                         f"(use --gray-format png)")


__all__ = ["DEFAULT_LEVEL", "Encoded", "Prepared", "Refinement", "check_refine_step", "check_effort", "check_refinable", "check_step", "encode",
           "own_y_plane", "prepare", "resolve_device"]
