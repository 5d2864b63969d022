"""What the commands share: their options and choices, the one-line messages and exit
statuses, and what ``--device`` and ``--engine`` choose.

The engines load on first use (onnxruntime or torch for ``--device``, Ray for
``--engine ray``): ``invgray --help`` and a one-file encode start without them.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from invgray_cli.app.jobs import STDIO, Job, Name, in_argument_order
from invgray_cli.app.progress import Reporter
from invgray_cli.app.running import count_in_background, run_jobs
from invgray_cli.app.storage import (
    ObjectPath,
    StorageError,
    check_usable,
    is_url,
    location,
)

Plan = Callable[[], Iterator[Job]]
Jobs = list[Job] | Plan  # a list where the run knows its size up front, else a plan that streams


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


class EngineChoice(str, Enum):
    local = "local"
    ray = "ray"


RECURSIVE = typer.Option("-r", "--recursive", help="Also take photos in subfolders of folder inputs.")
SKIP = typer.Option("--skip-existing", help="Skip inputs whose outputs all exist (resume a batch).")
JOBS = typer.Option("--jobs", "-j", min=1, max=64, help="Files processed at once.")
THREADS = typer.Option("--threads", min=0, max=256,
                       help="CPU threads for the network (0: onnxruntime's or torch's default).")
DEVICE = typer.Option("--device", help="Where the network runs.")
FORCE = typer.Option("--force", "-f", help="Overwrite existing outputs.")
OUT_DIR = typer.Option("--out-dir", help="Folder for the outputs (mirrors the tree of folder inputs; "
                                         "created if needed).")
ENGINE = typer.Option("--engine", help="local: this machine (--jobs threads). ray: a Ray cluster through Ray "
                                        "Data (pip install 'invgray[cluster]'): --workers actors, each loading the "
                                        "model once; --jobs files at once in each CPU worker; --threads network "
                                        "threads (and CPUs) per CPU worker.")
ADDRESS = typer.Option("--address", metavar="ADDR",
                       help="--engine ray: the cluster (auto: the one this machine belongs to; HOST:6379; "
                            "ray://HOST:10001). Default: RAY_ADDRESS, else a new local cluster.")
WORKERS = typer.Option("--workers", min=0, max=100_000,
                       help="--engine ray: worker actors (0: one per GPU of the cluster, else one per CPU).")
JSON = typer.Option("--json", help="One JSON object per file on stdout (JSON Lines; keys in the README).")
QUIET = typer.Option("--quiet", help="No per-file lines, progress or summary; errors and warnings still "
                                     "go to stderr.")


# The options that encode and decode both end with, in the order --help lists them.
_LAST = inspect.Parameter.KEYWORD_ONLY
RUN_TAIL = (
    inspect.Parameter("force", _LAST, default=False, annotation=Annotated[bool, FORCE]),
    inspect.Parameter("json_lines", _LAST, default=False, annotation=Annotated[bool, JSON]),
    inspect.Parameter("quiet", _LAST, default=False, annotation=Annotated[bool, QUIET]),
    inspect.Parameter("engine", _LAST, default=EngineChoice.local, annotation=Annotated[EngineChoice, ENGINE]),
    inspect.Parameter("address", _LAST, default=None, annotation=Annotated[Optional[str], ADDRESS]),
    inspect.Parameter("workers", _LAST, default=0, annotation=Annotated[int, WORKERS]),
)


def ending_with_run_options(command: Callable[..., None]) -> Callable[..., None]:
    """Declare :data:`RUN_TAIL` once for both commands: typer reads a command's options
    from its signature, and the command takes these as keyword arguments (``**tail``)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[*own, *RUN_TAIL])  # type: ignore[attr-defined]
    return command


@dataclass(frozen=True)
class RunOptions:
    """How encode and decode run their files: the options the two share."""

    skip_existing: bool
    jobs: int
    threads: int
    device: DeviceChoice
    force: bool
    json_lines: bool
    quiet: bool
    engine: EngineChoice
    address: str | None
    workers: int
    batch: int = 0  # decode --batch


def err(message: str) -> None:
    typer.echo(f"invgray: error: {message}", err=True)


def usage(message: str) -> typer.Exit:
    """A usage error: reported in one line, exit status 2 (raise what it returns)."""
    err(message)
    return typer.Exit(2)


def refuse_terminal_stdout() -> None:
    if sys.stdout.isatty():
        raise usage("refusing to write binary image data to a terminal: redirect stdout to a file or a pipe")


def as_local(name: str) -> str:
    """A file:// URL is a local path: it takes the local code path, naming and all."""
    return str(location(name)) if is_url(name) and name.lower().startswith("file://") else name


def output_location(name: str | None) -> Name | None:
    """Where -o or --out-dir points, if given."""
    return location(as_local(name)) if name is not None else None


def names_of(inputs: list[str], output: str | None, out_dir: str | None,
             run: RunOptions) -> tuple[list[str], bool, Name | None, Name | None]:
    """The command line's names as a run takes them: the inputs (file:// URLs as local
    paths), whether any name is an object URL, and where -o and --out-dir point. Exit 2
    where a URL's filesystem or the engine cannot be used."""
    inputs = [as_local(name) for name in inputs]
    remote = check_storage([*inputs, out_dir, output])
    check_engine(run, STDIO in inputs or output == STDIO)
    return inputs, remote, output_location(output), output_location(out_dir)


def check_storage(names: Iterable[str | None]) -> bool:
    """Whether any name is an object URL; each one's filesystem must load (else exit 2)."""
    remote = False
    for name in names:
        if name is not None and is_url(name) and not name.lower().startswith("file://"):
            remote = True
            try:
                check_usable(location(name))  # type: ignore[arg-type]
            except StorageError as exc:
                raise usage(str(exc)) from None
    return remote


def check_outputs(output: object, out_dir: Path | ObjectPath | None) -> None:
    if output is not None and out_dir is not None:
        raise usage("use either -o/--output or --out-dir, not both")


def check_out_dir(out_dir: Path | ObjectPath | None) -> None:
    if isinstance(out_dir, Path) and out_dir.exists() and not out_dir.is_dir():
        raise usage(f"--out-dir {out_dir}: not a folder")


def check_overwrite(force: bool, skip_existing: bool) -> None:
    if force and skip_existing:
        raise usage("use either --force or --skip-existing, not both")


def check_engine(run: RunOptions, stdio: bool) -> None:
    if run.engine is EngineChoice.local:
        if run.address is not None or run.workers:
            raise usage("--address and --workers apply to --engine ray")
        return
    if stdio:
        raise usage("--engine ray reads and writes files or objects, not stdin or stdout")
    from invgray_cli.app.cluster.driver import ClusterError, require_ray

    try:
        require_ray()
    except ClusterError as exc:
        raise usage(str(exc)) from None


def planned(plan: Plan, stream: bool) -> Jobs:
    """The plan itself where object storage or the cluster stream it, else its jobs
    listed in full (the progress bar knows its total), in the order of the arguments."""
    return plan if stream else in_argument_order(plan())


def choose_device(run: RunOptions) -> str:
    """'cpu' or 'cuda' (torch is imported only to look for CUDA where a driver exists)."""
    from invgray_cli.engines.engine import device_name, set_threads
    from invgray_cli.model.availability import TorchMissingError

    try:
        device = device_name(run.device.value)
    except (RuntimeError, ValueError, TorchMissingError) as exc:
        raise usage(str(exc)) from None
    set_threads(run.threads)
    return device


def _reporter(verb: str, jobs: Jobs, run: RunOptions, data_on_stdout: bool) -> Reporter:
    return Reporter(None if callable(jobs) else len(jobs), verb, quiet=run.quiet, json_lines=run.json_lines,
                    data_on_stdout=data_on_stdout)


def run_locally(verb: str, jobs: Jobs, work: Callable[[Job], tuple], run: RunOptions, data_on_stdout: bool,
                workers: int) -> None:
    """Run every job in threads of this process, reporting each; exit 1 if any failed."""
    report = _reporter(verb, jobs, run, data_on_stdout)
    if callable(jobs):
        count_in_background(jobs, report)
        jobs = jobs()
    if run_jobs(jobs, work, report, run.skip_existing, workers).failures:
        raise typer.Exit(1)


def run_on_cluster(verb: str, jobs: Jobs, settings: Any, run: RunOptions,  # noqa: ANN401 - a filework settings
                   data_on_stdout: bool) -> None:
    """Run every job on the Ray cluster, reporting each; exit 1 if any failed."""
    from invgray_cli.app.cluster import driver

    options = driver.ClusterOptions(address=run.address, workers=run.workers, jobs=run.jobs, threads=run.threads,
                             device=run.device.value, batch=run.batch)
    try:
        outcome = driver.run(verb, jobs if callable(jobs) else lambda: iter(jobs), settings, run.skip_existing,
                             lambda: _reporter(verb, jobs, run, data_on_stdout), options)
    except driver.ClusterRunFailed:  # reported file by file already
        raise typer.Exit(1) from None
    except driver.ClusterUsageError as exc:
        raise usage(str(exc)) from None
    except driver.ClusterError as exc:
        err(str(exc))
        raise typer.Exit(1) from None
    if outcome.failures:
        raise typer.Exit(1)
