"""The cluster engine's driver: ``invgray encode|decode ... --engine ray`` on a Ray cluster.

How a run flows (:func:`run`):

* The driver (the ``invgray`` process) lists the inputs as a stream
  (:func:`~invgray_cli.app.jobs.plan_encode` / :func:`~invgray_cli.app.jobs.plan_decode`:
  naming, clashes, one folder or listing page at a time) and hands job descriptors to a
  small feed actor, never more than a window of them ahead of the results it has
  reported. That window is the back-pressure: a listing of a million keys waits while
  the workers catch up.
* Ray Data pulls the descriptors from the feed (a generator task) and runs
  ``map_batches`` with an actor pool of :class:`FileWorker`: each worker loads the
  model once, then for each file runs exactly what a local run does
  (:mod:`invgray_cli.app.filework`: read, code, write the outputs as a set, describe), so
  the outputs are the same bytes. CPU workers take one file per task (the unit Ray
  retries); GPU workers take a batch and decode same-size images in one network pass
  (:class:`~invgray_cli.engines.batcher.NetworkBatcher`, as local CUDA folder decodes do).
* The driver reports each result as it arrives (lines, JSON records, progress bar with
  a total counted by a second, count-only listing). A failed file is a result like
  any other. A worker that dies is restarted by Ray and its task run again; the retried
  file finds whatever its first attempt committed and, where those objects hold exactly
  the bytes it computes again, completes the set instead of failing on them.

Ray and pyarrow (which comes with it) are optional and heavy: they are imported inside
the functions that use them, so that the CLI can say in one line that they are missing;
torch likewise, for GPU workers only.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from invgray_cli import __version__
from invgray_cli.app.filework import (
    CUDA_BATCH,
    DecodeSettings,
    EncodeSettings,
    decode_file,
    encode_file,
)
from invgray_cli.app.jobs import Job
from invgray_cli.app.progress import Outcome, Reporter
from invgray_cli.app.running import (
    Result,
    count_in_background,
    report_results,
    run_job,
)
from invgray_cli.app.storage import location, one_line
from invgray_cli.codec import GrayRecompressedWarning
from invgray_cli.engines.engine import engine_for, set_threads
from invgray_cli.engines.registry import default_model_id, known_model_ids

if TYPE_CHECKING:
    import pyarrow

CLUSTER_EXTRA = "pip install 'invgray[cluster]'"
# Settings that say where object storage is, not who may use it: passed to the workers of
# an existing cluster, whose processes do not inherit this shell's environment.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


class ClusterError(Exception):
    """The cluster cannot run this job (Ray missing, no GPU, workers out of date); one line."""


class ClusterRunFailed(ClusterError):
    """The cluster stopped before every file was done (reported; the exit status is 1)."""


class ClusterUsageError(ClusterError):
    """Asked for what the cluster cannot give (GPUs it lacks): a usage error, exit 2."""


@dataclass(frozen=True)
class ClusterOptions:
    """How ``--engine ray`` runs: where, on how many workers, and how each works."""

    address: str | None = None  # None: RAY_ADDRESS if set, else a new local cluster; "auto": this machine's
    workers: int = 0  # actors; 0: one per GPU where the cluster has GPUs, else one per CPU
    jobs: int = 1  # files at once in each CPU worker (overlaps object-storage latency)
    threads: int = 0  # network CPU threads (and reserved CPUs) per CPU worker; 0: 1
    device: str = "auto"  # auto: GPU workers where the cluster has GPUs; cpu; cuda
    batch: int = 0  # GPU workers: files per task and images per network pass; 0: CUDA_BATCH


def require_ray() -> Any:  # noqa: ANN401 - the ray module
    """Import Ray Data, or say in one line which extra brings it."""
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is a separate part of the package
    except ImportError:
        raise ClusterError(f"--engine ray needs Ray Data: {CLUSTER_EXTRA}") from None
    return ray


# --- the worker: one actor of the pool, one model load ---------------------------------


def expected_build() -> dict[str, Any]:
    """What the driver runs: workers must run the same invgray and models to write the
    same bytes."""
    return {"version": __version__, "default_model": default_model_id(), "models": sorted(known_model_ids())}


class FileWorker:
    """Ray Data callable class: encodes or decodes the files of its batches the way the
    local CLI does, with a model loaded once per worker."""

    def __init__(self, verb: str, settings: EncodeSettings | DecodeSettings, skip_existing: bool,
                 expected: dict[str, Any], gpu: bool, threads: int, batch: int) -> None:
        found = expected_build()
        if found != expected:
            raise ClusterError(f"worker runs invgray {found['version']} (default model {found['default_model']}), "
                               f"the driver {expected['version']} (default model {expected['default_model']}): "
                               "install the same invgray on every node")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL(\..*)?")
        warnings.simplefilter("ignore", GrayRecompressedWarning)  # reported per file from photo.notes
        set_threads(threads)
        self.verb, self.skip_existing = verb, skip_existing
        self.device = "cuda" if gpu else "cpu"
        self.settings = replace(settings, device=self.device)
        # Load the network now, once: a fresh CUDA process takes seconds to its first image.
        engine = engine_for(device=self.device)
        if verb == "encode":
            engine.thresholds()  # runs the encoder on one cell: its graph or weights are loaded
        self.batcher = None
        self.pool = None
        if gpu and batch > 1:
            import torch

            from invgray_cli.engines.batcher import NetworkBatcher

            if verb == "decode":  # encoding is never batched (see batcher.py)
                self.batcher = NetworkBatcher(engine.model, torch.device(self.device), max_batch=batch)
            self.pool = ThreadPoolExecutor(max_workers=batch)  # file and JPEG work beside the GPU

    def _retried(self) -> bool:
        """Whether this actor was restarted after its process died: its tasks may then be
        retries of files whose first attempt committed some outputs."""
        import ray

        return bool(ray.get_runtime_context().was_current_actor_reconstructed)

    def _work(self, job: Job) -> tuple:
        if self.verb == "encode":
            return encode_file(job, self.settings, retried=self._retried)  # type: ignore[arg-type]
        return decode_file(job, self.settings, batcher=self.batcher, retried=self._retried)  # type: ignore[arg-type]

    def __call__(self, table: pyarrow.Table) -> pyarrow.Table:
        import pyarrow

        rows = table.to_pylist()
        jobs = [job_from_row(row) for row in rows]

        def one(job: Job) -> Result:
            return run_job(job, self._work, self.skip_existing)

        results = list(self.pool.map(one, jobs) if self.pool is not None else map(one, jobs))
        return pyarrow.Table.from_pylist([result_row(row["index"], result) for row, result in zip(rows, results)],
                                         schema=_result_schema())


def job_row(index: int, job: Job) -> dict[str, Any]:
    """A job as a row of plain values (paths as strings or URLs)."""
    return {"index": index, "label": job.label, "source": job.source,
            "outputs": json.dumps([str(out) for out in job.outputs]),
            "companion": str(job.companion) if job.companion is not None else None, "error": job.error}


def job_from_row(row: Mapping[str, Any]) -> Job:
    return Job(row["label"], row["source"], [location(out) for out in json.loads(row["outputs"])],
               companion=location(row["companion"]) if row["companion"] is not None else None, error=row["error"])


def result_row(index: int, result: Result) -> dict[str, Any]:
    _, status, message, pixels, details, seconds = result
    return {"index": index, "status": status, "message": message, "pixels": pixels,
            "details": json.dumps(details), "seconds": seconds}


def _result_schema() -> pyarrow.Schema:  # built on first use: pyarrow comes with Ray
    import pyarrow

    return pyarrow.schema([("index", pyarrow.int64()), ("status", pyarrow.string()), ("message", pyarrow.string()),
                           ("pixels", pyarrow.int64()), ("details", pyarrow.string()), ("seconds", pyarrow.float64())])


def _job_schema() -> pyarrow.Schema:
    import pyarrow

    return pyarrow.schema([("index", pyarrow.int64()), ("label", pyarrow.string()), ("source", pyarrow.string()),
                           ("outputs", pyarrow.string()), ("companion", pyarrow.string()), ("error", pyarrow.string())])


# --- the feed: job descriptors from the driver, a window at a time ---------------------


class Feed:
    """A queue actor between the driver's listing and Ray Data (async: ``take`` waits
    without blocking ``put``)."""

    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque()
        self.closed = False
        self.ready = asyncio.Condition()

    async def put(self, items: list[dict[str, Any]]) -> None:
        async with self.ready:
            self.items.extend(items)
            self.ready.notify_all()

    async def close(self) -> None:
        async with self.ready:
            self.closed = True
            self.ready.notify_all()

    async def take(self, most: int) -> list[dict[str, Any]] | None:
        """Up to ``most`` descriptors, waiting for at least one; None once closed and empty."""
        async with self.ready:
            await self.ready.wait_for(lambda: self.items or self.closed)
            if not self.items:
                return None
            return [self.items.popleft() for _ in range(min(most, len(self.items)))]


def drain_feed(seed: pyarrow.Table, feed: Any, rows_per_block: int) -> Iterator[pyarrow.Table]:  # noqa: ANN401
    """Ray Data generator task: the feed's descriptors as blocks of ``rows_per_block``
    (one file per block on CPU workers, so a retried task is one file)."""
    import pyarrow
    import ray

    del seed  # the one-row dataset this task starts from
    while (items := ray.get(feed.take.remote(rows_per_block))) is not None:
        yield pyarrow.Table.from_pylist(items, schema=_job_schema())


# --- the driver ------------------------------------------------------------------------


# Ray Data settings for the run (restored afterwards, for scripts that share the session):
# no progress bars or INFO lines (the CLI prints its own), and output blocks of one row.
# Ray Data gathers a task's output rows into blocks of up to target_max_block_size
# (128 MiB) before passing them on, so the few hundred bytes of a job descriptor or a
# result would wait for the task's end: the feed's jobs would never reach the workers,
# and the results of one task would not be reported one by one.
_DATA_SETTINGS = {"enable_progress_bars": False, "print_on_execution_start": False, "verbose_stats_logs": False,
                  "target_max_block_size": 1}


@contextmanager
def _data_context() -> Iterator[None]:
    import ray.data

    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in _DATA_SETTINGS}
    for name, value in _DATA_SETTINGS.items():
        setattr(context, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)


def _quiet_ray() -> None:
    """Ray's Python loggers and warnings stay off the terminal; the CLI prints its own."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray Data warns that a one-row source limits the pool: ours is a generator of many blocks.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"ray(\..*)?")


class _NativeStderr:
    """While the CLI holds a Ray session, file descriptor 2 goes to a temporary log file
    and Python's ``sys.stderr`` to the terminal: Ray's C++ core and gRPC write log lines
    straight to descriptor 2 (one ERROR line per restartable Ray Data actor, for one),
    and the CLI's stderr carries only its own one-line messages. ``INVGRAY_DEBUG=1``
    leaves everything on the terminal."""

    def __init__(self) -> None:
        self.saved: int | None = None

    def __enter__(self) -> _NativeStderr:
        try:
            if os.environ.get("INVGRAY_DEBUG") or sys.stderr.fileno() != 2:
                return self  # a test runner's captured stderr has no descriptor of its own
        except (AttributeError, OSError, ValueError):
            return self
        sys.stderr.flush()
        self.log = tempfile.TemporaryFile(prefix="invgray-ray-")
        self.saved = os.dup(2)
        os.dup2(self.log.fileno(), 2)
        self.python_stderr = sys.stderr
        sys.stderr = io.TextIOWrapper(io.FileIO(os.dup(self.saved), "w"), encoding=self.python_stderr.encoding,
                                      errors=self.python_stderr.errors, line_buffering=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            return
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = self.python_stderr
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.log.close()
        self.saved = None


@contextmanager
def _quiet_driver_messages() -> Iterator[None]:
    """Ray's driver prints the cluster's error messages (a worker's traceback, a retried
    task) on stdout, where --json lines go: during a CLI run they are dropped, since
    each file's outcome is reported by the run itself (``INVGRAY_DEBUG=1`` keeps them).
    Ray has no switch for this; its printing function is replaced for the run."""
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if os.environ.get("INVGRAY_DEBUG") or original is None:
        yield
        return
    ray_worker.print_to_stdstream = lambda data, ignore_prefix: None
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def connect(address: str | None) -> bool:
    """Join the cluster at ``address`` (see ``ray.init``; None: ``RAY_ADDRESS``, else a new
    local cluster on this machine's CPUs and GPUs); True when this call started the
    session (so :func:`run` ends it). A process that already called ``ray.init`` (a
    script, a test) keeps its session."""
    ray = require_ray()
    if ray.is_initialized():
        _quiet_ray()
        return False
    env = {name: value for name, value in os.environ.items() if name in FORWARDED_ENV or name.startswith("FSSPEC_")}
    # Without an address Ray would join "the cluster started last on this machine", whose
    # record outlives a cluster that was killed: a new local one unless asked (--address auto).
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    try:
        ray.init(address=target, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
                 runtime_env={"env_vars": env} if env else None)
    except Exception as exc:  # noqa: BLE001 - ConnectionError, Ray's RpcError, AuthenticationError, ...
        raise ClusterError(f"cannot reach the Ray cluster{f' at {address}' if address else ''}: "
                           f"{one_line(exc)}") from None
    _quiet_ray()
    return True


def _plan_workers(ray: Any, options: ClusterOptions) -> tuple[bool, int, int]:  # noqa: ANN401
    """(GPU workers?, how many, CPUs each) for this cluster."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if options.device == "cuda" and gpus == 0:
        raise ClusterUsageError("--device cuda: the Ray cluster has no GPUs")
    gpu = gpus > 0 and options.device != "cpu"
    cpus_each = 1 if gpu else max(1, options.threads)
    workers = options.workers or (gpus if gpu else max(1, cpus // cpus_each))
    return gpu, workers, cpus_each


def error_message(exc: BaseException) -> str:
    """The one line that says why a Ray job failed (our own ClusterError when a worker
    refused to start, else the last line of Ray's report)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ClusterError):
            return str(current)
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    text = str(exc)
    marker = "ClusterError: "
    if marker in text:
        return text.rsplit(marker, 1)[1].strip().splitlines()[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def run(verb: str, plan: Callable[[], Iterable[Job]], settings: EncodeSettings | DecodeSettings,
        skip_existing: bool, make_reporter: Callable[[], Reporter], options: ClusterOptions) -> Outcome:
    """Run every job of ``plan`` on the cluster and report the results as they arrive
    (through the reporter ``make_reporter`` gives once the cluster is reached). ``plan``
    is called once to feed the workers and, when a progress bar shows, once more in a
    background thread to count the files. ClusterRunFailed: the cluster stopped early
    (reported file by file); ClusterUsageError: asked for what the cluster lacks."""
    ray = require_ray()
    with _NativeStderr(), _data_context(), _quiet_driver_messages():
        return _run(ray, verb, plan, settings, skip_existing, make_reporter, options)


def _run(ray: Any, verb: str, plan: Callable[[], Iterable[Job]],  # noqa: ANN401
         settings: EncodeSettings | DecodeSettings, skip_existing: bool, make_reporter: Callable[[], Reporter],
         options: ClusterOptions) -> Outcome:
    started = connect(options.address)
    feed = None
    try:
        gpu, workers, cpus_each = _plan_workers(ray, options)
        batch = (options.batch or CUDA_BATCH) if gpu else 1
        jobs_each = 1 if gpu else options.jobs
        feed = ray.remote(num_cpus=0)(Feed).remote()
        dataset = ray.data.from_items([{"seed": 0}]).map_batches(
            drain_feed, fn_kwargs={"feed": feed, "rows_per_block": batch}, batch_size=None, batch_format="pyarrow",
            num_cpus=0)  # no CPU: it only waits on the feed, and must not take a worker's place
        dataset = dataset.map_batches(
            FileWorker, batch_size=batch, batch_format="pyarrow",
            fn_constructor_kwargs={"verb": verb, "settings": settings, "skip_existing": skip_existing,
                                   "expected": expected_build(), "gpu": gpu, "threads": options.threads or 1,
                                   "batch": batch},
            compute=ray.data.ActorPoolStrategy(size=workers, max_concurrent_calls_per_actor=jobs_each,
                                               enable_true_multi_threading=jobs_each > 1),
            num_cpus=cpus_each, num_gpus=1 if gpu else None)
        window = _Window(max(16, workers * jobs_each * batch * 4))
        reporter = make_reporter()
        count_in_background(plan, reporter)
        outcome = report_results(_results(ray, dataset, feed, plan, window), reporter)
        if window.failure is not None:
            raise ClusterRunFailed(window.failure)
        return outcome
    finally:
        if feed is not None:
            ray.kill(feed)
        if started:
            ray.shutdown()


class _Window:
    """Jobs handed to the cluster and not yet reported, at most ``size`` of them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.jobs: dict[int, Job] = {}
        self.fed_all = False
        self.stopped = False
        self.error: BaseException | None = None  # the listing's
        self.failure: str | None = None  # why the run stopped early, if it did
        self.changed = threading.Condition()

    def admit(self, index: int, job: Job) -> bool:
        with self.changed:
            self.changed.wait_for(lambda: len(self.jobs) < self.size or self.stopped)
            if self.stopped:
                return False
            self.jobs[index] = job
            return True

    def finish(self, index: int) -> Job | None:
        with self.changed:
            job = self.jobs.pop(index, None)
            self.changed.notify_all()
            return job

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.changed.notify_all()


def _feed_jobs(ray: Any, feed: Any, plan: Callable[[], Iterable[Job]], window: _Window) -> None:  # noqa: ANN401
    """The driver's listing thread: descriptors into the feed, a window ahead of the results."""
    try:
        chunk: list[dict[str, Any]] = []
        for index, job in enumerate(plan()):
            if not window.admit(index, job):
                return
            chunk.append(job_row(index, job))
            # Small chunks while the window is nearly full keep the workers fed without delay.
            if len(chunk) >= max(1, min(32, window.size - len(window.jobs))):
                ray.get(feed.put.remote(chunk))
                chunk = []
        if chunk:
            ray.get(feed.put.remote(chunk))
        window.fed_all = True
    except BaseException as exc:  # noqa: BLE001 - a listing failure ends the run, reported by the driver
        window.error = exc
    finally:
        try:
            ray.get(feed.close.remote())
        except Exception:  # noqa: BLE001, S110 - the run is over either way
            pass


def _results(ray: Any, dataset: Any, feed: Any, plan: Callable[[], Iterable[Job]],  # noqa: ANN401
             window: _Window) -> Iterator[Result]:
    """Results as the cluster returns them; then whatever was handed out and never came
    back (a failed cluster), each as a failure, so nothing goes missing silently."""
    feeder = threading.Thread(target=_feed_jobs, args=(ray, feed, plan, window), daemon=True, name="invgray-feed")
    feeder.start()
    try:
        for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            for row in table.to_pylist():
                job = window.finish(row["index"])
                if job is None:  # a duplicate of a result already reported
                    continue
                yield (job, row["status"], row["message"], row["pixels"], json.loads(row["details"]),
                       row["seconds"])
    except Exception as exc:  # noqa: BLE001 - Ray's failures come in many types; reported in one line
        window.failure = error_message(exc)
    finally:
        window.stop()
    feeder.join(timeout=60)
    if window.error is not None and window.failure is None:
        window.failure = f"listing failed: {one_line(window.error)}"
    if window.failure is None and window.jobs:
        window.failure = "the cluster returned no result for some files"
    if window.failure is None:
        return
    print(f"invgray: error: cluster run stopped: {window.failure}", file=sys.stderr, flush=True)
    for index in sorted(window.jobs):
        yield (window.jobs[index], "failed", "not finished (rerun with --skip-existing)", 0, {}, 0.0)
    if not window.fed_all:
        print("invgray: error: files not listed yet were not started (rerun with --skip-existing)",
              file=sys.stderr, flush=True)
