"""The ``invgray`` command line: parses arguments, names files, reports. The codec
work happens in :mod:`invgray_cli.codec`; torch loads only when a command needs it."""

from __future__ import annotations

import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import __version__
from .batch import (
    RESIDUAL_SUFFIX, STDIO, Job, JobError, Reporter, decode_jobs, encode_jobs, run_jobs, stem_of,
)

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Grayscale images that restore to colour from a tiny residual file.")



class GrayFormatChoice(str, Enum):
    jpg = "jpg"
    png = "png"


class LevelChoice(str, Enum):
    low = "low"
    default = "default"
    high = "high"
    max = "max"


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"




def _err(message: str) -> None:
    typer.echo(f"invgray: error: {message}", err=True)


def _usage(message: str) -> typer.Exit:
    _err(message)
    return typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        from .zoo import default_model_id, registry

        model_id = default_model_id()
        typer.echo(f"invgray {__version__} (model {registry()['models'][model_id]['name']} {model_id})")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """invgray: encode colour photos as a grayscale image plus a tiny residual, and back."""
    # Pillow's warnings about damaged files would print multi-line noise; damaged files
    # are reported in one line, or read as far as they can be.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?")


def _read_input(path: str) -> bytes:
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


def _labelled_read(path: Path) -> bytes:
    try:
        return _read_input(str(path))
    except JobError as exc:
        raise JobError(f"{path}: {exc}") from None


def _check_writable(outputs: list[Path], inputs: list[str], force: bool) -> None:
    resolved_inputs = {Path(i).resolve() for i in inputs if i != STDIO}
    for out in outputs:
        if out.resolve() in resolved_inputs:
            raise JobError(f"output {out} would overwrite an input")
        if out.exists() and not force:
            raise JobError(f"{out} already exists (use --force to overwrite)")


def _write_all(files: list[tuple[Path, bytes]], force: bool) -> None:
    """Write every output of one input as a set (see images.write_all_atomic)."""
    from .images import write_all_atomic

    try:
        write_all_atomic(files, overwrite=force)
    except FileExistsError as exc:
        raise JobError(str(exc)) from None
    except OSError as exc:
        target = exc.filename or ", ".join(str(p) for p, _ in files)
        raise JobError(f"cannot write {target} ({exc.strerror or exc})") from None


def _device(name: DeviceChoice, threads: int):  # noqa: ANN202 - torch type, imported lazily
    from .codec import resolve_device

    try:
        device = resolve_device(name.value)
    except (RuntimeError, ValueError) as exc:
        raise _usage(str(exc)) from None
    if threads:
        import torch

        torch.set_num_threads(threads)
    return device


_RECURSIVE = typer.Option("-r", "--recursive", help="Also take photos in subfolders of folder inputs.")
_SKIP = typer.Option("--skip-existing", help="Skip inputs whose outputs all exist (resume a batch).")
_JOBS = typer.Option("--jobs", "-j", min=1, max=64, help="Files processed at once.")
_THREADS = typer.Option("--threads", min=0, max=256, help="CPU threads for the network (0: torch's default).")
_DEVICE = typer.Option("--device", help="Where the network runs.")
_FORCE = typer.Option("--force", "-f", help="Overwrite existing outputs.")
_OUT_DIR = typer.Option("--out-dir", help="Folder for the outputs (mirrors the tree of folder inputs; "
                                          "created if needed).")


@app.command()
def encode(
    inputs: Annotated[list[str], typer.Argument(metavar="IN...",
                                                help="Photos or folders of photos ('-' reads stdin).")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output",
                                                   help="Gray image path (one input only); the residual "
                                                        "goes beside it as <stem>.residual.bin.")] = None,
    out_dir: Annotated[Optional[Path], _OUT_DIR] = None,
    quality: Annotated[Optional[int], typer.Option(
        "-q", "--quality", min=1, max=100,
        help="Gray JPEG quality: re-encode the luma at this quality. Default: a JPEG input keeps its own "
             "luma losslessly where it can, anything else is encoded at 90.")] = None,
    gray_format: Annotated[Optional[GrayFormatChoice], typer.Option(
        "--gray-format", help="jpg (default) or png (lossless); -o's extension also decides.")] = None,
    level: Annotated[LevelChoice, typer.Option(
        "--level", "-l", help="Residual size against colour fidelity.")] = LevelChoice.default,
    step: Annotated[Optional[float], typer.Option("--step", min=0.01, max=1000.0,
                                                  help="Quantisation step (expert; overrides --level).")] = None,
    embed: Annotated[bool, typer.Option("--embed", help="Put the residual inside the gray image "
                                                        "(JPEG APP11 / PNG chunk): one file.")] = False,
    strip: Annotated[bool, typer.Option("--strip", help="Drop EXIF, XMP and ICC metadata.")] = False,
    max_pixels: Annotated[int, typer.Option(
        "--max-pixels", min=0, help="Refuse larger images (decompression bombs); 0 lifts the limit.")]
    = 200_000_000,
    recursive: Annotated[bool, _RECURSIVE] = False,
    skip_existing: Annotated[bool, _SKIP] = False,
    jobs: Annotated[int, _JOBS] = 1,
    threads: Annotated[int, _THREADS] = 0,
    device: Annotated[DeviceChoice, _DEVICE] = DeviceChoice.auto,
    force: Annotated[bool, _FORCE] = False,
) -> None:
    """Write <stem>.gray.jpg (or .gray.png) and <stem>.residual.bin for each photo."""
    if output is not None and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise _usage("-o/--output takes exactly one input file")
    if output is not None and out_dir is not None:
        raise _usage("use either -o/--output or --out-dir, not both")
    if STDIO in inputs and output is None:
        raise _usage("reading stdin ('-') needs -o/--output to name the outputs")
    if force and skip_existing:
        raise _usage("use either --force or --skip-existing, not both")
    fmt = gray_format.value if gray_format else None
    if output is not None:
        implied = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}.get(output.suffix.lower())
        if implied is None:
            raise _usage(f"{output}: gray output must end in .jpg, .jpeg or .png")
        if fmt is not None and fmt != implied:
            raise _usage(f"{output}: extension disagrees with --gray-format {fmt}")
        fmt = implied
    fmt = fmt or "jpg"
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise _usage(f"--out-dir {out_dir}: not a folder")

    if output is not None:
        outs = [output] if embed else [output, output.with_name(stem_of(output) + RESIDUAL_SUFFIX)]
        batch = [Job(inputs[0], inputs[0], outs)]
    else:
        batch = encode_jobs(inputs, out_dir, f".gray.{fmt}", embed, recursive)
    torch_device = _device(device, threads)
    from .codec import encode as encode_photo
    from .images import ImageReadError, read_photo

    def work(job: Job) -> tuple[str, int]:
        _check_writable(job.outputs, inputs, force)
        try:
            photo = read_photo(_read_input(job.source), max_pixels or None)
        except ImageReadError as exc:
            raise JobError(str(exc)) from None
        encoded = encode_photo(photo, quality=quality, gray_format=fmt, level=level.value, step=step,
                               device=torch_device, keep_metadata=not strip)
        if embed:
            _write_all([(job.outputs[0], encoded.embedded())], force)
        else:
            _write_all([(job.outputs[0], encoded.gray), (job.outputs[1], encoded.residual)], force)
        pixels = photo.rgb.shape[0] * photo.rgb.shape[1]
        where = "embedded" if embed else str(job.outputs[1])
        path = encoded.gray_path + (f" (no lossless luma: {encoded.gray_note})" if encoded.gray_note else "")
        return (f"{job.label}: {job.outputs[0]} ({path}, {len(encoded.gray) * 8 / pixels:.3f} bpp), residual "
                f"{where} ({len(encoded.residual)} bytes, {len(encoded.residual) * 8 / pixels:.4f} bpp)"), pixels

    outcome = run_jobs(batch, work, Reporter(len(batch), "encode"), skip_existing, jobs)
    if outcome.failures:
        raise typer.Exit(1)


@app.command()
def decode(
    inputs: Annotated[list[str], typer.Argument(
        metavar="GRAY [RESIDUAL] ...",
        help="Gray images, each optionally followed by its .residual.bin (else the embedded residual, else "
             "<stem>.residual.bin beside it), or folders of them.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output",
                                                   help="Output path (one gray only); its extension picks the "
                                                        "format (.png, .jpg, .webp, .tif, .bmp).")] = None,
    out_dir: Annotated[Optional[Path], _OUT_DIR] = None,
    compare: Annotated[Optional[Path], typer.Option(
        "--compare", help="Original photo: also print the restored image's RGB PSNR against it.")] = None,
    recursive: Annotated[bool, _RECURSIVE] = False,
    skip_existing: Annotated[bool, _SKIP] = False,
    jobs: Annotated[int, _JOBS] = 1,
    threads: Annotated[int, _THREADS] = 0,
    device: Annotated[DeviceChoice, _DEVICE] = DeviceChoice.auto,
    batch_size: Annotated[int, typer.Option(
        "--batch", min=0, max=256,
        help="Images per network pass in folder decodes; at least this many threads read and decode "
             "the files (0: 8 on CUDA, 1 on CPU, where one image already fills the cores).")] = 0,
    force: Annotated[bool, _FORCE] = False,
) -> None:
    """Restore colour photos from gray images and residuals: <stem>.color.png."""
    if output is not None and out_dir is not None:
        raise _usage("use either -o/--output or --out-dir, not both")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise _usage(f"--out-dir {out_dir}: not a folder")
    if force and skip_existing:
        raise _usage("use either --force or --skip-existing, not both")
    if STDIO in inputs:
        raise _usage("decode reads files, not stdin: save the gray image first")
    from .images import colour_format_for

    batch = decode_jobs(inputs, out_dir, recursive)
    if output is not None:
        if len(batch) != 1 or Path(batch[0].source).is_dir():
            raise _usage("-o/--output takes exactly one gray image")
        batch[0].outputs = [output]
    if compare is not None and len(batch) != 1:
        raise _usage("--compare takes exactly one gray image")
    for job in batch:
        if job.outputs:
            try:
                colour_format_for(job.outputs[0])
            except ValueError as exc:
                raise _usage(str(exc)) from None
    torch_device = _device(device, threads)
    from .codec import GrayRecompressedWarning, decode_photo

    warnings.simplefilter("ignore", GrayRecompressedWarning)  # reported per file from photo.notes
    from .container import InvalidResidualError
    from .images import save_colour
    from .zoo import UnknownModelError

    def work(job: Job) -> tuple[str, int]:
        gray = Path(job.source)
        _check_writable(job.outputs, [job.source] + ([str(job.companion)] if job.companion else []), force)
        gray_bytes = _labelled_read(gray)
        residual_bytes, source = _find_residual(gray, gray_bytes, job.companion)
        try:
            photo = decode_photo(gray_bytes, residual_bytes, device=torch_device, batcher=batcher)
        except (InvalidResidualError, UnknownModelError) as exc:
            raise JobError(f"{source}: {exc}") from None
        except (ValueError, OSError) as exc:
            raise JobError(f"unreadable gray image ({exc})") from None
        fmt = colour_format_for(job.outputs[0])
        try:
            data = save_colour(photo, fmt)
        except (OSError, ValueError) as exc:
            raise JobError(f"cannot save as {fmt} ({exc})") from None
        _write_all([(job.outputs[0], data)], force)
        line = f"{job.label}" + ("" if source.startswith(str(gray)) else f" + {source}") + f": {job.outputs[0]}"
        for note in photo.notes:
            line += f" (warning: {note})"
        if compare is not None:
            line += f" ({_psnr_against(compare, photo.rgb)})"
        return line, photo.rgb.shape[0] * photo.rgb.shape[1]

    batcher = _batcher(torch_device, batch_size, len(batch))
    try:
        outcome = run_jobs(batch, work, Reporter(len(batch), "decode"), skip_existing,
                           max(jobs, batcher.max_batch) if batcher else jobs)
    finally:
        if batcher is not None:
            batcher.close()
    if outcome.failures:
        raise typer.Exit(1)


def _batcher(device, batch_size: int, files: int):  # noqa: ANN001, ANN202 - torch types, lazy
    """A NetworkBatcher for folder decodes, or None where batches would be of one."""
    size = batch_size or (8 if device.type == "cuda" else 1)
    if size <= 1 or files <= 1:
        return None
    from .batcher import NetworkBatcher
    from .zoo import load_model

    return NetworkBatcher(load_model(device=device), device, max_batch=size)


def _find_residual(gray: Path, gray_bytes: bytes, residual: Path | None) -> tuple[bytes, str]:
    """The residual's bytes and a label for messages: the named file, else the one
    embedded in the gray, else the sidecar beside the gray."""
    from .embedding import EmbeddingError, extract

    if residual is not None:
        return _labelled_read(residual), str(residual)
    try:
        embedded = extract(gray_bytes)
    except EmbeddingError as exc:
        raise JobError(str(exc)) from None
    if embedded is not None:
        return embedded, f"{gray} (embedded residual)"
    sidecar = gray.with_name(stem_of(gray) + RESIDUAL_SUFFIX)
    if sidecar.is_file():
        return _labelled_read(sidecar), str(sidecar)
    raise JobError(f"no residual found: none embedded (a tool may have stripped it) "
                     f"and no {sidecar.name} beside it")


@app.command()
def embed(
    gray: Annotated[Path, typer.Argument(help="A gray image made by invgray encode.")],
    residual: Annotated[Path, typer.Argument(help="Its residual file.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output path (default <stem>.embedded.gray.jpg/.png beside the gray).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")] = False,
) -> None:
    """Write the one-file form: the gray image with its residual inside (no re-encoding)."""
    from .container import InvalidResidualError, gray_fingerprint, read_residual
    from .gray import decode_gray
    from .embedding import EmbeddingError
    from .embedding import embed as embed_residual

    if STDIO in (str(gray), str(residual)):
        raise _usage("embed reads files, not stdin")
    try:
        gray_bytes = _labelled_read(gray)
        suffix = ".png" if gray_bytes.startswith(b"\x89PNG") else ".jpg"
        target = output or gray.with_name(f"{stem_of(gray)}.embedded.gray{suffix}")
        _check_writable([target], [str(gray), str(residual)], force)
        residual_bytes = _labelled_read(residual)
        try:
            header = read_residual(residual_bytes)
        except InvalidResidualError as exc:
            raise JobError(f"{residual}: {exc}") from None
        try:
            if header.gray_fingerprint != gray_fingerprint(decode_gray(gray_bytes)):
                raise ValueError(f"residual {residual} does not belong to this gray image")
            embedded = embed_residual(gray_bytes, residual_bytes)
        except (EmbeddingError, ValueError, OSError) as exc:
            raise JobError(f"{gray}: {exc}") from None
        _write_all([(target, embedded)], force)
    except (JobError, FileExistsError) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"{gray} + {residual}: {target}")


@app.command()
def extract(
    gray: Annotated[Path, typer.Argument(help="A gray image with an embedded residual.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Residual path (default <stem>.residual.bin beside the gray).")] = None,
    gray_out: Annotated[Optional[Path], typer.Option(
        "--gray-out", help="Also write the gray image without the embedded residual here.")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
) -> None:
    """Write the sidecar form: the embedded residual as its own file (no re-encoding)."""
    from .embedding import EmbeddingError, strip
    from .embedding import extract as extract_residual

    if str(gray) == STDIO:
        raise _usage("extract reads files, not stdin")
    target = output or gray.with_name(stem_of(gray) + RESIDUAL_SUFFIX)
    outputs = [target] + ([gray_out] if gray_out else [])
    if gray_out is not None and gray_out.resolve() == target.resolve():
        raise _usage("--gray-out and the residual output are the same file")
    try:
        _check_writable(outputs, [str(gray)], force)
        gray_bytes = _labelled_read(gray)
        try:
            residual_bytes = extract_residual(gray_bytes)
            if residual_bytes is None:
                raise JobError("no residual embedded (a tool may have stripped it)")
            files = [(target, residual_bytes)] + ([(gray_out, strip(gray_bytes))] if gray_out else [])
        except (EmbeddingError, JobError) as exc:
            raise JobError(f"{gray}: {exc}") from None
        _write_all(files, force)
    except (JobError, FileExistsError) as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    typer.echo(f"{gray}: {', '.join(str(p) for p, _ in files)}")


def _psnr_against(original: Path, restored) -> str:  # noqa: ANN001 - numpy array
    from .images import ImageReadError, read_photo
    from .inference import psnr

    try:
        reference = read_photo(_read_input(str(original))).rgb
    except (JobError, ImageReadError) as exc:
        return f"cannot compare with {original}: {exc}"
    if reference.shape != restored.shape:
        return f"cannot compare with {original}: size differs"
    return f"RGB PSNR {psnr(restored, reference):.2f} dB against {original}"


@app.command()
def info(file: Annotated[Path, typer.Argument(
        help="A residual file, or a gray image (how its gray was made, and its embedded residual).")]) -> None:
    """Print what a residual file or a gray image holds."""
    from .container import InvalidResidualError

    try:
        data = _read_input(str(file))
        rows = _gray_rows(data)
        residual = data
        if rows is not None:
            from .embedding import EmbeddingError, extract

            try:
                residual = extract(data)
                if residual is None:
                    rows.append(("embedded residual", "none"))
            except EmbeddingError as exc:
                rows.append(("embedded residual", str(exc)))
                residual = None
        rows = (rows or []) + (_residual_rows(residual) if residual is not None else [])
    except (JobError, InvalidResidualError) as exc:
        _err(f"{file}: {exc}")
        raise typer.Exit(1) from None
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _gray_rows(data: bytes) -> list[tuple[str, str]] | None:
    """What a gray image file says about itself; None when the bytes are not one."""
    from .gray import decode_gray
    from .jpeg_transcode import gray_provenance

    if not data.startswith((b"\xff\xd8", b"\x89PNG")):
        return None
    try:
        pixels = decode_gray(data)
    except ValueError:
        return None
    if data.startswith(b"\x89PNG"):
        return [("gray image", f"PNG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", "PNG (lossless)")]
    made = gray_provenance(data) or "not recorded (a JPEG with non-standard quantisation tables)"
    return [("gray image", f"JPEG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", made)]


def _residual_rows(data: bytes) -> list[tuple[str, str]]:
    from .container import read_residual
    from .zoo import known_model_ids, levels

    header = read_residual(data)
    pixels = header.width * header.height
    size = len(data)
    bundled = header.model_id in known_model_ids()
    known = "bundled" if bundled else "NOT bundled with this invgray"
    level_names = [name for name, value in (levels(header.model_id) if bundled else {}).items()
                   if abs(value - header.step) < 1e-6]
    return [
        ("format version", str(header.version)),
        ("model", f"{header.model_id} ({known})"),
        ("image", f"{header.width} x {header.height}"),
        ("symbols", " x ".join(map(str, header.symbol_shape)) + f" ({header.cell} px cells)"),
        ("quantisation step", f"{header.step:g}" + (f" (level {level_names[0]})" if level_names else "")),
        ("gray fingerprint", header.gray_fingerprint.hex()),
        ("payload", f"{len(header.payload)} bytes zstd, {header.raw_size} bytes raw"),
        ("file size", f"{size} bytes, {size * 8 / pixels:.4f} bpp"),
    ]


def main() -> None:
    """Console entry point: no traceback reaches the user unless INVGRAY_DEBUG is set."""
    import os

    try:
        app()
    except Exception as exc:  # noqa: BLE001 - last line of defence, reported in one line
        if os.environ.get("INVGRAY_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (set INVGRAY_DEBUG=1 for details)")
        sys.exit(1)
