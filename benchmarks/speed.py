"""Speed benchmark: encode and decode time per image, split by stage, and peak memory.

    python benchmarks/speed.py [FOLDER] [--device cpu] [--threads 2] [--repeat 3] [--batch 1 8]
                               [--precision float32 tf32 float16 bfloat16] [--fresh 10] [--cli-only]

For every image of FOLDER (default ../shared/data/test/kodak24) it times, with the
bundled model on the product engine (onnxruntime on the CPU, torch on CUDA): the whole product path (``codec.encode`` from a decoded photo, and
``codec.decode_photo`` from the two files' bytes) and, separately, its stages:
image I/O (reading the PNG, writing the restored PNG), gray JPEG (encode + decode),
network (analysis, synthesis) and symbol coding (range coder or zstd, container, both ways). Prints
medians per image, megapixels per second, Pillow's own colour JPEG q90 encode +
decode time on the same images as a reference, the network's multiply-adds per
pixel, and the process's peak resident memory. Then:

* network throughput alone (decoder on the folder's images grouped by size, in
  batches of each ``--batch`` size), megapixels per second, for each ``--precision``:
  ``float32`` is the product path (on CUDA: no TF32, deterministic cuDNN kernels),
  ``tf32`` lets cuDNN use TF32 and autotune, ``float16``/``bfloat16`` convert the
  decoder; each with the mean PSNR against the originals and its change from float32;
* the CLI end to end in fresh processes, as scripts call it: ``invgray --help``; the
  first image of a fresh process, encode (photo -> gray + residual files) and decode
  (files -> PNG), median of ``--fresh`` runs (warm: files and libraries in the page
  cache), and once each right after dropping the page cache (cold; needs root, else
  reported as not measured); a shell-style loop of one ``invgray`` call per file
  against one folder call, for encode and for decode (wall times); and the folder
  decode with each ``--batch`` (``--jobs``), in MP/s.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from invgray_cli.codec import (
    decode_photo,
    encode,
    read_symbols,
    resolve_device,
    symbol_payload,
)
from invgray_cli.engines.engine import analyse, engine_for, set_threads
from invgray_cli.engines.registry import bundled_spec, load_model, model_spec
from invgray_cli.engines.torch_engine import synthesis_inputs
from invgray_cli.format.container import read_residual
from invgray_cli.imaging.gray import decode_gray, encode_gray, luma
from invgray_cli.imaging.images import read_photo, save_colour
from invgray_cli.imaging.metrics import psnr

PRECISIONS = {"float32": torch.float32, "tf32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
DEFAULT_FOLDER = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "test" / "kodak24"


def timed(fn, *args, **kwargs):  # noqa: ANN001, ANN201 - any callable
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per image; the median counts")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--model", help="bundled model id that still encodes (default: the default model); "
                        "retired models decode only")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes for network throughput")
    parser.add_argument("--precision", nargs="+", default=["float32"], choices=sorted(PRECISIONS),
                        help="decoder precisions for the network throughput table")
    parser.add_argument("--jobs", type=int, default=4, help="--jobs of the end-to-end folder decode")
    parser.add_argument("--no-cli", action="store_true", help="skip the fresh-process CLI timings")
    parser.add_argument("--cli-only", action="store_true", help="only the fresh-process CLI timings")
    parser.add_argument("--fresh", type=int, default=10, help="fresh processes per first-image timing")
    parser.add_argument("--effort-images", type=int, default=0,
                        help="photos timed at --effort 2 and 3 (refinement: seconds each on a CPU)")
    parser.add_argument("--loop-images", type=int, default=0,
                        help="images in the one-call-per-file rows (0: all); a fresh CUDA process costs seconds")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        set_threads(args.threads)
    device = resolve_device(args.device)
    files = sorted(p for p in args.folder.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if args.cli_only:
        cli_timings(files, args)
        return
    model = load_model(args.model, device=device)  # torch: multiply-adds, batched throughput, float16
    engine = engine_for(args.model, device=args.device)  # the product engine
    step = model_spec(model.model_id).level_step("default")

    stages: dict[str, list[float]] = {}

    def record(name: str, seconds: float) -> None:
        stages.setdefault(name, []).append(seconds)

    warm = read_photo(files[0].read_bytes())
    encode(warm, model=engine)  # first call pays for lazy initialisation
    megapixels = []
    pairs = []
    originals = []
    for path in files:
        data = path.read_bytes()
        for _ in range(args.repeat):
            photo, t = timed(read_photo, data)
            record("encode: read photo", t)
            encoded, t = timed(encode, photo, quality=args.quality, model=engine)
            record("encode: total (from decoded photo)", t)
            gray_bytes, t_gray_enc = timed(encode_gray, luma(photo.rgb), "jpg", args.quality)
            decoded_gray, t_gray_dec = timed(decode_gray, gray_bytes)
            record("encode: gray JPEG encode + decode", t_gray_enc + t_gray_dec)
            symbols, t = timed(analyse, engine, photo.rgb, decoded_gray, step)
            record("encode: network", t)
            _, t = timed(symbol_payload, bundled_spec(engine.model_id), symbols, step)
            record("encode: symbol coding", t)

            restored, t = timed(decode_photo, encoded.gray, encoded.residual, model=engine)
            record("decode: total (from file bytes)", t)
            pixels, t = timed(decode_gray, encoded.gray)
            record("decode: gray JPEG decode", t)
            header, t_header = timed(read_residual, encoded.residual)
            sym, t_unpack = timed(read_symbols, header)
            record("decode: container + symbol decoding", t_header + t_unpack)
            _, t = timed(engine.synthesise, pixels, sym, header.step)
            record("decode: network", t)
            _, t = timed(save_colour, restored, "PNG")
            record("decode: write PNG", t)

            buffer = io.BytesIO()
            image = Image.fromarray(photo.rgb)
            started = time.perf_counter()
            image.save(buffer, "JPEG", quality=90)
            Image.open(io.BytesIO(buffer.getvalue())).load()
            record("reference: Pillow colour JPEG q90 encode + decode", time.perf_counter() - started)
        megapixels.append(photo.rgb.shape[0] * photo.rgb.shape[1] / 1e6)
        pairs.append((pixels, encoded))  # the decoded gray and both files, for the runs below
        originals.append(photo.rgb)

    for path in files[:args.effort_images]:
        photo = read_photo(path.read_bytes())
        for effort in (2, 3):
            _, t = timed(encode, photo, quality=args.quality, model=engine, effort=effort)
            record(f"encode: total at --effort {effort} (first {args.effort_images} photos, once each)", t)

    mp = statistics.median(megapixels)
    print(f"{args.folder}: {len(files)} images, median {mp:.3f} MP; device {device}; engine {engine.name}; "
          f"threads {args.threads or 'default'}; model {model.model_id}; "
          f"{model.multiply_adds_per_pixel():,.0f} multiply-adds per pixel\n")
    print("| stage | median s/image | MP/s |")
    print("|---|---|---|")
    for name, values in stages.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.4f} | {mp / median:.1f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak resident memory: {peak:.0f} MB")
    if device.type == "cuda":
        print(f"peak CUDA memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB")

    reference = None
    for precision in sorted(args.precision, key=lambda name: name != "float32"):  # float32 is the reference
        reference = network_throughput(model, pairs, originals, args.batch, device, precision, reference)
    if not args.no_cli:
        cli_timings(files, args)


def network_throughput(model, pairs, originals, batch_sizes: list[int], device: torch.device,  # noqa: ANN001
                       precision: str, reference: float | None) -> float | None:
    """Decoder alone, images grouped by size into batches, MP/s over the whole folder; then
    the folder restored in this precision, mean PSNR against the originals. Returns the
    float32 PSNR (the reference for the other precisions)."""
    import contextlib
    import copy

    from invgray_cli.engines.torch_engine import exact_float32

    dtype = PRECISIONS[precision]
    if device.type == "cpu" and precision in ("tf32", "float16"):
        print(f"\n{precision}: CUDA only; skipped")
        return reference
    net = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    if precision == "tf32":
        flags = torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False, allow_tf32=True)
    elif device.type == "cuda" and precision == "float32":
        flags = exact_float32(device)
    else:
        flags = contextlib.nullcontext()
    by_size: dict[tuple[int, int], list] = {}
    for (gray, encoded), original in zip(pairs, originals):
        header = read_residual(encoded.residual)
        symbols = read_symbols(header)
        by_size.setdefault(gray.shape, []).append((gray, symbols, header.step, original))
    total_mp = sum(g.shape[0] * g.shape[1] for g, _ in pairs) / 1e6
    print(f"\n| network alone ({precision}) | batch | s/folder | MP/s |")
    print("|---|---|---|---|")
    with flags:
        for batch in batch_sizes:
            batches = []
            for items in by_size.values():
                for start in range(0, len(items), batch):
                    grays, symbols, steps, _ = map(list, zip(*items[start:start + batch]))
                    inputs = synthesis_inputs(model, grays, symbols, steps, device)
                    batches.append(tuple(t.to(dtype) for t in inputs))

            def run_all() -> None:
                with torch.inference_mode():
                    for inputs in batches:
                        net.synthesise(*inputs)

            _, _ = timed(run_all)  # warm-up (cuDNN autotuning, allocator)
            seconds = statistics.median(timed(run_all)[1] for _ in range(3))
            print(f"| decoder | {batch} | {seconds:.3f} | {total_mp / seconds:.1f} |")
        scores = []
        with torch.inference_mode():
            for gray, symbols, step, original in [item for items in by_size.values() for item in items]:
                out = net.synthesise(*(t.to(dtype) for t in synthesis_inputs(model, [gray], [symbols], [step], device)))
                h, w = gray.shape
                pixels = (out[0, :, :h, :w].float().clamp(0, 1) * 255).round().to("cpu", torch.uint8)
                scores.append(psnr(pixels.permute(1, 2, 0).numpy(), original))
    mean = statistics.mean(scores)
    change = "" if reference is None else f" ({mean - reference:+.3f} dB against float32)"
    print(f"{precision}: restored folder, mean RGB PSNR {mean:.3f} dB{change}")
    return mean if precision == "float32" else reference


def drop_page_cache() -> bool:
    """Empty the kernel's page cache (root only), so the next process reads its
    libraries and model files from disk: a cold start."""
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def cli_timings(files: list[Path], args: argparse.Namespace) -> None:
    """Fresh processes, as a shell script would run them."""
    command = [sys.executable, "-m", "invgray_cli"]
    env = dict(os.environ, INVGRAY_PLAIN="1")
    device = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    workdir = Path(tempfile.mkdtemp(prefix="invgray-speed-"))
    try:
        pairs = workdir / "pairs"

        cpu_seconds: list[float] = []  # user + system time of each fresh process, in order

        def wall(arguments: list[str]) -> float:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run(command + arguments, check=True, env=env, capture_output=True)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            return seconds

        def megapixels(path: Path) -> float:
            with Image.open(path) as image:
                return image.width * image.height / 1e6

        total_mp = sum(megapixels(path) for path in files)
        encode_folder = wall(["encode", str(files[0].parent), "--out-dir", str(pairs), *device])
        encode_folder_cpu = cpu_seconds[-1]
        first_photo, first_gray = files[0], pairs / f"{files[0].stem}.gray.jpg"
        mp_one = Image.open(first_photo).width * Image.open(first_photo).height / 1e6

        def first_encode(i: int) -> float:
            return wall(["encode", str(first_photo), "-o", str(workdir / f"e{i}.gray.jpg"), *device])

        def first_decode(i: int) -> float:
            return wall(["decode", str(first_gray), "-o", str(workdir / f"d{i}.png"), *device])

        # Other work on a shared machine slows fresh processes most: say how busy it was.
        print(f"\nload average before the fresh-process runs: {os.getloadavg()[0]:.2f} (1 min) on "
              f"{os.cpu_count()} CPUs")
        print("\n| fresh process | wall s | MP/s | CPU s (user + system) |")
        print("|---|---|---|---|")
        print(f"| invgray --help | {statistics.median(wall(['--help']) for _ in range(3)):.2f} | - | "
              f"{statistics.median(cpu_seconds[-3:]):.2f} |")
        for label, run in (("encode", first_encode), ("decode", first_decode)):
            warm = statistics.median(run(i) for i in range(args.fresh))
            cpu = statistics.median(cpu_seconds[-args.fresh:])
            print(f"| first image, {label} (warm, median of {args.fresh}) | {warm:.3f} | {mp_one / warm:.2f} | "
                  f"{cpu:.3f} |")
            cold = run(args.fresh) if drop_page_cache() else None
            print(f"| first image, {label} (cold: right after dropping the page cache) | "
                  + (f"{cold:.3f} | {mp_one / cold:.2f} | {cpu_seconds[-1]:.3f} |" if cold is not None
                     else "not measured (not root) | - | - |"))

        looped = files[: args.loop_images] if args.loop_images > 0 else files
        looped_mp = sum(megapixels(path) for path in looped)
        loop_encode = sum(wall(["encode", str(path), "-o", str(workdir / "loop" / f"{path.stem}.gray.jpg"), *device])
                          for path in looped)
        print(f"| encode {len(looped)} photos, one call per file (a shell loop) | {loop_encode:.2f} | "
              f"{looped_mp / loop_encode:.2f} | {sum(cpu_seconds[-len(looped):]):.2f} |")
        print(f"| encode {len(files)} photos, one folder call | {encode_folder:.2f} | {total_mp / encode_folder:.2f} | "
              f"{encode_folder_cpu:.2f} |")
        loop_decode = sum(wall(["decode", str(pairs / f"{path.stem}.gray.jpg"), "-o",
                                str(workdir / "loop" / f"{path.stem}.png"), *device]) for path in looped)
        print(f"| decode {len(looped)} pairs, one call per file (a shell loop) | {loop_decode:.2f} | "
              f"{looped_mp / loop_decode:.2f} | {sum(cpu_seconds[-len(looped):]):.2f} |")
        for batch in sorted(set(args.batch)):
            out = workdir / f"out{batch}"
            seconds = wall(["decode", str(pairs), "--out-dir", str(out), "--jobs", str(args.jobs),
                            "--batch", str(batch), *device])
            print(f"| decode folder of {len(files)} (--jobs {args.jobs} --batch {batch}) | {seconds:.2f} | "
                  f"{total_mp / seconds:.1f} | {cpu_seconds[-1]:.2f} |")
        print(f"load average after: {os.getloadavg()[0]:.2f} (1 min)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
