"""Rate targets on a folder: do ``--target-psnr`` and ``--max-bytes`` deliver, and what
do they cost?

    python benchmarks/targets.py [FOLDER] [--target-psnr 36] [--max-bytes 1200] [--threads 1]

For every photo of FOLDER (default ../shared/data/test/kodak24; gray JPEG q90, the CPU
product engine) it runs the product search (``targets.encode_to_target``) for the PSNR
target and for the size limit, and prints per image: PSNR reached, residual bytes,
step, tries and seconds. Then the summary the issue asks for:

* PSNR target: how many images reach it, the mean overshoot, and the mean residual
  bytes against one fixed step for the whole folder (each photo's latent computed
  once; steps found by bisection on log(step)): the step with the same mean PSNR,
  the step that gives the same guarantee (every photo the target run brought to the
  target reaches it), and the named levels;
* size limit: the largest residual and the mean PSNR;
* time: mean seconds per photo of each search against a plain fixed-level encode.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

from invgray_cli.codec import encode, prepare
from invgray_cli.codec.rate_control import StepTrials, encode_to_target
from invgray_cli.engines.engine import engine_for, set_threads
from invgray_cli.engines.registry import levels
from invgray_cli.imaging.images import read_photo

DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--target-psnr", type=float, default=36.0)
    parser.add_argument("--max-bytes", type=int, default=1200)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: its default)")
    args = parser.parse_args()
    set_threads(args.threads)
    engine = engine_for(device="cpu")
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    photos = [read_photo(p.read_bytes()) for p in files]
    encode(photos[0], quality=args.quality, model=engine)  # warm-up: sessions compiled

    print(f"{args.folder}: {len(files)} images; gray JPEG q{args.quality}; engine {engine.name}; "
          f"threads {args.threads or 'default'}\n")
    print(f"| image | --target-psnr {args.target_psnr:g}: dB | bytes | step | tries | s | "
          f"--max-bytes {args.max_bytes}: bytes | dB | step | tries | s | fixed level: s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    quality_runs, size_runs, plain_seconds = [], [], []
    for path, photo in zip(files, photos):
        started = time.perf_counter()
        encode(photo, quality=args.quality, model=engine)
        plain_seconds.append(time.perf_counter() - started)
        q = encode_to_target(photo, target_psnr=args.target_psnr, quality=args.quality, model=engine)
        b = encode_to_target(photo, max_bytes=args.max_bytes, quality=args.quality, model=engine)
        quality_runs.append(q)
        size_runs.append(b)
        print(f"| {path.stem} | {q.psnr:.3f} | {q.residual_bytes} | {q.step:.4g} | {q.tries} | {q.seconds:.2f} | "
              f"{b.residual_bytes} | {b.psnr:.3f} | {b.step:.4g} | {b.tries} | {b.seconds:.2f} | "
              f"{plain_seconds[-1]:.2f} |", flush=True)

    mean_psnr = statistics.mean(q.psnr for q in quality_runs)
    mean_bytes = statistics.mean(q.residual_bytes for q in quality_runs)
    overshoot = [q.psnr - args.target_psnr for q in quality_runs if q.met]
    missed = ", ".join(f"{p.stem} {q.psnr:.3f} dB" for p, q in zip(files, quality_runs) if not q.met) or "none"
    print(f"\n--target-psnr {args.target_psnr:g}: {len(overshoot)} of {len(files)} images reach it (missed: {missed}); "
          f"PSNR min {min(q.psnr for q in quality_runs):.3f}, mean {mean_psnr:.3f} dB; overshoot of those reaching "
          f"it: mean {statistics.mean(overshoot):.3f}, max {max(overshoot):.3f} dB; "
          f"mean residual {mean_bytes:.0f} bytes; {statistics.mean(q.tries for q in quality_runs):.1f} tries and "
          f"{statistics.mean(q.seconds for q in quality_runs):.2f} s per image "
          f"(fixed-level encode {statistics.mean(plain_seconds):.2f} s)")

    trials = [StepTrials(prepare(photo, quality=args.quality), engine) for photo in photos]

    def fixed(step: float) -> tuple[float, float, float, int]:
        runs = [t.at(step) for t in trials]
        return (statistics.mean(r.psnr for r in runs), statistics.mean(r.residual_bytes for r in runs),
                min(r.psnr for r in runs), sum(r.psnr >= args.target_psnr for r in runs))

    low, high = math.log(0.5), math.log(20.0)  # mean PSNR falls as the step grows
    for _ in range(16):
        middle = (low + high) / 2
        if fixed(math.exp(middle))[0] >= mean_psnr:
            low = middle
        else:
            high = middle
    same_mean = math.exp(low)
    # The same guarantee: the largest fixed step at which every photo the target run
    # brought to the target reaches it too.
    reachable = [t for t, q in zip(trials, quality_runs) if q.met]
    low, high = math.log(0.5), math.log(20.0)
    for _ in range(16):
        middle = (low + high) / 2
        if min(t.at(math.exp(middle)).psnr for t in reachable) >= args.target_psnr:
            low = middle
        else:
            high = middle
    print("\n| one fixed step for every image | step | mean dB | min dB | images >= target | mean bytes | "
          "targeted bytes against it |")
    print("|---|---|---|---|---|---|---|")
    rows = [("same mean PSNR as the target run", same_mean),
            (f"same guarantee: every image the target run brought to {args.target_psnr:g} dB", math.exp(low))]
    rows += [(f"level {name}", value) for name, value in levels(engine.model_id).items()]
    for label, value in rows:
        psnr_value, bytes_value, min_value, count = fixed(value)
        print(f"| {label} | {value:.4g} | {psnr_value:.3f} | {min_value:.3f} | {count} of {len(files)} | "
              f"{bytes_value:.0f} | {100 * (mean_bytes / bytes_value - 1):+.1f} % |")

    print(f"\n--max-bytes {args.max_bytes}: largest residual {max(b.residual_bytes for b in size_runs)} bytes, "
          f"mean {statistics.mean(b.residual_bytes for b in size_runs):.0f}; {sum(b.met for b in size_runs)} of "
          f"{len(files)} met; PSNR mean {statistics.mean(b.psnr for b in size_runs):.3f}, min "
          f"{min(b.psnr for b in size_runs):.3f} dB; {statistics.mean(b.tries for b in size_runs):.1f} tries and "
          f"{statistics.mean(b.seconds for b in size_runs):.2f} s per image")


if __name__ == "__main__":
    main()
