"""The ``invgray`` command line: parses arguments, names files, reports. What one file's
encode or decode does is in :mod:`invgray_cli.app.filework`, the codec in
:mod:`invgray_cli.codec`; on the CPU the network runs in onnxruntime
(:mod:`invgray_cli.engines.engine`), so torch loads only for CUDA. Object storage
(:mod:`invgray_cli.app.storage`) and the Ray engine (:mod:`invgray_cli.app.cluster`) load only
when a URL or ``--engine ray`` asks for them."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import replace
from enum import Enum
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from invgray_cli import __version__
from invgray_cli.app.jobs import (
    RESIDUAL_SUFFIX,
    STDIO,
    Job,
    JobError,
    Outcome,
    Reporter,
    count_in_background,
    decode_jobs,
    encode_jobs,
    plan_decode,
    plan_encode,
    run_jobs,
    stem_of,
)

if TYPE_CHECKING:
    from invgray_cli.app.storage import ObjectPath

# Plain (not rich) help: flags read as flags there, without a <bool> placeholder.
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]},
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


class ColourFormatChoice(str, Enum):
    png = "png"
    jpg = "jpg"
    webp = "webp"
    tif = "tif"
    bmp = "bmp"


def _err(message: str) -> None:
    typer.echo(f"invgray: error: {message}", err=True)


def _usage(message: str) -> typer.Exit:
    _err(message)
    return typer.Exit(2)


def _version(value: bool) -> None:
    if value:
        from invgray_cli.engines.registry import model_spec

        spec = model_spec()
        typer.echo(f"invgray {__version__} (model {spec.name} {spec.model_id})")
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


def _device(name: DeviceChoice, threads: int) -> str:
    """'cpu' or 'cuda' (torch is imported only to look for CUDA where a driver exists)."""
    from invgray_cli.engines.engine import device_name, set_threads

    try:
        device = device_name(name.value)
    except (RuntimeError, ValueError) as exc:
        raise _usage(str(exc)) from None
    set_threads(threads)
    return device


def _refuse_terminal_stdout() -> None:
    if sys.stdout.isatty():
        raise _usage("refusing to write binary image data to a terminal: redirect stdout to a file or a pipe")


# What one file's work needs lives in filework and storage, imported on first use: the
# CLI's start-up (`invgray --help`, a one-file encode) stays what it was.
def _read_input(path: str) -> bytes:
    from invgray_cli.app.filework import read_input

    return read_input(path)


def _labelled_read(path: Path) -> bytes:
    from invgray_cli.app.filework import labelled_read

    return labelled_read(path)


def _check_writable(outputs: list[Path], inputs: list[str], force: bool) -> None:
    from invgray_cli.app.filework import check_writable

    check_writable(outputs, inputs, force)


def _write_all(files: list[tuple[Path, bytes]], force: bool) -> None:
    from invgray_cli.app.filework import write_all

    write_all(files, force)


def _level_of(model_id: str, step: float) -> str | None:
    from invgray_cli.app.filework import level_of

    return level_of(model_id, step)


def location(name: str) -> Path | ObjectPath:
    from invgray_cli.app.storage import location as storage_location

    return storage_location(name)


def is_url(name: object) -> bool:
    from invgray_cli.app.storage import is_url as storage_is_url

    return storage_is_url(name)


class EngineChoice(str, Enum):
    local = "local"
    ray = "ray"


def _as_local(name: str) -> str:
    """A file:// URL is a local path: it takes the local code path, naming and all."""
    return str(location(name)) if is_url(name) and name.lower().startswith("file://") else name


def _check_storage(names: Iterable[str | None]) -> bool:
    """Whether any name is an object URL; each one's filesystem must load (else exit 2)."""
    remote = False
    for name in names:
        if name is not None and is_url(name) and not name.lower().startswith("file://"):
            from invgray_cli.app.storage import StorageError, check_usable

            remote = True
            try:
                check_usable(location(name))  # type: ignore[arg-type]
            except StorageError as exc:
                raise _usage(str(exc)) from None
    return remote


def _check_engine(engine: EngineChoice, address: str | None, workers: int, stdio: bool) -> None:
    if engine is EngineChoice.local:
        if address is not None or workers:
            raise _usage("--address and --workers apply to --engine ray")
        return
    if stdio:
        raise _usage("--engine ray reads and writes files or objects, not stdin or stdout")
    from invgray_cli.app.cluster import ClusterError, require_ray

    try:
        require_ray()
    except ClusterError as exc:
        raise _usage(str(exc)) from None


def _run_on_cluster(verb: str, plan: Callable[[], Iterable[Job]], settings: Any, skip_existing: bool,  # noqa: ANN401
                    make_reporter: Callable[[], Reporter], options: Any) -> Outcome:  # noqa: ANN401
    from invgray_cli.app.cluster import (
        ClusterError,
        ClusterRunFailed,
        ClusterUsageError,
        run,
    )

    try:
        return run(verb, plan, settings, skip_existing, make_reporter, options)
    except ClusterRunFailed:  # reported file by file already
        raise typer.Exit(1) from None
    except ClusterUsageError as exc:
        raise _usage(str(exc)) from None
    except ClusterError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None


_RECURSIVE = typer.Option("-r", "--recursive", help="Also take photos in subfolders of folder inputs.")
_SKIP = typer.Option("--skip-existing", help="Skip inputs whose outputs all exist (resume a batch).")
_JOBS = typer.Option("--jobs", "-j", min=1, max=64, help="Files processed at once.")
_THREADS = typer.Option("--threads", min=0, max=256,
                        help="CPU threads for the network (0: onnxruntime's or torch's default).")
_DEVICE = typer.Option("--device", help="Where the network runs.")
_FORCE = typer.Option("--force", "-f", help="Overwrite existing outputs.")
_OUT_DIR = typer.Option("--out-dir", help="Folder for the outputs (mirrors the tree of folder inputs; "
                                          "created if needed).")
_ENGINE = typer.Option("--engine", help="local: this machine (--jobs threads). ray: a Ray cluster through Ray "
                                         "Data (pip install 'invgray[cluster]'): --workers actors, each loading the "
                                         "model once; --jobs files at once in each CPU worker; --threads network "
                                         "threads (and CPUs) per CPU worker.")
_ADDRESS = typer.Option("--address", metavar="ADDR",
                        help="--engine ray: the cluster (auto: the one this machine belongs to; HOST:6379; "
                             "ray://HOST:10001). Default: RAY_ADDRESS, else a new local cluster.")
_WORKERS = typer.Option("--workers", min=0, max=100_000,
                        help="--engine ray: worker actors (0: one per GPU of the cluster, else one per CPU).")
_JSON = typer.Option("--json", help="One JSON object per file on stdout (JSON Lines; keys in the README).")
_QUIET = typer.Option("--quiet", help="No per-file lines, progress or summary; errors and warnings still "
                                      "go to stderr.")


@app.command()
def encode(
    inputs: Annotated[list[str], typer.Argument(metavar="IN...",
                                                help="Photos or folders of photos ('-' reads stdin).")],
    output: Annotated[Optional[str], typer.Option("-o", "--output",
                                                  help="Gray image path (one input only); the residual "
                                                       "goes beside it as <stem>.residual.bin. '-' writes "
                                                       "stdout (with --embed: one stream).")] = None,
    out_dir: Annotated[Optional[str], _OUT_DIR] = None,
    quality: Annotated[Optional[int], typer.Option(
        "-q", "--quality", min=1, max=100,
        help="Gray JPEG quality: re-encode the luma at this quality. Default: a JPEG input keeps its own "
             "luma losslessly where it can, anything else is encoded at 90.")] = None,
    gray_format: Annotated[Optional[GrayFormatChoice], typer.Option(
        "--gray-format", "--format",
        help="jpg (default) or png (lossless); -o's extension also decides.")] = None,
    level: Annotated[Optional[LevelChoice], typer.Option(
        "--level", "-l", help="Residual size against colour fidelity (default: default).")] = None,
    step: Annotated[Optional[float], typer.Option("--step", min=0.01, max=1000.0,
                                                  help="Quantisation step (expert; overrides --level).")] = None,
    target_psnr: Annotated[Optional[float], typer.Option(
        "--target-psnr", min=1.0, max=99.0, metavar="DB",
        help="Smallest residual whose restored RGB PSNR reaches DB (searched per photo, about 3 to 6 "
             "decodes; an unreachable target gives the best achievable, with a warning).")] = None,
    max_bytes: Annotated[Optional[int], typer.Option(
        "--max-bytes", min=1, metavar="N",
        help="Best residual of at most N bytes (searched per photo; when even the smallest is larger, "
             "that one is written, with a warning).")] = None,
    effort: Annotated[int, typer.Option(
        "--effort", "-e", min=1, max=3,
        help="Encoder effort: 1 (default) one network pass; 2 and 3 refine the residual for each photo "
             "(truer colour for its bytes; seconds per photo, torch needed). Decoding is unchanged.")] = 1,
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
    json_lines: Annotated[bool, _JSON] = False,
    quiet: Annotated[bool, _QUIET] = False,
    engine: Annotated[EngineChoice, _ENGINE] = EngineChoice.local,
    address: Annotated[Optional[str], _ADDRESS] = None,
    workers: Annotated[int, _WORKERS] = 0,
) -> None:
    """Write <stem>.gray.jpg (or .gray.png) and <stem>.residual.bin for each photo.

    Inputs and --out-dir may be object URLs (s3://, gs://, az://, file://)."""
    inputs = [_as_local(name) for name in inputs]
    remote = _check_storage([*inputs, out_dir, output])
    _check_engine(engine, address, workers, STDIO in inputs or output == STDIO)
    output = location(_as_local(output)) if output is not None else None
    out_dir = location(_as_local(out_dir)) if out_dir is not None else None
    if output is not None and (len(inputs) != 1 or location(inputs[0]).is_dir()):
        raise _usage("-o/--output takes exactly one input file")
    if output is not None and out_dir is not None:
        raise _usage("use either -o/--output or --out-dir, not both")
    if STDIO in inputs and output is None:
        raise _usage("reading stdin ('-') needs -o/--output to name the outputs (or -o - with --embed)")
    if force and skip_existing:
        raise _usage("use either --force or --skip-existing, not both")
    chosen = [name for name, value in (("--step", step), ("--target-psnr", target_psnr), ("--max-bytes", max_bytes))
              if value is not None]
    if level is not None and (target_psnr is not None or max_bytes is not None):
        chosen.insert(0, "--level")  # --step overriding --level stays allowed, as before
    if len(chosen) > 1:
        raise _usage(f"use one of {', '.join(chosen)}, not several")
    fmt = gray_format.value if gray_format else None
    to_stdout = output is not None and str(output) == STDIO
    if to_stdout:
        if not embed:
            raise _usage("-o - writes one stream: add --embed (the residual inside the gray image), "
                         "or name a file")
        _refuse_terminal_stdout()
    elif output is not None:
        implied = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}.get(output.suffix.lower())
        if implied is None:
            raise _usage(f"{output}: gray output must end in .jpg, .jpeg or .png (or be - for stdout)")
        if fmt is not None and fmt != implied:
            raise _usage(f"{output}: extension disagrees with --gray-format {fmt}")
        fmt = implied
    fmt = fmt or "jpg"
    if isinstance(out_dir, Path) and out_dir.exists() and not out_dir.is_dir():
        raise _usage(f"--out-dir {out_dir}: not a folder")

    plan = None  # object storage and the cluster: a stream of jobs, listed as it is read
    if output is not None:
        outs = [output] if embed else [output, output.with_name(stem_of(output) + RESIDUAL_SUFFIX)]
        label = "<stdin>" if inputs[0] == STDIO else inputs[0]
        batch = [Job(label, inputs[0], outs)]
    elif remote or engine is EngineChoice.ray:
        batch = None
        plan = partial(plan_encode, inputs, out_dir, f".gray.{fmt}", embed, recursive)
    else:
        batch = encode_jobs(inputs, out_dir, f".gray.{fmt}", embed, recursive)
    from invgray_cli.app.filework import EncodeSettings, encode_file

    settings = EncodeSettings(
        inputs=tuple(inputs), gray_format=fmt, quality=quality, level=(level or LevelChoice.default).value, step=step,
        target_psnr=target_psnr, max_bytes=max_bytes, embed=embed, strip=strip, max_pixels=max_pixels, force=force,
        effort=effort)

    def reporter() -> Reporter:
        return Reporter(None if batch is None else len(batch), "encode", quiet=quiet, json_lines=json_lines,
                        data_on_stdout=to_stdout)

    if engine is EngineChoice.ray:
        outcome = _run_on_cluster("encode", plan or (lambda: iter(batch)), settings, skip_existing, reporter,
                                  _cluster_options(address, workers, jobs, threads, device, 0))
        if outcome.failures:
            raise typer.Exit(1)
        return
    device_name = _device(device, threads)
    settings = replace(settings, device=device_name)
    report = reporter()
    if plan is not None:
        count_in_background(plan, report)
    outcome = run_jobs(batch if plan is None else plan(), partial(encode_file, settings=settings), report,
                       skip_existing, jobs)
    if outcome.failures:
        raise typer.Exit(1)


def _cluster_options(address: str | None, workers: int, jobs: int, threads: int, device: DeviceChoice,
                     batch: int) -> Any:  # noqa: ANN401 - a cluster.ClusterOptions (cluster loads lazily)
    from invgray_cli.app.cluster import ClusterOptions

    return ClusterOptions(address=address, workers=workers, jobs=jobs, threads=threads, device=device.value,
                          batch=batch)


@app.command()
def decode(
    inputs: Annotated[list[str], typer.Argument(
        metavar="GRAY [RESIDUAL] ...",
        help="Gray images, each optionally followed by its .residual.bin (else the embedded residual, else "
             "<stem>.residual.bin beside it), or folders of them. '-' reads the gray image, or the "
             "residual of a single pair, from stdin.")],
    output: Annotated[Optional[str], typer.Option("-o", "--output",
                                                  help="Output path (one gray only); its extension picks the "
                                                       "format (.png, .jpg, .webp, .tif, .bmp). '-' writes "
                                                       "stdout in --format.")] = None,
    out_dir: Annotated[Optional[str], _OUT_DIR] = None,
    colour_format: Annotated[Optional[ColourFormatChoice], typer.Option(
        "--format", help="Format of -o - (default png); with a file name it must agree with the "
                         "extension.")] = None,
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
    json_lines: Annotated[bool, _JSON] = False,
    quiet: Annotated[bool, _QUIET] = False,
    engine: Annotated[EngineChoice, _ENGINE] = EngineChoice.local,
    address: Annotated[Optional[str], _ADDRESS] = None,
    workers: Annotated[int, _WORKERS] = 0,
) -> None:
    """Restore colour photos from gray images and residuals: <stem>.color.png.

    Inputs and --out-dir may be object URLs (s3://, gs://, az://, file://)."""
    inputs = [_as_local(name) for name in inputs]
    remote = _check_storage([*inputs, out_dir, output])
    _check_engine(engine, address, workers, STDIO in inputs or output == STDIO)
    if engine is EngineChoice.ray and compare is not None:
        raise _usage("--compare takes one local decode, not --engine ray")
    output = location(_as_local(output)) if output is not None else None
    out_dir = location(_as_local(out_dir)) if out_dir is not None else None
    if output is not None and out_dir is not None:
        raise _usage("use either -o/--output or --out-dir, not both")
    if isinstance(out_dir, Path) and out_dir.exists() and not out_dir.is_dir():
        raise _usage(f"--out-dir {out_dir}: not a folder")
    if force and skip_existing:
        raise _usage("use either --force or --skip-existing, not both")
    from invgray_cli.imaging.images import COLOUR_FORMATS, colour_format_for

    if STDIO in inputs:
        if len(inputs) > 2 or inputs.count(STDIO) > 1:
            raise _usage("'-' (stdin) stands for the gray image or the residual of one pair only")
        if inputs[0] == STDIO and output is None:
            raise _usage("a gray image from stdin needs -o/--output (a path, or - for stdout)")
        gray_name = inputs[0]
        label = "<stdin>" if gray_name == STDIO else gray_name
        default = location(gray_name).parent / f"{stem_of(location(gray_name))}.color.png"
        batch = [Job(label, gray_name, [default], companion=location(inputs[1]) if len(inputs) == 2 else None)]
    elif remote or engine is EngineChoice.ray:
        batch = None
        plan = partial(plan_decode, inputs, out_dir, recursive)
        if output is not None or compare is not None:  # one file only: the first two jobs tell
            batch = list(islice(plan(), 2))
    else:
        batch = decode_jobs(inputs, out_dir, recursive)
    to_stdout = output is not None and str(output) == STDIO
    if output is not None:
        if len(batch) != 1 or location(batch[0].source).is_dir():
            raise _usage("-o/--output takes exactly one gray image")
        batch[0].outputs = [output]
    if compare is not None and len(batch) != 1:
        raise _usage("--compare takes exactly one gray image")
    stdout_format = COLOUR_FORMATS["." + (colour_format.value if colour_format else "png")]
    for job in batch or []:
        if job.outputs and str(job.outputs[0]) != STDIO:
            try:
                implied = colour_format_for(job.outputs[0])
            except ValueError as exc:
                raise _usage(str(exc)) from None
            if colour_format is not None and implied != stdout_format:
                raise _usage(f"{job.outputs[0]}: extension disagrees with --format {colour_format.value}")
    if to_stdout:
        _refuse_terminal_stdout()
    from invgray_cli.app.filework import DecodeSettings, decode_file

    settings = DecodeSettings(stdout_format=stdout_format, compare=compare, force=force)

    def reporter() -> Reporter:
        return Reporter(None if batch is None else len(batch), "decode", quiet=quiet, json_lines=json_lines,
                        data_on_stdout=to_stdout)

    if batch is not None:
        plan = None
    if engine is EngineChoice.ray:
        outcome = _run_on_cluster("decode", plan or (lambda: iter(batch)), settings, skip_existing, reporter,
                                  _cluster_options(address, workers, jobs, threads, device, batch_size))
        if outcome.failures:
            raise typer.Exit(1)
        return
    device_name = _device(device, threads)
    from invgray_cli.codec import GrayRecompressedWarning

    warnings.simplefilter("ignore", GrayRecompressedWarning)  # reported per file from photo.notes
    settings = replace(settings, device=device_name)
    batcher = _batcher(device_name, batch_size, 2 if batch is None else len(batch))
    report = reporter()
    if plan is not None:
        count_in_background(plan, report)
    try:
        outcome = run_jobs(batch if plan is None else plan(), partial(decode_file, settings=settings, batcher=batcher),
                           report, skip_existing, max(jobs, batcher.max_batch) if batcher else jobs)
    finally:
        if batcher is not None:
            batcher.close()
    if outcome.failures:
        raise typer.Exit(1)


def _batcher(device: str, batch_size: int, files: int):  # noqa: ANN202 - torch-backed, imported lazily
    """A NetworkBatcher (torch) for folder decodes, or None where batches would be of one."""
    size = batch_size or (8 if device.startswith("cuda") else 1)
    if size <= 1 or files <= 1:
        return None
    import torch

    from invgray_cli.engines.batcher import NetworkBatcher
    from invgray_cli.engines.registry import load_model

    return NetworkBatcher(load_model(device=device), torch.device(device), max_batch=size)


@app.command()
def embed(
    gray: Annotated[Path, typer.Argument(help="A gray image made by invgray encode.")],
    residual: Annotated[Path, typer.Argument(help="Its residual file.")],
    output: Annotated[Optional[Path], typer.Option(
        "-o", "--output", help="Output path (default <stem>.embedded.gray.jpg/.png beside the gray).")] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output.")] = False,
) -> None:
    """Write the one-file form: the gray image with its residual inside (no re-encoding)."""
    from invgray_cli.format.container import (
        InvalidResidualError,
        gray_fingerprint,
        read_residual,
    )
    from invgray_cli.format.embedding import EmbeddingError
    from invgray_cli.format.embedding import embed as embed_residual
    from invgray_cli.imaging.gray import decode_gray

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
    from invgray_cli.format.embedding import EmbeddingError, strip
    from invgray_cli.format.embedding import extract as extract_residual

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


@app.command()
def info(
    files: Annotated[list[Path], typer.Argument(
        metavar="FILE...", help="Residual files, or gray images (how the gray was made, and its embedded residual; "
        "'-' reads stdin).")],
    json_lines: Annotated[bool, _JSON] = False,
) -> None:
    """Print what residual files and gray images hold."""
    from invgray_cli.app.reports import dumps, record
    from invgray_cli.engines.registry import known_model_ids
    from invgray_cli.format.container import MAGIC, InvalidResidualError, read_residual
    from invgray_cli.format.embedding import EmbeddingError, extract

    failures = 0
    for file in files:
        label = "<stdin>" if str(file) == STDIO else str(file)
        gray: list[tuple[str, str]] | None = None
        header = None
        try:
            data = _read_input(str(file))
            embedded = not data.startswith(MAGIC) and data.startswith((b"\xff\xd8", b"\x89PNG"))
            if embedded:
                gray = _gray_rows(data)
                try:
                    data = extract(data)
                except EmbeddingError as exc:
                    if gray is None:
                        raise
                    gray.append(("embedded residual", str(exc)))
                    data = None
                if data is None and gray is None:
                    raise JobError("no residual embedded in this image (a tool may have stripped it)")
                if data is None and not any(key == "embedded residual" for key, _ in gray):
                    gray.append(("embedded residual", "none"))
            if data is not None:
                header = read_residual(data)
        except (JobError, InvalidResidualError, EmbeddingError) as exc:
            failures += 1
            _err(f"{label}: {exc}")
            if json_lines:
                typer.echo(dumps(record("info", status="error", input=label, error=str(exc))))
            continue
        made_by = dict(gray or []).get("gray made by")
        if header is None:  # a gray image without a residual inside
            if json_lines:
                typer.echo(dumps(record("info", status="ok", input=label, gray_made_by=made_by, embedded=False)))
            else:
                _print_rows(([("file", label)] if len(files) > 1 else []) + gray)
            continue
        pixels = header.width * header.height
        bundled = header.model_id in known_model_ids()
        level = _level_of(header.model_id, header.step)
        if json_lines:
            typer.echo(dumps(record(
                "info", status="ok", input=label, format_version=header.version, model=header.model_id,
                model_bundled=bundled, width=header.width, height=header.height,
                symbols=list(header.symbol_shape), cell=header.cell, level=level, step=header.step,
                monochrome=header.monochrome, alpha=bool(header.alpha), icc_profile_bytes=len(header.icc_profile),
                gray_fingerprint=header.gray_fingerprint.hex(), payload_bytes=len(header.payload),
                raw_bytes=header.raw_size, residual_bytes=len(data),
                residual_bpp=round(len(data) * 8 / pixels, 5), embedded=embedded, gray_made_by=made_by)))
            continue
        rows = [("file", label + (" (embedded residual)" if embedded else ""))] if len(files) > 1 or embedded else []
        rows += gray or []
        rows += [
            ("format version", str(header.version)),
            ("model", f"{header.model_id} ({'bundled' if bundled else 'NOT bundled with this invgray'})"),
            ("image", f"{header.width} x {header.height}"),
            ("symbols", " x ".join(map(str, header.symbol_shape)) + f" ({header.cell} px cells)"),
            ("quantisation step", f"{header.step:g}" + (f" (level {level})" if level else "")),
            ("gray fingerprint", header.gray_fingerprint.hex()),
            ("payload", _payload_description(header)),
            ("file size", f"{len(data)} bytes, {len(data) * 8 / pixels:.4f} bpp"),
        ]
        _print_rows(rows)
    if failures:
        raise typer.Exit(1)


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        typer.echo(f"{key:<{width}}  {value}")


def _payload_description(header) -> str:  # noqa: ANN001 - a container.Residual
    if header.version >= 2:
        return f"{len(header.payload)} bytes range-coded (frozen context tables)"
    return f"{len(header.payload)} bytes zstd, {header.raw_size} bytes raw"


def _gray_rows(data: bytes) -> list[tuple[str, str]] | None:
    """What a gray image file says about itself; None when the bytes are not one."""
    from invgray_cli.imaging.gray import decode_gray
    from invgray_cli.imaging.jpeg_transcode import gray_provenance

    try:
        pixels = decode_gray(data)
    except ValueError:
        return None
    if data.startswith(b"\x89PNG"):
        return [("gray image", f"PNG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", "PNG (lossless)")]
    made = gray_provenance(data) or "not recorded (a JPEG with non-standard quantisation tables)"
    return [("gray image", f"JPEG {pixels.shape[1]} x {pixels.shape[0]}"), ("gray made by", made)]


def main() -> None:
    """Console entry point: no traceback reaches the user unless INVGRAY_DEBUG is set."""
    import os

    try:
        app(prog_name="invgray")
    except Exception as exc:  # noqa: BLE001 - last line of defence, reported in one line
        if os.environ.get("INVGRAY_DEBUG"):
            raise
        _err(f"internal error: {type(exc).__name__}: {exc} (set INVGRAY_DEBUG=1 for details)")
        sys.exit(1)
