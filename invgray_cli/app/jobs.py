"""Batches for the CLI: finding the files behind the arguments, naming outputs,
running one job per file so that one bad file never stops the rest, and reporting
(a rich progress bar on a terminal, one plain line per file otherwise). Folders on
local disk are listed up front; object storage and the cluster engine take the same
naming rules as a stream (:func:`plan_encode`, :func:`plan_decode`)."""

from __future__ import annotations

import heapq
import os
import posixpath
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


# --- streamed plans: object storage and the cluster engine -----------------------------
#
# The lists above hold every file of a folder. For a bucket of a million photos the plans
# below stream instead: each argument's files come in lexicographic order of where their
# outputs go (storage.walk_files lists in that order), the arguments' streams are merged
# in that order, and a name clash (a.png and a.jpg both writing a.gray.jpg) is found
# among neighbours: every input that could clash with another shares its output folder
# and stem, which is a prefix of both, and strings that share a prefix sit together in
# sorted order. So only the claims whose prefix is still open are remembered.

_Item = tuple[str, int, Job, str]  # (where its outputs go, argument index, job, clash prefix)


def _claim_key(path: Any) -> str:  # noqa: ANN401 - a Path or an ObjectPath
    return str(path.resolve())


class ClashGuard:
    """:func:`_mark_clashes` for a sorted stream: remembers only the claims whose prefix
    (output folder and stem) the stream has not left yet."""

    def __init__(self) -> None:
        self.claims: dict[str, tuple[str, str]] = {}  # output -> (clash prefix, label of the job writing it)

    def check(self, placement: str, job: Job, prefix: str) -> Job:
        """Mark ``job`` failed if an earlier job writes one of its outputs."""
        for key in [key for key, (open_prefix, _) in self.claims.items() if not placement.startswith(open_prefix)]:
            del self.claims[key]  # sorted order: no later job can reach this prefix again
        if not job.error:
            keys = [_claim_key(out) for out in job.outputs]
            clash = next((i for i, key in enumerate(keys) if key in self.claims), None)
            if clash is not None:
                job.error = (f"output {job.outputs[clash]} would also be written for {self.claims[keys[clash]][1]} "
                             "(rename one, or use -o)")
            else:
                self.claims.update((key, (prefix, job.label)) for key in keys)
        return job


def _guard_clashes(items: Iterable[_Item]) -> Iterator[Job]:
    guard = ClashGuard()
    for placement, _, job, prefix in items:
        yield guard.check(placement, job, prefix)


def _is_dir(path: Any) -> bool:  # noqa: ANN401
    try:
        return bool(path.is_dir())
    except Exception:  # noqa: BLE001 - unreachable or forbidden: taken as a file, whose read then says why
        return False


def _is_file(path: Any) -> bool:  # noqa: ANN401
    try:
        return bool(path.is_file())
    except Exception:  # noqa: BLE001
        return False


def _head(path: Any, size: int) -> bytes:  # noqa: ANN401
    from invgray_cli.app.storage import ObjectPath, head

    if isinstance(path, ObjectPath):
        return head(path, size)
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def _folder_stream(root: Any, index: int, recursive: bool, out_dir: Any, what: str,  # noqa: ANN401
                   keep: Callable[[Any], bool], stem: Callable[[Any], str],
                   outputs_for: Callable[[Any, Any], list]) -> Iterator[_Item]:
    """The jobs of one folder argument, in output order (:func:`_folder_jobs`, streamed)."""
    from invgray_cli.app.storage import ObjectPath, one_line, walk_files

    found = False
    try:
        for file in walk_files(root, recursive):
            if not keep(file):
                continue
            found = True
            if out_dir is None:
                folder = file.parent
            else:
                below = file.relative_to(root)
                folder = out_dir / (posixpath.dirname(below) if isinstance(below, str) else str(below.parent))
            yield (f"{folder}/{file.name}", index, Job(str(file), str(file), outputs_for(folder, file)),
                   f"{folder}/{stem(file)}")
    except Exception as exc:  # noqa: BLE001 - a store's own errors: this argument fails, the others go on
        kind = "bucket or prefix" if isinstance(root, ObjectPath) else "folder"
        yield str(root), index, Job(str(root), str(root), [], error=f"cannot list this {kind} ({one_line(exc)})"), ""
        return
    if not found:
        hint = "" if recursive else " (use -r for subfolders)"
        yield str(root), index, Job(str(root), str(root), [], error=f"no {what} found in this folder{hint}"), ""


def _merged(streams: list[Iterator[_Item]]) -> Iterator[Job]:
    return _guard_clashes(heapq.merge(*streams, key=lambda item: (item[0], item[1])))


def plan_encode(inputs: list[str], out_dir: Any, gray_suffix: str, embed: bool,  # noqa: ANN401 - Path/ObjectPath
                recursive: bool) -> Iterator[Job]:
    """:func:`encode_jobs` as a stream, for object storage and the cluster engine."""
    from invgray_cli.app.storage import location

    def outputs(folder: Any, stem: str) -> list:  # noqa: ANN401
        gray = folder / f"{stem}{gray_suffix}"
        return [gray] if embed else [gray, folder / f"{stem}{RESIDUAL_SUFFIX}"]

    streams: list[Iterator[_Item]] = []
    for index, name in enumerate(inputs):
        path = location(name)
        if name != STDIO and _is_dir(path):
            streams.append(_folder_stream(
                path, index, recursive, out_dir, "photos",
                lambda p: p.suffix.lower() in PHOTO_SUFFIXES and not is_invgray_output(p), lambda p: p.stem,
                lambda folder, file: outputs(folder, file.stem)))
        else:
            folder = out_dir if out_dir is not None else path.parent
            streams.append(iter([(f"{folder}/{path.name}", index, Job(name, name, outputs(folder, path.stem)),
                                  f"{folder}/{path.stem}")]))
    return _merged(streams)


def plan_decode(inputs: list[str], out_dir: Any, recursive: bool) -> Iterator[Job]:  # noqa: ANN401
    """:func:`decode_jobs` as a stream, for object storage and the cluster engine (the
    same pairing of arguments; folders listed as they are read)."""
    from invgray_cli.app.storage import location

    paths = [location(name) for name in inputs]
    classic_pair = (len(inputs) == 2 and _is_file(paths[0]) and _is_file(paths[1])
                    and not _head(paths[1], 8).startswith((b"\xff\xd8", b"\x89PNG")))
    singles: list[tuple[int, Job]] = []
    streams: list[Iterator[_Item]] = []
    for index, (name, path) in enumerate(zip(inputs, paths)):
        is_file = _is_file(path)
        if (classic_pair and index == 1) or (is_file and (name.lower().endswith(RESIDUAL_SUFFIX)
                                                          or _head(path, 4) == b"IGRS")):
            previous = singles[-1][1] if singles and singles[-1][0] == index - 1 else None
            if previous is None or previous.companion is not None or previous.error:
                singles.append((index, Job(name, name, [], error="a residual file must follow its gray image")))
            else:
                previous.companion = path
            continue
        if not is_file and _is_dir(path):
            streams.append(_folder_stream(
                path, index, recursive, out_dir, ".gray.jpg/.gray.png files",
                lambda p: p.name.lower().endswith(GRAY_SUFFIXES), stem_of,
                lambda folder, file: [folder / f"{stem_of(file)}{COLOUR_SUFFIX}"]))
            continue
        folder = out_dir if out_dir is not None else path.parent
        singles.append((index, Job(name, name, [folder / f"{stem_of(path)}{COLOUR_SUFFIX}"])))
    for index, job in singles:
        folder = job.outputs[0].parent if job.outputs else location(job.source).parent
        name = location(job.source).name
        streams.append(iter([(f"{folder}/{name}", index, job, f"{folder}/{stem_of(location(job.source))}")]))
    return _merged(streams)


class Reporter:
    """Progress and results: rich bar on a terminal, plain lines otherwise; with
    ``json_lines`` one JSON object per file instead of the plain lines (``reports``).
    Results go to stdout, unless stdout carries image data (``data_on_stdout``); errors,
    the progress bar and the summary always go to stderr."""

    def __init__(self, total: int | None, verb: str, quiet: bool = False, json_lines: bool = False,
                 data_on_stdout: bool = False) -> None:
        """``total=None``: not known yet (a listing still streams in); :meth:`set_total`
        gives it when a count arrives."""
        self.total, self.verb, self.quiet, self.json_lines = total, verb, quiet, json_lines
        self.stream = sys.stderr if data_on_stdout else sys.stdout
        self.progress = None
        if sys.stderr.isatty() and (total is None or total > 1) and not quiet and not os.environ.get("INVGRAY_PLAIN"):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

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
            from invgray_cli.app.reports import dumps

            self._print(dumps(obj), self.stream)

    def set_total(self, total: int) -> None:
        """The number of files, once counted (safe from another thread)."""
        self.total = max(total, self.finished)
        if self.progress is not None:
            self.progress.update(self.task, total=self.total)

    def advance(self) -> None:
        self.finished += 1
        if self.progress is not None:
            elapsed = time.perf_counter() - self.started
            self.progress.update(self.task, advance=1, rate=f"{self.finished / max(elapsed, 1e-9):.2f} files/s")

    def close(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress.stop()
        total = self.finished if self.total is None else self.total
        if (total > 1 or outcome.failures or outcome.skipped) and not self.quiet:
            summary = f"{self.verb}: {outcome.done} done, {outcome.skipped} skipped, {len(outcome.failures)} failed"
            if outcome.seconds and outcome.pixels:
                summary += f" ({outcome.pixels / 1e6 / outcome.seconds:.2f} MP/s)"
            print(summary, file=sys.stderr, flush=True)
            for label, message in outcome.failures if total > 1 else []:
                print(f"  failed: {label}: {message}", file=sys.stderr, flush=True)


Result = tuple[Job, str, "str | None", int, dict[str, Any], float]  # job, status, message, pixels, details, s


def run_job(job: Job, work: Callable[[Job], tuple], skip_existing: bool) -> Result:
    """One job: skipped, done or failed, never raising (one file's bug must not stop the
    batch). ``work`` returns (report line, pixels) or (report line, pixels, JSON record),
    or raises JobError."""
    began = time.perf_counter()
    if job.error:
        return job, "failed", job.error, 0, {}, 0.0
    try:
        if skip_existing and job.outputs and all(p.exists() for p in job.outputs):
            return job, "skipped", None, 0, {}, 0.0
        text, pixels, *details = work(job)
        return job, "done", text, pixels, (details[0] if details else {}), time.perf_counter() - began
    except JobError as exc:
        return job, "failed", str(exc), 0, {}, time.perf_counter() - began
    except Exception as exc:  # noqa: BLE001 - one file's bug must not stop the batch
        return job, "failed", f"internal error: {type(exc).__name__}: {exc}", 0, {}, time.perf_counter() - began


def report_results(results: Iterable[Result], reporter: Reporter) -> Outcome:
    """Report each result as it arrives (line or JSON record, progress) and sum them up."""
    from invgray_cli.app.reports import record

    outcome = Outcome()
    started = time.perf_counter()
    for job, status, message, pixels, details, seconds in results:
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


def count_in_background(plan: Callable[[], Iterable[Job]], reporter: Reporter) -> None:
    """Size the progress bar of a streamed run: a second, count-only pass over the plan in
    a thread (no file is opened; only the listing is read again). Without a progress bar
    nothing is counted."""
    if reporter.progress is None:
        return

    def count() -> None:
        try:
            reporter.set_total(sum(1 for _ in plan()))
        except Exception:  # noqa: BLE001, S110 - the count only sizes the progress bar
            pass

    threading.Thread(target=count, daemon=True, name="invgray-count").start()


def run_jobs(jobs: Iterable[Job], work: Callable[[Job], tuple], reporter: Reporter,
             skip_existing: bool, workers: int = 1) -> Outcome:
    """Run ``work`` on every job (see :func:`run_job`) in ``workers`` threads, reporting
    in job order. A list is handed to the pool at once; any other iterable (a listing
    that streams in) is taken a few jobs ahead of the running ones only."""

    def one(job: Job) -> Result:
        return run_job(job, work, skip_existing)

    def results() -> Iterable[Result]:
        if workers <= 1:
            yield from map(one, jobs)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            if isinstance(jobs, list):
                yield from pool.map(one, jobs)
                return
            pending: deque[Future[Result]] = deque()
            for job in jobs:
                pending.append(pool.submit(one, job))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

    return report_results(results(), reporter)
