"""Batches for the CLI: finding the files behind the arguments, naming outputs,
running one job per file so that one bad file never stops the rest, and reporting
(a rich progress bar on a terminal, one plain line per file otherwise)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
GRAY_SUFFIXES = (".gray.jpg", ".gray.jpeg", ".gray.png")
RESIDUAL_SUFFIX = ".residual.bin"
COLOUR_SUFFIX = ".color.png"
STDIO = "-"


class JobError(Exception):
    """A per-file failure, reported as one line; the batch goes on."""


@dataclass
class Job:
    label: str  # what messages name: the input as the user gave it, or the file found in a folder
    source: str  # a path, or "-" for stdin
    outputs: list[Path]
    companion: Path | None = None  # decode: the residual file, when not embedded
    error: str | None = None  # known before running (name clash, empty folder)


@dataclass
class Outcome:
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    pixels: int = 0
    seconds: float = 0.0


def stem_of(path: Path) -> str:
    """File name without its invgray suffix (.gray.jpg, .residual.bin) or extension."""
    name = path.name
    for suffix in (*GRAY_SUFFIXES, RESIDUAL_SUFFIX, ".color.png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def is_invgray_output(path: Path) -> bool:
    """What encode and decode write by default: never taken as a photo in folder mode."""
    return path.name.lower().endswith((*GRAY_SUFFIXES, RESIDUAL_SUFFIX, COLOUR_SUFFIX))


def _folder_files(folder: Path, recursive: bool, keep: Callable[[Path], bool]) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.glob("*")
    return sorted(p for p in candidates if p.is_file() and not p.name.startswith(".") and keep(p))


def _folder_jobs(root: Path, recursive: bool, out_dir: Path | None, what: str, keep: Callable[[Path], bool],
                 outputs_for: Callable[[Path, Path], list[Path]]) -> list[Job]:
    """One job per matching file under ``root``; outputs go beside each file, or into
    ``out_dir`` mirroring the tree below ``root``."""
    files = _folder_files(root, recursive, keep)
    if not files:
        hint = "" if recursive else " (use -r for subfolders)"
        return [Job(str(root), str(root), [], error=f"no {what} found in this folder{hint}")]
    return [Job(str(file), str(file),
                outputs_for((out_dir / file.relative_to(root).parent) if out_dir else file.parent, file))
            for file in files]


def _mark_clashes(jobs: list[Job]) -> list[Job]:
    """Two inputs that would write the same output (a.png and a.jpg): the later one fails."""
    claimed: dict[Path, str] = {}
    for job in jobs:
        if job.error:
            continue
        for out in job.outputs:
            key = out.resolve()
            if key in claimed:
                job.error = f"output {out} would also be written for {claimed[key]} (rename one, or use -o)"
                break
        else:
            for out in job.outputs:
                claimed[out.resolve()] = job.label
    return jobs


def encode_jobs(inputs: list[str], out_dir: Path | None, gray_suffix: str, embed: bool,
                recursive: bool) -> list[Job]:
    jobs = []

    def outputs(folder: Path, stem: str) -> list[Path]:
        gray = folder / f"{stem}{gray_suffix}"
        return [gray] if embed else [gray, folder / f"{stem}{RESIDUAL_SUFFIX}"]

    for name in inputs:
        path = Path(name)
        if name != STDIO and path.is_dir():
            jobs += _folder_jobs(path, recursive, out_dir, "photos",
                                 lambda p: p.suffix.lower() in PHOTO_SUFFIXES and not is_invgray_output(p),
                                 lambda folder, file: outputs(folder, file.stem))
        else:
            folder = out_dir if out_dir else path.parent
            jobs.append(Job(name, name, outputs(folder, path.stem)))
    return _mark_clashes(jobs)


def _is_residual_file(name: str) -> bool:
    """Named *.residual.bin, or starting with the residual magic bytes."""
    if name.lower().endswith(RESIDUAL_SUFFIX):
        return True
    try:
        with open(name, "rb") as handle:
            return handle.read(4) == b"IGRS"
    except OSError:
        return False


def _looks_like_image(name: str) -> bool:
    try:
        with open(name, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith((b"\xff\xd8", b"\x89PNG"))


def decode_jobs(inputs: list[str], out_dir: Path | None, recursive: bool) -> list[Job]:
    """A residual file pairs with the gray image right before it; a gray alone uses
    its embedded residual or the sidecar beside it (decided when it runs); a folder
    gives every *.gray.jpg/png in it. In the two-argument form ``GRAY RESIDUAL`` the
    second is the residual whatever its name, unless it is itself a JPEG or PNG."""
    jobs: list[Job] = []
    classic_pair = (len(inputs) == 2 and Path(inputs[0]).is_file() and Path(inputs[1]).is_file()
                    and not _looks_like_image(inputs[1]))
    for index, name in enumerate(inputs):
        path = Path(name)
        if (classic_pair and index == 1) or (path.is_file() and _is_residual_file(name)):
            previous = jobs[-1] if jobs else None
            if previous is None or previous.companion is not None or previous.error \
                    or previous.source != inputs[index - 1]:
                jobs.append(Job(name, name, [], error="a residual file must follow its gray image"))
            else:
                previous.companion = path
            continue
        if path.is_dir():
            jobs += _folder_jobs(path, recursive, out_dir, ".gray.jpg/.gray.png files",
                                 lambda p: p.name.lower().endswith(GRAY_SUFFIXES),
                                 lambda folder, file: [folder / f"{stem_of(file)}{COLOUR_SUFFIX}"])
            continue
        folder = out_dir if out_dir else path.parent
        jobs.append(Job(name, name, [folder / f"{stem_of(path)}{COLOUR_SUFFIX}"]))
    return _mark_clashes(jobs)


class Reporter:
    """Progress and results: rich bar on a terminal, plain lines otherwise; with
    ``json_lines`` one JSON object per file instead of the plain lines (``reports``).
    Results go to stdout, unless stdout carries image data (``data_on_stdout``); errors,
    the progress bar and the summary always go to stderr."""

    def __init__(self, total: int, verb: str, quiet: bool = False, json_lines: bool = False,
                 data_on_stdout: bool = False) -> None:
        self.total, self.verb, self.quiet, self.json_lines = total, verb, quiet, json_lines
        self.stream = sys.stderr if data_on_stdout else sys.stdout
        self.progress = None
        if sys.stderr.isatty() and total > 1 and not quiet and not os.environ.get("INVGRAY_PLAIN"):
            from rich.console import Console
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.console = Console(stderr=True)
            self.progress = Progress(TextColumn(f"{verb}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=self.console, transient=False)
            self.task = self.progress.add_task(verb, total=total, rate="")
            self.progress.start()
        self.started = time.perf_counter()
        self.finished = 0

    def _print(self, text: str, stream: TextIO) -> None:
        if self.progress is not None and stream is sys.stderr:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, file=stream, flush=True)

    def line(self, text: str, error: bool = False) -> None:
        if error:
            self._print(text, sys.stderr)
        elif not self.quiet and not self.json_lines:
            self._print(text, self.stream)

    def record(self, obj: dict[str, Any]) -> None:
        if self.json_lines:
            from .reports import dumps

            self._print(dumps(obj), self.stream)

    def advance(self) -> None:
        self.finished += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress.update(self.task, advance=1, rate=f"{self.finished / max(elapsed, 1e-9):.2f} files/s")

    def close(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress.stop()
        if (self.total > 1 or outcome.failures or outcome.skipped) and not self.quiet:
            summary = f"{self.verb}: {outcome.done} done, {outcome.skipped} skipped, {len(outcome.failures)} failed"
            if outcome.seconds and outcome.pixels:
                summary += f" ({outcome.pixels / 1e6 / outcome.seconds:.2f} MP/s)"
            print(summary, file=sys.stderr, flush=True)
            for label, message in outcome.failures if self.total > 1 else []:
                print(f"  failed: {label}: {message}", file=sys.stderr, flush=True)


def run_jobs(jobs: list[Job], work: Callable[[Job], tuple], reporter: Reporter,
             skip_existing: bool, workers: int = 1) -> Outcome:
    """Run ``work`` on every job; it returns (report line, pixels) or (report line,
    pixels, JSON record), or raises JobError."""
    from .reports import record

    outcome = Outcome()
    started = time.perf_counter()

    def one(job: Job) -> tuple[Job, str, str | None, int, dict[str, Any], float]:
        began = time.perf_counter()
        if job.error:
            return job, "failed", job.error, 0, {}, 0.0
        if skip_existing and job.outputs and all(p.exists() for p in job.outputs):
            return job, "skipped", None, 0, {}, 0.0
        try:
            text, pixels, *details = work(job)
            return job, "done", text, pixels, (details[0] if details else {}), time.perf_counter() - began
        except JobError as exc:
            return job, "failed", str(exc), 0, {}, time.perf_counter() - began
        except Exception as exc:  # noqa: BLE001 - one file's bug must not stop the batch
            return job, "failed", f"internal error: {type(exc).__name__}: {exc}", 0, {}, time.perf_counter() - began

    def results() -> Iterable[tuple[Job, str, str | None, int, dict[str, Any], float]]:
        if workers <= 1:
            yield from map(one, jobs)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            yield from pool.map(one, jobs)

    for job, status, message, pixels, details, seconds in results():
        if status == "done":
            outcome.done += 1
            outcome.pixels += pixels
            reporter.line(message or "")
            reporter.record(record(reporter.verb, **{"status": "ok", "input": job.label,
                                                     "seconds": round(seconds, 4), **details}))
        elif status == "skipped":
            outcome.skipped += 1
            reporter.line(f"{job.label}: skipped (outputs exist)")
            reporter.record(record(reporter.verb, status="skipped", input=job.label))
        else:
            outcome.failures.append((job.label, message or "failed"))
            reporter.line(f"invgray: error: {job.label}: {message}", error=True)
            reporter.record(record(reporter.verb, status="error", input=job.label, error=message,
                                   seconds=round(seconds, 4) if seconds else None))
        if status == "done" and (reporter.json_lines or reporter.quiet):  # else the result line shows them
            for note in details.get("warnings") or []:
                reporter.line(f"invgray: warning: {job.label}: {note}", error=True)
        reporter.advance()
    outcome.seconds = time.perf_counter() - started
    reporter.close(outcome)
    return outcome
