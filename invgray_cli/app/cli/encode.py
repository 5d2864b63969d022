"""``invgray encode``: colour photos to gray images and residuals."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Annotated, Any, Optional

import typer

from invgray_cli.app.cli import options as opt
from invgray_cli.app.filework import EncodeSettings, encode_file
from invgray_cli.app.jobs import RESIDUAL_SUFFIX, STDIO, Job, Name, plan_encode, stem_of
from invgray_cli.app.storage import location

GRAY_EXTENSIONS = {".png": "png", ".jpg": "jpg", ".jpeg": "jpg"}

INPUTS = typer.Argument(metavar="IN...", help="Photos or folders of photos ('-' reads stdin).")
OUTPUT = typer.Option("-o", "--output", help="Gray image path (one input only); the residual goes beside it as "
                                             "<stem>.residual.bin. '-' writes stdout (with --embed: one stream).")
QUALITY = typer.Option("-q", "--quality", min=1, max=100,
                       help="Gray JPEG quality: re-encode the luma at this quality. Default: a JPEG input keeps its "
                            "own luma losslessly where it can, anything else is encoded at 90.")
GRAY_FORMAT = typer.Option("--gray-format", "--format",
                           help="jpg (default) or png (lossless); -o's extension also decides.")
LEVEL = typer.Option("--level", "-l", help="Residual size against colour fidelity (default: default).")
STEP = typer.Option("--step", min=0.01, max=1000.0, help="Quantisation step (expert; overrides --level).")
TARGET_PSNR = typer.Option("--target-psnr", min=1.0, max=99.0, metavar="DB",
                           help="Smallest residual whose restored RGB PSNR reaches DB (searched per photo, about 3 "
                                "to 6 decodes; an unreachable target gives the best achievable, with a warning).")
MAX_BYTES = typer.Option("--max-bytes", min=1, metavar="N",
                         help="Best residual of at most N bytes (searched per photo; when even the smallest is "
                              "larger, that one is written, with a warning).")
EFFORT = typer.Option("--effort", "-e", min=1, max=3,
                      help="Encoder effort: 1 (default) one network pass; 2 and 3 refine the residual for each "
                           "photo (truer colour for its bytes; seconds per photo, torch needed). Decoding is "
                           "unchanged.")
LOSSLESS = typer.Option("--lossless",
                        help="Restore the exact original: the 8-bit RGB (and alpha) bit for bit. A PNG gray unless "
                             "-q/--gray-format/-o ask for a JPEG one; the network does not run.")
MAX_ERROR = typer.Option("--max-error", min=0, max=127, metavar="K",
                         help="Every channel of every pixel within K of the input's 8-bit RGB (checked before "
                              "writing; 0 is --lossless). The gray that makes the smallest pair unless "
                              "-q/--gray-format/-o say: PNG up to K=2, beyond it a JPEG of quality 98-2K (a JPEG "
                              "input keeps its own luma).")
EMBED = typer.Option("--embed", help="Put the residual inside the gray image (JPEG APP11 / PNG chunk): one file.")
STRIP = typer.Option("--strip", help="Drop EXIF, XMP and ICC metadata.")
MAX_PIXELS = typer.Option("--max-pixels", min=0,
                          help="Refuse larger images (decompression bombs); 0 lifts the limit.")


@opt.ending_with_run_options
def encode_command(
    inputs: Annotated[list[str], INPUTS],
    output: Annotated[Optional[str], OUTPUT] = None,
    out_dir: Annotated[Optional[str], opt.OUT_DIR] = None,
    quality: Annotated[Optional[int], QUALITY] = None,
    gray_format: Annotated[Optional[opt.GrayFormatChoice], GRAY_FORMAT] = None,
    level: Annotated[Optional[opt.LevelChoice], LEVEL] = None,
    step: Annotated[Optional[float], STEP] = None,
    target_psnr: Annotated[Optional[float], TARGET_PSNR] = None,
    max_bytes: Annotated[Optional[int], MAX_BYTES] = None,
    effort: Annotated[int, EFFORT] = 1,
    lossless: Annotated[bool, LOSSLESS] = False,
    max_error: Annotated[Optional[int], MAX_ERROR] = None,
    embed: Annotated[bool, EMBED] = False,
    strip: Annotated[bool, STRIP] = False,
    max_pixels: Annotated[int, MAX_PIXELS] = 200_000_000,
    recursive: Annotated[bool, opt.RECURSIVE] = False,
    skip_existing: Annotated[bool, opt.SKIP] = False,
    jobs: Annotated[int, opt.JOBS] = 1,
    threads: Annotated[int, opt.THREADS] = 0,
    device: Annotated[opt.DeviceChoice, opt.DEVICE] = opt.DeviceChoice.auto,
    **tail: Any,  # noqa: ANN401 - opt.RUN_TAIL: --force ... --workers
) -> None:
    """Write <stem>.gray.jpg (or .gray.png) and <stem>.residual.bin for each photo.

    Inputs and --out-dir may be object URLs (s3://, gs://, az://, file://)."""
    run = opt.RunOptions(skip_existing=skip_existing, jobs=jobs, threads=threads, device=device, **tail)
    force, engine = run.force, run.engine
    inputs, remote, target, folder = opt.names_of(inputs, output, out_dir, run)
    _check_arguments(inputs, target, folder, force, skip_existing)
    _check_rate(level, step, target_psnr, max_bytes)
    max_error = _check_exact(lossless, max_error, level, step, target_psnr, max_bytes, effort)
    _check_effort(effort)
    fmt = _gray_format(target, gray_format, embed, max_error if quality is None else None)
    opt.check_out_dir(folder)
    planned_jobs = _jobs(inputs, target, folder, fmt, embed, recursive, stream=remote or engine is opt.EngineChoice.ray)
    settings = EncodeSettings(
        inputs=tuple(inputs), gray_format=fmt, quality=quality, level=(level or opt.LevelChoice.default).value, step=step,
        target_psnr=target_psnr, max_bytes=max_bytes, embed=embed, strip=strip, max_pixels=max_pixels, force=force,
        effort=effort, max_error=max_error)
    to_stdout = target is not None and str(target) == STDIO
    if engine is opt.EngineChoice.ray:
        opt.run_on_cluster("encode", planned_jobs, settings, run, to_stdout)
        return
    settings = replace(settings, device=opt.choose_device(run))
    opt.run_locally("encode", planned_jobs, partial(encode_file, settings=settings), run, to_stdout, jobs)


def _check_arguments(inputs: list[str], output: Name | None, out_dir: Name | None, force: bool,
                     skip_existing: bool) -> None:
    if output is not None and (len(inputs) != 1 or location(inputs[0]).is_dir()):
        raise opt.usage("-o/--output takes exactly one input file")
    opt.check_outputs(output, out_dir)
    if STDIO in inputs and output is None:
        raise opt.usage("reading stdin ('-') needs -o/--output to name the outputs (or -o - with --embed)")
    opt.check_overwrite(force, skip_existing)


def _check_rate(level: opt.LevelChoice | None, step: float | None, target_psnr: float | None,
                max_bytes: int | None) -> None:
    """At most one way to choose the residual's size."""
    chosen = [name for name, value in (("--step", step), ("--target-psnr", target_psnr), ("--max-bytes", max_bytes))
              if value is not None]
    if level is not None and (target_psnr is not None or max_bytes is not None):
        chosen.insert(0, "--level")  # --step overriding --level stays allowed, as before
    if len(chosen) > 1:
        raise opt.usage(f"use one of {', '.join(chosen)}, not several")


def _check_exact(lossless: bool, max_error: int | None, level: opt.LevelChoice | None, step: float | None,
                 target_psnr: float | None, max_bytes: int | None, effort: int) -> int | None:
    """The error bound asked for (--lossless is 0), alone: it replaces the network's rate settings."""
    if lossless and max_error not in (None, 0):
        raise opt.usage("--lossless is --max-error 0: use one of them")
    bound = 0 if lossless else max_error
    if bound is None:
        return None
    flag = "--lossless" if lossless else "--max-error"
    for name, value in (("--level", level), ("--step", step), ("--target-psnr", target_psnr),
                        ("--max-bytes", max_bytes), ("--effort", effort if effort != 1 else None)):
        if value is not None:
            raise opt.usage(f"{flag} sets the residual by its error bound: drop {name}")
    return bound


def _check_effort(effort: int) -> None:
    """Refinement runs the network backwards, in torch: without the extra, say so before any file is read."""
    if effort == 1:
        return
    from invgray_cli.model.availability import TorchMissingError, require_torch

    try:
        require_torch(f"--effort {effort}")
    except TorchMissingError as exc:
        raise opt.usage(str(exc)) from None


def _gray_format(output: Name | None, gray_format: opt.GrayFormatChoice | None, embed: bool,
                 max_error: int | None = None) -> str:
    """jpg or png: as asked, or as -o's extension says (they must agree); otherwise jpg, or
    for an error bound the gray that makes the smallest pair."""
    fmt = gray_format.value if gray_format else None
    if output is not None and str(output) == STDIO:
        if not embed:
            raise opt.usage("-o - writes one stream: add --embed (the residual inside the gray image), or name a file")
        opt.refuse_terminal_stdout()
    elif output is not None:
        implied = GRAY_EXTENSIONS.get(output.suffix.lower())
        if implied is None:
            raise opt.usage(f"{output}: gray output must end in .jpg, .jpeg or .png (or be - for stdout)")
        if fmt is not None and fmt != implied:
            raise opt.usage(f"{output}: extension disagrees with --gray-format {fmt}")
        fmt = implied
    if fmt is None and max_error is not None:
        from invgray_cli.codec.refinement import exact_gray_format

        return exact_gray_format(max_error)
    return fmt or "jpg"


def _jobs(inputs: list[str], output: Name | None, out_dir: Name | None, fmt: str, embed: bool, recursive: bool,
          stream: bool) -> opt.Jobs:
    """The one job that -o names, or the plan of every input."""
    if output is not None:
        outputs = [output] if embed else [output, output.with_name(stem_of(output) + RESIDUAL_SUFFIX)]
        return [Job("<stdin>" if inputs[0] == STDIO else inputs[0], inputs[0], outputs)]
    return opt.planned(partial(plan_encode, inputs, out_dir, f".gray.{fmt}", embed, recursive), stream)
