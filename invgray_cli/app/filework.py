"""One file's encode or decode, as the CLI does it: read the input, run the codec, write
the outputs as a set, and describe the result (report line, pixels, JSON record).

The local engine runs these functions in threads of the invgray process; the cluster
engine (:mod:`invgray_cli.app.cluster`) runs the very same functions on Ray workers, which
is why they take their options as plain, picklable settings rather than closures.
Inputs and outputs are local paths or object URLs (:mod:`invgray_cli.app.storage`);
``-`` is stdin or stdout (local runs only).

The codec and the image modules are imported inside the functions that run them: the
CLI imports this module at start-up, and ``invgray --help`` needs neither numpy nor
Pillow.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from invgray_cli.app.jobs import RESIDUAL_SUFFIX, STDIO, Job, JobError, Name, stem_of
from invgray_cli.app.storage import (
    ObjectPath,
    StorageError,
    is_url,
    location,
    one_line,
    write_set,
)
from invgray_cli.app.storage import read as read_object
from invgray_cli.engines.registry import UnknownModelError, bundled_spec

if TYPE_CHECKING:
    import numpy as np

    from invgray_cli.engines.batcher import NetworkBatcher

CUDA_BATCH = 8  # decode: images per network pass on CUDA (local folder runs and GPU workers)
Retried = Callable[[], bool] | None  # the cluster's "is this task a retry?" (see check_writable)


@dataclass(frozen=True)
class EncodeSettings:
    """What ``invgray encode`` was asked for, the same for every file of a run."""

    inputs: tuple[str, ...]  # the command line's inputs: an output may never replace one
    gray_format: str = "jpg"
    quality: int | None = None
    level: str = "default"
    step: float | None = None
    target_psnr: float | None = None
    max_bytes: int | None = None
    embed: bool = False
    strip: bool = False
    max_pixels: int = 200_000_000
    force: bool = False
    device: str = "cpu"
    effort: int = 1  # invgray_cli.codec.effort: 2 and 3 refine each photo's symbols
    max_error: int | None = None  # a refinement layer in the RGB space: every channel within this (0: lossless)


@dataclass(frozen=True)
class DecodeSettings:
    """What ``invgray decode`` was asked for, the same for every file of a run."""

    stdout_format: str = "PNG"  # the format of '-o -'
    compare: Path | None = None
    force: bool = False
    device: str = "cpu"


def read_input(path: str | Name) -> bytes:
    """The bytes of an input: stdin, a local file or an object; JobError says why not."""
    if not isinstance(path, ObjectPath) and is_url(path):
        path = location(path)  # an object, or a file:// URL's local path
    if isinstance(path, ObjectPath):
        try:
            return read_object(path)
        except (OSError, StorageError) as exc:
            raise JobError(str(exc)) from None
    path = str(path)
    if path == STDIO:
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.exists():
        raise JobError("no such file")
    if p.is_dir():
        raise JobError("is a directory")
    if not p.is_file():
        raise JobError("not a regular file")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise JobError(f"cannot read ({exc.strerror or exc})") from None


def labelled_read(path: Name) -> bytes:
    try:
        return read_input(path if isinstance(path, ObjectPath) else str(path))
    except JobError as exc:
        raise JobError(f"{path}: {exc}") from None


def check_writable(outputs: list[Name], inputs: list[str], force: bool, retried: Retried = None) -> None:
    """Refuse outputs that would replace an input, or existing ones without ``force``.

    An object output set that exists only in part (a run stopped between its moves) is
    let through: :func:`storage.write_set` completes it where the existing objects hold
    exactly the new bytes, and refuses otherwise. On a cluster, a task that Ray runs
    again after its worker died may find its own outputs complete: ``retried`` (asked
    only then) lets it through to the same byte-for-byte check."""
    remote = [out for out in outputs if isinstance(out, ObjectPath)]
    if remote:
        same = {str(location(i).resolve()) for i in inputs if i != STDIO}
        for out in outputs:
            if str(out.resolve()) in same:
                raise JobError(f"output {out} would overwrite an input")
        if not force:
            try:
                existing = [out for out in remote if out.exists()]
            except Exception as exc:  # noqa: BLE001 - the store's own error types
                raise JobError(f"cannot check outputs ({one_line(exc)})") from None
            if existing and len(existing) == len(outputs) and not (retried is not None and retried()):
                raise JobError(f"{existing[0]} already exists (use --force to overwrite)")
        return
    resolved_inputs = {Path(i).resolve() for i in inputs if i != STDIO}
    for out in outputs:
        if str(out) == STDIO:
            continue
        if out.resolve() in resolved_inputs:
            raise JobError(f"output {out} would overwrite an input")
        if out.exists() and not force:
            raise JobError(f"{out} already exists (use --force to overwrite)")


def write_all(files: list[tuple[Name, bytes]], force: bool) -> None:
    """Write every output of one input as a set (see images.write_all_atomic and
    storage.write_set); an output named '-' goes to stdout, complete, after the files."""
    if any(isinstance(path, ObjectPath) for path, _ in files):
        try:
            write_set([(path, data) for path, data in files], overwrite=force)  # type: ignore[misc]
        except FileExistsError as exc:
            raise JobError(str(exc)) from None
        except (OSError, StorageError) as exc:
            raise JobError(str(exc)) from None
        return
    from invgray_cli.imaging.images import write_all_atomic

    on_disk = [(path, data) for path, data in files if str(path) != STDIO]
    try:
        if on_disk:
            write_all_atomic(on_disk, overwrite=force)
        for path, data in files:
            if str(path) == STDIO:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
    except FileExistsError as exc:
        raise JobError(str(exc)) from None
    except OSError as exc:
        target = exc.filename or ", ".join(str(p) for p, _ in files)
        raise JobError(f"cannot write {target} ({exc.strerror or exc})") from None


def level_of(model_id: str, step: float) -> str | None:
    """The name of the model's rate level at this step, if it is one."""
    spec = bundled_spec(model_id)
    return spec.level_of(step) if spec is not None else None


def engine_name(model_id: str, device: str) -> str:
    """Which engine runs the network (onnxruntime or torch), for the JSON record."""
    from invgray_cli.engines.engine import engine_for

    return engine_for(model_id, device).name


def encode_file(job: Job, settings: EncodeSettings, retried: Retried = None) -> tuple[str, int, dict]:
    """Encode one photo to its gray image and residual (or the one embedded file)."""
    from invgray_cli.codec import encode as encode_photo
    from invgray_cli.codec.rate_control import encode_to_target
    from invgray_cli.imaging.images import ImageReadError, read_photo

    s = settings
    check_writable(job.outputs, list(s.inputs), s.force, retried)
    try:
        photo = read_photo(read_input(job.source), s.max_pixels or None,
                           lossless_luma=s.gray_format == "jpg" and s.quality is None)
    except ImageReadError as exc:
        raise JobError(str(exc)) from None
    reached, met, notes = None, None, []
    if s.target_psnr is not None or s.max_bytes is not None:
        result = encode_to_target(photo, target_psnr=s.target_psnr, max_bytes=s.max_bytes, quality=s.quality,
                                  gray_format=s.gray_format, device=s.device, keep_metadata=not s.strip,
                                  effort=s.effort)
        encoded, reached, met, notes = result.encoded, result.psnr, result.met, result.notes
    else:
        encoded = encode_photo(photo, quality=s.quality, gray_format=s.gray_format, level=s.level, step=s.step,
                               device=s.device, keep_metadata=not s.strip, effort=s.effort, max_error=s.max_error)
    if s.embed:
        write_all([(job.outputs[0], encoded.embedded())], s.force)
    else:
        write_all([(job.outputs[0], encoded.gray), (job.outputs[1], encoded.residual)], s.force)
    height, width = photo.rgb.shape[:2]
    pixels = height * width
    where = "embedded" if s.embed else str(job.outputs[1])
    path = encoded.gray_path + (f" (no lossless luma: {encoded.gray_note})" if encoded.gray_note else "")
    text = (f"{job.label}: {job.outputs[0]} ({path}, {len(encoded.gray) * 8 / pixels:.3f} bpp), residual "
            f"{where} ({len(encoded.residual)} bytes, {len(encoded.residual) * 8 / pixels:.4f} bpp)")
    if reached is not None:
        text += f", step {encoded.step:.4g}, RGB PSNR {reached:.2f} dB"
    exact = s.max_error is not None and encoded.refinement is not None
    if exact:
        text += ", lossless" if s.max_error == 0 else f", every channel within {s.max_error}"
    elif encoded.refinement is not None:
        space, layer_step = encoded.refinement
        text += (f", refined: chroma in steps of {layer_step} half levels" if space == 1 else
                 f", refined: every channel within {(layer_step - 1) // 2}")
    text += "".join(f" (warning: {note})" for note in notes)
    details = {
        "gray": str(job.outputs[0]), "residual": None if s.embed else str(job.outputs[1]), "embedded": s.embed,
        "width": width, "height": height, "gray_path": encoded.gray_path, "gray_note": encoded.gray_note or None,
        "gray_bytes": len(encoded.gray), "residual_bytes": len(encoded.residual),
        "gray_bpp": round(len(encoded.gray) * 8 / pixels, 5),
        "residual_bpp": round(len(encoded.residual) * 8 / pixels, 5),
        "level": None if exact else level_of(encoded.model_id, encoded.step), "step": None if exact else encoded.step,
        "max_error": s.max_error,
        "psnr": None if reached is None else round(reached, 3), "target_psnr": s.target_psnr,
        "max_bytes": s.max_bytes, "target_met": met, "warnings": notes, "model": encoded.model_id, "effort": s.effort,
        "engine": engine_name(encoded.model_id, s.device)}
    return text, pixels, details


def decode_file(job: Job, settings: DecodeSettings, batcher: NetworkBatcher | None = None,
                retried: Retried = None) -> tuple[str, int, dict]:
    """Restore one colour photo from its gray image and residual."""
    from invgray_cli.codec import decode_photo
    from invgray_cli.format.container import InvalidResidualError, read_residual
    from invgray_cli.imaging.images import colour_format_for, save_colour

    s = settings
    gray = location(job.source)
    check_writable(job.outputs, [job.source] + ([str(job.companion)] if job.companion else []), s.force, retried)
    gray_bytes = labelled_read(gray)
    residual_bytes, source = find_residual(gray, gray_bytes, job.companion)
    try:
        photo = decode_photo(gray_bytes, residual_bytes, device=s.device, batcher=batcher)
        header = read_residual(residual_bytes)
    except (InvalidResidualError, UnknownModelError) as exc:
        raise JobError(f"{source}: {exc}") from None
    except (ValueError, OSError) as exc:
        raise JobError(f"unreadable gray image ({exc})") from None
    out = job.outputs[0]
    fmt = s.stdout_format if str(out) == STDIO else colour_format_for(out)
    try:
        data = save_colour(photo, fmt)
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot save as {fmt} ({exc})") from None
    write_all([(out, data)], s.force)
    line = f"{job.label}" + ("" if source.startswith(job.label) else f" + {source}") + f": {out}"
    for note in photo.notes:
        line += f" (warning: {note})"
    quality = None
    if s.compare is not None:
        quality, comparison = compare_with(s.compare, photo.rgb)
        line += f" ({comparison})"
    height, width = photo.rgb.shape[:2]
    details = {
        "residual": source, "output": str(out), "format": fmt.lower(), "width": width, "height": height,
        "output_bytes": len(data), "level": level_of(header.model_id, header.step), "step": header.step,
        "psnr": None if quality is None else round(quality, 3), "warnings": list(photo.notes),
        "model": header.model_id,
        "engine": None if header.monochrome else engine_name(header.model_id, s.device)}
    return line, height * width, details


def find_residual(gray: Name, gray_bytes: bytes, residual: Name | None) -> tuple[bytes, str]:
    """The residual's bytes and a label for messages: the named file, else the one
    embedded in the gray, else the sidecar beside the gray."""
    from invgray_cli.format.embedding import EmbeddingError, extract

    if residual is not None:
        return labelled_read(residual), "<stdin>" if str(residual) == STDIO else str(residual)
    try:
        embedded = extract(gray_bytes)
    except EmbeddingError as exc:
        raise JobError(str(exc)) from None
    if embedded is not None:
        return embedded, f"{'<stdin>' if str(gray) == STDIO else gray} (embedded residual)"
    if str(gray) == STDIO:
        raise JobError("no residual embedded in the gray image on stdin (name the residual file after '-')")
    sidecar = gray.with_name(stem_of(gray) + RESIDUAL_SUFFIX)
    if _is_file(sidecar):
        return labelled_read(sidecar), str(sidecar)
    raise JobError(f"no residual found: none embedded (a tool may have stripped it) "
                   f"and no {sidecar.name} beside it")


def _is_file(path: Name) -> bool:
    if not isinstance(path, ObjectPath):
        return path.is_file()
    try:
        return path.is_file()
    except Exception as exc:  # noqa: BLE001 - an object store's own errors, as one line
        raise JobError(f"cannot look for {path} ({one_line(exc)})") from None


def compare_with(original: Path, restored: np.ndarray) -> tuple[float | None, str]:
    """The RGB PSNR of the restored pixels against the original photo, and a phrase for the report."""
    from invgray_cli.imaging.images import ImageReadError, read_photo
    from invgray_cli.imaging.metrics import psnr

    try:
        reference = read_photo(read_input(str(original))).rgb
    except (JobError, ImageReadError) as exc:
        return None, f"cannot compare with {original}: {exc}"
    if reference.shape != restored.shape:
        return None, f"cannot compare with {original}: size differs"
    value = psnr(restored, reference)
    return value, f"RGB PSNR {value:.2f} dB against {original}"
