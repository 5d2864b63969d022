"""What a run shows while it goes: a rich progress bar on a terminal, one plain line per
file otherwise, or with ``--json`` one JSON object per file (:mod:`invgray_cli.app.reports`),
and a summary at the end. rich is imported only when a bar is drawn: a run in a pipe or
a script never loads it."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from invgray_cli.app.reports import dumps


@dataclass
class Outcome:
    """What a run did, as the summary line tells it."""

    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    pixels: int = 0
    seconds: float = 0.0


class Reporter:
    """Progress and results: rich bar on a terminal, plain lines otherwise; with
    ``json_lines`` one JSON object per file instead of the plain lines. Results go to
    stdout, unless stdout carries image data (``data_on_stdout``); errors, the progress
    bar and the summary always go to stderr."""

    def __init__(self, total: int | None, verb: str, quiet: bool = False, json_lines: bool = False,
                 data_on_stdout: bool = False) -> None:
        """``total=None``: not known yet (a listing still streams in); :meth:`set_total`
        gives it when a count arrives."""
        self.total, self.verb, self.quiet, self.json_lines = total, verb, quiet, json_lines
        self.stream = sys.stderr if data_on_stdout else sys.stdout
        self.progress = None
        if sys.stderr.isatty() and (total is None or total > 1) and not quiet and not os.environ.get("INVGRAY_PLAIN"):
            self._start_bar(verb, total)
        self.started = time.perf_counter()
        self.finished = 0

    def _start_bar(self, verb: str, total: int | None) -> None:
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
