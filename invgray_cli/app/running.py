"""Running a plan: one job per file, so that one bad file never stops the rest, each
result reported as it comes (:class:`~invgray_cli.app.progress.Reporter`) and summed up
in an :class:`Outcome`. The local engine runs the jobs in threads of this process; the
cluster engine runs :func:`run_job` on Ray workers and reports here too."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from invgray_cli.app.jobs import Job, JobError
from invgray_cli.app.progress import Outcome, Reporter
from invgray_cli.app.reports import record

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
