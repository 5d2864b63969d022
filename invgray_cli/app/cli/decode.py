"""``invgray decode``: gray images and residuals back to colour photos.

Pillow's format table and torch's batcher load only when a decode runs (see
:mod:`invgray_cli.app.cli.options`)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from invgray_cli.app.cli import options as opt
from invgray_cli.app.filework import CUDA_BATCH, DecodeSettings, decode_file
from invgray_cli.app.jobs import COLOUR_SUFFIX, STDIO, Job, Name, plan_decode, stem_of
from invgray_cli.app.storage import location
from invgray_cli.engines.registry import load_model

INPUTS = typer.Argument(
    metavar="GRAY [RESIDUAL] ...",
    help="Gray images, each optionally followed by its .residual.bin (else the embedded residual, else "
         "<stem>.residual.bin beside it), or folders of them. '-' reads the gray image, or the residual of a "
         "single pair, from stdin.")
OUTPUT = typer.Option("-o", "--output", help="Output path (one gray only); its extension picks the format (.png, "
                                             ".jpg, .webp, .tif, .bmp). '-' writes stdout in --format.")
COLOUR_FORMAT = typer.Option("--format", help="Format of -o - (default png); with a file name it must agree with "
                                              "the extension.")
COMPARE = typer.Option("--compare", help="Original photo: also print the restored image's RGB PSNR against it.")
BATCH = typer.Option("--batch", min=0, max=256,
                     help=f"Images per network pass in folder decodes; at least this many threads read and decode "
                          f"the files (0: {CUDA_BATCH} on CUDA, 1 on CPU, where one image already fills the cores).")


@opt.ending_with_run_options
def decode_command(
    inputs: Annotated[list[str], INPUTS],
    output: Annotated[Optional[str], OUTPUT] = None,
    out_dir: Annotated[Optional[str], opt.OUT_DIR] = None,
    colour_format: Annotated[Optional[opt.ColourFormatChoice], COLOUR_FORMAT] = None,
    compare: Annotated[Optional[Path], COMPARE] = None,
    recursive: Annotated[bool, opt.RECURSIVE] = False,
    skip_existing: Annotated[bool, opt.SKIP] = False,
    jobs: Annotated[int, opt.JOBS] = 1,
    threads: Annotated[int, opt.THREADS] = 0,
    device: Annotated[opt.DeviceChoice, opt.DEVICE] = opt.DeviceChoice.auto,
    batch_size: Annotated[int, BATCH] = 0,
    **tail: Any,  # noqa: ANN401 - opt.RUN_TAIL: --force ... --workers
) -> None:
    """Restore colour photos from gray images and residuals: <stem>.color.png.

    Inputs and --out-dir may be object URLs (s3://, gs://, az://, file://)."""
    run = opt.RunOptions(skip_existing=skip_existing, jobs=jobs, threads=threads, device=device, batch=batch_size,
                         **tail)
    force, engine = run.force, run.engine
    inputs, remote, target, folder = opt.names_of(inputs, output, out_dir, run)
    if engine is opt.EngineChoice.ray and compare is not None:
        raise opt.usage("--compare takes one local decode, not --engine ray")
    opt.check_outputs(target, folder)
    opt.check_out_dir(folder)
    opt.check_overwrite(force, skip_existing)
    planned_jobs = _jobs(inputs, target, folder, compare, recursive, stream=remote or engine is opt.EngineChoice.ray)
    stdout_format = _colour_format(planned_jobs, colour_format)
    to_stdout = target is not None and str(target) == STDIO
    if to_stdout:
        opt.refuse_terminal_stdout()
    settings = DecodeSettings(stdout_format=stdout_format, compare=compare, force=force)
    if engine is opt.EngineChoice.ray:
        opt.run_on_cluster("decode", planned_jobs, settings, run, to_stdout)
        return
    _run_locally(planned_jobs, settings, run, to_stdout)


def _jobs(inputs: list[str], output: Name | None, out_dir: Name | None, compare: Path | None, recursive: bool,
          stream: bool) -> opt.Jobs:
    """The one job of stdin, or the plan of every input; -o and --compare take one job."""
    if STDIO in inputs:
        jobs = [_stdin_job(inputs, output)]
    elif output is not None or compare is not None:  # one file only: the first two jobs tell
        jobs = list(islice(plan_decode(inputs, out_dir, recursive), 2))
    else:
        return opt.planned(partial(plan_decode, inputs, out_dir, recursive), stream)
    if output is not None:
        if len(jobs) != 1 or location(jobs[0].source).is_dir():
            raise opt.usage("-o/--output takes exactly one gray image")
        jobs[0].outputs = [output]
    if compare is not None and len(jobs) != 1:
        raise opt.usage("--compare takes exactly one gray image")
    return jobs


def _stdin_job(inputs: list[str], output: Name | None) -> Job:
    if len(inputs) > 2 or inputs.count(STDIO) > 1:
        raise opt.usage("'-' (stdin) stands for the gray image or the residual of one pair only")
    if inputs[0] == STDIO and output is None:
        raise opt.usage("a gray image from stdin needs -o/--output (a path, or - for stdout)")
    gray = location(inputs[0])
    return Job("<stdin>" if inputs[0] == STDIO else inputs[0], inputs[0],
               [gray.parent / f"{stem_of(gray)}{COLOUR_SUFFIX}"],
               companion=location(inputs[1]) if len(inputs) == 2 else None)


def _colour_format(jobs: opt.Jobs, colour_format: opt.ColourFormatChoice | None) -> str:
    """The format of -o - (Pillow's name for it); every named output's extension must
    agree with --format."""
    from invgray_cli.imaging.images import COLOUR_FORMATS, colour_format_for

    stdout_format = COLOUR_FORMATS["." + (colour_format.value if colour_format else "png")]
    for job in [] if callable(jobs) else jobs:
        if job.outputs and str(job.outputs[0]) != STDIO:
            try:
                implied = colour_format_for(job.outputs[0])
            except ValueError as exc:
                raise opt.usage(str(exc)) from None
            if colour_format is not None and implied != stdout_format:
                raise opt.usage(f"{job.outputs[0]}: extension disagrees with --format {colour_format.value}")
    return stdout_format


def _run_locally(jobs: opt.Jobs, settings: DecodeSettings, run: opt.RunOptions, to_stdout: bool) -> None:
    """Decode on this machine; folders share network passes through a batcher on CUDA."""
    from invgray_cli.codec import GrayRecompressedWarning

    device = opt.choose_device(run)
    warnings.simplefilter("ignore", GrayRecompressedWarning)  # reported per file from photo.notes
    settings = replace(settings, device=device)
    batcher = _batcher(device, run.batch, 2 if callable(jobs) else len(jobs))
    try:
        opt.run_locally("decode", jobs, partial(decode_file, settings=settings, batcher=batcher), run, to_stdout,
                    max(run.jobs, batcher.max_batch) if batcher else run.jobs)
    finally:
        if batcher is not None:
            batcher.close()


def _batcher(device: str, batch_size: int, files: int) -> Any:  # noqa: ANN401 - a NetworkBatcher (torch)
    """A NetworkBatcher for folder decodes, or None where batches would be of one."""
    size = batch_size or (CUDA_BATCH if device.startswith("cuda") else 1)
    if size <= 1 or files <= 1:
        return None
    import torch

    from invgray_cli.engines.batcher import NetworkBatcher

    return NetworkBatcher(load_model(device=device), torch.device(device), max_batch=size)
