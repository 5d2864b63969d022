"""Cluster throughput: the local engine (``--jobs``) against ``--engine ray`` on a local
Ray cluster, whole CLI runs in fresh processes, as a user starts them.

    python benchmarks/cluster_throughput.py [FOLDER] [--copies 4] [--repeat 3] [--jobs 2] [--workers 2]

For each engine it runs ``invgray encode FOLDER --out-dir ...`` and then ``invgray
decode`` of those outputs, on the folder (Kodak24 by default) and on ``--copies``
copies of it (links under other names), and reads the per-file report lines as they
arrive. Per run: the wall time of the whole process; when the first file was reported
(start-up: Python, the model, and for Ray also starting the local cluster and the
worker actors); the running rate from the first file to the last (MP/s); the
end-to-end rate. Medians of ``--repeat`` runs. Both engines' outputs are compared byte
for byte. Prints a Markdown table.

Two Ray settings: invgray starting its own local cluster (``ray.init`` inside invgray,
every CPU of this machine), and a cluster already running (``ray start --head`` before
the runs, ``--address``), where invgray only connects, as on a real cluster. Both with
``--workers`` CPU workers, one network thread each; the local runs use ``--jobs``
threads and onnxruntime's default threads.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "test" / "kodak24"
ENGINES = ("local", "ray", "ray-running")


def pixels_by_name(folder: Path) -> dict[str, float]:
    """Megapixels of each photo, by file name."""
    out = {}
    for path in sorted(folder.iterdir()):
        with Image.open(path) as image:
            out[path.name] = image.size[0] * image.size[1] / 1e6
    return out


def run(command: list[str], megapixels: dict[str, float]) -> dict[str, float]:
    """One CLI run: wall seconds, seconds to the first reported file, running MP/s from the
    first file to the last (the first file's pixels left out), end-to-end MP/s."""
    sizes = {Path(photo).stem: mp for photo, mp in megapixels.items()}
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    arrivals: list[tuple[float, float]] = []
    assert process.stdout is not None
    for line in process.stdout:  # one line per file, flushed as each file is done
        name = Path(line.split(":", 1)[0].split(" + ")[0]).name  # the photo, or the gray image of a decode
        stem = name.split(".gray.")[0] if ".gray." in name else Path(name).stem
        size = sizes.get(stem, 0.0)
        arrivals.append((time.perf_counter() - started, size))
    errors = process.stderr.read() if process.stderr else ""
    if process.wait() != 0 or len(arrivals) != len(megapixels):
        sys.exit(f"failed ({process.returncode}, {len(arrivals)} files): {' '.join(command)}\n{errors}")
    wall = time.perf_counter() - started
    first, last = arrivals[0][0], arrivals[-1][0]
    running = sum(size for _, size in arrivals[1:]) / max(last - first, 1e-9)
    return {"wall": wall, "first": first, "running": running, "total": sum(megapixels.values()) / wall}


def engine_args(engine: str, jobs: int, workers: int, address: str | None = None) -> list[str]:
    if engine == "local":
        return ["--jobs", str(jobs)]
    if engine == "ray-running":
        return ["--engine", "ray", "--workers", str(workers), "--address", str(address)]
    return ["--engine", "ray", "--workers", str(workers)]


@contextmanager
def running_cluster(cpus: int) -> Iterator[str]:
    """A Ray cluster already running when invgray starts (``ray start --head``), as on a
    real cluster: invgray then only connects. Stopped by ending its ``--block`` process."""
    ray_command = Path(sys.executable).with_name("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen([str(ray_command), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
                             "--include-dashboard=false", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([str(ray_command), "status", f"--address={address}"], capture_output=True,
                             timeout=60).returncode != 0:
            if time.monotonic() > deadline or head.poll() is not None:
                sys.exit("ray start --head did not come up")
            time.sleep(1)
        yield "auto"  # the cluster started last on this machine: this one
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=120)
        # `ray start` records the cluster for later `ray.init()` calls, and a head ended by a
        # signal leaves that record behind: remove it when it still names this cluster.
        record = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if record.is_file() and record.read_text().strip().endswith(f":{port}"):
            record.unlink()


def measure(invgray: str, photos: Path, out: Path, engine: str, jobs: int, workers: int, repeat: int,
            address: str | None = None) -> tuple[dict[str, float], dict[str, float], Path, Path]:
    """Median figures of encode and decode runs; the folders of the last run's outputs."""
    megapixels = pixels_by_name(photos)
    encodes, decodes = [], []
    for attempt in range(repeat):
        gray, colour = out / f"{engine}-gray-{attempt}", out / f"{engine}-colour-{attempt}"
        common = ["--device", "cpu", *engine_args(engine, jobs, workers, address)]
        encodes.append(run([invgray, "encode", str(photos), "--out-dir", str(gray), *common], megapixels))
        decodes.append(run([invgray, "decode", str(gray), "--out-dir", str(colour), *common], megapixels))
        if attempt < repeat - 1:
            shutil.rmtree(gray)
            shutil.rmtree(colour)

    def median(runs: list[dict[str, float]]) -> dict[str, float]:
        return {key: statistics.median(r[key] for r in runs) for key in runs[0]}

    return median(encodes), median(decodes), gray, colour


def same_files(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--copies", type=int, default=4, help="the larger set: this many copies of the folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median counts")
    parser.add_argument("--jobs", type=int, default=2, help="local engine: files at once")
    parser.add_argument("--workers", type=int, default=2, help="ray engine: CPU worker actors")
    args = parser.parse_args()
    # The benchmark's own throwaway cluster, on this machine only: no token authentication, for
    # the head and for every invgray that connects to it (both must agree).
    os.environ["RAY_AUTH_MODE"] = "disabled"
    invgray = shutil.which("invgray") or sys.exit("invgray is not installed (pip install -e '.[cluster]')")
    photos = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    rows = []
    identical = True
    with tempfile.TemporaryDirectory(prefix="invgray-cluster-bench-") as tmp:
        work = Path(tmp)
        sets = [work / "photos-1", work / f"photos-{args.copies}"]
        for folder in sets:
            folder.mkdir()
        for photo in photos:
            os.symlink(photo, sets[0] / photo.name)
            for copy in range(args.copies):
                os.symlink(photo, sets[1] / f"{photo.stem}-{copy}{photo.suffix}")
        load_before = os.getloadavg()[0]
        outputs: dict[tuple[str, str], tuple[Path, Path]] = {}
        for engine in ENGINES:
            with running_cluster(os.cpu_count() or 1) if engine == "ray-running" else nullcontext() as address:
                for folder in sets:
                    out = work / f"out-{folder.name}"
                    out.mkdir(exist_ok=True)
                    encode, decode, gray, colour = measure(invgray, folder, out, engine, args.jobs, args.workers,
                                                           args.repeat, address)
                    rows.append((engine, "encode", len(list(folder.iterdir())), encode))
                    rows.append((engine, "decode", len(list(folder.iterdir())), decode))
                    outputs[(engine, folder.name)] = (gray, colour)
        for folder in sets:
            reference = outputs[("local", folder.name)]
            identical &= all(same_files(reference[i], outputs[(engine, folder.name)][i])
                             for engine in ENGINES[1:] for i in (0, 1))
        load = os.getloadavg()[0]

    labels = {"local": f"local `--jobs {args.jobs}`",
              "ray": f"`--engine ray`, {args.workers} CPU workers, new local cluster",
              "ray-running": f"`--engine ray`, {args.workers} CPU workers, running cluster"}
    print(f"{args.folder} ({len(photos)} photos) and {args.copies} copies of it; whole CLI runs in fresh processes, "
          f"median of {args.repeat}; {os.cpu_count()} CPUs; load average {load_before:.1f} before and {load:.1f} "
          f"after the runs; outputs byte-identical between the engines: {'yes' if identical else 'NO'}")
    print()
    print("| engine | step | photos | wall s | first file after s | running MP/s (first to last file) "
          "| end-to-end MP/s |")
    print("|---|---|---|---|---|---|---|")
    for engine, step, count, figures in sorted(rows, key=lambda r: (r[2], r[1] != "encode", ENGINES.index(r[0]))):
        print(f"| {labels[engine]} | {step} | {count} | {figures['wall']:.2f} | {figures['first']:.2f} | "
              f"{figures['running']:.2f} | {figures['total']:.2f} |")


if __name__ == "__main__":
    main()
