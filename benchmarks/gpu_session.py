"""One GPU session, prepared: what a lent accelerator runs, in one command, within a budget.

    python benchmarks/gpu_session.py prepare                 # here: build .carry/ (wheels, pack, speed set)
    bash benchmarks/gpu_session.sh                            # there: the session (OUT=results folder)
    python benchmarks/gpu_session.py collect RESULTS_FOLDER   # here: score what came back

``run`` (what ``gpu_session.sh`` calls) goes through these stages in order, writing
``session.log`` (every command's output, as it comes) and ``summary.json`` (each
stage's status, time and figures, rewritten after every stage) under ``--out``, so a
run cut short still returns what it did:

1. ``environment``: Python, torch, the device;
2. ``install``: the requirements of ``pyproject.toml`` that this Python lacks or has
   in a version that does not satisfy them, from the carried wheels (into a private
   folder on ``PYTHONPATH``; nothing is fetched), and the package's ``invgray_models``;
3. ``tests``: ``pytest -m cuda`` (``tests/test_accelerator.py``) on the device;
4. ``cross-device``: the sample encoded on the device and on the CPU, each file
   decoded on both; symbols that differ, PSNRs and the largest pixel difference;
5. ``speed``: ``benchmarks/speed.py`` on the carried speed set (float32, TF32,
   float16, bfloat16; batches 1, 8, 32; fresh-process folder decodes; 2 photos encoded
   at ``--effort`` 2 and 3, the refinement on the device);
6. ``train``: ``python -m invgray_cli.training.train_v2`` (``--trainer``) for 283 s (``--train-seconds``),
   resumed from the carried checkpoint (else from ``--init``, or from scratch), ``last.pt`` saved
   into ``OUT/train`` at least every ``--save-every`` seconds, crops/s in its log. The run
   is longer than a session (``--steps`` in ``--train-args``): the learning rate follows one
   cosine over its steps, and each session, CPU or GPU, goes on where the carried checkpoint
   stopped (``train --stop-after``); ``--no-step-schedule --run-seconds S`` makes it a cosine
   over S seconds of GPU sessions instead.

A lent session has 15 minutes of device time; one call of the default 540 s budget leaves about
four. The third session (2026-11-28) spent them on a second call that trains on:
``prepare --train-only --checkpoint RESULTS/train/last.pt`` here (no speed set, so the pack gets
its room), then ``gpu_session.sh --train-only --budget S`` there (install and train only).

Each stage has its own time limit, so one that hangs cannot eat the next one's time.
``--device cpu`` with small budgets rehearses the whole script without a GPU
(``tests/test_gpu_session.py`` does, in the ordinary test suite).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CARRY = REPO / ".carry"
SHARED = REPO.parent / "shared" / "data"
TRANSFER_LIMIT_MIB = 63.0  # a device call takes 64 MiB of working tree + carried paths; 1 MiB slack
OUT_FILE_LIMIT_MIB = 16.0  # per file brought back from OUT
# Distributions the lent GPU image ships (the device tool's KINDS.md, as read 2026-11-17): by default
# wheels travel only for the other requirements (and what they need), leaving the room to the
# training pack; `prepare --all-wheels` carries every requirement but torch and numpy, in case the
# image's versions ever stop satisfying pyproject.toml (`run` checks and names what is unmet).
ON_GPU_IMAGE = ("torch", "numpy", "nvidia", "triton", "pillow", "typer", "rich", "click", "pytest", "hypothesis",
                "packaging", "pluggy", "iniconfig", "pygments", "markdown-it-py", "mdurl", "shellingham",
                "typing-extensions", "attrs", "sortedcontainers", "scikit-image", "matplotlib", "onnx",
                "onnxruntime", "fsspec")
NEVER_CARRIED = ("torch", "numpy", "nvidia", "triton")  # built for the image's CUDA
# Optional at run time and unused by the session's stages: jpeglib (22 MiB of wheel) only keeps a
# JPEG input's own luma, and invgray re-encodes the luma, with a note, where it is missing; moto and
# boto3 (the test extra's S3 server, dozens of wheels) serve only the object-storage and cluster tests,
# which the session's `pytest -m cuda` does not select.
# import-linter checks the layers in CI, not on a device.
NOT_NEEDED_THERE = ("jpeglib", "moto", "boto3", "import-linter")
GPU_PYTHON = "3.12"
GPU_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64"]
# The second session (2026-11-27) trained a network from scratch without SEP for 283 s: 7,880
# steps of 64 (runs/gpu-nosep-7880). The same run with SEP, made on the CPU in 63 minutes, won
# by 21 % BD-rate (docs/RESULTS.md), so SEP stays. A session's 283 s of training is about one
# CPU hour here, so the lever was one long run that every session, CPU or GPU, took further on
# one step-based cosine: 6 latent channels from scratch with bfloat16 convolutions, 36,000
# steps of 64 over three CPU sessions, shipped as invgray-v1.3 (models/MODEL_CARD.md). The
# second run went on from invgray-v1.3 on a second cosine (a warm restart at half the first peak
# rate, the rate term at full weight from the first step): 10,867 steps on the third GPU session's
# H200, then 17,133 on the CPU, 28,000 in all, shipped as invgray-v1.4 (BD-rate -6.81 % against
# v1.3 on CBSD68). The v1 network has converged since (issue 25); the run that matters now is
# invgray-v2's on the gray-conditioned integer prior (training/train_v2.py) at a constant rate:
# since 2026-12-03 the one started from invgray-v1.4's network (the prior trained alone first,
# then the network at a tenth of its rate), which measured -1.3 % BD-rate against v1.4 after
# 6,000 steps where the run from scratch (runs/v2-long, kept) stood at +12.5 % after 25,000.
# It is shared by CPU sessions and lent GPUs in runs/v2-warm2/ (what `prepare` carries and
# `collect` brings back when it is further on). A CPU session resumes it with
#   python -m invgray_cli.training.train_v2 --data ../shared/data/train --val ../shared/data/val/cbsd68
#       --out runs/v2-warm2 --resume --threads 2 --workers 0 --save-every 300 <DEFAULT_TRAIN_ARGS>
# (README, "invgray-v2's long run"). A GPU session trains at the CPU run's batch and rate.
LONG_RUN_DIR = REPO / "runs" / "v2-warm2"
LONG_RUN_TRAINER = "invgray_cli.training.train_v2"
LONG_RUN_INIT = "models/invgray-v1.4.pt"  # without a carried checkpoint; later sessions resume it
SHIPPED_MODEL = "models/invgray-v1.4.pt"  # what `collect` scores a v1 checkpoint against
SHIPPED_TABLES = "models/invgray-v1.4.entropy.npz"
DEFAULT_TRAIN_ARGS = ("--batch 16 --crop 128 --lr 5e-4 --lr-warmup 500 --schedule constant --warmup 0 "
                      "--lmbda 2e-3 --step-range 0.5 12 --latent-channels 6 --seed 2 --steps 100000000 "
                      "--plane-group 4 --freeze-network-steps 3000 --network-lr-scale 0.1 --bf16 "
                      "--val-every 1000000000")
DEFAULT_TRAIN_SECONDS = 283.0  # the train stage's share of a session's 900 s
STAGES = ("environment", "install", "tests", "cross-device", "speed", "train")


def requirements() -> list[str]:
    """Core, torch and test requirements of pyproject.toml (the session runs the tests on
    CUDA), less the optional ones no stage uses."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = list(project["dependencies"]) + list(extras.get("torch", [])) + list(extras.get("test", []))
    return [r for r in wanted if _name(r) not in NOT_NEEDED_THERE]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def tree_size(repo: Path = REPO) -> int:
    """Bytes of what a device call sends besides the carried paths: tracked files and
    untracked files that git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                            check=True, capture_output=True).stdout.split(b"\0")
    return sum((repo / name.decode()).stat().st_size for name in listed if name and (repo / name.decode()).is_file())


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def check_transfer(tree_bytes: int, carry_bytes: int, limit_mib: float = TRANSFER_LIMIT_MIB) -> float:
    """MiB that would travel; raises SystemExit naming the excess when over the limit."""
    total = (tree_bytes + carry_bytes) / 2**20
    if total > limit_mib:
        raise SystemExit(f"carry too large: working tree {tree_bytes / 2**20:.1f} MiB + carry "
                         f"{carry_bytes / 2**20:.1f} MiB = {total:.1f} MiB, over the {limit_mib:g} MiB a device call "
                         "takes; build a smaller pack (--crops)")
    return total


# ---------------------------------------------------------------------------------------- prepare (here)

def prepare(args: argparse.Namespace) -> None:
    carry: Path = args.carry
    tree_bytes = tree_size()
    # fail before the slow steps when even the fixed parts do not fit
    check_transfer(tree_bytes, 0, args.limit_mib)
    if carry.exists():
        shutil.rmtree(carry)
    carry.mkdir(parents=True)
    if not args.no_wheels:
        skip = NEVER_CARRIED if args.all_wheels else ON_GPU_IMAGE
        wanted = [r for r in requirements() if _name(r) not in skip]
        if wanted:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                            "--python-version", GPU_PYTHON, "--implementation", "cp",
                            *[f"--platform={p}" for p in GPU_PLATFORMS], "-d", str(carry / "wheels"), *wanted],
                           check=True)
        for wheel in (carry / "wheels").glob("*.whl"):
            if _name(wheel.name.split("-")[0]) in skip:
                wheel.unlink()
    if args.checkpoint:
        size = args.checkpoint.stat().st_size / 2**20
        if size > OUT_FILE_LIMIT_MIB:
            raise SystemExit(f"{args.checkpoint}: {size:.1f} MiB; a checkpoint over {OUT_FILE_LIMIT_MIB:g} MiB "
                             "could not come back from the device")
        (carry / "checkpoint").mkdir()
        shutil.copy2(args.checkpoint, carry / "checkpoint" / "last.pt")
    if not args.train_only:
        _speed_set(args.speed_images, carry / "speed", args.speed_limit)
    check_transfer(tree_bytes, folder_size(carry), args.limit_mib)  # before the pack, the largest part
    room = args.limit_mib * 2**20 - tree_bytes - folder_size(carry)
    from invgray_cli.training.trainpack import main as pack_main

    pack = carry / "train.npz"
    pack_main(["--data", *map(str, args.data), "--out", str(pack), "--crops", str(args.crops),
               "--size", str(args.crop_size)])
    if pack.stat().st_size > room:  # fewer crops, in proportion, rather than a session that cannot start
        crops = int(args.crops * room / pack.stat().st_size * 0.97)
        print(f"the pack of {args.crops} crops does not fit the {room / 2**20:.1f} MiB left; {crops} crops instead")
        pack_main(["--data", *map(str, args.data), "--out", str(pack), "--crops", str(crops),
                   "--size", str(args.crop_size)])
    total = check_transfer(tree_bytes, folder_size(carry), args.limit_mib)
    print(f"{carry}: {folder_size(carry) / 2**20:.1f} MiB carried (room was {room / 2**20:.1f} MiB) + "
          f"working tree {tree_bytes / 2**20:.1f} MiB = {total:.1f} MiB of {args.limit_mib:g}")
    for path in sorted(carry.rglob("*")):
        if path.is_file():
            print(f"  {path.relative_to(carry)}  {path.stat().st_size / 2**20:.2f} MiB")


def _speed_set(source: Path, destination: Path, limit: int) -> None:
    """The speed benchmark's images as 4:4:4 JPEG q95: same sizes, a third of the PNG bytes."""
    from PIL import Image

    destination.mkdir(parents=True)
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})[:limit]
    if not files:
        raise SystemExit(f"no images in {source}")
    for path in files:
        with Image.open(path) as image:
            image.convert("RGB").save(destination / f"{path.stem}.jpg", quality=95, subsampling="4:4:4")


# ------------------------------------------------------------------------------------ run (there)

class Session:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = (self.out / "session.log").open("a", buffering=1)
        self.summary: dict = {"device": args.device, "budget_s": args.budget, "stages": {}}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", INVGRAY_PLAIN="1")

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.started)

    def say(self, text: str) -> None:
        line = f"[{time.monotonic() - self.started:6.1f}s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def record(self, stage: str, status: str, seconds: float, **figures: object) -> None:
        self.summary["stages"][stage] = {"status": status, "seconds": round(seconds, 1), **figures}
        self.summary["elapsed_s"] = round(time.monotonic() - self.started, 1)
        temporary = self.out / "summary.json.part"
        temporary.write_text(json.dumps(self.summary, indent=2) + "\n")
        temporary.replace(self.out / "summary.json")
        self.say(f"stage {stage}: {status} in {seconds:.1f}s {json.dumps(figures) if figures else ''}")

    def command(self, arguments: list[str], limit: float) -> tuple[int, str]:
        """Run a command with its output streamed into the log; killed after ``limit`` s."""
        self.say("$ " + " ".join(arguments))
        lines: list[str] = []
        process = subprocess.Popen(arguments, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                self.log.write(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            process.wait(timeout=max(1.0, limit))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            reader.join(5)
            self.say(f"killed after {limit:.0f}s")
            return 124, "\n".join(lines)
        reader.join()
        return process.returncode, "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.train_only:  # a session's later call: the device was checked by the first one
        args.skip = sorted(set(args.skip) | {"tests", "cross-device", "speed"})
        args.train_seconds = 0.0
    session = Session(args)
    session.say(f"invgray GPU session: device {args.device}, budget {args.budget:.0f}s, carry {args.carry}")
    stages = {"environment": stage_environment, "install": stage_install, "tests": stage_tests,
              "cross-device": stage_cross_device, "speed": stage_speed, "train": stage_train}
    failed = 0
    for name in STAGES:
        if name in args.skip:
            session.record(name, "skipped", 0.0)
            continue
        started = time.monotonic()
        try:
            status, figures = stages[name](session)
        except Exception as error:  # noqa: BLE001 - a broken stage must not cost the others their time
            status, figures = "error", {"error": f"{type(error).__name__}: {error}"}
        session.record(name, status, time.monotonic() - started, **figures)
        failed += status not in ("ok", "skipped")
        if name == "install" and status != "ok":
            session.say("the image lacks what the codec needs; nothing after install can run")
            return 1
    session.say(f"done in {time.monotonic() - session.started:.0f}s; {failed} stage(s) failed")
    return 1 if failed else 0


def stage_environment(session: Session) -> tuple[str, dict]:
    code, output = session.command([sys.executable, "-c", (
        "import json, platform, torch; cuda = torch.cuda.is_available(); "
        "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__, 'cuda': cuda, "
        "'gpu': torch.cuda.get_device_name(0) if cuda else None, "
        "'cpus': __import__('os').cpu_count()}))")], 120)
    if code != 0:
        return "error", {}
    facts = json.loads(output.strip().splitlines()[-1])
    if session.args.device.startswith("cuda") and not facts["cuda"]:
        return "error", facts | {"error": "CUDA not available"}
    return "ok", facts


def stage_install(session: Session) -> tuple[str, dict]:
    from packaging.requirements import Requirement

    site = Path(session.args.site)
    site.mkdir(parents=True, exist_ok=True)
    wheels = {_name(w.name.split("-")[0]): w for w in sorted((session.args.carry / "wheels").glob("*.whl"))}
    needed, unmet = [], []
    for text in requirements():
        requirement = Requirement(text)
        try:
            have = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have is not None and requirement.specifier.contains(have, prereleases=True):
            continue
        wheel = wheels.get(_name(requirement.name))
        (needed if wheel else unmet).append(wheel or f"{text} (have {have or 'none'}, no wheel carried)")
    if unmet:
        return "error", {"unmet": unmet}
    if needed:
        code, _ = session.command([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                   "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site),
                                   *map(str, needed)], 300)
        if code != 0:
            return "error", {"wheels": [w.name for w in needed]}
    paths = [str(site), str(REPO)]
    try:
        importlib.metadata.distribution("invgray")
    except importlib.metadata.PackageNotFoundError:  # not installed there: the models folder under its package name
        link = site / "invgray_models"
        if not link.exists():
            link.symlink_to(REPO / "models", target_is_directory=True)
    session.env["PYTHONPATH"] = os.pathsep.join(paths + [session.env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    code, output = session.command([sys.executable, "-c", "import invgray_cli.codec, invgray_models, zstandard; "
                                    "print('codec imports')"], 120)
    return ("ok" if code == 0 else "error"), {"installed": [w.name for w in needed]}


def stage_tests(session: Session) -> tuple[str, dict]:
    session.env["INVGRAY_TEST_DEVICE"] = session.args.device
    code, output = session.command([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
                                    "tests"], min(240, session.left()))
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", output)}
    passed = code == 0 and counts.get("passed", 0) > 0
    return ("ok" if passed else "failed"), {"counts": counts}


def stage_cross_device(session: Session) -> tuple[str, dict]:
    # as a module from the repository root, so invgray_cli imports there without being installed
    code, output = session.command([sys.executable, "-m", "benchmarks.gpu_session", "cross-device",
                                    "--device", session.args.device], min(180, session.left()))
    if code != 0:
        return "error", {}
    return "ok", json.loads(output.strip().splitlines()[-1])


def stage_speed(session: Session) -> tuple[str, dict]:
    args = session.args
    speed = args.carry / "speed"
    if not speed.is_dir():
        return "skipped", {"reason": f"no {speed}"}
    limit = min(args.speed_seconds, session.left() - args.min_train_seconds)
    if limit < 30:
        return "skipped", {"reason": "no time left"}
    code, output = session.command([sys.executable, "benchmarks/speed.py", str(speed), "--device", args.device,
                                    "--repeat", str(args.speed_repeat), "--batch", *map(str, args.speed_batches),
                                    "--precision", *args.speed_precisions, "--jobs", str(args.speed_jobs),
                                    "--fresh", str(args.speed_fresh), "--loop-images", str(args.speed_loop_images),
                                    "--effort-images", str(args.speed_effort_images)],
                                   limit)
    figures: dict[str, object] = {}
    for precision, batch, mps in _throughput_rows(output):
        figures[f"decoder {precision} batch {batch} MP/s"] = float(mps)
    for effort, seconds in re.findall(r"\| encode: total at --effort (\d) [^|]*\| ([0-9.]+) \|", output):
        figures[f"encode at effort {effort} s/image"] = float(seconds)
    for batch, mps in re.findall(r"\| decode folder of \d+ \(--jobs \d+ --batch (\d+)\) \| [0-9.]+ \| ([0-9.]+) \|",
                                 output):
        figures[f"folder decode batch {batch} MP/s"] = float(mps)
    for precision, change in re.findall(r"^(\w+): restored folder, mean RGB PSNR [0-9.]+ dB \(([-+0-9.]+) dB", output,
                                        re.M):
        figures[f"{precision} PSNR change dB"] = float(change)
    memory = re.search(r"peak CUDA memory: (\d+) MB", output)
    if memory:
        figures["peak CUDA memory MB"] = int(memory.group(1))
    return ("ok" if code == 0 else "failed" if code != 124 else "timeout"), figures


def _throughput_rows(output: str) -> list[tuple[str, str, str]]:
    rows, precision = [], "float32"
    for line in output.splitlines():
        heading = re.match(r"\| network alone \((\w+)\)", line)
        if heading:
            precision = heading.group(1)
        row = re.match(r"\| decoder \| (\d+) \| [0-9.]+ \| ([0-9.]+) \|", line)
        if row:
            rows.append((precision, row.group(1), row.group(2)))
    return rows


def stage_train(session: Session) -> tuple[str, dict]:
    args = session.args
    pack = args.carry / "train.npz"
    if not pack.is_file():
        return "skipped", {"reason": f"no {pack}"}
    seconds = session.left() - args.margin
    if args.train_seconds:
        seconds = min(seconds, args.train_seconds)
    if seconds < args.min_train_seconds:
        return "skipped", {"reason": f"{seconds:.0f}s left"}
    out = session.out / "train"
    out.mkdir(exist_ok=True)
    carried = args.carry / "checkpoint" / "last.pt"
    start = ["--resume"] if carried.is_file() else ["--init", args.init] if args.init else []
    if carried.is_file() and not (out / "last.pt").exists():
        shutil.copy2(carried, out / "last.pt")
    workers = args.workers if args.workers >= 0 else max(1, min(12, (os.cpu_count() or 2) - 2))
    # the limits cover the loop; loading the pack and starting workers come before it
    this_call = max(5.0, seconds - 25)
    command = [sys.executable, "-m", args.trainer, "--data", str(pack), "--out", str(out),
               "--device", args.device, "--workers", str(workers),
               *([] if args.step_schedule else ["--time-limit", f"{args.run_seconds or this_call:.0f}"]),
               "--stop-after", f"{this_call:.0f}", "--save-every", str(args.save_every), *start,
               *args.train_args.split()]
    code, output = session.command(command, seconds + 30)
    rates = [float(r) for r in re.findall(r" (\d+) crops/s", output)]
    steps = re.findall(r"^step (\d+) ", output, re.M)
    figures = {"crops_per_s": round(sorted(rates)[len(rates) // 2]) if rates else None,
               "last_step": int(steps[-1]) if steps else None, "workers": workers,
               "checkpoint": (out / "last.pt").is_file()}
    return ("ok" if code == 0 and figures["checkpoint"] else "failed"), figures


def cross_device(args: argparse.Namespace) -> None:
    """The bundled sample encoded on ``--device`` and on the CPU, each file decoded on both."""
    import numpy as np
    from PIL import Image

    from invgray_cli.codec import decode_array, encode, read_symbols
    from invgray_cli.format.container import read_residual
    from invgray_cli.imaging.metrics import psnr

    rgb = np.asarray(Image.open(REPO / "samples" / "kodim23.png").convert("RGB"))
    files = {"device": encode(rgb, device=args.device), "cpu": encode(rgb, device="cpu")}

    def symbols(residual: bytes) -> np.ndarray:
        return read_symbols(read_residual(residual))

    result: dict[str, object] = {
        "symbols_differing": int(np.count_nonzero(symbols(files["device"].residual) != symbols(files["cpu"].residual))),
        "symbols": int(symbols(files["cpu"].residual).size),
        "residual_bytes": {k: len(v.residual) for k, v in files.items()},
    }
    for made, encoded in files.items():
        here = decode_array(encoded.gray, encoded.residual, device=args.device)
        there = decode_array(encoded.gray, encoded.residual, device="cpu")
        result[f"made on {made}"] = {
            "psnr_decoded_on_device": round(psnr(here, rgb), 4), "psnr_decoded_on_cpu": round(psnr(there, rgb), 4),
            "max_pixel_difference": int(np.abs(here.astype(int) - there.astype(int)).max()),
            "pixels_differing": int(np.count_nonzero(here != there)),
        }
    print(json.dumps(result))


# ------------------------------------------------------------------------------------ collect (here)

def collect(args: argparse.Namespace) -> None:
    """Print what came back and score the returned checkpoint against the shipped model."""
    results: Path = args.results
    summary = json.loads((results / "summary.json").read_text())
    print(f"session on {summary['device']}, {summary.get('elapsed_s', '?')}s of {summary['budget_s']:.0f}s\n")
    print("| stage | status | s | figures |\n|---|---|---|---|")
    for name, stage in summary["stages"].items():
        figures = {k: v for k, v in stage.items() if k not in ("status", "seconds")}
        print(f"| {name} | {stage['status']} | {stage['seconds']} | {json.dumps(figures)} |")
    checkpoint = results / "train" / "last.pt"
    if not checkpoint.is_file():
        print("\nno checkpoint came back")
        return
    import torch

    returned = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if returned["args"].get("rate") == "prior":  # train_v2's: the shared long run
        _keep_long_run(results, returned["step"])
        return
    keep = REPO / "runs" / "gpu" / "last.pt"  # prepare --checkpoint takes it to the next session
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(checkpoint, keep)
    for name in ("log.jsonl", "tables.entropy.npz"):
        if (results / "train" / name).is_file():
            shutil.copy2(results / "train" / name, keep.with_name(name))
    print(f"\ncheckpoint kept as {keep}; validation on {args.val}:\n")
    from invgray_cli.training.validation import main as validation_main

    tables = keep.with_name("tables.entropy.npz")
    coded_by = ["--tables", str(tables), *[str(args.against_tables)] * len(args.against)] if tables.is_file() else []
    validation_main([str(keep), *map(str, args.against), "--val", str(args.val), *coded_by])


def _keep_long_run(results: Path, step: int) -> None:
    """A returned v2 checkpoint goes on in runs/v2-warm2 when it is further on than the CPU's
    (stop the CPU run first: it would write over it); otherwise it stays where it came back."""
    here = LONG_RUN_DIR / "last.pt"
    import torch

    local = torch.load(here, map_location="cpu", weights_only=False)["step"] if here.is_file() else -1
    if step <= local:
        print(f"\nthe returned checkpoint (step {step}) is not ahead of {here} (step {local}): kept in {results}")
        return
    LONG_RUN_DIR.mkdir(parents=True, exist_ok=True)
    for name in ("last.pt", "prior.npz"):
        if (results / "train" / name).is_file():
            shutil.copy2(results / "train" / name, LONG_RUN_DIR / name)
    with (LONG_RUN_DIR / "log.txt").open("a") as log:
        log.write(f"[gpu session {results}: the run went on there from step {local} to {step}]\n")
    print(f"\nstep {step} (here: {local}) kept as {here}; the CPU run resumes it with --resume, and validates "
          "at its next --val-every")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("prepare", help="build the carry folder here")
    p.add_argument("--carry", type=Path, default=DEFAULT_CARRY)
    p.add_argument("--data", type=Path, nargs="+", default=[SHARED / "train"], help="photos for the training pack")
    p.add_argument("--crops", type=int, default=1200, help="crops in the training pack (256 px, about 38 KiB "
                   "each); fewer when they would not fit")
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--speed-images", type=Path, default=SHARED / "test" / "kodak24")
    p.add_argument("--speed-limit", type=int, default=24, help="images in the speed set")
    p.add_argument("--checkpoint", type=Path, help="training checkpoint to resume there (default: runs/v2-warm2/last.pt "
                   "when it exists, else training starts from scratch)")
    p.add_argument("--no-wheels", action="store_true", help="carry no wheels (a machine that has every requirement)")
    p.add_argument("--all-wheels", action="store_true", help="carry every requirement but torch and numpy")
    p.add_argument("--limit-mib", type=float, default=TRANSFER_LIMIT_MIB)
    p.add_argument("--train-only", action="store_true", help="for a `run --train-only` call: no speed set, so "
                   "the training pack gets its 4.7 MiB")

    r = commands.add_parser("run", help="the session itself (on the accelerator's machine)")
    r.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-session")))
    r.add_argument("--carry", type=Path, default=DEFAULT_CARRY)
    r.add_argument("--device", default="cuda")
    r.add_argument("--budget", type=float, default=540.0, help="seconds for the whole session")
    r.add_argument("--margin", type=float, default=20.0, help="seconds kept back at the end")
    r.add_argument("--site", default="/tmp/invgray-site", help="where missing wheels are installed")
    r.add_argument("--skip", nargs="*", default=[], choices=STAGES)
    r.add_argument("--speed-seconds", type=float, default=220.0)
    r.add_argument("--speed-repeat", type=int, default=2)
    r.add_argument("--speed-batches", type=int, nargs="+", default=[1, 8, 32])
    r.add_argument("--speed-precisions", nargs="+", default=["float32", "tf32", "float16", "bfloat16"])
    r.add_argument("--speed-jobs", type=int, default=8)
    # A fresh CUDA process took 4.7 s to its first image on the first session (H200): ten of each
    # and all 24 photos in the one-call-per-file rows would not fit the stage's time.
    r.add_argument("--speed-fresh", type=int, default=3, help="fresh processes per first-image timing")
    r.add_argument("--speed-loop-images", type=int, default=4, help="photos in the one-call-per-file rows")
    r.add_argument("--speed-effort-images", type=int, default=2,
                   help="photos encoded at --effort 2 and 3 (refinement on the device)")
    r.add_argument("--trainer", default=LONG_RUN_TRAINER, help="the training module (invgray_cli.training.train "
                   "for a v1 run, with --init and its --train-args)")
    r.add_argument("--init", default=LONG_RUN_INIT, help="weights to start from without a carried checkpoint "
                   "('': from scratch)")
    r.add_argument("--train-args", default=DEFAULT_TRAIN_ARGS, help="further arguments of the trainer")
    r.add_argument("--train-seconds", type=float, default=DEFAULT_TRAIN_SECONDS,
                   help="cap on training time (0: the rest of the budget)")
    r.add_argument("--run-seconds", type=float, default=0.0,
                   help="training time of the whole run, over this and later sessions that resume it (the "
                        "learning rate's cosine spans it; each session adds its --train-seconds); 0: this "
                        "session's alone")
    r.add_argument("--step-schedule", action=argparse.BooleanOptionalAction, default=True,
                   help="no time limit: the cosine follows --steps in --train-args, so CPU sessions and GPU "
                        "sessions can resume one run (a time-based schedule would count a CPU hour as a GPU "
                        "one); --no-step-schedule: a cosine over --run-seconds (or this session's time)")
    r.add_argument("--min-train-seconds", type=float, default=60.0)
    r.add_argument("--train-only", action="store_true", help="a session's later call: install and train for "
                   "the whole budget (skips tests, cross-device and speed; implies --train-seconds 0)")
    r.add_argument("--save-every", type=float, default=110.0)
    r.add_argument("--workers", type=int, default=-1, help="batch-preparing processes (-1: CPUs - 2, at most 12)")

    x = commands.add_parser("cross-device", help="(a stage of run) encode/decode across the device and the CPU")
    x.add_argument("--device", default="cuda")

    c = commands.add_parser("collect", help="score what a session brought back")
    c.add_argument("results", type=Path, help="the session's OUT folder as it came back")
    c.add_argument("--val", type=Path, default=SHARED / "val" / "cbsd68")
    c.add_argument("--against", type=Path, nargs="*", default=[REPO / SHIPPED_MODEL])
    c.add_argument("--against-tables", type=Path, default=REPO / SHIPPED_TABLES,
                   help="tables that code --against (format 2 bytes), when the session trained tables")

    args = parser.parse_args(argv)
    if args.command == "prepare":
        if args.checkpoint is None and (LONG_RUN_DIR / "last.pt").is_file():
            args.checkpoint = LONG_RUN_DIR / "last.pt"
        prepare(args)
    elif args.command == "run":
        return run(args)
    elif args.command == "cross-device":
        cross_device(args)
    else:
        collect(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
